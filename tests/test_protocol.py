"""The webhook listener's protocol (bridge/protocol.py) on a stand-in transport: when a
connection stops reading until its webhook is admitted, the bound on a request head, and
which connections count as idle."""

from __future__ import annotations

import asyncio
from typing import Any

import pytest
from starlette.responses import JSONResponse
from uvicorn.config import Config
from uvicorn.server import ServerState

from bridge.protocol import MAX_HEAD, DeadlineProtocol, body_in_memory, one_write, with_deadline

pytestmark = pytest.mark.anyio


class Transport(asyncio.Transport):
    """Records what the protocol asks of the socket."""

    def __init__(self) -> None:
        super().__init__()
        self.pauses = 0
        self.written = b""
        self.sends: list[bytes] = []  # each write, as the socket would get it
        self.closed = False

    def get_extra_info(self, name: str, default: Any = None) -> Any:
        return {"sockname": ("127.0.0.1", 8080), "peername": ("127.0.0.1", 50000)}.get(
            name, default
        )

    def write(self, data: bytes | bytearray | memoryview) -> None:
        assert not self.closed, "written after close"
        self.written += bytes(data)
        self.sends.append(bytes(data))

    def is_closing(self) -> bool:
        return self.closed

    def close(self) -> None:
        self.closed = True

    def pause_reading(self) -> None:
        self.pauses += 1

    def resume_reading(self) -> None:
        pass


async def app(scope: Any, receive: Any, send: Any) -> None:
    await receive()


def request(body: bytes, declared: int) -> bytes:
    head = f"POST /webhooks/sentry HTTP/1.1\r\nhost: b\r\ncontent-length: {declared}\r\n\r\n"
    return head.encode() + body


def connect(app: Any = app) -> tuple[DeadlineProtocol, Transport]:
    protocol_class = with_deadline(10.0)
    config = Config(app=app, http=protocol_class, lifespan="off")
    config.load()
    protocol = protocol_class(config=config, server_state=ServerState(), app_state={})
    transport = Transport()
    protocol.connection_made(transport)
    return protocol, transport


async def close(protocol: DeadlineProtocol) -> None:
    protocol.connection_lost(None)
    await asyncio.gather(*protocol.tasks, return_exceptions=True)


@pytest.mark.parametrize(
    ("data", "pauses"),
    [
        pytest.param(request(b"x" * 4000, 4000), 0, id="whole body with the head: in memory"),
        pytest.param(request(b"x" * 1000, 4000), 1, id="body still coming: waits in the socket"),
    ],
)
async def test_reading_pauses_only_for_a_body_still_in_the_socket(data: bytes, pauses: int) -> None:
    protocol, transport = connect()
    protocol.data_received(data)
    assert transport.pauses == pauses
    await close(protocol)


@pytest.mark.parametrize(
    ("data", "in_memory"),
    [
        pytest.param(request(b"x" * 4000, 4000), True, id="whole body with the head"),
        pytest.param(request(b"x" * 1000, 4000), False, id="body still coming"),
        pytest.param(request(b"", 0), True, id="no body"),
    ],
)
async def test_the_handler_knows_a_body_in_memory(data: bytes, in_memory: bool) -> None:
    """The webhook arms its body's deadline only for a body that can still keep it waiting
    (bridge.app); a body in memory cannot."""
    seen: list[bool] = []

    async def handler(scope: Any, receive: Any, send: Any) -> None:
        seen.append(body_in_memory(receive))

    protocol, _ = connect(handler)
    protocol.data_received(data)
    await asyncio.gather(*protocol.tasks, return_exceptions=True)
    assert seen == [in_memory]
    await close(protocol)


async def test_any_other_receive_is_not_known_to_hold_its_body() -> None:
    async def receive() -> dict[str, Any]:
        return {"type": "http.request", "body": b"", "more_body": False}

    assert not body_in_memory(receive)


@pytest.mark.parametrize(
    ("chunks", "refused"),
    [
        pytest.param([b"GET / HTTP/1.1\r\nx-long: " + b"a" * MAX_HEAD], True, id="one read"),
        pytest.param(
            [b"GET / HTTP/1.1\r\n", *[b"x-h: " + b"a" * 1000 + b"\r\n"] * 17],
            True,
            id="header by header",
        ),
        pytest.param(
            [b"GET / HTTP/1.1\r\n", *[b"x-h: " + b"a" * 1000 + b"\r\n"] * 15, b"\r\n"],
            False,
            id="just under the bound",
        ),
    ],
)
async def test_a_request_head_over_the_bound_is_answered_400_and_closed(
    chunks: list[bytes], refused: bool
) -> None:
    protocol, transport = connect()
    for chunk in chunks:
        protocol.data_received(chunk)
    assert transport.closed is refused
    assert transport.written.startswith(b"HTTP/1.1 400") is refused
    assert (protocol in type(protocol).open) is not refused
    await close(protocol)


async def test_a_pipelined_request_is_busy_not_idle_while_it_runs() -> None:
    seen: list[bool] = []  # each request, as it runs: is its connection counted idle?
    done = asyncio.Event()

    async def answer(scope: Any, receive: Any, send: Any) -> None:
        await receive()
        seen.append(protocol in type(protocol).idle)
        await send({"type": "http.response.start", "status": 202, "headers": []})
        await send({"type": "http.response.body", "body": b""})
        if len(seen) == 2:
            done.set()

    protocol, _ = connect(answer)
    assert protocol in type(protocol).idle  # open, no request yet
    protocol.data_received(request(b"{}", 2) + request(b"{}", 2))
    await done.wait()
    assert seen == [False, False]
    assert protocol in type(protocol).idle  # both answered
    await close(protocol)


@pytest.mark.parametrize("keep_alive", [True, False], ids=["kept alive", "connection: close"])
@pytest.mark.parametrize("gathered", [True, False], ids=["one_write", "as Uvicorn writes"])
async def test_a_response_in_one_write_goes_out_in_one_send(
    keep_alive: bool, gathered: bool
) -> None:
    """The webhook's answer (bridge.app) is one send of its head and body, before the
    connection closes when it is not kept alive; Uvicorn alone makes two."""
    answer = JSONResponse({"status": "accepted"}, status_code=202)

    async def handler(scope: Any, receive: Any, send: Any) -> None:
        await receive()
        if gathered:
            with one_write(receive):
                await answer(scope, receive, send)
        else:
            await answer(scope, receive, send)

    protocol, transport = connect(handler)
    data = request(b"{}", 2)
    if not keep_alive:
        data = data.replace(b"host: b\r\n", b"host: b\r\nconnection: close\r\n")
    protocol.data_received(data)
    await asyncio.gather(*protocol.tasks, return_exceptions=True)
    assert transport.written.startswith(b"HTTP/1.1 202 ")
    assert transport.written.endswith(b'\r\n\r\n{"status":"accepted"}')
    assert len(transport.sends) == (1 if gathered else 2)
    assert transport.closed is not keep_alive
    await close(protocol)

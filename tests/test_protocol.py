"""The webhook listener's protocol (bridge/protocol.py) on a stand-in transport: when a
connection stops reading until its webhook is admitted."""

from __future__ import annotations

import asyncio
from typing import Any

import pytest
from uvicorn.config import Config
from uvicorn.server import ServerState

from bridge.protocol import with_deadline

pytestmark = pytest.mark.anyio


class Transport(asyncio.Transport):
    """Records what the protocol asks of the socket."""

    def __init__(self) -> None:
        super().__init__()
        self.pauses = 0
        self.written = b""
        self.closed = False

    def get_extra_info(self, name: str, default: Any = None) -> Any:
        return {"sockname": ("127.0.0.1", 8080), "peername": ("127.0.0.1", 50000)}.get(
            name, default
        )

    def write(self, data: bytes | bytearray | memoryview) -> None:
        self.written += bytes(data)

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


@pytest.mark.parametrize(
    ("data", "pauses"),
    [
        pytest.param(request(b"x" * 4000, 4000), 0, id="whole body with the head: in memory"),
        pytest.param(request(b"x" * 1000, 4000), 1, id="body still coming: waits in the socket"),
    ],
)
async def test_reading_pauses_only_for_a_body_still_in_the_socket(data: bytes, pauses: int) -> None:
    protocol_class = with_deadline(10.0)
    config = Config(app=app, http=protocol_class, lifespan="off")
    config.load()
    protocol = protocol_class(config=config, server_state=ServerState(), app_state={})
    transport = Transport()
    protocol.connection_made(transport)
    protocol.data_received(data)
    assert transport.pauses == pauses
    protocol.connection_lost(None)
    await asyncio.gather(*protocol.tasks, return_exceptions=True)

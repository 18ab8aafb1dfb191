"""Uvicorn's HTTP/1.1 protocol with a deadline for each request's head, a bound on its size,
and a bound on open connections that closes idle ones first.

The base is Uvicorn's httptools protocol (the C parser llhttp, what ``uvicorn[standard]``
runs): about 190 µs less CPU per request than h11 in the bench's bare app (issue 15).

Uvicorn only times out a connection that is idle *after* a response
(``timeout_keep_alive``): one that never sends a request, or sends its headers a byte a
second, is held open for ever. Here every connection must deliver a complete request head
within ``server.read_timeout`` of opening, and of each response, or it is closed; the
body has its own deadline in the webhook handler (408). A request head longer than
``MAX_HEAD`` is answered 400 and the connection closed (llhttp bounds no head; h11, which
this replaced, refused one over 16 KiB).

Uvicorn's own bound, ``limit_concurrency``, counts open connections: 1,000 sockets that
send nothing made every webhook and probe a 503. Instead, at most
``server.max_connections`` stay open, and when one more arrives the connection idle
longest (no request in flight: kept alive after a response, or open without a complete
request head) is closed to make room; only when none is idle is the newcomer closed.
Requests in flight are bounded separately (``bridge.admission``), below this bound, so a
webhook or a probe always finds a connection.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Awaitable, Callable, Iterator
from typing import Any, ClassVar

from uvicorn.protocols.http.httptools_impl import HttpToolsProtocol, RequestResponseCycle

READ_SIZE = 65536
MAX_HEAD = 16 * 1024  # bytes of one request head: h11's default bound, kept


class DeadlineProtocol(HttpToolsProtocol):
    """``HttpToolsProtocol`` plus the request-head deadline and the connection bound; see
    :func:`with_deadline`, which makes the subclass (and its registries) for one server."""

    read_timeout = 10.0
    max_connections = 4096
    # The server's connections, and those with no request in flight, idle longest first
    # (dicts keep insertion order; re-inserted when a connection becomes idle again).
    open: ClassVar[dict[DeadlineProtocol, None]] = {}
    idle: ClassVar[dict[DeadlineProtocol, None]] = {}
    # Told each time a connection is closed unasked: "idle_for_room" or "head_deadline"
    # (sentry_bridge_connections_closed_total).
    on_close: ClassVar[Callable[[str], None]] = staticmethod(lambda reason: None)

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self._deadline: asyncio.TimerHandle | None = None
        self._head_bytes = 0  # of the request head being received (MAX_HEAD)

    def connection_made(self, transport: asyncio.Transport) -> None:  # type: ignore[override]
        super().connection_made(transport)
        if hasattr(transport, "max_size"):
            # asyncio's selector transport reads up to 256 KiB at a time (its max_size):
            # what a connection holds before its webhook is admitted, times every
            # connection. Webhooks are a few KiB; 64 KiB reads cost them nothing.
            setattr(transport, "max_size", READ_SIZE)  # noqa: B010 (not in the stubs)
        cls = type(self)
        cls.open[self] = None
        cls.idle[self] = None
        self._arm()
        if len(cls.open) > cls.max_connections:
            # The oldest idle one: this one itself only when no other is idle.
            victim = next(iter(cls.idle))
            victim._close()
            cls.on_close("idle_for_room")

    def connection_lost(self, exc: Exception | None) -> None:
        self._forget()
        self._disarm()
        super().connection_lost(exc)

    def data_received(self, data: bytes) -> None:
        cycle = self.cycle
        # Bytes past a request's complete body (or on a fresh connection) are a head.
        head = cycle is None or not cycle.more_body
        super().data_received(data)  # the parser's callbacks run in here, for all of data
        if self.transport.is_closing():
            return
        if self.cycle is not cycle:
            # A new request cycle means a complete request head arrived in time: busy now.
            self._head_bytes = 0
            self._disarm()
            idle = type(self).idle
            if self in idle:
                del idle[self]
                # Its body waits in the socket until the app asks for it (Uvicorn's
                # receive() resumes reading), once the webhook has been admitted and its
                # bytes accounted (bridge.admission), not before. A body that came whole
                # with its head (the usual webhook: one read of up to READ_SIZE) is in
                # memory already: pausing would only cost two epoll_ctl calls and a
                # resume per request (issue 15's profile: some 4 % of a webhook's CPU).
                if self.cycle.more_body:
                    self.flow.pause_reading()
        elif head:
            self._head_bytes += len(data)
            if self._head_bytes > MAX_HEAD:
                self._close_with_400()

    def on_response_complete(self) -> None:
        pipelined = bool(self.pipeline)  # a request whose head came during this one's
        if not self.transport.is_closing():
            idle = type(self).idle
            idle.pop(self, None)
            idle[self] = None  # the newest idle
            self._arm()
        super().on_response_complete()  # starts the pipelined request, if any
        if pipelined:
            self._busy()

    def _busy(self) -> None:
        self._disarm()
        type(self).idle.pop(self, None)

    def _close_with_400(self) -> None:
        self._forget()
        self._disarm()
        self.send_400_response("Request head too large.")  # closes the transport

    def _forget(self) -> None:
        cls = type(self)
        cls.open.pop(self, None)
        cls.idle.pop(self, None)

    def _close(self) -> None:
        self._forget()
        self._disarm()
        if not self.transport.is_closing():
            self.transport.close()

    def _arm(self) -> None:
        self._disarm()
        self._deadline = self.loop.call_later(self.read_timeout, self._expired)

    def _disarm(self) -> None:
        if self._deadline is not None:
            self._deadline.cancel()
            self._deadline = None

    def _expired(self) -> None:
        self._deadline = None
        if not self.transport.is_closing():
            type(self).on_close("head_deadline")
        self._close()


def with_deadline(
    read_timeout: float,
    max_connections: int = 4096,
    on_close: Callable[[str], None] | None = None,
) -> type[DeadlineProtocol]:
    """The protocol class for ``uvicorn.Config(http=...)``: this deadline, this bound, and
    registries of its own (one class per server)."""
    attributes: dict[str, object] = {
        "read_timeout": read_timeout,
        "max_connections": max_connections,
        "open": {},
        "idle": {},
    }
    if on_close is not None:
        attributes["on_close"] = staticmethod(on_close)
    return type("DeadlineProtocol", (DeadlineProtocol,), attributes)


def body_in_memory(receive: Callable[[], Awaitable[Any]]) -> bool:
    """Whether the request whose ASGI ``receive`` this is has its whole body in memory
    already: Uvicorn's httptools cycle (``receive`` is its bound method) parsed the body's
    end with the head, so reading it cannot wait (the usual webhook, see ``data_received``).
    False for any other server, and whenever in doubt."""
    cycle = getattr(receive, "__self__", None)
    return isinstance(cycle, RequestResponseCycle) and not cycle.more_body


class _Gathered:
    """A connection's transport while one response is sent: what the cycle writes is kept
    and goes out in one write at the end (:func:`one_write`); everything else is the
    transport's own."""

    def __init__(self, transport: asyncio.Transport) -> None:
        self.transport = transport
        self.chunks: list[bytes] = []

    def write(self, data: bytes) -> None:
        self.chunks.append(data)

    def close(self) -> None:  # a response on a connection that is not kept alive
        self.flush()
        self.transport.close()

    def flush(self) -> None:
        chunks, self.chunks = self.chunks, []
        if chunks and not self.transport.is_closing():
            self.transport.writelines(chunks)

    def __getattr__(self, name: str) -> Any:
        return getattr(self.transport, name)


@contextlib.contextmanager
def one_write(receive: Callable[[], Awaitable[Any]]) -> Iterator[None]:
    """While a whole response is sent inside it, Uvicorn's httptools cycle (whose bound
    ``receive`` this is) writes its head and its body to the socket at once: one send
    (``writelines``, one ``writev`` on uvloop) and one TCP segment, where Uvicorn makes a
    send for each (issue 15's profile: the two sends were some 40 us of a webhook's CPU
    under load). Any other server: nothing changes."""
    cycle = getattr(receive, "__self__", None)
    if not isinstance(cycle, RequestResponseCycle) or isinstance(cycle.transport, _Gathered):
        yield
        return
    gathered = _Gathered(cycle.transport)
    cycle.transport = gathered  # type: ignore[assignment]
    try:
        yield
    finally:
        cycle.transport = gathered.transport
        gathered.flush()

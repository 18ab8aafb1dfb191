"""Uvicorn's HTTP/1.1 protocol with a deadline for each request's headers.

Uvicorn (h11) only times out a connection that is idle *after* a response
(``timeout_keep_alive``): one that never sends a request, or sends its headers a byte a
second, is held open for ever, and enough of them use up ``server.max_concurrency`` (or
the file descriptors). Here every connection must deliver a complete request head
within ``server.read_timeout`` of opening, and of each response, or it is closed; the
body has its own deadline in the webhook handler (408).
"""

from __future__ import annotations

import asyncio
from typing import Any

from uvicorn.protocols.http.h11_impl import H11Protocol


class DeadlineProtocol(H11Protocol):
    """``H11Protocol`` plus the request-head deadline; see :func:`with_deadline`."""

    read_timeout = 10.0

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self._deadline: asyncio.TimerHandle | None = None
        self._waiting_for: object = None  # the cycle current when the deadline was armed

    def connection_made(self, transport: asyncio.Transport) -> None:  # type: ignore[override]
        super().connection_made(transport)
        self._arm()

    def connection_lost(self, exc: Exception | None) -> None:
        self._disarm()
        super().connection_lost(exc)

    def handle_events(self) -> None:
        super().handle_events()
        # A new request cycle means a complete request head arrived in time.
        if self._deadline is not None and self.cycle is not self._waiting_for:
            self._disarm()

    def on_response_complete(self) -> None:
        # Armed first: a pipelined request handled inside super() disarms it again.
        self._arm()
        super().on_response_complete()

    def _arm(self) -> None:
        self._disarm()
        self._waiting_for = self.cycle
        self._deadline = self.loop.call_later(self.read_timeout, self._expired)

    def _disarm(self) -> None:
        if self._deadline is not None:
            self._deadline.cancel()
            self._deadline = None

    def _expired(self) -> None:
        self._deadline = None
        if not self.transport.is_closing():
            self.transport.close()


def with_deadline(read_timeout: float) -> type[DeadlineProtocol]:
    """The protocol class for ``uvicorn.Config(http=...)`` with this deadline."""
    return type("DeadlineProtocol", (DeadlineProtocol,), {"read_timeout": read_timeout})

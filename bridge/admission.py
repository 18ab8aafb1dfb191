"""Which webhooks the edge takes on: at most ``server.max_concurrency`` at once, and at most
``server.max_pending_body_bytes`` of bodies being received (before their signature can
be checked) across all of them.

A bound alone would let whoever holds it lock Sentry out: a few hundred clients that send
a body slowly, or never finish it, would fill it for ``server.read_timeout`` at a time.
So when a bound is reached, the webhook that has been *receiving its body* the longest is
cut off (its read times out now, answered 503 ``evicted`` and closed) to make room. A body
Sentry sends arrives in milliseconds; one still arriving after the others is the one
least likely to be Sentry's. Only when every webhook in flight is past its body (signed,
waiting for the store) is a new one refused, 503, which Sentry retries. Probes and
``/metrics`` never come here: webhooks cannot starve them.

Everything runs on the event loop: no locks.
"""

from __future__ import annotations

import asyncio

from bridge.errors import Unavailable


class Busy(Unavailable):
    """503: every webhook in flight is past its body; retry later."""


class Ticket:
    """One webhook in flight; ``read`` bounds the time its body may take."""

    __slots__ = ("evicted", "held", "read", "receiving")

    def __init__(self) -> None:
        self.read: asyncio.Timeout | None = None
        self.held = 0  # bytes of body reserved
        self.receiving = True
        self.evicted = False


class Gate:
    def __init__(self, max_in_flight: int, max_pending_bytes: int) -> None:
        self.max_in_flight = max_in_flight
        self.max_pending_bytes = max_pending_bytes
        self.in_flight = 0
        self.pending_bytes = 0
        self.evictions = 0
        # The webhooks still receiving their body, oldest first (dicts keep insertion order).
        self._receiving: dict[Ticket, None] = {}

    def enter(self) -> Ticket:
        """A place for one more webhook, cutting off the oldest body still arriving if
        there is none; ``Busy`` if every webhook in flight is past its body."""
        if self.in_flight >= self.max_in_flight and not self._evict_oldest(None):
            raise Busy(
                "busy",
                f"{self.in_flight} webhooks in flight (server.max_concurrency); retry later",
            )
        ticket = Ticket()
        self.in_flight += 1
        self._receiving[ticket] = None
        return ticket

    def hold(self, ticket: Ticket, size: int) -> None:
        """Account ``size`` more bytes of ``ticket``'s body, cutting off the oldest bodies
        still arriving until they fit: ``ticket`` itself if it is the oldest (a body that
        grows slowly cuts off no younger one). ``max_pending_bytes`` is at least
        ``server.max_body_bytes``, so a new body always fits once the older are cut off."""
        if ticket.evicted:
            return
        ticket.held += size
        self.pending_bytes += size
        while self.pending_bytes > self.max_pending_bytes and not ticket.evicted:
            self._evict_oldest(None)

    def received(self, ticket: Ticket) -> None:
        """The body is complete: its bytes no longer count, and it cannot be cut off."""
        if ticket.receiving and not ticket.evicted:
            ticket.receiving = False
            self._receiving.pop(ticket, None)
            self.pending_bytes -= ticket.held
            ticket.held = 0

    def leave(self, ticket: Ticket) -> None:
        if ticket.evicted:
            return  # its place and bytes were given back when it was cut off
        self.received(ticket)
        self.in_flight -= 1

    def _evict_oldest(self, keep: Ticket | None) -> bool:
        for victim in self._receiving:
            if victim is not keep and victim.read is not None:
                break
        else:
            return False
        # The victim may be the caller's own webhook (hold): it sees its timeout at its
        # next await.
        del self._receiving[victim]
        victim.evicted = True
        self.in_flight -= 1
        self.pending_bytes -= victim.held
        victim.held = 0
        self.evictions += 1
        if not victim.read.expired():
            # Its read's deadline is now: the handler sees a timeout and answers 503.
            victim.read.reschedule(asyncio.get_running_loop().time())
        return True

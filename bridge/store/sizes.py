"""What a store holds, as one read shared by its callers and cached briefly
(``Store.sizes``, ``Store.full``), the same for every engine: an engine gives the read.

Nothing is counted by hand but the webhooks this replica accepted since the last read:
``store.max_queued`` is checked on every accept, and a read per webhook would put a
database round trip on the webhook path (issue 15). What can only shrink the store (a
completed batch, a settled lane) marks the last read out of date instead, so a store at
its bound is read again before it refuses a webhook, not counted down by deltas. Where
other replicas accept too (PostgreSQL), the bound also starts a read in the background
when the last one is older than ``stale_after``.
"""

from __future__ import annotations

import asyncio
import math
import time
from collections.abc import Awaitable, Callable

from bridge.store.contract import Sizes


class SizeCache:
    def __init__(
        self, read: Callable[[], Awaitable[Sizes]], bound: int, stale_after: float = math.inf
    ) -> None:
        self._read = read
        self.bound = bound  # store.max_queued
        self.stale_after = stale_after
        self.last: Sizes | None = None
        self._read_at = -math.inf  # time.monotonic() when the last read started
        self._accepted = 0  # webhooks this replica accepted, ever
        self._counted = 0  # of those, the ones accepted before the last read started
        self._changes = 0  # writes of this replica that may have shrunk the store
        self._current = False  # no such write since the last read started
        self._flight: asyncio.Task[Sizes] | None = None
        self._flight_at = -math.inf

    async def get(self, max_age: float) -> Sizes:
        """The last read if it started at most ``max_age`` seconds ago, else a new one
        (joined by whoever asks meanwhile)."""
        now = time.monotonic()
        if self.last is not None and now - self._read_at <= max_age:
            return self.last
        flight = self._flight
        if flight is None or self._flight_at < now - max_age:
            flight = self._start(now)
        return await asyncio.shield(flight)

    def accepted(self, count: int) -> None:
        """``count`` webhooks were committed by this replica."""
        self._accepted += count

    def changed(self) -> None:
        """This replica wrote something that may have shrunk the store."""
        self._changes += 1
        self._current = False

    def full(self) -> bool:
        """The last read's length plus the accepts since reach the bound; when that may
        be out of date, a read is started (its result is for the next caller)."""
        if self.last is None:
            return False
        over = self.last.length + self._accepted - self._counted >= self.bound
        now = time.monotonic()
        stale = (over and not self._current) or now - self._read_at > self.stale_after
        if stale and self._flight is None:
            self._start(now)
        return over

    async def refuses(self) -> bool:
        """``full``, after the read it started: what ``accept`` refuses by."""
        if not self.full():
            return False
        if self._flight is not None:
            await asyncio.shield(self._flight)
        return self.full()

    def _start(self, now: float) -> asyncio.Task[Sizes]:
        task = asyncio.ensure_future(self._once(now, self._accepted, self._changes))
        task.add_done_callback(_retrieve)  # a read no one awaits may fail unseen
        self._flight, self._flight_at = task, now
        return task

    async def _once(self, started: float, accepted: int, changes: int) -> Sizes:
        try:
            sizes = await self._read()
        finally:
            if self._flight_at == started:
                self._flight = None
        if started >= self._read_at:  # not overtaken by a later read
            self.last, self._read_at = sizes, started
            self._counted = accepted  # in it; later ones may be too (counted twice)
            self._current = changes == self._changes
        return sizes


def _retrieve(task: asyncio.Task[Sizes]) -> None:
    if not task.cancelled():
        task.exception()

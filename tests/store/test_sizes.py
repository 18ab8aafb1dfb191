"""One read of a store's sizes, shared and cached (bridge/store/sizes.py), with a read the
test holds open: concurrent callers share it, a young read is reused, and the
``store.max_queued`` bound counts accepts without reading, reading again only after this
replica settled something."""

from __future__ import annotations

import asyncio

import pytest

from bridge.store.contract import Sizes
from bridge.store.sizes import SizeCache

pytestmark = pytest.mark.anyio


class Database:
    """Answers each read with ``held`` queued alerts once ``release`` is set."""

    def __init__(self) -> None:
        self.held = 0
        self.reads = 0
        self.release = asyncio.Event()
        self.release.set()

    async def started(self, reads: int) -> None:
        """Until ``reads`` reads have started (the tasks run to their first wait)."""
        async with asyncio.timeout(5):
            while self.reads < reads:
                await asyncio.sleep(0)

    async def read(self) -> Sizes:
        self.reads += 1
        held = self.held  # what the database holds when the read starts
        await self.release.wait()
        return Sizes(0.0, 0, {"am": held}, 0, 0, 0, None)


async def test_concurrent_callers_share_one_read_and_a_young_one_is_reused() -> None:
    db = Database()
    cache = SizeCache(db.read, bound=10)
    db.release.clear()
    first = [asyncio.create_task(cache.get(1.0)) for _ in range(5)]
    await db.started(1)
    db.release.set()
    assert {(await t).length for t in first} == {0}
    assert db.reads == 1
    db.held = 3
    assert (await cache.get(1.0)).length == 0  # a read of a moment ago
    assert db.reads == 1
    assert (await cache.get(0)).length == 3  # read now
    assert db.reads == 2


async def test_the_bound_counts_accepts_and_reads_again_only_after_a_settle() -> None:
    db = Database()
    cache = SizeCache(db.read, bound=3)
    assert not cache.full()  # never read: no bound yet (an engine reads at open)
    await cache.get(0)
    cache.accepted(2)
    assert not cache.full()
    cache.accepted(1)
    db.held = 3  # the three, committed
    assert cache.full()
    assert await cache.refuses()
    assert db.reads == 1, "nothing settled since: no read per refused webhook"
    db.held = 0  # delivered, by this replica
    cache.changed()
    assert not await cache.refuses()  # read again first
    assert db.reads == 2
    assert not cache.full()


async def test_accepts_during_a_read_are_counted_still() -> None:
    db = Database()
    cache = SizeCache(db.read, bound=2)
    await cache.get(0)
    db.release.clear()
    reading = asyncio.create_task(cache.get(0))
    await db.started(2)  # the read has started, with nothing held
    cache.accepted(2)  # committed meanwhile: maybe in the read, maybe not
    db.release.set()
    assert (await reading).length == 0
    assert cache.full(), "an accept the read may have missed is still counted"


async def test_where_others_accept_too_an_old_read_is_renewed_in_the_background() -> None:
    db = Database()
    cache = SizeCache(db.read, bound=5, stale_after=0.0)  # every read is old at once
    await cache.get(0)
    db.held = 5  # another replica's accepts
    assert not cache.full()  # as of the last read; a new one starts
    await db.started(2)
    assert (await cache.get(1.0)).length == 5
    assert cache.full()

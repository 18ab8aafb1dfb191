"""Several replicas on one PostgreSQL: two (or more) ``PostgresStore`` instances in this
process, on one schema, standing in for pods (issue 10: one decision per identity across
replicas, lanes without double delivery, a lease taken over when its holder dies)."""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import time
from collections.abc import AsyncIterator
from datetime import timedelta
from typing import Any

import asyncpg
import pytest

from bridge.errors import StoreFull
from bridge.store.contract import Processed, Taken
from bridge.store.pg import PostgresStore
from bridge.store.pg.schema import MIGRATIONS
from tests import factories
from tests.conftest import PostgresTarget
from tests.store import probes
from tests.store.engines import TARGETS, postgres_store
from tests.store.test_spool import until

pytestmark = pytest.mark.anyio

PROMPTLY = 10.0  # a failure detector: what is awaited happens at once when the code is right


@contextlib.asynccontextmanager
async def replicas(
    pg: PostgresTarget, n: int = 2, **options: Any
) -> AsyncIterator[list[PostgresStore]]:
    stores = [postgres_store(pg, holder=f"pod-{i}", **options) for i in range(n)]
    await asyncio.gather(*(store.open() for store in stores))
    try:
        yield stores
    finally:
        for store in stores:
            await store.close()


async def take(store: PostgresStore, limit: int = 100) -> Taken:
    return await asyncio.wait_for(store.take(limit), PROMPTLY)


async def done(store: PostgresStore, taken: Taken) -> None:
    await store.complete(taken, [Processed(e.inbox_id, ()) for e in taken.entries])


def found_nothing(store: PostgresStore) -> asyncio.Event:
    """Set once a look of ``store``'s take at the inbox found nothing it may take."""
    event = asyncio.Event()
    claim = store._claim

    async def observed(limit: int) -> Taken | None:
        found = await claim(limit)
        if found is None:
            event.set()
        return found

    store._claim = observed  # type: ignore[method-assign]
    return event


async def rows(pg: PostgresTarget, query: str) -> list[Any]:
    conn = await asyncpg.connect(pg.dsn, server_settings={"search_path": pg.schema})
    try:
        return list(await conn.fetch(query))
    finally:
        await conn.close()


async def test_replicas_opening_together_migrate_once(pg: PostgresTarget) -> None:
    async with replicas(pg, 4):
        versions = await rows(pg, "SELECT version FROM schema_version")
        assert [row[0] for row in versions] == [m.version for m in MIGRATIONS]
        targets = await rows(pg, "SELECT target FROM progress ORDER BY target")
        assert [row[0] for row in targets] == sorted(TARGETS)


async def test_the_same_webhook_to_both_replicas_at_once_is_one_entry(pg: PostgresTarget) -> None:
    async with replicas(pg) as (a, b):
        for n in range(20):
            digest = hashlib.sha256(f"body {n}".encode()).digest()
            alert = factories.issue(n)
            added = await asyncio.gather(a.accept(alert, digest), b.accept(alert, digest))
            assert sorted(added) == [False, True]
        (count,) = await rows(pg, "SELECT count(*) FROM inbox")
        assert count[0] == 20


async def test_concurrent_accepts_share_a_commit(pg: PostgresTarget) -> None:
    async with replicas(pg, 1) as (store,):
        commits = probes.Commits(store)
        await asyncio.gather(*(store.accept(factories.issue(n)) for n in range(50)))
        assert 1 <= commits.count < 10, "group commit: a few transactions, not 50"
        taken = await take(store)
        assert [e.alert.identity for e in taken.entries] == [f"issue:{n}" for n in range(50)]
        await store.abandon(taken)


async def test_an_identity_is_taken_by_one_replica_at_a_time_in_order(pg: PostgresTarget) -> None:
    async with replicas(pg) as (a, b):
        for title in ("first", "second", "third"):
            await a.accept(factories.issue(1, title=title))
        first = await take(a, limit=1)
        assert [e.alert.title for e in first.entries] == ["first"]
        await b.accept(factories.issue(2))
        other = await take(b)
        assert [e.alert.identity for e in other.entries] == ["issue:2"], "issue:1 is a's"
        waiting = asyncio.ensure_future(b.take(100))
        await done(b, other)
        await asyncio.sleep(0)
        assert not waiting.done()
        await a.abandon(first)
        # Abandoned: handed out again, the earliest first, to whoever takes next.
        again = await asyncio.wait_for(waiting, PROMPTLY)
        assert [e.alert.title for e in again.entries] == ["first", "second", "third"]
        await done(b, again)


async def test_a_lane_is_held_by_one_replica(pg: PostgresTarget) -> None:
    async with replicas(pg) as (a, b):
        async with a.lane(TARGETS[0]) as held:
            assert held is not None
            async with b.lane(TARGETS[0]) as refused:
                assert refused is None, "at once, not after a wait"
            async with b.lane(TARGETS[1]) as other:
                assert other is not None, "each Alertmanager its own lane"
        async with b.lane(TARGETS[0]) as after:
            assert after is not None


async def test_the_periodic_lease_is_taken_over_when_its_holder_stops(pg: PostgresTarget) -> None:
    ttl = timedelta(milliseconds=600)
    async with replicas(pg, lease_ttl=ttl) as (a, b):
        assert await a.periodic() is True
        assert await b.periodic() is False
        ((expires,),) = await rows(pg, "SELECT expires_at FROM lease WHERE name = 'periodic'")
        started = time.monotonic()
        # a stops renewing (a dead pod asks nothing): b takes over once the lease expired.
        while not await b.periodic():
            assert time.monotonic() - started < PROMPTLY
            await asyncio.sleep(0.02)
        ((holder, acquired),) = await rows(
            pg, "SELECT holder, acquired_at FROM lease WHERE name = 'periodic'"
        )
        assert holder == "pod-1"
        assert acquired >= expires, "not taken before it expired (the database's clock)"
        assert await a.periodic() is False, "the old holder learns it lost the lease"


async def test_closing_hands_the_lease_over_at_once(pg: PostgresTarget) -> None:
    a = postgres_store(pg, holder="pod-a")
    await a.open()
    async with replicas(pg, 1) as (b,):
        assert await a.periodic() is True
        assert await b.periodic() is False
        await a.close()
        assert await b.periodic() is True


async def test_failing_writes_turn_store_ok_false_until_one_succeeds(pg: PostgresTarget) -> None:
    """PostgreSQL stopped (a crash): accepts answer StoreFull (503, Sentry retries), and
    after ``failing_after`` failed writes the store is not ok; once the database is back, a
    probe turns it ok again and nothing acknowledged was lost."""
    async with replicas(pg, 1) as (store,):
        assert await store.accept(factories.issue(1))
        pg.server.stop_immediately()
        for _ in range(store.failing_after):
            assert store.store_ok()
            with pytest.raises(StoreFull):
                await store.accept(factories.issue(2))
        assert not store.store_ok()
        assert await store.probe() is False
        pg.server.start()
        started = time.monotonic()
        while not await store.probe():
            assert time.monotonic() - started < PROMPTLY
            await asyncio.sleep(0.05)
        assert store.store_ok()
        assert await store.accept(factories.issue(3))
        taken = await take(store)
        assert [e.alert.identity for e in taken.entries] == ["issue:1", "issue:3"]
        await done(store, taken)


async def test_a_waiting_take_is_woken_by_another_replicas_accept(pg: PostgresTarget) -> None:
    """LISTEN/NOTIFY: with the poll fallback out of reach, b's waiting take returns as soon
    as a commits an accept; and b's senders are woken when a queues posts."""
    async with replicas(pg) as (a, b):
        b.poll_interval = 3600.0
        waiting = asyncio.ensure_future(b.take(10))
        await asyncio.sleep(0)
        await a.accept(factories.issue(1))
        taken = await asyncio.wait_for(waiting, PROMPTLY)
        assert [e.alert.identity for e in taken.entries] == ["issue:1"]
        await b.complete(taken, [Processed(taken.entries[0].inbox_id, ())])
        await a.accept(factories.issue(2))
        taken = await take(a)
        for target in TARGETS:
            b.wakeup(target).clear()
        post = factories.postable(2, start=taken.now)
        await a.complete(taken, [Processed(taken.entries[0].inbox_id, [post])])
        for target in TARGETS:
            await asyncio.wait_for(b.wakeup(target).wait(), PROMPTLY)


async def test_a_take_still_finds_entries_when_notifications_are_lost(pg: PostgresTarget) -> None:
    async with replicas(pg) as (a, b):
        b.poll_interval = 0.05
        listener = b._listener
        listener.terminate()
        await a.accept(factories.issue(1))
        taken = await take(b)
        assert [e.alert.identity for e in taken.entries] == ["issue:1"]
        await b.abandon(taken)


async def test_a_take_waiting_on_a_held_identity_is_woken_when_it_is_free(
    pg: PostgresTarget,
) -> None:
    """b waits for issue:1, which a holds; a's complete (and, the next time, its abandon)
    tells b at once, with the poll fallback out of reach."""
    async with replicas(pg) as (a, b):
        a.poll_interval = b.poll_interval = 3600.0
        for title in ("first", "second", "third"):
            await a.accept(factories.issue(1, title=title))
        held = await take(a, limit=1)
        looked = found_nothing(b)
        waiting = asyncio.ensure_future(b.take(1))
        await asyncio.wait_for(looked.wait(), PROMPTLY)  # b found issue:1 held: it waits
        assert not waiting.done()
        await done(a, held)
        second = await asyncio.wait_for(waiting, PROMPTLY)
        assert [e.alert.title for e in second.entries] == ["second"]
        looked = found_nothing(a)
        waiting = asyncio.ensure_future(a.take(1))
        await asyncio.wait_for(looked.wait(), PROMPTLY)
        assert not waiting.done()
        await b.abandon(second)
        again = await asyncio.wait_for(waiting, PROMPTLY)
        assert [e.alert.title for e in again.entries] == ["second"]
        await done(a, again)


async def test_a_taker_is_idle_while_another_holds_every_waiting_identity(
    pg: PostgresTarget,
) -> None:
    """``idle`` is this replica's own progress (bridge.compose's watchdog and stop read it):
    b, waiting with only a's identity in the inbox, is idle, not stuck; once a completes,
    b takes what waited and is busy."""
    async with replicas(pg) as (a, b):
        await a.accept(factories.issue(1, title="first"))
        held = await take(a)
        await a.accept(factories.issue(1, title="second"))
        assert not a.idle()  # a's batch is out: a is busy, not idle
        waiting = asyncio.ensure_future(b.take(10))
        await until(b.idle)  # b looked: entries wait, none b may claim
        assert not waiting.done()
        await done(a, held)
        taken = await asyncio.wait_for(waiting, PROMPTLY)
        assert [e.alert.title for e in taken.entries] == ["second"]
        assert not b.idle()
        await done(b, taken)

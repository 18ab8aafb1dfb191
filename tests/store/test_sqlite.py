"""The SQLite engine's own, beyond the contract (tests/store/test_contract.py runs that
against every engine): a real file in tmp_path, what is accepted survives a restart and
is fsynced, accepts commit in groups, one bridge per file, the backlog and the active
alerts live in the file, and the sizes and ages follow the engine's clock."""

from __future__ import annotations

import asyncio
import contextlib
import gc
import sqlite3
import tracemalloc
from collections.abc import AsyncIterator, Callable, Sequence
from datetime import datetime, timedelta
from pathlib import Path

import pytest
from prometheus_client import CollectorRegistry

from bridge.alertmanager import PostableAlert, wire_json
from bridge.errors import ConfigError
from bridge.metrics import Metrics
from bridge.model import SentryAlert, Severity
from bridge.state import IdentityState
from bridge.store.contract import Failed, Processed, Queued
from bridge.store.sqlite import FILENAME, SqliteStore
from bridge.store.sqlite.schema import SCHEMA
from tests.clock import Clock
from tests.factories import START, commit, held, postable, sizes, stored_alert, stored_state
from tests.factories import issue as sentry
from tests.store import probes

pytestmark = pytest.mark.anyio

TARGETS = ("am-a:9093", "am-b:9093")


StoreFactory = Callable[..., SqliteStore]


@pytest.fixture
def clock() -> Clock:
    return Clock()


@pytest.fixture
def metrics() -> Metrics:
    return Metrics(CollectorRegistry())


@pytest.fixture
def make(tmp_path: Path, clock: Clock, metrics: Metrics) -> StoreFactory:
    def factory(targets: Sequence[str] = TARGETS, max_queued: int = 1000) -> SqliteStore:
        return SqliteStore(tmp_path, targets, max_queued=max_queued, metrics=metrics, clock=clock)

    return factory


@pytest.fixture
async def store(make: StoreFactory) -> AsyncIterator[SqliteStore]:
    store = make()
    await store.open()
    yield store
    await store.close()


async def reopen(store: SqliteStore, make: StoreFactory, **kwargs: object) -> SqliteStore:
    await store.close()
    again = make(**kwargs)
    await again.open()
    return again


async def ids_pending(store: SqliteStore, target: str) -> list[int]:
    return [item.id for item in await pending(store, target)]


async def pending(store: SqliteStore, target: str, limit: int = 100) -> list[Queued]:
    async with store.lane(target) as lane:
        assert lane is not None  # one replica: never busy
        return await lane.pending(limit)


async def advance(
    store: SqliteStore, target: str, done: int, dead: Sequence[tuple[Queued, str]] = ()
) -> None:
    async with store.lane(target) as lane:
        assert lane is not None
        await lane.advance(done, dead)


async def pages(store: SqliteStore, target: str = TARGETS[0], limit: int = 1) -> list[list[str]]:
    """A whole re-send round, page by page, each page in its own hold of the lane."""
    out: list[list[str]] = []
    after: object = None
    while True:
        async with store.lane(target) as lane:
            assert lane is not None
            page = await lane.resend_page(after, limit)
        out.append(list(page.bodies))
        if page.after is None:
            return out
        after = page.after


async def resend_snapshot(store: SqliteStore) -> list[PostableAlert]:
    """What a re-send round posts, in order (in pages smaller than what is stored)."""
    return [PostableAlert.model_validate_json(body) for page in await pages(store) for body in page]


async def deliver_all(store: SqliteStore, targets: Sequence[str] = TARGETS) -> None:
    for target in targets:
        items = await pending(store, target, 1000)
        if items:
            await advance(store, target, items[-1].id)


async def test_failed_entries_are_quarantined_in_the_same_transaction(
    store: SqliteStore, metrics: Metrics
) -> None:
    for n in range(2):
        await store.accept(sentry(n))
    taken = await store.take(2)
    good, bad = taken.entries
    commits = probes.Commits(store)
    await store.complete(
        taken,
        [Processed(good.inbox_id, [postable(0)], held({"issue:0": postable(0)}))],
        [Failed(bad.inbox_id, bad.alert, "RuntimeError: boom")],
    )
    assert commits.count == 1
    assert (
        (await sizes(store)).inbox,
        (await sizes(store)).behind,
        (await sizes(store)).quarantined,
    ) == (0, 1, 1)
    [entry] = await store.quarantined()
    assert (entry.reason, entry.detail) == ("pipeline_error", "RuntimeError: boom")
    assert entry.alert == sentry(1).to_json()
    value = metrics.registry.get_sample_value(
        "sentry_bridge_quarantined_total", {"reason": "pipeline_error"}
    )
    assert value == 1.0


async def test_everything_survives_close_and_reopen(store: SqliteStore, make: StoreFactory) -> None:
    for n in range(3):
        await store.accept(sentry(n))
    taken = await store.take(1)
    # Only the first was processed before the "restart"; the second was handed out.
    await store.complete(
        taken, [Processed(taken.entries[0].inbox_id, [postable(0)], held({"issue:0": postable(0)}))]
    )
    await store.take(1)

    again = await reopen(store, make)
    try:
        left = await again.take(10)
        assert [e.alert for e in left.entries] == [sentry(1), sentry(2)]  # leftovers first
        assert (await sizes(again)).inbox == 2
        await again.complete(left, [Processed(e.inbox_id, ()) for e in left.entries])
        assert await stored_alert(again, "issue:0") == postable(0)
        for target in TARGETS:
            items = await pending(again, target, 10)
            assert [PostableAlert.model_validate_json(i.body) for i in items] == [postable(0)]
        # New accepts come after the leftovers.
        await again.accept(sentry(3))
        assert [e.alert for e in (await again.take(10)).entries] == [sentry(3)]
    finally:
        await again.close()


async def test_group_commit(store: SqliteStore) -> None:
    commits = probes.Commits(store)
    await asyncio.gather(*(store.accept(sentry(n)) for n in range(200)))
    assert 1 <= commits.count <= 3  # one transaction per round, not per webhook
    assert (await sizes(store)).inbox == 200
    taken = await store.take(1000)
    assert [e.alert.identity for e in taken.entries] == [f"issue:{n}" for n in range(200)]


async def test_a_group_of_accepts_sees_its_bodies_in_one_statement_at_its_own_time(
    store: SqliteStore, clock: Clock
) -> None:
    # One seen-body upsert per group commit, not one per webhook, and the group's time is
    # read once: the inbox rows and the seen bodies are stamped alike (issue 15, perf).
    statements = probes.Statements(store)
    await statements.watch()
    commits = probes.Commits(store)
    reads = 0

    def counted() -> datetime:
        nonlocal reads
        reads += 1
        return clock()

    store.clock = counted
    got = await asyncio.gather(*(store.accept(sentry(n), bytes([n]) * 32) for n in range(50)))
    assert all(got)
    assert 1 <= commits.count <= 3
    assert statements.count("INSERT INTO seen_body") == commits.count
    assert reads == commits.count
    assert not await store.accept(sentry(7), bytes([7]) * 32)  # still seen: one statement
    assert statements.count("INSERT INTO seen_body") == commits.count


async def test_a_take_of_alerts_kept_in_memory_reads_no_inbox_row(store: SqliteStore) -> None:
    await store.accept(sentry(1))
    statements = probes.Statements(store)
    await statements.watch()
    taken = await store.take(10)
    assert [e.alert.identity for e in taken.entries] == ["issue:1"]
    assert statements.count("FROM inbox") == 0


async def test_a_lone_accept_commits_without_waiting_for_company(store: SqliteStore) -> None:
    commits = probes.Commits(store)
    await asyncio.wait_for(store.accept(sentry(1)), 5)
    assert commits.count == 1


async def test_accept_is_committed_when_it_returns(tmp_path: Path, store: SqliteStore) -> None:
    await store.accept(sentry(1))
    # The store holds an exclusive lock, so look at the WAL through a copy of the files.
    for suffix in ("", "-wal"):
        (tmp_path / f"copy{suffix}").write_bytes((tmp_path / f"{FILENAME}{suffix}").read_bytes())
    with sqlite3.connect(tmp_path / "copy") as db:
        assert db.execute("SELECT count(*) FROM inbox").fetchone() == (1,)


async def test_every_commit_is_fsynced(store: SqliteStore) -> None:
    # synchronous=FULL (2): the WAL is synced at every commit, so a 202 survives a power
    # loss, not only a crash of the process (https://www.sqlite.org/pragma.html).
    [mode] = await store._file.call(lambda: store._file.db.execute("PRAGMA synchronous").fetchone())
    assert mode == 2


async def test_each_alertmanager_settles_its_own_queue(
    store: SqliteStore, make: StoreFactory
) -> None:
    await commit(store, [postable(1), postable(2)])
    a, b = TARGETS
    await advance(store, a, (await ids_pending(store, a))[-1])
    assert await ids_pending(store, a) == []
    [first, second] = await ids_pending(store, b)
    assert (await sizes(store)).behind == 2

    again = await reopen(store, make)
    try:
        assert await ids_pending(again, a) == []  # progress is durable
        assert await ids_pending(again, b) == [first, second]
        await advance(again, b, first)
        assert await ids_pending(again, b) == [second]
        assert (await sizes(again)).behind == 1
        await advance(again, b, second)
        assert (await sizes(again)).behind == 0
    finally:
        await again.close()


async def test_a_single_target(make: StoreFactory) -> None:
    store = make(targets=["only:9093"])
    await store.open()
    try:
        await commit(store, [postable(1)])
        await deliver_all(store, ["only:9093"])
        assert (await sizes(store)).behind == 0
    finally:
        await store.close()


async def test_a_new_target_gets_what_is_decided_next_and_a_removed_one_holds_nothing(
    store: SqliteStore, make: StoreFactory
) -> None:
    await commit(store, [postable(1)])
    await deliver_all(store, TARGETS[:1])

    again = await reopen(store, make, targets=[TARGETS[0], "am-c:9093"])
    try:
        # am-b is gone from the config: nothing waits for it any more; am-c is new and
        # gets what is decided from now on (and the re-sends), as on PostgreSQL.
        assert (await sizes(again)).queued == {TARGETS[0]: 0, "am-c:9093": 0}
        await commit(again, [postable(2)])
        assert len(await ids_pending(again, "am-c:9093")) == 1
        await deliver_all(again, [TARGETS[0], "am-c:9093"])
        assert (await sizes(again)).behind == 0
    finally:
        await again.close()


async def test_queue_ids_are_not_reused_after_the_queue_empties(store: SqliteStore) -> None:
    for n in range(2):
        await commit(store, [postable(n)])
        assert len(await ids_pending(store, TARGETS[0])) == 1  # not hidden behind the cursor
        await deliver_all(store)


# --- lanes ----------------------------------------------------------------------------------


async def test_a_lane_is_held_by_one_sender_at_a_time_per_alertmanager(store: SqliteStore) -> None:
    a, b = TARGETS
    order: list[str] = []
    release = asyncio.Event()

    async def hold(target: str, name: str) -> None:
        async with store.lane(target) as lane:
            assert lane is not None  # one process: a lane is waited for, never refused
            order.append(f"{name} in")
            await release.wait()
            order.append(f"{name} out")

    first = asyncio.create_task(hold(a, "first"))
    second = asyncio.create_task(hold(a, "second"))
    other = asyncio.create_task(hold(b, "other"))
    async with asyncio.timeout(5):
        while len(order) < 2:
            await asyncio.sleep(0)
    assert order == ["first in", "other in"]  # the other Alertmanager's lane is free
    release.set()
    await asyncio.wait_for(asyncio.gather(first, second, other), 5)
    assert order.index("first out") < order.index("second in")
    assert await store.periodic()  # one replica: it runs the periodic jobs


# --- the active alerts: the states' ------------------------------------------------


async def test_active_alerts_follow_the_states_and_expire(
    store: SqliteStore, make: StoreFactory, clock: Clock
) -> None:
    for n in range(3):
        await store.accept(sentry(n))
    taken = await store.take(3)
    a, b, c = (e.inbox_id for e in taken.entries)
    short = postable(2, ends_in=60)
    await store.complete(
        taken,
        [
            Processed(a, [postable(1)], held({"issue:1": postable(1)})),
            Processed(b, [postable(5)], held({"issue:1": postable(5), "issue:0": None})),
            Processed(c, [short], held({"issue:2": short})),
        ],
    )
    assert await stored_alert(store, "issue:1") == postable(5)  # the later result wins
    assert await stored_alert(store, "issue:0") is None
    assert (await sizes(store)).active == 2

    clock.advance(61)
    await store.expire(resolved_for=900)
    assert (await sizes(store)).active == 1  # Alertmanager has expired issue:2 as well

    again = await reopen(store, make)
    try:
        assert (await sizes(again)).active == 1
        assert await resend_snapshot(again) == [postable(5)]
    finally:
        await again.close()


async def test_resolved_alerts_are_re_sent_for_a_while(
    store: SqliteStore, make: StoreFactory, clock: Clock
) -> None:
    firing = postable(1)
    await commit(store, [firing], held({"issue:1": firing}))
    assert await resend_snapshot(store) == [firing]

    clock.advance(10)
    resolved = firing.model_copy(update={"ends_at": clock()})
    await commit(store, [resolved], held({"issue:1": None}))
    assert await resend_snapshot(store) == [resolved]

    store = await reopen(store, make)
    try:
        assert await resend_snapshot(store) == [resolved]  # durable too
        clock.advance(899)
        await store.expire(resolved_for=900)
        assert await resend_snapshot(store) == [resolved]
        clock.advance(1)
        await store.expire(resolved_for=900)
        assert await resend_snapshot(store) == []
    finally:
        await store.close()


async def test_gauges(store: SqliteStore, metrics: Metrics, clock: Clock) -> None:
    """What one read of the sizes shows (bridge.compose shows it at each scrape)."""

    def value(name: str) -> float | None:
        return metrics.registry.get_sample_value(f"sentry_bridge_{name}")

    async def show() -> None:
        metrics.show_store(await sizes(store))

    await show()

    assert (value("store_queued_alerts"), value("store_queued_oldest_age_seconds")) == (0, 0)
    await store.accept(sentry(1))
    clock.advance(30)
    await store.accept(sentry(2))
    clock.advance(5)
    await show()
    assert (value("store_queued_alerts"), value("store_queued_oldest_age_seconds")) == (2, 35)

    first = await store.take(1)
    [a] = first.entries
    await store.complete(
        first, [Processed(a.inbox_id, [postable(1), postable(2)], held({"issue:1": postable(1)}))]
    )
    await show()
    assert value("store_queued_alerts") == 3  # one inbox entry left, two queued alerts
    assert value("store_queued_oldest_age_seconds") == 35  # ages count from acceptance
    assert value("active_alerts") == 1
    second = await store.take(1)
    await store.complete(second, [Processed(second.entries[0].inbox_id, [])])
    await deliver_all(store)
    await show()
    assert (value("store_queued_alerts"), value("store_queued_oldest_age_seconds")) == (0, 0)


async def test_one_bridge_per_data_dir(
    store: SqliteStore, make: StoreFactory, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(SqliteStore, "lock_timeout_ms", 0)
    second = make()
    with pytest.raises(ConfigError, match="another bridge"):
        await second.open()
    await second.close()


async def test_a_store_of_another_schema_version_is_refused(
    tmp_path: Path, make: StoreFactory
) -> None:
    """Schema 1 (no release had it) had another shape (issue 15): refused at open, naming
    both versions, rather than failing at the first write."""
    db = sqlite3.connect(tmp_path / FILENAME)
    db.execute(
        "CREATE TABLE state (identity TEXT PRIMARY KEY, kept_until REAL NOT NULL,"
        " state TEXT NOT NULL)"
    )
    db.close()
    old = make()
    with pytest.raises(ConfigError, match="schema version 0, this bridge needs 3"):
        await old.open()
    await old.close()
    (tmp_path / FILENAME).unlink()
    fresh = make()
    await fresh.open()
    await fresh.close()
    again = make()
    await again.open()  # stamped with its version: opens again
    await again.close()


async def test_a_version_2_store_gains_the_escalation_column(
    tmp_path: Path, make: StoreFactory
) -> None:
    """Version 3 (issue 16) only adds ``state.due_at``: a version 2 file is upgraded at open,
    its states kept."""
    db = sqlite3.connect(tmp_path / FILENAME)
    db.executescript(
        SCHEMA.replace(", due_at REAL", "").replace(
            "CREATE INDEX IF NOT EXISTS state_due_at ON state (due_at) WHERE due_at IS NOT NULL;",
            "",
        )
    )
    db.execute("INSERT INTO state VALUES ('issue:1', 1e12, 0, NULL, '{}')")
    db.execute("PRAGMA user_version = 2")
    db.commit()
    db.close()
    store = make()
    await store.open()
    await store.close()
    db = sqlite3.connect(tmp_path / FILENAME)
    assert db.execute("PRAGMA user_version").fetchone()[0] == 3
    assert db.execute("SELECT identity, due_at FROM state").fetchall() == [("issue:1", None)]
    db.close()


@pytest.mark.parametrize(
    "targets",
    [pytest.param([], id="none"), pytest.param(["a:1", "a:1"], id="duplicate")],
)
def test_targets_are_checked(tmp_path: Path, metrics: Metrics, targets: list[str]) -> None:
    with pytest.raises(ConfigError):
        SqliteStore(tmp_path, targets, max_queued=10, metrics=metrics)


# --- memory: alerts live in the file ---------------------------------------------------------


async def complete_each(
    store: SqliteStore, alerts: Sequence[tuple[SentryAlert, PostableAlert]]
) -> None:
    for alert, current in alerts:
        await store.accept(alert)
        taken = await store.take(1)
        [entry] = taken.entries
        await store.complete(
            taken, [Processed(entry.inbox_id, [current], held({alert.identity: current}))]
        )
    await deliver_all(store)


async def test_a_backlog_beyond_kept_in_memory_is_read_back(make: StoreFactory) -> None:
    store = make()
    store.kept_in_memory = 2
    await store.open()
    try:
        await asyncio.gather(*(store.accept(sentry(n)) for n in range(5)))
        assert [e.alert for e in (await store.take(3)).entries] == [sentry(n) for n in range(3)]
        assert [e.alert for e in (await store.take(10)).entries] == [sentry(3), sentry(4)]
    finally:
        await store.close()


async def test_an_unreadable_inbox_entry_is_dropped(
    store: SqliteStore, make: StoreFactory, tmp_path: Path
) -> None:
    for n in range(3):
        await store.accept(sentry(n))
    await store.close()
    with contextlib.closing(sqlite3.connect(tmp_path / FILENAME)) as db, db:
        db.execute('UPDATE inbox SET alert = \'{"not": "an alert"}\' WHERE id = 2')
    again = make()
    await again.open()
    try:
        assert (await sizes(again)).inbox == 3
        assert [e.alert for e in (await again.take(10)).entries] == [sentry(0), sentry(2)]
        assert (await sizes(again)).inbox == 2
    finally:
        await again.close()


async def test_a_cancelled_take_hands_out_nothing(store: SqliteStore) -> None:
    for n in range(2):
        await store.accept(sentry(n))
    taking = asyncio.create_task(store.take(10))
    await asyncio.sleep(0)  # it has taken the entries and waits for the disk
    taking.cancel()
    with pytest.raises(asyncio.CancelledError):
        await taking
    again = await asyncio.wait_for(store.take(10), 5)
    assert [e.alert for e in again.entries] == [sentry(0), sentry(1)]


async def test_re_sends_are_read_in_pages_resolved_first(store: SqliteStore, clock: Clock) -> None:
    await complete_each(store, [(sentry(n), postable(n)) for n in range(4)])
    resolved = postable(9, ends_in=0)
    await commit(store, [resolved])

    round_ = await pages(store, limit=2)
    # Keyset pages across both tables; the last one says it is the last.
    assert [len(page) for page in round_] == [2, 2, 1]
    assert [PostableAlert.model_validate_json(b) for page in round_ for b in page] == [
        resolved,
        *(postable(n) for n in range(4)),
    ]
    assert round_[0][1] == wire_json(postable(0))  # as stored, not re-serialised
    assert await pages(store, limit=5) == [[b for page in round_ for b in page]]
    assert [len(page) for page in await pages(store, limit=1)] == [1] * 5


async def test_a_re_send_page_reads_what_is_there_at_the_time(store: SqliteStore) -> None:
    """Keyset pages: an alert replaced or resolved between two pages is re-sent as it is
    when its page is read, never as it was when the round began."""
    await complete_each(store, [(sentry(n), postable(n)) for n in range(3)])
    async with store.lane(TARGETS[0]) as lane:
        assert lane is not None
        first = await lane.resend_page(None, 1)
    assert first.bodies == [wire_json(postable(0))]
    resolved = postable(2, ends_in=0)
    await commit(store, [resolved], held({"issue:2": None}))  # decided mid-round
    async with store.lane(TARGETS[0]) as lane:
        assert lane is not None
        rest = await lane.resend_page(first.after, 10)
    assert (rest.bodies, rest.after) == ([wire_json(postable(1))], None)


async def test_an_empty_round_is_one_empty_last_page(store: SqliteStore) -> None:
    assert await pages(store, limit=10) == [[]]


async def test_sizes_follow_the_file(store: SqliteStore, make: StoreFactory, clock: Clock) -> None:
    await complete_each(store, [(sentry(1), postable(1)), (sentry(2), postable(2, ends_in=60))])
    await complete_each(store, [(sentry(1), postable(1, ends_in=120))])  # replaced, not added
    await commit(store, [postable(3, ends_in=0)])
    assert ((await sizes(store)).active, (await sizes(store)).resendable) == (2, 3)

    again = await reopen(store, make)
    try:
        assert ((await sizes(again)).active, (await sizes(again)).resendable) == (2, 3)
        clock.advance(61)
        await again.expire(resolved_for=60)
        assert ((await sizes(again)).active, (await sizes(again)).resendable) == (1, 1)
    finally:
        await again.close()


async def test_active_alerts_are_not_held_in_memory(store: SqliteStore) -> None:
    def alerts(first: int) -> list[tuple[SentryAlert, PostableAlert]]:
        return [(sentry(n), postable(n)) for n in range(first, first + 300)]

    await complete_each(store, alerts(0))  # warm-up: caches, lazily built schemas
    gc.collect()
    tracemalloc.start()
    try:
        before = tracemalloc.get_traced_memory()[0]
        await complete_each(store, alerts(1000))
        gc.collect()
        grown = tracemalloc.get_traced_memory()[0] - before
    finally:
        tracemalloc.stop()
    assert (await sizes(store)).active == 600
    # As objects, 300 such alerts took some 370 KB; now some 20 KB of allocator noise.
    assert grown < 100_000


# --- the state machine's states (bridge.state) ------------------------------------------------


def a_state(n: int) -> IdentityState:
    return IdentityState(alert=postable(n), severity=Severity.HIGH, environments=("production",))


async def test_states_are_written_with_the_batch_kept_and_expired(
    store: SqliteStore, make: StoreFactory, clock: Clock
) -> None:
    until = START + timedelta(hours=2)
    for n in range(3):
        await store.accept(sentry(n))
    taken = await store.take(3)
    a, b, c = (e.inbox_id for e in taken.entries)
    await store.complete(
        taken,
        [
            Processed(a, send=(), states={"issue:1": (a_state(1), until)}),
            Processed(b, send=(), states={"issue:2": (a_state(2), until)}),
            Processed(c, send=(), states={"issue:2": (a_state(3), None)}),
        ],
    )
    assert await stored_state(store, "issue:1") == a_state(1)
    assert await stored_state(store, "issue:2") is None  # the later result forgot it
    assert (await sizes(store)).active == 1  # what the states hold
    again = await reopen(store, make)
    try:
        assert await stored_state(again, "issue:1") == a_state(1)
        clock.advance(2 * 3600)
        await again.expire(resolved_for=900)
        assert await stored_state(again, "issue:1") is None
    finally:
        await again.close()
        await store.open()  # the fixture closes it again

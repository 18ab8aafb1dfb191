"""The durable outbox against a real SQLite file in tmp_path: what is accepted
survives a restart, groups commit together, and an alert leaves the queue only
when every Alertmanager is done with it."""

from __future__ import annotations

import asyncio
import contextlib
import gc
import sqlite3
import tracemalloc
from collections.abc import AsyncIterator, Callable, Sequence
from datetime import timedelta
from pathlib import Path

import pytest
from prometheus_client import CollectorRegistry

from bridge.alertmanager import PostableAlert, wire_json
from bridge.errors import ConfigError, StoreFull
from bridge.metrics import Metrics
from bridge.model import SentryAlert, Severity
from bridge.state import IdentityState
from bridge.store.contract import Failed, Processed, Queued
from bridge.store.sqlite import FILENAME, SqliteStore
from bridge.store.sqlite.schema import SCHEMA
from tests.clock import Clock
from tests.factories import START, commit, held, postable, stored_alert, stored_state
from tests.factories import issue as sentry
from tests.store import probes

pytestmark = pytest.mark.anyio

TARGETS = ("am-a:9093", "am-b:9093")


OutboxFactory = Callable[..., SqliteStore]


@pytest.fixture
def clock() -> Clock:
    return Clock()


@pytest.fixture
def metrics() -> Metrics:
    return Metrics(CollectorRegistry())


@pytest.fixture
def make(tmp_path: Path, clock: Clock, metrics: Metrics) -> OutboxFactory:
    def factory(targets: Sequence[str] = TARGETS, max_queued: int = 1000) -> SqliteStore:
        return SqliteStore(tmp_path, targets, max_queued=max_queued, metrics=metrics, clock=clock)

    return factory


@pytest.fixture
async def outbox(make: OutboxFactory) -> AsyncIterator[SqliteStore]:
    box = make()
    await box.open()
    yield box
    await box.close()


async def reopen(box: SqliteStore, make: OutboxFactory, **kwargs: object) -> SqliteStore:
    await box.close()
    again = make(**kwargs)
    await again.open()
    return again


async def ids_pending(box: SqliteStore, target: str) -> list[int]:
    return [item.id for item in await pending(box, target)]


async def pending(box: SqliteStore, target: str, limit: int = 100) -> list[Queued]:
    async with box.lane(target) as lane:
        assert lane is not None  # one replica: never busy
        return await lane.pending(limit)


async def advance(
    box: SqliteStore, target: str, done: int, dead: Sequence[tuple[Queued, str]] = ()
) -> None:
    async with box.lane(target) as lane:
        assert lane is not None
        await lane.advance(done, dead)


async def pages(box: SqliteStore, target: str = TARGETS[0], limit: int = 1) -> list[list[str]]:
    """A whole re-send round, page by page, each page in its own hold of the lane."""
    out: list[list[str]] = []
    after: object = None
    while True:
        async with box.lane(target) as lane:
            assert lane is not None
            page = await lane.resend_page(after, limit)
        out.append(list(page.bodies))
        if page.after is None:
            return out
        after = page.after


async def resend_snapshot(box: SqliteStore) -> list[PostableAlert]:
    """What a re-send round posts, in order (in pages smaller than what is stored)."""
    return [PostableAlert.model_validate_json(body) for page in await pages(box) for body in page]


async def deliver_all(box: SqliteStore, targets: Sequence[str] = TARGETS) -> None:
    for target in targets:
        items = await pending(box, target, 1000)
        if items:
            await advance(box, target, items[-1].id)


async def test_round_trip_in_order(outbox: SqliteStore, clock: Clock) -> None:
    for n in range(3):
        await outbox.accept(sentry(n))
        clock.advance(1)
    taken = await outbox.take(10)
    assert [e.alert.identity for e in taken.entries] == ["issue:0", "issue:1", "issue:2"]
    assert taken.entries[0].alert == sentry(0)  # the whole alert, not a summary
    assert [e.accepted_at for e in taken.entries] == [
        START + timedelta(seconds=n) for n in range(3)
    ]
    assert (taken.now, taken.states) == (clock(), {})

    await outbox.complete(
        taken,
        [
            Processed(e.inbox_id, [postable(n)], held({f"issue:{n}": postable(n)}))
            for n, e in enumerate(taken.entries)
        ],
    )

    assert outbox.inbox_count() == 0
    assert outbox.queued_count() == 3
    assert await stored_alert(outbox, "issue:1") == postable(1)
    assert outbox.active_count() == 3
    for target in TARGETS:
        items = await pending(outbox, target)
        assert [PostableAlert.model_validate_json(i.body) for i in items] == [
            postable(0),
            postable(1),
            postable(2),
        ]
    await deliver_all(outbox)
    assert outbox.queued_count() == 0


async def test_take_limits_and_keeps_arrival_order(outbox: SqliteStore) -> None:
    await asyncio.gather(*(outbox.accept(sentry(n)) for n in range(10)))
    first = (await outbox.take(4)).entries
    rest = (await outbox.take(100)).entries
    assert [e.alert.identity for e in [*first, *rest]] == [f"issue:{n}" for n in range(10)]
    ids = [e.inbox_id for e in [*first, *rest]]
    assert ids == sorted(ids)


async def test_take_waits_for_an_accept(outbox: SqliteStore) -> None:
    waiting = asyncio.create_task(outbox.take(10))
    await asyncio.sleep(0)
    assert not waiting.done()
    await outbox.accept(sentry(7))
    taken = await asyncio.wait_for(waiting, 5)
    assert [e.alert.identity for e in taken.entries] == ["issue:7"]


async def test_abandoned_entries_are_handed_out_again_first_in_order(outbox: SqliteStore) -> None:
    for n in range(3):
        await outbox.accept(sentry(n))
    first = await outbox.take(2)
    await outbox.accept(sentry(3))  # accepted while the batch was out
    await outbox.abandon(first)
    again = await outbox.take(10)
    assert [e.alert for e in again.entries] == [sentry(n) for n in range(4)]
    assert [e.inbox_id for e in again.entries[:2]] == [e.inbox_id for e in first.entries]
    assert outbox.inbox_count() == 4  # nothing left the inbox


async def test_complete_needs_every_taken_entry_once(outbox: SqliteStore) -> None:
    for n in range(2):
        await outbox.accept(sentry(n))
    taken = await outbox.take(2)
    a, b = (e.inbox_id for e in taken.entries)
    with pytest.raises(ValueError, match="every taken entry"):
        await outbox.complete(taken, [Processed(a, [postable(0)])])
    with pytest.raises(ValueError, match="every taken entry"):
        await outbox.complete(taken, [Processed(a, ()), Processed(a, ())], [])
    assert outbox.queued_count() == 0
    await outbox.complete(taken, [Processed(a, ()), Processed(b, ())])
    assert outbox.inbox_count() == 0


async def test_failed_entries_are_quarantined_in_the_same_transaction(
    outbox: SqliteStore, metrics: Metrics
) -> None:
    for n in range(2):
        await outbox.accept(sentry(n))
    taken = await outbox.take(2)
    good, bad = taken.entries
    commits = probes.Commits(outbox)
    await outbox.complete(
        taken,
        [Processed(good.inbox_id, [postable(0)], held({"issue:0": postable(0)}))],
        [Failed(bad.inbox_id, bad.alert, "RuntimeError: boom")],
    )
    assert commits.count == 1
    assert (outbox.inbox_count(), outbox.queued_count(), outbox.quarantine_count()) == (0, 1, 1)
    [entry] = await outbox.quarantined()
    assert (entry.reason, entry.detail) == ("pipeline_error", "RuntimeError: boom")
    assert entry.alert == sentry(1).to_json()
    value = metrics.registry.get_sample_value(
        "sentry_bridge_quarantined_total", {"reason": "pipeline_error"}
    )
    assert value == 1.0


async def test_queue_keeps_send_order_across_results(outbox: SqliteStore) -> None:
    for n in range(2):
        await outbox.accept(sentry(n))
    taken = await outbox.take(2)
    a, b = (e.inbox_id for e in taken.entries)
    resolved_old = postable(9, ends_in=0)
    await outbox.complete(
        taken,
        [
            Processed(a, [resolved_old, postable(0)], held({"issue:0": postable(0)})),
            Processed(b, [postable(1)], held({"issue:1": postable(1)})),
        ],
    )
    bodies = [PostableAlert.model_validate_json(i.body) for i in await pending(outbox, TARGETS[0])]
    assert bodies == [resolved_old, postable(0), postable(1)]


async def test_everything_survives_close_and_reopen(
    outbox: SqliteStore, make: OutboxFactory
) -> None:
    for n in range(3):
        await outbox.accept(sentry(n))
    taken = await outbox.take(1)
    # Only the first was processed before the "restart"; the second was handed out.
    await outbox.complete(
        taken, [Processed(taken.entries[0].inbox_id, [postable(0)], held({"issue:0": postable(0)}))]
    )
    await outbox.take(1)

    again = await reopen(outbox, make)
    try:
        left = await again.take(10)
        assert [e.alert for e in left.entries] == [sentry(1), sentry(2)]  # leftovers first
        assert again.inbox_count() == 2
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


async def test_group_commit(outbox: SqliteStore) -> None:
    commits = probes.Commits(outbox)
    await asyncio.gather(*(outbox.accept(sentry(n)) for n in range(200)))
    assert 1 <= commits.count <= 3  # one transaction per round, not per webhook
    assert outbox.inbox_count() == 200
    taken = await outbox.take(1000)
    assert [e.alert.identity for e in taken.entries] == [f"issue:{n}" for n in range(200)]


async def test_a_lone_accept_commits_without_waiting_for_company(outbox: SqliteStore) -> None:
    commits = probes.Commits(outbox)
    await asyncio.wait_for(outbox.accept(sentry(1)), 5)
    assert commits.count == 1


async def test_accept_is_committed_when_it_returns(tmp_path: Path, outbox: SqliteStore) -> None:
    await outbox.accept(sentry(1))
    # The outbox holds an exclusive lock, so look at the WAL through a copy of the files.
    for suffix in ("", "-wal"):
        (tmp_path / f"copy{suffix}").write_bytes((tmp_path / f"{FILENAME}{suffix}").read_bytes())
    with sqlite3.connect(tmp_path / "copy") as db:
        assert db.execute("SELECT count(*) FROM inbox").fetchone() == (1,)


async def test_every_commit_is_fsynced(outbox: SqliteStore) -> None:
    # synchronous=FULL (2): the WAL is synced at every commit, so a 202 survives a power
    # loss, not only a crash of the process (https://www.sqlite.org/pragma.html).
    [mode] = await outbox._file.call(
        lambda: outbox._file.db.execute("PRAGMA synchronous").fetchone()
    )
    assert mode == 2


async def test_store_full_counts_inbox_and_queue(make: OutboxFactory) -> None:
    box = make(max_queued=3)
    await box.open()
    try:
        for n in range(3):
            await box.accept(sentry(n))
        with pytest.raises(StoreFull) as excinfo:
            await box.accept(sentry(3))
        assert excinfo.value.detail == "the store is full"

        taken = await box.take(10)
        await box.complete(
            taken, [Processed(e.inbox_id, [postable(n)]) for n, e in enumerate(taken.entries)]
        )
        with pytest.raises(StoreFull):  # now queued for Alertmanager: still held
            await box.accept(sentry(3))

        await deliver_all(box, TARGETS[:1])
        with pytest.raises(StoreFull):  # one Alertmanager still needs them
            await box.accept(sentry(3))
        await deliver_all(box, TARGETS[1:])
        await box.accept(sentry(3))
    finally:
        await box.close()


async def test_each_alertmanager_settles_its_own_queue(
    outbox: SqliteStore, make: OutboxFactory
) -> None:
    await commit(outbox, [postable(1), postable(2)])
    a, b = TARGETS
    await advance(outbox, a, (await ids_pending(outbox, a))[-1])
    assert await ids_pending(outbox, a) == []
    [first, second] = await ids_pending(outbox, b)
    assert outbox.queued_count() == 2

    again = await reopen(outbox, make)
    try:
        assert await ids_pending(again, a) == []  # progress is durable
        assert await ids_pending(again, b) == [first, second]
        await advance(again, b, first)
        assert await ids_pending(again, b) == [second]
        assert again.queued_count() == 1
        await advance(again, b, second)
        assert again.queued_count() == 0
    finally:
        await again.close()


async def test_a_single_target(make: OutboxFactory) -> None:
    box = make(targets=["only:9093"])
    await box.open()
    try:
        await commit(box, [postable(1)])
        await deliver_all(box, ["only:9093"])
        assert box.queued_count() == 0
    finally:
        await box.close()


async def test_a_new_target_gets_what_is_decided_next_and_a_removed_one_holds_nothing(
    outbox: SqliteStore, make: OutboxFactory
) -> None:
    await commit(outbox, [postable(1)])
    await deliver_all(outbox, TARGETS[:1])

    again = await reopen(outbox, make, targets=[TARGETS[0], "am-c:9093"])
    try:
        # am-b is gone from the config: nothing waits for it any more; am-c is new and
        # gets what is decided from now on (and the re-sends), as on PostgreSQL.
        assert again.queue_depths() == {TARGETS[0]: 0, "am-c:9093": 0}
        await commit(again, [postable(2)])
        assert len(await ids_pending(again, "am-c:9093")) == 1
        await deliver_all(again, [TARGETS[0], "am-c:9093"])
        assert again.queued_count() == 0
    finally:
        await again.close()


async def test_queue_ids_are_not_reused_after_the_queue_empties(outbox: SqliteStore) -> None:
    for n in range(2):
        await commit(outbox, [postable(n)])
        assert len(await ids_pending(outbox, TARGETS[0])) == 1  # not hidden behind the cursor
        await deliver_all(outbox)


async def test_dead_letters_are_kept(outbox: SqliteStore) -> None:
    await commit(outbox, [postable(1)])
    [item] = await pending(outbox, TARGETS[0], 10)
    await advance(outbox, TARGETS[0], item.id, [(item, "HTTP 400: bad")])
    assert await outbox.dead_letters() == [(TARGETS[0], "HTTP 400: bad", postable(1).wire())]


async def test_only_the_newest_dead_letters_are_kept(outbox: SqliteStore) -> None:
    outbox.dead_letters_kept = 2
    await commit(outbox, [postable(n) for n in range(3)])
    for item in await pending(outbox, TARGETS[0], 10):
        await advance(outbox, TARGETS[0], item.id, [(item, f"reason {item.id}")])
    assert [alert for _, _, alert in await outbox.dead_letters()] == [
        postable(1).wire(),
        postable(2).wire(),
    ]


# --- lanes ----------------------------------------------------------------------------------


async def test_a_lane_is_held_by_one_sender_at_a_time_per_alertmanager(outbox: SqliteStore) -> None:
    a, b = TARGETS
    order: list[str] = []
    release = asyncio.Event()

    async def hold(target: str, name: str) -> None:
        async with outbox.lane(target) as lane:
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
    assert await outbox.periodic()  # one replica: it runs the periodic jobs


# --- the active table: derived from the states ------------------------------------------------


async def test_active_table_follows_the_states_and_expires(
    outbox: SqliteStore, make: OutboxFactory, clock: Clock
) -> None:
    for n in range(3):
        await outbox.accept(sentry(n))
    taken = await outbox.take(3)
    a, b, c = (e.inbox_id for e in taken.entries)
    short = postable(2, ends_in=60)
    await outbox.complete(
        taken,
        [
            Processed(a, [postable(1)], held({"issue:1": postable(1)})),
            Processed(b, [postable(5)], held({"issue:1": postable(5), "issue:0": None})),
            Processed(c, [short], held({"issue:2": short})),
        ],
    )
    assert await stored_alert(outbox, "issue:1") == postable(5)  # the later result wins
    assert await stored_alert(outbox, "issue:0") is None
    assert outbox.active_count() == 2

    clock.advance(61)
    await outbox.expire(resolved_for=900)
    assert outbox.active_count() == 1  # Alertmanager has expired issue:2 as well

    again = await reopen(outbox, make)
    try:
        assert again.active_count() == 1
        assert await resend_snapshot(again) == [postable(5)]
    finally:
        await again.close()


async def test_a_forgotten_state_holds_nothing_active(outbox: SqliteStore) -> None:
    await commit(outbox, [postable(1)], held({"issue:1": postable(1)}))
    state = IdentityState(alert=postable(1))
    await commit(outbox, [], {"issue:1": (state, None)})
    assert (outbox.active_count(), await stored_state(outbox, "issue:1")) == (0, None)
    assert await resend_snapshot(outbox) == []


async def test_resolved_alerts_are_re_sent_for_a_while(
    outbox: SqliteStore, make: OutboxFactory, clock: Clock
) -> None:
    firing = postable(1)
    await commit(outbox, [firing], held({"issue:1": firing}))
    assert await resend_snapshot(outbox) == [firing]

    clock.advance(10)
    resolved = firing.model_copy(update={"ends_at": clock()})
    await commit(outbox, [resolved], held({"issue:1": None}))
    assert await resend_snapshot(outbox) == [resolved]

    outbox = await reopen(outbox, make)
    try:
        assert await resend_snapshot(outbox) == [resolved]  # durable too
        clock.advance(899)
        await outbox.expire(resolved_for=900)
        assert await resend_snapshot(outbox) == [resolved]
        clock.advance(1)
        await outbox.expire(resolved_for=900)
        assert await resend_snapshot(outbox) == []
    finally:
        await outbox.close()


async def test_gauges(outbox: SqliteStore, metrics: Metrics, clock: Clock) -> None:
    def value(name: str) -> float | None:
        return metrics.registry.get_sample_value(f"sentry_bridge_{name}")

    assert (value("store_queued_alerts"), value("store_queued_oldest_age_seconds")) == (0, 0)
    await outbox.accept(sentry(1))
    clock.advance(30)
    await outbox.accept(sentry(2))
    clock.advance(5)
    assert (value("store_queued_alerts"), value("store_queued_oldest_age_seconds")) == (2, 35)

    first = await outbox.take(1)
    [a] = first.entries
    await outbox.complete(
        first, [Processed(a.inbox_id, [postable(1), postable(2)], held({"issue:1": postable(1)}))]
    )
    assert value("store_queued_alerts") == 3  # one inbox entry left, two queued alerts
    assert value("store_queued_oldest_age_seconds") == 35  # ages count from acceptance
    assert value("active_alerts") == 1
    second = await outbox.take(1)
    await outbox.complete(second, [Processed(second.entries[0].inbox_id, [])])
    await deliver_all(outbox)
    assert (value("store_queued_alerts"), value("store_queued_oldest_age_seconds")) == (0, 0)


async def test_one_bridge_per_data_dir(
    outbox: SqliteStore, make: OutboxFactory, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(SqliteStore, "lock_timeout_ms", 0)
    second = make()
    with pytest.raises(ConfigError, match="another bridge"):
        await second.open()
    await second.close()


async def test_an_outbox_of_another_schema_version_is_refused(
    tmp_path: Path, make: OutboxFactory
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
    tmp_path: Path, make: OutboxFactory
) -> None:
    """Version 3 (issue 16) only adds ``state.due_at``: a version 2 file is upgraded at open,
    its states kept."""
    db = sqlite3.connect(tmp_path / FILENAME)
    db.executescript(SCHEMA.replace(", due_at REAL", ""))
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
    box: SqliteStore, alerts: Sequence[tuple[SentryAlert, PostableAlert]]
) -> None:
    for alert, current in alerts:
        await box.accept(alert)
        taken = await box.take(1)
        [entry] = taken.entries
        await box.complete(
            taken, [Processed(entry.inbox_id, [current], held({alert.identity: current}))]
        )
    await deliver_all(box)


async def test_a_backlog_beyond_kept_in_memory_is_read_back(make: OutboxFactory) -> None:
    box = make()
    box.kept_in_memory = 2
    await box.open()
    try:
        await asyncio.gather(*(box.accept(sentry(n)) for n in range(5)))
        assert [e.alert for e in (await box.take(3)).entries] == [sentry(n) for n in range(3)]
        assert [e.alert for e in (await box.take(10)).entries] == [sentry(3), sentry(4)]
    finally:
        await box.close()


async def test_an_unreadable_inbox_entry_is_dropped(
    outbox: SqliteStore, make: OutboxFactory, tmp_path: Path
) -> None:
    for n in range(3):
        await outbox.accept(sentry(n))
    await outbox.close()
    with contextlib.closing(sqlite3.connect(tmp_path / FILENAME)) as db, db:
        db.execute('UPDATE inbox SET alert = \'{"not": "an alert"}\' WHERE id = 2')
    again = make()
    await again.open()
    try:
        assert again.inbox_count() == 3
        assert [e.alert for e in (await again.take(10)).entries] == [sentry(0), sentry(2)]
        assert again.inbox_count() == 2
    finally:
        await again.close()


async def test_a_cancelled_take_hands_out_nothing(outbox: SqliteStore) -> None:
    for n in range(2):
        await outbox.accept(sentry(n))
    taking = asyncio.create_task(outbox.take(10))
    await asyncio.sleep(0)  # it has taken the entries and waits for the disk
    taking.cancel()
    with pytest.raises(asyncio.CancelledError):
        await taking
    again = await asyncio.wait_for(outbox.take(10), 5)
    assert [e.alert for e in again.entries] == [sentry(0), sentry(1)]


async def test_re_sends_are_read_in_pages_resolved_first(outbox: SqliteStore, clock: Clock) -> None:
    await complete_each(outbox, [(sentry(n), postable(n)) for n in range(4)])
    resolved = postable(9, ends_in=0)
    await commit(outbox, [resolved])

    round_ = await pages(outbox, limit=2)
    # Keyset pages across both tables; the last one says it is the last.
    assert [len(page) for page in round_] == [2, 2, 1]
    assert [PostableAlert.model_validate_json(b) for page in round_ for b in page] == [
        resolved,
        *(postable(n) for n in range(4)),
    ]
    assert round_[0][1] == wire_json(postable(0))  # as stored, not re-serialised
    assert await pages(outbox, limit=5) == [[b for page in round_ for b in page]]
    assert [len(page) for page in await pages(outbox, limit=1)] == [1] * 5


async def test_a_re_send_page_reads_what_is_there_at_the_time(outbox: SqliteStore) -> None:
    """Keyset pages: an alert replaced or resolved between two pages is re-sent as it is
    when its page is read, never as it was when the round began."""
    await complete_each(outbox, [(sentry(n), postable(n)) for n in range(3)])
    async with outbox.lane(TARGETS[0]) as lane:
        assert lane is not None
        first = await lane.resend_page(None, 1)
    assert first.bodies == [wire_json(postable(0))]
    resolved = postable(2, ends_in=0)
    await commit(outbox, [resolved], held({"issue:2": None}))  # decided mid-round
    async with outbox.lane(TARGETS[0]) as lane:
        assert lane is not None
        rest = await lane.resend_page(first.after, 10)
    assert (rest.bodies, rest.after) == ([wire_json(postable(1))], None)


async def test_an_empty_round_is_one_empty_last_page(outbox: SqliteStore) -> None:
    assert await pages(outbox, limit=10) == [[]]


async def test_counts_follow_the_file(
    outbox: SqliteStore, make: OutboxFactory, clock: Clock
) -> None:
    await complete_each(outbox, [(sentry(1), postable(1)), (sentry(2), postable(2, ends_in=60))])
    await complete_each(outbox, [(sentry(1), postable(1, ends_in=120))])  # replaced, not added
    await commit(outbox, [postable(3, ends_in=0)])
    assert (outbox.active_count(), outbox.resendable_count()) == (2, 3)

    again = await reopen(outbox, make)
    try:
        assert (again.active_count(), again.resendable_count()) == (2, 3)
        clock.advance(61)
        await again.expire(resolved_for=60)
        assert (again.active_count(), again.resendable_count()) == (1, 1)
    finally:
        await again.close()


async def test_active_alerts_are_not_held_in_memory(outbox: SqliteStore) -> None:
    def alerts(first: int) -> list[tuple[SentryAlert, PostableAlert]]:
        return [(sentry(n), postable(n)) for n in range(first, first + 300)]

    await complete_each(outbox, alerts(0))  # warm-up: caches, lazily built schemas
    gc.collect()
    tracemalloc.start()
    try:
        before = tracemalloc.get_traced_memory()[0]
        await complete_each(outbox, alerts(1000))
        gc.collect()
        grown = tracemalloc.get_traced_memory()[0] - before
    finally:
        tracemalloc.stop()
    assert outbox.active_count() == 600
    # As objects, 300 such alerts took some 370 KB; now some 20 KB of allocator noise.
    assert grown < 100_000


# --- the state machine's states (bridge.state) ------------------------------------------------


def a_state(n: int) -> IdentityState:
    return IdentityState(alert=postable(n), severity=Severity.HIGH, environments=("production",))


async def test_states_are_written_with_the_batch_kept_and_expired(
    outbox: SqliteStore, make: OutboxFactory, clock: Clock
) -> None:
    until = START + timedelta(hours=2)
    for n in range(3):
        await outbox.accept(sentry(n))
    taken = await outbox.take(3)
    a, b, c = (e.inbox_id for e in taken.entries)
    await outbox.complete(
        taken,
        [
            Processed(a, send=(), states={"issue:1": (a_state(1), until)}),
            Processed(b, send=(), states={"issue:2": (a_state(2), until)}),
            Processed(c, send=(), states={"issue:2": (a_state(3), None)}),
        ],
    )
    assert await stored_state(outbox, "issue:1") == a_state(1)
    assert await stored_state(outbox, "issue:2") is None  # the later result forgot it
    assert outbox.active_count() == 1  # what the states hold
    again = await reopen(outbox, make)
    try:
        assert await stored_state(again, "issue:1") == a_state(1)
        clock.advance(2 * 3600)
        await again.expire(resolved_for=900)
        assert await stored_state(again, "issue:1") is None
    finally:
        await again.close()
        await outbox.open()  # the fixture closes it again


async def test_take_reads_the_states_of_what_it_hands_out(
    outbox: SqliteStore, clock: Clock
) -> None:
    await commit(outbox, [], {"issue:1": (a_state(1), START + timedelta(days=1))})
    await outbox.accept(sentry(1))
    await outbox.accept(sentry(2))
    clock.advance(5)
    taken = await outbox.take(10)
    # Only the identities taken that have a state; decided on the store's clock.
    assert taken.states == {"issue:1": a_state(1)}
    assert [e.accepted_at for e in taken.entries] == [START, START]
    assert taken.now == START + timedelta(seconds=5)

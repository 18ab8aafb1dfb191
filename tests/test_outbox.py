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
from datetime import datetime, timedelta
from pathlib import Path

import pytest
from prometheus_client import CollectorRegistry

from bridge.alertmanager import PostableAlert, wire_json
from bridge.errors import ConfigError, OutboxFull
from bridge.metrics import Metrics
from bridge.model import SentryAlert, Severity, State
from bridge.outbox import FILENAME, Outbox, Processed
from bridge.state import IdentityState
from tests.factories import START, postable
from tests.factories import issue as sentry

pytestmark = pytest.mark.anyio

TARGETS = ("am-a:9093", "am-b:9093")


class Clock:
    def __init__(self) -> None:
        self.now = START

    def __call__(self) -> datetime:
        return self.now

    def advance(self, seconds: float) -> None:
        self.now += timedelta(seconds=seconds)


OutboxFactory = Callable[..., Outbox]


@pytest.fixture
def clock() -> Clock:
    return Clock()


@pytest.fixture
def metrics() -> Metrics:
    return Metrics(CollectorRegistry())


@pytest.fixture
def make(tmp_path: Path, clock: Clock, metrics: Metrics) -> OutboxFactory:
    def factory(targets: Sequence[str] = TARGETS, max_queued: int = 1000) -> Outbox:
        return Outbox(tmp_path, targets, max_queued=max_queued, metrics=metrics, clock=clock)

    return factory


@pytest.fixture
async def outbox(make: OutboxFactory) -> AsyncIterator[Outbox]:
    box = make()
    await box.open()
    yield box
    await box.close()


async def reopen(box: Outbox, make: OutboxFactory, **kwargs: object) -> Outbox:
    await box.close()
    again = make(**kwargs)
    await again.open()
    return again


async def ids_pending(box: Outbox, target: str) -> list[int]:
    return [item.id for item in await box.pending(target, 100)]


async def resend_snapshot(box: Outbox) -> list[PostableAlert]:
    """What a re-send round posts, in order (in chunks smaller than what is stored)."""
    return [
        PostableAlert.model_validate_json(body)
        async for chunk in box.resendable(1)
        for body in chunk
    ]


async def deliver_all(box: Outbox, targets: Sequence[str] = TARGETS) -> None:
    for target in targets:
        items = await box.pending(target, 1000)
        if items:
            await box.advance(target, items[-1].id)


async def test_round_trip_in_order(outbox: Outbox) -> None:
    for n in range(3):
        await outbox.accept(sentry(n))
    taken = await outbox.take(10)
    assert [alert.identity for _, alert in taken] == ["issue:0", "issue:1", "issue:2"]
    assert taken[0][1] == sentry(0)  # the whole alert, not a summary

    await outbox.complete(
        [Processed(i, [postable(n)], {f"issue:{n}": postable(n)}) for n, (i, _) in enumerate(taken)]
    )

    assert outbox.inbox_count() == 0
    assert outbox.queued_count() == 3
    assert outbox.active("issue:1") == postable(1)
    assert outbox.active_count() == 3
    for target in TARGETS:
        items = await outbox.pending(target, 100)
        assert [PostableAlert.model_validate_json(i.body) for i in items] == [
            postable(0),
            postable(1),
            postable(2),
        ]
    await deliver_all(outbox)
    assert outbox.queued_count() == 0


async def test_take_limits_and_keeps_arrival_order(outbox: Outbox) -> None:
    await asyncio.gather(*(outbox.accept(sentry(n)) for n in range(10)))
    first = await outbox.take(4)
    rest = await outbox.take(100)
    assert [a.identity for _, a in first + rest] == [f"issue:{n}" for n in range(10)]
    assert [i for i, _ in first + rest] == sorted(i for i, _ in first + rest)


async def test_take_waits_for_an_accept(outbox: Outbox) -> None:
    waiting = asyncio.create_task(outbox.take(10))
    await asyncio.sleep(0)
    assert not waiting.done()
    await outbox.accept(sentry(7))
    assert [a.identity for _, a in await asyncio.wait_for(waiting, 5)] == ["issue:7"]


async def test_queue_keeps_send_order_across_results(outbox: Outbox) -> None:
    for n in range(2):
        await outbox.accept(sentry(n))
    (a, _), (b, _) = await outbox.take(2)
    resolved_old = postable(9, ends_in=0)
    await outbox.complete(
        [
            Processed(a, [resolved_old, postable(0)], {"issue:0": postable(0)}),
            Processed(b, [postable(1)], {"issue:1": postable(1)}),
        ]
    )
    bodies = [
        PostableAlert.model_validate_json(i.body) for i in await outbox.pending(TARGETS[0], 10)
    ]
    assert bodies == [resolved_old, postable(0), postable(1)]


async def test_everything_survives_close_and_reopen(outbox: Outbox, make: OutboxFactory) -> None:
    for n in range(3):
        await outbox.accept(sentry(n))
    taken = await outbox.take(10)
    # Only the first was processed before the "restart".
    await outbox.complete([Processed(taken[0][0], [postable(0)], {"issue:0": postable(0)})])

    again = await reopen(outbox, make)
    try:
        left = await again.take(10)
        assert [a for _, a in left] == [sentry(1), sentry(2)]  # leftovers come first
        assert again.active("issue:0") == postable(0)
        assert again.inbox_count() == 2
        for target in TARGETS:
            items = await again.pending(target, 10)
            assert [PostableAlert.model_validate_json(i.body) for i in items] == [postable(0)]
        # New accepts come after the leftovers.
        await again.accept(sentry(3))
        assert [a for _, a in await again.take(10)] == [sentry(3)]
    finally:
        await again.close()


async def test_group_commit(outbox: Outbox) -> None:
    before = outbox.commits
    await asyncio.gather(*(outbox.accept(sentry(n)) for n in range(200)))
    assert outbox.commits - before <= 3  # one transaction per round, not per webhook
    assert outbox.inbox_count() == 200
    taken = await outbox.take(1000)
    assert [a.identity for _, a in taken] == [f"issue:{n}" for n in range(200)]


async def test_a_lone_accept_commits_without_waiting_for_company(outbox: Outbox) -> None:
    before = outbox.commits
    await asyncio.wait_for(outbox.accept(sentry(1)), 5)
    assert outbox.commits == before + 1


async def test_accept_is_committed_when_it_returns(tmp_path: Path, outbox: Outbox) -> None:
    await outbox.accept(sentry(1))
    # The outbox holds an exclusive lock, so look at the WAL through a copy of the files.
    for suffix in ("", "-wal"):
        (tmp_path / f"copy{suffix}").write_bytes((tmp_path / f"{FILENAME}{suffix}").read_bytes())
    with sqlite3.connect(tmp_path / "copy") as db:
        assert db.execute("SELECT count(*) FROM inbox").fetchone() == (1,)


async def test_outbox_full_counts_inbox_and_queue(make: OutboxFactory) -> None:
    box = make(max_queued=3)
    await box.open()
    try:
        for n in range(3):
            await box.accept(sentry(n))
        with pytest.raises(OutboxFull) as excinfo:
            await box.accept(sentry(3))
        assert (excinfo.value.status_code, excinfo.value.reason) == (503, "outbox_full")

        taken = await box.take(10)
        await box.complete([Processed(i, [postable(n)], {}) for n, (i, _) in enumerate(taken)])
        with pytest.raises(OutboxFull):  # now queued for Alertmanager: still held
            await box.accept(sentry(3))

        await deliver_all(box, TARGETS[:1])
        with pytest.raises(OutboxFull):  # one Alertmanager still needs them
            await box.accept(sentry(3))
        await deliver_all(box, TARGETS[1:])
        await box.accept(sentry(3))
    finally:
        await box.close()


async def test_an_alert_leaves_only_when_every_target_has_it(
    outbox: Outbox, make: OutboxFactory
) -> None:
    await outbox.accept(sentry(1))
    [(inbox_id, _)] = await outbox.take(1)
    await outbox.complete([Processed(inbox_id, [postable(1), postable(2)], {})])
    a, b = TARGETS
    [first, second] = await ids_pending(outbox, a)

    await outbox.advance(a, second)
    assert await ids_pending(outbox, a) == []
    assert await ids_pending(outbox, b) == [first, second]
    assert outbox.queued_count() == 2

    again = await reopen(outbox, make)
    try:
        assert await ids_pending(again, a) == []  # progress is durable
        assert await ids_pending(again, b) == [first, second]
        await again.advance(b, first)
        assert await ids_pending(again, b) == [second]
        assert again.queued_count() == 1
        await again.advance(b, second)
        assert again.queued_count() == 0
    finally:
        await again.close()


async def test_a_single_target(make: OutboxFactory) -> None:
    box = make(targets=["only:9093"])
    await box.open()
    try:
        await box.accept(sentry(1))
        [(inbox_id, _)] = await box.take(1)
        await box.complete([Processed(inbox_id, [postable(1)], {})])
        await deliver_all(box, ["only:9093"])
        assert box.queued_count() == 0
    finally:
        await box.close()


async def test_a_new_target_gets_what_is_queued_and_a_removed_one_holds_nothing(
    outbox: Outbox, make: OutboxFactory
) -> None:
    await outbox.accept(sentry(1))
    [(inbox_id, _)] = await outbox.take(1)
    await outbox.complete([Processed(inbox_id, [postable(1)], {})])
    await deliver_all(outbox, TARGETS[:1])

    again = await reopen(outbox, make, targets=[TARGETS[0], "am-c:9093"])
    try:
        # am-b is gone from the config: nothing waits for it any more; am-c is new.
        assert await ids_pending(again, TARGETS[0]) == []
        assert len(await ids_pending(again, "am-c:9093")) == 1
        await deliver_all(again, [TARGETS[0], "am-c:9093"])
        assert again.queued_count() == 0
    finally:
        await again.close()


async def test_queue_ids_are_not_reused_after_the_queue_empties(outbox: Outbox) -> None:
    for n in range(2):
        await outbox.accept(sentry(n))
        [(inbox_id, _)] = await outbox.take(1)
        await outbox.complete([Processed(inbox_id, [postable(n)], {})])
        assert len(await ids_pending(outbox, TARGETS[0])) == 1  # not hidden behind the cursor
        await deliver_all(outbox)


async def test_dead_letters_are_kept(outbox: Outbox) -> None:
    await outbox.accept(sentry(1))
    [(inbox_id, _)] = await outbox.take(1)
    await outbox.complete([Processed(inbox_id, [postable(1)], {})])
    [item] = await outbox.pending(TARGETS[0], 10)
    await outbox.advance(TARGETS[0], item.id, [(item, "HTTP 400: bad")])
    assert await outbox.dead_letters() == [(TARGETS[0], "HTTP 400: bad", postable(1).wire())]


async def test_only_the_newest_dead_letters_are_kept(outbox: Outbox) -> None:
    outbox.dead_letters_kept = 2
    await outbox.accept(sentry(1))
    [(inbox_id, _)] = await outbox.take(1)
    await outbox.complete([Processed(inbox_id, [postable(n) for n in range(3)], {})])
    for item in await outbox.pending(TARGETS[0], 10):
        await outbox.advance(TARGETS[0], item.id, [(item, f"reason {item.id}")])
    assert [alert for _, _, alert in await outbox.dead_letters()] == [
        postable(1).wire(),
        postable(2).wire(),
    ]


async def test_active_table_replace_clear_and_expire(
    outbox: Outbox, make: OutboxFactory, clock: Clock
) -> None:
    for n in range(3):
        await outbox.accept(sentry(n))
    (a, _), (b, _), (c, _) = await outbox.take(3)
    short = postable(2, ends_in=60)
    await outbox.complete(
        [
            Processed(a, [postable(1)], {"issue:1": postable(1)}),
            Processed(b, [postable(5)], {"issue:1": postable(5), "issue:0": None}),
            Processed(c, [short], {"issue:2": short}),
        ]
    )
    assert outbox.active("issue:1") == postable(5)  # the later result wins
    assert outbox.active("issue:0") is None

    clock.advance(61)
    assert outbox.active("issue:2") is None  # Alertmanager has expired it as well
    await outbox.expire(resolved_for=900)
    assert outbox.active_count() == 1

    again = await reopen(outbox, make)
    try:
        assert again.active_count() == 1
        assert again.active("issue:1") == postable(5)
    finally:
        await again.close()


async def test_resolved_alerts_are_re_sent_for_a_while(
    outbox: Outbox, make: OutboxFactory, clock: Clock
) -> None:
    firing = postable(1)
    await outbox.accept(sentry(1))
    [(a, _)] = await outbox.take(1)
    await outbox.complete([Processed(a, [firing], {"issue:1": firing})])
    assert await resend_snapshot(outbox) == [firing]

    clock.advance(10)
    resolved = firing.model_copy(update={"ends_at": clock()})
    await outbox.accept(sentry(1, State.RESOLVED))
    [(b, _)] = await outbox.take(1)
    await outbox.complete([Processed(b, [resolved], {"issue:1": None})])
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


async def test_firing_again_stops_re_sending_the_resolved_one(outbox: Outbox, clock: Clock) -> None:
    firing = postable(1)
    resolved = firing.model_copy(update={"ends_at": clock()})
    for n in range(2):
        await outbox.accept(sentry(n))
    (a, _), (b, _) = await outbox.take(2)
    await outbox.complete([Processed(a, [resolved], {"issue:1": None})])
    clock.advance(5)
    again = postable(1, start=clock())
    await outbox.complete([Processed(b, [again], {"issue:1": again})])
    # Re-sending the resolved label set would resolve the alert that fires again.
    assert await resend_snapshot(outbox) == [again]


async def test_resolved_and_firing_again_in_one_batch(outbox: Outbox, clock: Clock) -> None:
    """The resolved table is empty before the batch: the firing alert after the resolve in
    the same transaction must still end the resolve's re-sends."""
    firing = postable(1)
    resolved = firing.model_copy(update={"ends_at": clock()})
    again = postable(1, start=clock())
    for n in range(2):
        await outbox.accept(sentry(n))
    (a, _), (b, _) = await outbox.take(2)
    await outbox.complete(
        [
            Processed(a, [resolved], {"issue:1": None}),
            Processed(b, [again], {"issue:1": again}),
        ]
    )
    assert await resend_snapshot(outbox) == [again]
    assert outbox.resendable_count() == 1


async def test_gauges(outbox: Outbox, metrics: Metrics, clock: Clock) -> None:
    def value(name: str) -> float | None:
        return metrics.registry.get_sample_value(f"sentry_bridge_{name}")

    assert (value("outbox_alerts"), value("outbox_oldest_age_seconds")) == (0, 0)
    await outbox.accept(sentry(1))
    clock.advance(30)
    await outbox.accept(sentry(2))
    clock.advance(5)
    assert (value("outbox_alerts"), value("outbox_oldest_age_seconds")) == (2, 35)

    (a, _), (b, _) = await outbox.take(2)
    await outbox.complete([Processed(a, [postable(1), postable(2)], {"issue:1": postable(1)})])
    assert value("outbox_alerts") == 3  # one inbox entry left, two queued alerts
    assert value("outbox_oldest_age_seconds") == 35  # ages count from acceptance
    assert value("active_alerts") == 1
    await outbox.complete([Processed(b, [], {})])
    await deliver_all(outbox)
    assert (value("outbox_alerts"), value("outbox_oldest_age_seconds")) == (0, 0)


async def test_one_bridge_per_data_dir(
    outbox: Outbox, make: OutboxFactory, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(Outbox, "lock_timeout_ms", 0)
    second = make()
    with pytest.raises(ConfigError, match="another bridge"):
        await second.open()
    await second.close()


@pytest.mark.parametrize(
    "targets",
    [pytest.param([], id="none"), pytest.param(["a:1", "a:1"], id="duplicate")],
)
def test_targets_are_checked(tmp_path: Path, metrics: Metrics, targets: list[str]) -> None:
    with pytest.raises(ConfigError):
        Outbox(tmp_path, targets, max_queued=10, metrics=metrics)


# --- memory: alerts live in the file ---------------------------------------------------------


async def complete_each(box: Outbox, alerts: Sequence[tuple[SentryAlert, PostableAlert]]) -> None:
    for alert, current in alerts:
        await box.accept(alert)
        [(inbox_id, _)] = await box.take(1)
        await box.complete([Processed(inbox_id, [current], {alert.identity: current})])
    await deliver_all(box)


async def test_a_backlog_beyond_kept_in_memory_is_read_back(make: OutboxFactory) -> None:
    box = make()
    box.kept_in_memory = 2
    await box.open()
    try:
        await asyncio.gather(*(box.accept(sentry(n)) for n in range(5)))
        assert [a for _, a in await box.take(3)] == [sentry(0), sentry(1), sentry(2)]
        assert [a for _, a in await box.take(10)] == [sentry(3), sentry(4)]
    finally:
        await box.close()


async def test_an_unreadable_inbox_entry_is_dropped(
    outbox: Outbox, make: OutboxFactory, tmp_path: Path
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
        assert [a for _, a in await again.take(10)] == [sentry(0), sentry(2)]
        assert again.inbox_count() == 2
    finally:
        await again.close()


async def test_take_reads_the_active_alerts_of_what_it_hands_out(
    outbox: Outbox, monkeypatch: pytest.MonkeyPatch
) -> None:
    await complete_each(outbox, [(sentry(1), postable(1))])
    await outbox.accept(sentry(1))
    await outbox.accept(sentry(2))
    await outbox.take(10)

    def no_blocking_read(*args: object) -> object:
        raise AssertionError("active() blocked the event loop on the disk")

    monkeypatch.setattr(outbox, "_blocking", no_blocking_read)
    assert outbox.active("issue:1") == postable(1)
    assert outbox.active("issue:2") is None


async def test_a_cancelled_take_hands_out_nothing(outbox: Outbox) -> None:
    for n in range(2):
        await outbox.accept(sentry(n))
    taking = asyncio.create_task(outbox.take(10))
    await asyncio.sleep(0)  # it has taken the entries and waits for the disk
    taking.cancel()
    with pytest.raises(asyncio.CancelledError):
        await taking
    again = await asyncio.wait_for(outbox.take(10), 5)
    assert [a for _, a in again] == [sentry(0), sentry(1)]


async def test_re_sends_are_read_in_chunks_resolved_first(outbox: Outbox, clock: Clock) -> None:
    await complete_each(outbox, [(sentry(n), postable(n)) for n in range(4)])
    await outbox.accept(sentry(9))
    [(inbox_id, _)] = await outbox.take(1)
    resolved = postable(9, ends_in=0)
    await outbox.complete([Processed(inbox_id, [resolved], {})])

    chunks = [chunk async for chunk in outbox.resendable(2)]
    assert [len(chunk) for chunk in chunks] == [1, 2, 2]
    assert [PostableAlert.model_validate_json(b) for chunk in chunks for b in chunk] == [
        resolved,
        *(postable(n) for n in range(4)),
    ]
    assert chunks[1][0] == wire_json(postable(0))  # as stored, not re-serialised


async def test_counts_follow_the_file(outbox: Outbox, make: OutboxFactory, clock: Clock) -> None:
    await complete_each(outbox, [(sentry(1), postable(1)), (sentry(2), postable(2, ends_in=60))])
    await complete_each(outbox, [(sentry(1), postable(1))])  # replaced, not added
    await outbox.accept(sentry(3))
    [(inbox_id, _)] = await outbox.take(1)
    await outbox.complete([Processed(inbox_id, [postable(3, ends_in=0)], {})])
    assert (outbox.active_count(), outbox.resendable_count()) == (2, 3)

    again = await reopen(outbox, make)
    try:
        assert (again.active_count(), again.resendable_count()) == (2, 3)
        clock.advance(61)
        await again.expire(resolved_for=60)
        assert (again.active_count(), again.resendable_count()) == (1, 1)
    finally:
        await again.close()


async def test_active_alerts_are_not_held_in_memory(outbox: Outbox) -> None:
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
    outbox: Outbox, make: OutboxFactory, clock: Clock
) -> None:
    until = START + timedelta(hours=2)
    await outbox.complete(
        [
            Processed(inbox_id=0, send=(), active={}, states={"issue:1": (a_state(1), until)}),
            Processed(inbox_id=0, send=(), active={}, states={"issue:2": (a_state(2), until)}),
            Processed(inbox_id=0, send=(), active={}, states={"issue:2": (a_state(3), None)}),
        ]
    )
    assert outbox.state("issue:1") == a_state(1)
    assert outbox.state("issue:2") is None  # the later result forgot it
    again = await reopen(outbox, make)
    try:
        assert again.state("issue:1") == a_state(1)
        clock.advance(2 * 3600)
        await again.expire(resolved_for=900)
        assert again.state("issue:1") is None
    finally:
        await again.close()
        await outbox.open()  # the fixture closes it again


async def test_take_reads_the_states_of_what_it_hands_out(
    outbox: Outbox, monkeypatch: pytest.MonkeyPatch
) -> None:
    kept = {"issue:1": (a_state(1), START + timedelta(days=1))}
    await outbox.complete([Processed(inbox_id=0, send=(), active={}, states=kept)])
    await outbox.accept(sentry(1))
    await outbox.accept(sentry(2))
    taken = await outbox.take(10)

    def no_blocking_read(*args: object) -> object:
        raise AssertionError("state() blocked the event loop on the disk")

    monkeypatch.setattr(outbox, "_blocking", no_blocking_read)
    assert outbox.state("issue:1") == a_state(1)
    assert outbox.state("issue:2") is None
    assert outbox.accepted_at(taken[0][0]) == START

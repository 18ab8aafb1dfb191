"""The spool in front of the shared store (bridge/store/spool.py), against a fake primary
(tests/store/fakes.py) whose availability the test switches. The spool itself is a real
SQLite file in tmp_path, reopened across restarts."""

from __future__ import annotations

import asyncio
import hashlib
import inspect
import json
import shutil
import sqlite3
import tempfile
from collections.abc import AsyncIterator, Callable
from dataclasses import replace
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, cast

import asyncpg
import httpx
import pytest
from hypothesis import settings
from hypothesis import strategies as st
from hypothesis.stateful import RuleBasedStateMachine, invariant, precondition, rule
from prometheus_client import CollectorRegistry

from bridge import config
from bridge.delivery import Delivery
from bridge.errors import ConfigError, StoreError, StoreFull
from bridge.metrics import Metrics
from bridge.model import SentryAlert
from bridge.posting import LANE_BUSY_WAIT
from bridge.store.contract import Store
from bridge.store.pg import PostgresStore
from bridge.store.spool import FILENAME, Spooled, spooled, unreachable
from tests.clock import Ticks as Clock
from tests.conftest import PostgresTarget
from tests.factories import issue
from tests.store import probes
from tests.store.fakes import MODES, FakePrimary, Mode
from tests.store.stall import stalled_load

pytestmark = pytest.mark.anyio

# Sentry gives a webhook one second (its integration platform's timeout).
SENTRY_TIMEOUT = 1.0


def digest(n: int) -> bytes:
    return hashlib.sha256(f"body {n}".encode()).digest()


def make(
    primary: FakePrimary, path: Path, metrics: Metrics, clock: Clock | None = None, **kw: Any
) -> Spooled:
    spool = Spooled(
        cast(Store, primary), path / FILENAME, metrics=metrics, clock=clock or Clock(), **kw
    )
    primary.max_queued = spool.max_queued  # one store.max_queued, as open_store gives
    # Small, so the tests wait for little: the drainer's back-off and its per-webhook limit.
    spool.retry_initial, spool.retry_max, spool.drain_timeout = 0.01, 0.05, 0.3
    return spool


@pytest.fixture
def metrics() -> Metrics:
    return Metrics(CollectorRegistry())


@pytest.fixture
def primary() -> FakePrimary:
    return FakePrimary()


@pytest.fixture
async def spool(primary: FakePrimary, tmp_path: Path, metrics: Metrics) -> AsyncIterator[Spooled]:
    store = make(primary, tmp_path, metrics)
    await store.open()
    yield store
    await store.close()


def value(metrics: Metrics, name: str) -> float | None:
    return metrics.registry.get_sample_value(f"sentry_bridge_{name}")


async def accept(store: Spooled, n: int) -> bool:
    """One webhook as the edge sends it, answered within Sentry's timeout or failing."""
    async with asyncio.timeout(SENTRY_TIMEOUT):
        return await store.accept(issue(n), digest(n))


async def until(condition: Callable[[], bool], timeout: float = 10.0) -> None:
    async with asyncio.timeout(timeout):
        while not condition():
            await asyncio.sleep(0.005)


def accepted(*numbers: int) -> list[tuple[str, str]]:
    return [("accept", str(n)) for n in numbers]


# --- the edge -------------------------------------------------------------------------------


def test_store_up_is_1_without_a_spool(metrics: Metrics) -> None:
    """With SQLite there is no shared store to lose: SentryBridgeStoreDown never fires."""
    assert value(metrics, "store_up") == 1


async def test_an_available_primary_takes_webhooks_directly(
    spool: Spooled, primary: FakePrimary, metrics: Metrics
) -> None:
    assert await accept(spool, 1)
    assert not await accept(spool, 1)  # the primary's own duplicate: 200
    assert primary.records == accepted(1)
    assert (spool.depth(), value(metrics, "store_up"), value(metrics, "spooled_total")) == (
        0,
        1,
        0,
    )


@pytest.mark.parametrize("mode", ["down", "failing", "slow", "late"])
async def test_a_failing_primary_still_gets_an_answer_in_time(
    spool: Spooled, primary: FakePrimary, metrics: Metrics, mode: Mode
) -> None:
    """Refused, failing, silent, or committing without answering: answered 202 within
    Sentry's second, from the spool, and the primary ends with the webhook once."""
    primary.mode = mode
    assert await accept(spool, 1)
    assert await accept(spool, 2)  # behind the first, without trying the primary
    assert spool.depth() == 2
    assert value(metrics, "store_up") == 0
    assert value(metrics, "spooled_total") == 2
    primary.mode = "up"
    await until(lambda: spool.depth() == 0)
    assert primary.records == accepted(1, 2)
    assert value(metrics, "store_up") == 1
    assert value(metrics, "spool_drained_total") == 2


async def test_order_is_kept_across_an_outage_with_webhooks_arriving_while_it_drains(
    spool: Spooled, primary: FakePrimary
) -> None:
    spool.batch = 100  # several drain rounds
    assert await accept(spool, 0)
    primary.mode = "down"
    for n in range(1, 251):
        assert await accept(spool, n)
    arriving: list[asyncio.Task[bool]] = []

    def more() -> None:  # while the spool drains, Sentry keeps sending
        if len(primary.records) in {20, 120, 230}:
            base = 1000 + len(primary.records)
            arriving.extend(asyncio.create_task(accept(spool, base + i)) for i in range(5))

    primary.on_commit = more
    primary.mode = "up"
    await until(lambda: len(arriving) == 15 and all(t.done() for t in arriving))
    await until(lambda: spool.depth() == 0)
    assert all(t.result() for t in arriving)
    late = [1000 + k + i for k in (20, 120, 230) for i in range(5)]
    assert primary.records == accepted(*range(251), *late)
    assert await accept(spool, 9999)  # drained: straight to the primary again
    assert primary.records[-1] == ("accept", "9999")


async def test_a_restart_with_a_full_spool_loses_and_doubles_nothing(
    primary: FakePrimary, tmp_path: Path, metrics: Metrics
) -> None:
    first = make(primary, tmp_path, metrics)
    await first.open()
    primary.mode = "late"  # 1 reaches the primary but its answer is lost: spooled as well
    assert await accept(first, 1)
    primary.mode = "down"
    for n in (2, 3, 4):
        assert await accept(first, n)
    await first.close()

    primary.mode = "up"
    second = make(primary, tmp_path, Metrics(CollectorRegistry()), drainer=False)
    await second.open()
    assert second.depth() == 4
    assert second.spooling()
    assert await accept(second, 5)  # behind what the last run left, though the primary is up
    assert await second.drain_once() == 5
    assert primary.records == accepted(1, 2, 3, 4, 5)  # 1 once: the primary's dedup
    await second.close()
    assert (primary.opened, primary.closed) == (2, 2)


async def test_a_start_without_the_primary_spools_until_it_opens(
    primary: FakePrimary, tmp_path: Path, metrics: Metrics
) -> None:
    """A pod that starts during an outage (what a previous run left spooled included):
    answers from the spool, hands the pipeline and delivery nothing, opens the primary in
    the background, then drains in order and hands over."""
    first = make(primary, tmp_path, metrics)
    await first.open()
    primary.mode = "down"
    assert await accept(first, 1)
    await first.close()
    primary.mode, primary.open_failures = "up", 4
    store = make(primary, tmp_path, metrics)
    store.retry_initial = store.retry_max = 0.2  # slow enough to look at it before it opens
    await store.open()
    try:
        assert not probes.opened(store)
        assert value(metrics, "store_up") == 0
        assert await accept(store, 2)
        assert await store.quarantine("unreadable", "bad json", {"a": "b"}, b"{", digest(3))
        assert primary.records == []  # not even tried: the spool answers
        held = await store.sizes()
        assert (store.depth(), held.length, held.inbox, held.spooled) == (3, 3, 0, 3)
        assert (held.behind, held.queued) == (0, {"am": 0})
        assert store.store_ok()
        taking = asyncio.create_task(store.take(10))
        async with store.lane("am") as lane:
            assert lane is None
        assert not await store.periodic()
        for call in (
            store.snapshot(5),
            store.quarantined(),
            store.requeue_dead_letters(),
            store.release(1, None),
            store.discard_quarantined(None),
        ):
            with pytest.raises(StoreError, match="has not been reachable since this bridge"):
                await call
        assert not taking.done()
        assert store.idle()  # waiting out an outage: not a stuck pipeline, nothing to stop for
        await until(lambda: store.depth() == 0)
        assert primary.open_tries == 6  # 1 at the start, 3 refused in the background, 1 open
        assert primary.records == [*accepted(1, 2), ("quarantine", "bad json")]
        assert value(metrics, "store_up") == 1
        assert cast(Any, await asyncio.wait_for(taking, 1)) == "primary.take"
        assert cast(Any, await store.periodic()) == "primary.periodic"
        assert await accept(store, 4)
        assert primary.records[-1] == ("accept", "4")
    finally:
        await store.close()
    assert (primary.opened, primary.closed) == (2, 2)


@pytest.mark.parametrize("hangs", [False, True])
async def test_a_start_without_the_primary_closes_in_every_state(
    primary: FakePrimary, tmp_path: Path, metrics: Metrics, hangs: bool
) -> None:
    """Closed while the primary never opened (refused, or an open that hangs): nothing of
    the primary to close, the spool kept for the next start."""
    primary.mode, primary.open_hangs = "down", hangs
    store = make(primary, tmp_path, metrics, open_timeout=0.1)
    await store.open()
    assert await accept(store, 1)
    await store.close()
    assert (primary.opened, primary.closed) == (0, 0)
    primary.mode, primary.open_hangs = "up", False
    again = make(primary, tmp_path, metrics)
    await again.open()
    await until(lambda: again.depth() == 0)
    await again.close()
    assert primary.records == accepted(1)


@pytest.mark.parametrize(
    "error",
    [
        ConfigError("store.postgres.pool_size: 2 is too small"),
        StoreError("the database schema 'b' is at version 9, newer than this bridge's 3"),
        StoreError("cannot connect to PostgreSQL: InvalidPasswordError"),
    ],
)
async def test_what_is_not_an_outage_still_fails_the_start(
    primary: FakePrimary, tmp_path: Path, metrics: Metrics, error: Exception
) -> None:
    primary.open_error = error
    store = make(primary, tmp_path, metrics)
    with pytest.raises(type(error), match=str(error)[:20]):
        await store.open()
    primary.open_error = None
    again = make(primary, tmp_path, metrics)  # the spool file was closed: it opens again
    await again.open()
    await again.close()


def test_only_connection_level_failures_are_outages() -> None:
    def wrapped(cause: BaseException) -> StoreError:
        try:
            raise StoreError("cannot connect to PostgreSQL") from cause
        except StoreError as exc:
            return exc

    refused = ConnectionRefusedError(111, "refused")
    assert unreachable(refused)
    assert unreachable(TimeoutError())
    assert unreachable(wrapped(refused))
    assert unreachable(wrapped(asyncpg.CannotConnectNowError("the database system is starting")))
    assert unreachable(asyncpg.ConnectionDoesNotExistError("closed in the middle"))
    assert not unreachable(wrapped(asyncpg.InvalidPasswordError("password failed")))
    assert not unreachable(wrapped(asyncpg.InvalidCatalogNameError("no database")))
    assert not unreachable(StoreError("schema newer"))
    assert not unreachable(ConfigError("x"))


async def test_delivery_waits_calmly_for_a_primary_that_is_not_open(
    primary: FakePrimary, tmp_path: Path, metrics: Metrics
) -> None:
    """Delivery's senders find no lane (as if another replica held it) and look again
    every LANE_BUSY_WAIT, on their injected sleep: no busy loop, nothing posted."""
    primary.mode, primary.targets = "down", ("am:9093",)
    vars(primary)["wakeup"] = lambda target: asyncio.Event()  # the sender waits on it
    store = make(primary, tmp_path, metrics)
    await store.open()
    sleeps: list[float] = []
    looked = asyncio.Event()

    async def sleep(seconds: float) -> None:
        sleeps.append(seconds)
        if len(sleeps) >= 5:
            looked.set()
        await asyncio.sleep(0)

    def refuse(request: httpx.Request) -> httpx.Response:
        raise AssertionError(f"posted {request.url}")

    cfg = config.parse(
        {"sentry": {"client_secrets": "s"}, "alertmanager": {"urls": ["http://am:9093"]}}, env={}
    ).alertmanager
    delivery = Delivery(
        cast(Store, store), cfg, metrics, transport=httpx.MockTransport(refuse), sleep=sleep
    )
    sender = asyncio.create_task(delivery.run())
    try:
        await asyncio.wait_for(looked.wait(), 5)
    finally:
        sender.cancel()
        await asyncio.gather(sender, return_exceptions=True)
        await delivery.aclose()
        await store.close()
    assert set(sleeps) == {LANE_BUSY_WAIT}
    assert "lane" not in {name for name, _, _ in primary.delegated}


async def test_the_same_body_twice_in_the_spool_is_one_entry(
    spool: Spooled, primary: FakePrimary, metrics: Metrics
) -> None:
    assert await accept(spool, 1)
    primary.mode = "down"
    assert await accept(spool, 2)
    assert not await accept(spool, 2)  # Sentry's retry of a spooled body: 200
    assert await accept(spool, 1)  # in the primary already: 202 here, dropped on drain
    assert (spool.depth(), value(metrics, "webhooks_duplicate_total")) == (2, 1)
    primary.mode = "up"
    await until(lambda: spool.depth() == 0)
    assert primary.records == accepted(1, 2)


@pytest.mark.parametrize("bound", ["max_webhooks", "max_bytes"])
async def test_a_full_spool_answers_503(
    primary: FakePrimary, tmp_path: Path, metrics: Metrics, bound: str
) -> None:
    # As spooled: stamped with the time it was answered (issue 16).
    size = len(json.dumps(replace(issue(1), answered_at=datetime.now(UTC)).to_json()))
    limit: dict[str, Any] = (
        {"max_webhooks": 3} if bound == "max_webhooks" else {"max_bytes": 3 * size + 10}
    )
    store = make(primary, tmp_path, metrics, drainer=False, **limit)
    await store.open()
    primary.mode = "down"
    for n in (1, 2, 3):
        assert await accept(store, n)
    with pytest.raises(StoreFull) as refused:
        await accept(store, 4)
    assert "spool is full" in refused.value.detail  # the edge answers it 503
    assert store.depth() == 3
    assert store.store_ok() is False  # full, with the primary down: not ready
    primary.mode = "up"
    assert await store.drain_once() == 3
    assert await accept(store, 4)  # room again
    assert primary.records == accepted(1, 2, 3, 4)
    await store.close()


async def test_a_webhook_arriving_as_the_last_round_ends_goes_behind_those_that_waited(
    primary: FakePrimary, tmp_path: Path, metrics: Metrics
) -> None:
    """Webhooks arriving while the drainer moves the spool's last round wait for it, then go
    to the primary in the order they arrived: one whose turn comes just as the round ends
    (its task ready before the waiters are woken) must not overtake them. Before, it did:
    the stall test on PostgreSQL saw webhooks 824.. in the inbox before 761..823."""
    store = make(primary, tmp_path, metrics, drainer=False)
    await store.open()
    primary.mode = "down"
    for n in (1, 2, 3):
        assert await accept(store, n)  # spooled
    primary.mode = "up"
    primary.commit_time = 0.01  # a round the next webhooks have to wait for
    end_handover = store._end_handover
    late: list[asyncio.Task[bool]] = []

    def newcomer_first() -> None:
        # The newcomer's task is scheduled before the waiters' wake-ups.
        late.append(asyncio.ensure_future(accept(store, 9)))
        end_handover()

    store._end_handover = newcomer_first  # type: ignore[method-assign]
    draining = asyncio.ensure_future(store.drain_once())
    await asyncio.sleep(0)  # the round has started: the handover is on
    assert store._handover is not None
    waited = [asyncio.ensure_future(accept(store, n)) for n in (4, 5, 6)]
    assert await draining == 3
    assert all(await asyncio.gather(*waited, *late))
    assert primary.records == accepted(1, 2, 3, 4, 5, 6, 9)
    await store.close()


async def test_a_full_primary_is_full_not_down(
    primary: FakePrimary, tmp_path: Path, metrics: Metrics
) -> None:
    """At store.max_queued the primary's Alertmanagers are behind: 503 as without a spool
    (nothing spooled, store_up stays 1), and the drain waits for room."""
    primary.backlog = 0
    store = make(primary, tmp_path, metrics, drainer=False, max_queued=3)
    await store.open()
    assert await accept(store, 1)
    primary.mode = "down"
    assert await accept(store, 2)
    primary.mode = "up"
    assert await accept(store, 3)  # behind 2, in the spool
    primary.backlog = 5
    assert await accept(store, 4)  # still behind them: the spool does not check the primary
    with pytest.raises(StoreFull, match="full"):
        await store.drain_once()
    assert (store.depth(), value(metrics, "store_up")) == (3, 0)  # as the outage left it
    primary.backlog = 0
    assert await store.drain_once() == 3
    assert value(metrics, "store_up") == 1
    with pytest.raises(StoreFull, match="full"):  # 1 + 3 drained: the primary is at 3
        await accept(store, 5)
    assert (store.depth(), value(metrics, "store_up"), value(metrics, "spooled_total")) == (
        0,
        1,
        3,
    )
    assert primary.records == accepted(1, 2, 3, 4)
    await store.close()


async def test_a_spool_that_cannot_be_written_answers_503_and_recovers(
    spool: Spooled, primary: FakePrimary, metrics: Metrics
) -> None:
    """A refused COMMIT (as on a full disk) rolls back: 503, nothing half-kept."""
    commits = probes.FailingCommits()
    await spool._file.call(lambda: spool._file.db.set_authorizer(commits))
    primary.mode = "down"
    commits.failing = Spooled.failing_after
    for n in range(1, Spooled.failing_after + 1):
        with pytest.raises(StoreFull, match="cannot be written"):
            await accept(spool, n)
    assert value(metrics, "store_errors_total") == Spooled.failing_after
    assert spool.store_ok() is False  # neither store takes webhooks: not ready
    assert spool.depth() == 0
    assert await accept(spool, 1)  # Sentry's retry, once the disk has room again
    assert spool.store_ok()
    primary.mode = "up"
    await until(lambda: spool.depth() == 0)
    assert primary.records == accepted(1)


async def test_concurrent_webhooks_share_one_spool_commit(
    spool: Spooled, primary: FakePrimary, tmp_path: Path
) -> None:
    primary.mode = "down"
    assert await accept(spool, 0)
    before = spool._writes.batches
    answers = await asyncio.gather(*(accept(spool, n) for n in range(1, 51)))
    assert all(answers)
    assert spool._writes.batches - before <= 3  # 50 webhooks, a commit or a few
    db = sqlite3.connect(tmp_path / FILENAME, timeout=0)
    with pytest.raises(sqlite3.OperationalError, match="locked"):  # one bridge per file
        db.execute("SELECT count(*) FROM spool").fetchone()
    db.close()
    assert spool.depth() == 51
    primary.mode = "up"
    await until(lambda: spool.depth() == 0)
    assert primary.records == accepted(*range(51))


async def test_quarantined_bodies_spool_and_drain_into_the_primarys_quarantine(
    spool: Spooled, primary: FakePrimary
) -> None:
    primary.mode = "slow"
    headers = {"content-type": "application/json", "sentry-hook-resource": "issue"}
    async with asyncio.timeout(SENTRY_TIMEOUT):
        assert await spool.quarantine("invalid_payload", "no data", headers, b"{}", digest(7))
    assert await accept(spool, 8)
    async with asyncio.timeout(SENTRY_TIMEOUT):
        assert not await spool.quarantine("invalid_payload", "again", headers, b"{}", digest(7))
    primary.mode = "up"
    await until(lambda: spool.depth() == 0)
    assert primary.records == [("quarantine", "no data"), ("accept", "8")]
    assert primary.quarantines == [("invalid_payload", "no data", headers, b"{}")]


async def test_metrics_follow_the_spool(
    primary: FakePrimary, tmp_path: Path, metrics: Metrics
) -> None:
    clock = Clock()
    store = make(primary, tmp_path, metrics, clock, drainer=False)
    await store.open()
    assert (value(metrics, "store_up"), value(metrics, "spool_webhooks")) == (1, 0)
    assert value(metrics, "spool_oldest_age_seconds") == 0
    primary.mode = "down"
    assert await accept(store, 1)
    clock.now += 30
    assert await accept(store, 2)
    clock.now += 12
    assert (value(metrics, "store_up"), value(metrics, "spool_webhooks")) == (0, 2)
    assert value(metrics, "spool_oldest_age_seconds") == 42
    assert value(metrics, "spooled_total") == 2
    # While the primary is down, the spool waits on it, not on the pipeline (compose's
    # watchdog must not call the pod stuck): not in its inbox.
    held = await store.sizes()
    assert (held.inbox, held.spooled, held.length, held.oldest_at) == (0, 2, 1002, 95.0)
    with pytest.raises(OSError, match="refused"):
        await store.drain_once()  # still down: nothing moved
    assert value(metrics, "spool_webhooks") == 2
    primary.mode = "up"
    store.batch = 1
    assert await store.drain_once() == 1
    assert value(metrics, "spool_oldest_age_seconds") == 12  # now the second one's age
    held = await store.sizes()
    assert (held.inbox, held.spooled) == (2, 0)  # one in the primary, one the drainer brings
    assert (value(metrics, "store_up"), value(metrics, "spool_drained_total")) == (1, 1)
    await store.close()


async def test_a_spooled_webhook_carries_the_time_it_was_answered(
    primary: FakePrimary, tmp_path: Path, metrics: Metrics
) -> None:
    """Issue 16: drained after the outage, a resolve must not count from the drain (the
    primary's acceptance) but from its answer, or the events after it look stale."""
    answered: list[datetime | None] = []
    into_primary = primary.accept

    async def accept_noting(alert: SentryAlert, digest: bytes | None = None) -> bool:
        answered.append(alert.answered_at)
        return await into_primary(alert, digest)

    primary.accept = accept_noting  # type: ignore[method-assign]
    clock = Clock()
    store = make(primary, tmp_path, metrics, clock, drainer=False)
    await store.open()
    assert await accept(store, 1)  # straight into the primary: its acceptance is the time
    primary.mode = "down"
    assert await accept(store, 2)
    spooled_at = datetime.fromtimestamp(clock.now, UTC)
    clock.now += 600  # the outage goes on
    primary.mode = "up"
    assert await store.drain_once() == 1
    assert answered[0] is None
    assert answered[-1] == spooled_at
    await store.close()


async def test_an_idle_drainer_probes_the_primary(
    primary: FakePrimary, tmp_path: Path, metrics: Metrics
) -> None:
    """No webhooks: store_up still follows the primary, through its probe."""
    store = make(primary, tmp_path, metrics)
    store.probe_interval = 0.02
    await store.open()
    primary.mode = "down"
    await until(lambda: value(metrics, "store_up") == 0)
    assert store.store_ok()  # the spool can take webhooks: still ready
    primary.mode = "up"
    await until(lambda: value(metrics, "store_up") == 1)
    await store.close()


async def test_a_down_primary_is_probed_not_sent_the_oldest_webhook_again(
    spool: Spooled, primary: FakePrimary, metrics: Metrics
) -> None:
    primary.mode = "down"
    assert await accept(spool, 1)
    await until(lambda: primary.probes >= 5)  # the drainer's back-off rounds
    assert primary.attempts == 1  # the webhook's own try only
    assert value(metrics, "store_up") == 0
    primary.mode = "up"
    await until(lambda: spool.depth() == 0)
    assert primary.records == accepted(1)


async def test_everything_else_is_the_primarys(spool: Spooled, primary: FakePrimary) -> None:
    """The spool defines only what it changes; every other member is the primary's own,
    called as it was called (``Spooled.__getattr__``)."""
    own = {"accept", "quarantine", "open", "close", "probe", "store_ok"}
    own.add("sizes")  # the spool's own added
    own.add("idle")  # nothing spooled is part of it
    assert {name for name in vars(Spooled) if not name.startswith("_")} & set(dir(Store)) == own
    assert spool.targets == primary.targets
    assert spool.progress is primary.progress
    members = {
        name for name in dir(Store) if not name.startswith("_") and callable(getattr(Store, name))
    }
    args: dict[str, tuple[tuple[Any, ...], dict[str, Any]]] = {
        "take": ((10,), {}),
        "complete": (("taken", ["r"], ["f"]), {}),
        "abandon": (("taken",), {}),
        "lane": (("am",), {}),
        "wakeup": (("am",), {}),
        "expire": ((), {"resolved_for": 900.0}),
        "release": ((3, None), {}),
        "snapshot": ((5,), {}),
        "quarantined": ((7,), {"after": 0, "limit": 100}),
        "discard_quarantined": (([1, 2],), {}),
    }
    assert spool.full == primary.full  # the primary's bound (the fake keeps one)
    for name in sorted(members - own - {"full"}):
        positional, named = args.get(name, ((), {}))
        result = getattr(spool, name)(*positional, **named)
        if inspect.isawaitable(result):
            result = await result
        assert result == f"primary.{name}", name
        assert primary.delegated[-1] == (name, positional, named), name


def test_the_factory_spools_only_in_front_of_postgres(tmp_path: Path, metrics: Metrics) -> None:
    base: dict[str, Any] = {"sentry": {"client_secrets": "s"}, "store": {"data_dir": tmp_path}}
    primary = cast(Store, FakePrimary())
    assert spooled(primary, config.parse(base, env={}), metrics) is primary
    store = {"backend": "postgres", "postgres": {"dsn": "postgresql://db/bridge"}}
    store["spool"] = {"accept_timeout": "250ms", "max_webhooks": 10, "max_bytes": 2 << 20}
    wrapped = spooled(
        primary, config.parse(base | {"store": base["store"] | store}, env={}), metrics
    )
    assert isinstance(wrapped, Spooled)
    assert (wrapped.accept_timeout, wrapped.max_webhooks, wrapped.max_bytes) == (0.25, 10, 2 << 20)
    assert wrapped.max_queued == config.Store().max_queued
    assert wrapped._file.path == tmp_path / FILENAME


# --- the model ------------------------------------------------------------------------------


class SpoolModel(RuleBasedStateMachine):
    """Random webhooks (new bodies, quarantined ones, and Sentry's retries of earlier
    bodies) while the primary goes down, slow, late or up, with drain rounds and restarts
    between (one while it is down opens it later, in open rounds). A reference model of
    the spool's rules predicts each answer, the depth and ``store_up``; at the end, with
    the primary up and the spool drained, the primary holds every webhook answered 202
    exactly once, in the order of its first 202."""

    MAX = 4  # store.spool.max_webhooks: small, so the model fills it
    TIMEOUT = 0.05  # the primary's deadline, both to accept and to drain (a fast model)

    def __init__(self) -> None:
        super().__init__()
        self.loop = asyncio.new_event_loop()
        self.dir = Path(tempfile.mkdtemp(prefix="bridge-spool-"))
        self.primary = FakePrimary()  # the database: outlives every restart
        self.metrics = Metrics(CollectorRegistry())
        self.bodies: list[tuple[str, str]] = []  # body n: (kind, key), as the primary records it
        self.answered: list[tuple[str, str]] = []  # every 202, in order
        # The reference: what the spool holds, what the primary has, store_up.
        self.spool: list[int] = []
        self.in_primary: set[int] = set()
        self.up = 1.0
        self.opened = True  # the primary is open (a start while it is down: not yet)
        self._open()

    def _open(self) -> None:
        self.store = make(self.primary, self.dir, self.metrics, drainer=False)
        self.store.max_webhooks, self.store.batch = self.MAX, 2
        self.store.accept_timeout = self.store.drain_timeout = self.TIMEOUT
        self.loop.run_until_complete(self.store.open())
        # Refused at the start: the start goes on, the spool answers, store_up is 0.
        self.opened = self.primary.mode != "down"
        self.up = 1.0 if self.opened else 0.0

    async def _sending(self, n: int) -> bool:
        kind, key = self.bodies[n]
        async with asyncio.timeout(SENTRY_TIMEOUT):
            if kind == "accept":
                return await self.store.accept(issue(n), digest(n))
            headers = {"sentry-hook-resource": "issue"}
            return await self.store.quarantine("invalid_payload", key, headers, b"?", digest(n))

    def _send(self, n: int) -> bool:
        return self.loop.run_until_complete(self._sending(n))

    def _expect(self, n: int) -> bool | None:
        """The rules: the answer to body ``n`` (None: 503), and what it changes."""
        mode = self.primary.mode
        if self.opened and not self.spool:  # the primary is tried first
            if mode in {"up", "late"} and n not in self.in_primary:
                self.in_primary.add(n)  # late: committed, though the answer is lost
                if mode == "up":
                    self.up = 1.0
                    return True
            elif mode == "up":
                self.up = 1.0
                return False  # the primary's duplicate
            self.up = 0.0
        if len(self.spool) >= self.MAX:
            return None
        if n in self.spool:
            return False  # the spool's duplicate
        self.spool.append(n)
        return True

    def _webhook(self, n: int) -> None:
        expected = self._expect(n)
        if expected is None:
            with pytest.raises(StoreFull):
                self._send(n)
            return
        assert self._send(n) is expected
        if expected:
            self.answered.append(self.bodies[n])

    @rule(quarantined=st.booleans())
    def new_webhook(self, quarantined: bool) -> None:
        n = len(self.bodies)
        self.bodies.append(("quarantine", f"q{n}") if quarantined else ("accept", str(n)))
        self._webhook(n)

    # Up or refusing at once: the primary's answers come in the order asked.
    @precondition(lambda self: self.primary.mode in {"up", "down", "failing"})
    @rule(size=st.integers(2, 6))
    def burst(self, size: int) -> None:
        """New webhooks at once: one group commit in the spool, the bounds counted as
        they arrive."""
        first = len(self.bodies)
        self.bodies.extend(("accept", str(n)) for n in range(first, first + size))
        expected = [self._expect(n) for n in range(first, first + size)]

        async def all_at_once() -> list[bool | BaseException]:
            sends = (self._sending(n) for n in range(first, first + size))
            return await asyncio.gather(*sends, return_exceptions=True)

        answers = self.loop.run_until_complete(all_at_once())
        for n, want, got in zip(range(first, first + size), expected, answers, strict=True):
            if want is None:
                assert isinstance(got, StoreFull)
            else:
                assert got is want
                self.answered.append(self.bodies[n])

    @precondition(lambda self: self.bodies)
    @rule(data=st.data())
    def sentry_retries(self, data: st.DataObject) -> None:
        self._webhook(data.draw(st.integers(0, len(self.bodies) - 1)))

    @rule(mode=st.sampled_from(MODES))
    def primary_turns(self, mode: Mode) -> None:
        self.primary.mode = mode

    @precondition(lambda self: not self.opened)
    @rule()
    def open_round(self) -> None:
        """The background opener's try: refused while down, then open (store_up 1)."""
        if self.primary.mode == "down":
            with pytest.raises(OSError, match="refused"):
                self.loop.run_until_complete(self.store.open_primary())
            return
        self.loop.run_until_complete(self.store.open_primary())
        self.opened, self.up = True, 1.0

    @precondition(lambda self: self.opened)
    @rule()
    def drain_round(self) -> None:
        mode = self.primary.mode
        if not self.spool:
            assert self.loop.run_until_complete(self.store.drain_once()) == 0
            return
        if mode != "up":
            if mode == "late":  # a round's webhooks are handed over at once
                self.in_primary.update(self.spool[:2])
            with pytest.raises((OSError, StoreFull, TimeoutError)):
                self.loop.run_until_complete(self.store.drain_once())
            self.up = 0.0
            return
        moved, self.spool = self.spool[:2], self.spool[2:]
        self.in_primary.update(moved)
        self.up = 1.0
        assert self.loop.run_until_complete(self.store.drain_once()) == len(moved)

    @rule()
    def restart(self) -> None:
        self.loop.run_until_complete(self.store.close())
        self._open()

    @invariant()
    def the_spool_and_store_up_are_as_predicted(self) -> None:
        assert self.store.depth() == len(self.spool)
        assert self.store.spooling() is bool(self.spool)
        assert value(self.metrics, "store_up") == self.up
        assert value(self.metrics, "spool_webhooks") == len(self.spool)

    def teardown(self) -> None:
        try:
            self.primary.mode = "up"
            self.loop.run_until_complete(self.store.open_primary())
            for _ in range(self.MAX):
                self.loop.run_until_complete(self.store.drain_once())
            assert self.store.depth() == 0
            assert self.primary.records == list(dict.fromkeys(self.answered))
            self.loop.run_until_complete(self.store.close())
        finally:
            self.loop.close()
            shutil.rmtree(self.dir, ignore_errors=True)


SpoolModel.TestCase.settings = settings(max_examples=80, stateful_step_count=30, deadline=None)
test_spool_model = SpoolModel.TestCase


# --- a real PostgreSQL ----------------------------------------------------------------------


async def test_postgresql_crashed_and_started_again(
    pg: PostgresTarget, tmp_path: Path, metrics: Metrics
) -> None:
    """The PostgreSQL engine behind the spool, its server crashed (``pg_ctl stop -m
    immediate``) while Sentry keeps sending: every webhook answered 202 within a second,
    and once the server is back, the engine holds all of them, once each, in order."""
    primary = PostgresStore(pg.settings, ["am"], max_queued=10_000, metrics=metrics)
    store = Spooled(primary, tmp_path / FILENAME, metrics=metrics, max_queued=10_000)
    store.retry_initial = store.retry_max = 0.05  # retry often: the test waits for the drain
    await store.open()
    try:
        assert await accept(store, 1)
        assert store.depth() == 0  # straight into PostgreSQL
        pg.server.stop_immediately()
        for n in range(2, 21):
            assert await accept(store, n)
        assert not await accept(store, 20)  # Sentry's retry of a spooled body
        assert store.depth() == 19
        assert value(metrics, "store_up") == 0
        pg.server.start()
        await until(lambda: store.depth() == 0, timeout=60)
        assert value(metrics, "store_up") == 1
        taken = await store.take(100)
        assert [entry.alert.issue_id for entry in taken.entries] == [str(n) for n in range(1, 21)]
        await store.abandon(taken)
    finally:
        await store.close()


async def test_a_start_while_postgresql_is_down_answers_and_drains_once_it_is_up(
    pg: PostgresTarget, tmp_path: Path, metrics: Metrics
) -> None:
    """Every pod restarted during an outage: the Spooled PostgreSQL engine opens with the
    server stopped, answers Sentry within its second from the spool, and once the server
    is started, the engine opens in the background and holds the webhooks in order."""
    pg.server.stop()
    try:
        primary = PostgresStore(pg.settings, ["am"], max_queued=10_000, metrics=metrics)
        store = Spooled(primary, tmp_path / FILENAME, metrics=metrics, max_queued=10_000)
        store.retry_initial = store.retry_max = 0.05  # retry often: the test waits for it
        async with asyncio.timeout(SENTRY_TIMEOUT * 10):  # refused at once: well within
            await store.open()
    except BaseException:
        pg.server.start()
        raise
    try:
        assert not probes.opened(store)
        for n in range(1, 11):
            assert await accept(store, n)
        assert (store.depth(), value(metrics, "store_up")) == (10, 0)
        with pytest.raises(StoreError, match="has not been reachable"):
            await store.snapshot(5)
        pg.server.start()
        await until(lambda: store.depth() == 0, timeout=60)
        assert probes.opened(store)
        assert value(metrics, "store_up") == 1
        async with asyncio.timeout(10):
            taken = await store.take(100)
        assert [entry.alert.issue_id for entry in taken.entries] == [str(n) for n in range(1, 11)]
        await store.abandon(taken)
    finally:
        await store.close()


async def test_a_half_second_stall_on_postgresql_leaves_no_backlog_behind_it(
    pg: PostgresTarget, tmp_path: Path, metrics: Metrics
) -> None:
    """Issue 15: at a steady 400 webhooks/s, PostgreSQL's inbox locked for 0.5 s by another
    connection (a slow commit): what the stall diverted to the spool, and what arrived
    behind it, is in PostgreSQL within seconds of the stall's end, while the load goes on
    (one commit per drained webhook fell behind the arrivals: here the spool emptied only
    after the load ended; in the issue's bridge, minutes after).
    Every webhook answered 202 in Sentry's second, and in PostgreSQL once, in order."""
    primary = PostgresStore(pg.settings, ["am"], max_queued=100_000, metrics=metrics)
    store = Spooled(primary, tmp_path / FILENAME, metrics=metrics, max_queued=100_000)
    await store.open()
    try:
        run = await stalled_load(
            store, pg.dsn, pg.schema, rate=400, seconds=7.0, stall_at=1.5, stall=0.5
        )
    finally:
        await store.close()
    print(run.summary())
    assert run.spooled > 0  # the stall did divert webhooks to the spool
    assert all(answer is True for answer in run.answers)
    assert run.inbox == [str(n) for n in range(len(run.answers))]
    assert run.load_ran_on  # gone while the load still ran, not after it
    assert run.drained_after < 1.5, run.summary()  # about 0.05 s; one commit each: 2 s+

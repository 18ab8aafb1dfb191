"""The SQLite engine when things go wrong, against a real file: a failed COMMIT rolls
back, a store that keeps failing says so and recovers, the same body twice has one
effect, and the pipeline quarantines one bad alert alone and retries a failing batch.

Faults are injected at SQLite itself (an authorizer that refuses COMMIT: the statement
fails exactly as it does on a full disk, with the transaction left open) or, for a
poison alert, at the store boundary (a subclass whose ``complete`` refuses it)."""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import json
import sqlite3
from collections.abc import AsyncIterator, Callable, Sequence
from datetime import datetime, timedelta
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from prometheus_client import CollectorRegistry

from bridge import config, pipeline
from bridge.enrich import Enricher
from bridge.errors import StoreFull
from bridge.metrics import Metrics
from bridge.pipeline import Pipeline
from bridge.state import IdentityState
from bridge.store.contract import Entry, Failed, Processed, Taken
from bridge.store.sqlite import SqliteStore
from tests.clock import Clock
from tests.factories import issue as sentry
from tests.factories import sizes, until_sizes
from tests.store import probes

pytestmark = pytest.mark.anyio


@pytest.fixture
def registry() -> CollectorRegistry:
    return CollectorRegistry()


@pytest.fixture
def clock() -> Clock:
    return Clock()


@pytest.fixture
async def store(
    tmp_path: Path, registry: CollectorRegistry, clock: Clock
) -> AsyncIterator[SqliteStore]:
    store = SqliteStore(
        tmp_path, ["am"], max_queued=1000, metrics=Metrics(registry), clock=clock,
        body_retention=3600, max_bodies=3,
    )  # fmt: skip
    await store.open()
    yield store
    await store.close()


def store_errors(registry: CollectorRegistry) -> float:
    return registry.get_sample_value("sentry_bridge_store_errors_total") or 0.0


def digest(n: int) -> bytes:
    return hashlib.sha256(str(n).encode()).digest()


async def test_a_failed_commit_rolls_back_and_the_next_write_works(
    store: SqliteStore, registry: CollectorRegistry
) -> None:
    commits = probes.FailingCommits()
    await probes.fail_commits(store, commits)
    commits.failing = 1
    with pytest.raises(StoreFull):
        await store.accept(sentry(1))
    assert store_errors(registry) == 1.0
    assert not await store._file.call(lambda: store._file.db.in_transaction)
    assert store.store_ok()  # one failure is not a failing store
    assert await store.accept(sentry(2))
    assert [e.alert.identity for e in (await store.take(10)).entries] == ["issue:2"]


async def test_a_store_that_keeps_failing_is_not_ok_until_a_write_succeeds(
    store: SqliteStore, registry: CollectorRegistry
) -> None:
    commits = probes.FailingCommits()
    await probes.fail_commits(store, commits)
    commits.failing = SqliteStore.failing_after
    for n in range(SqliteStore.failing_after):
        with pytest.raises(StoreFull):
            await store.accept(sentry(n))
    assert not store.store_ok()
    assert store_errors(registry) == SqliteStore.failing_after
    assert await store.probe()  # the disk has room again
    assert store.store_ok()


async def test_the_same_body_within_the_retention_is_a_duplicate(
    store: SqliteStore, clock: Clock, registry: CollectorRegistry
) -> None:
    assert await store.accept(sentry(1), digest(1))
    # Concurrent copies commit in one group: exactly one of them is stored.
    results = await asyncio.gather(*(store.accept(sentry(1), digest(1)) for _ in range(3)))
    assert results == [False, False, False]
    assert registry.get_sample_value("sentry_bridge_webhooks_duplicate_total") == 3.0
    assert [e.alert.identity for e in (await store.take(10)).entries] == ["issue:1"]
    # No digest (an internal accept): never a duplicate.
    assert await store.accept(sentry(1))
    clock.now += timedelta(seconds=3601)
    assert await store.accept(sentry(1), digest(1))


async def test_seen_bodies_are_bounded_in_count(store: SqliteStore) -> None:
    for n in range(1, 5):  # max_bodies=3: the first is forgotten
        assert await store.accept(sentry(n), digest(n))
    assert await store.accept(sentry(1), digest(1))
    assert not await store.accept(sentry(4), digest(4))
    rows = await store._file.call(
        lambda: store._file.db.execute("SELECT count(*) FROM seen_body").fetchone()
    )
    assert rows[0] == 3


async def test_a_quarantined_body_is_kept_once_and_survives_a_restart(
    tmp_path: Path, store: SqliteStore, registry: CollectorRegistry
) -> None:
    body = b'{"action": "triggered"}'
    sha = hashlib.sha256(body).digest()
    assert await store.quarantine("invalid_payload", "no data", {"request-id": "r"}, body, sha)
    assert not await store.quarantine("invalid_payload", "no data", {}, body, sha)
    assert (await sizes(store)).quarantined == 1
    await store.close()
    again = SqliteStore(tmp_path, ["am"], max_queued=10, metrics=Metrics(CollectorRegistry()))
    await again.open()
    [entry] = await again.quarantined()
    assert (entry.body, entry.headers, entry.detail) == (body, {"request-id": "r"}, "no data")
    assert (await sizes(again)).quarantined == 1
    await again.close()
    await store.open()  # for the fixture's close


# --- the pipeline -----------------------------------------------------------------------

CONFIG = config.parse({"sentry": {"allow_unauthenticated": True}}, env={})
POISON = "issue:666"


class PoisonStore(SqliteStore):
    """Refuses to complete any batch holding the poison alert among its results, as a
    store would refuse a row it cannot write (quarantining it works)."""

    poisoned: set[int]

    async def complete(
        self, taken: Taken, results: Sequence[Processed], failed: Sequence[Failed] = ()
    ) -> None:
        if any(r.inbox_id in self.poisoned for r in results):
            raise sqlite3.DataError("cannot store this alert")
        await super().complete(taken, results, failed)


class PoisonPipeline(Pipeline):
    """A decision that raises for some identities (a bug meeting an odd payload)."""

    poison = frozenset({POISON})

    def decide(
        self,
        entry: Entry,
        previous: IdentityState | None,
        now: datetime,
        tally: list[Callable[[], None]] | None = None,
        *,
        silenced: bool = False,
    ) -> Processed:
        if entry.alert.identity in self.poison:
            raise ValueError("cannot decide")
        return super().decide(entry, previous, now, tally, silenced=silenced)


def pipeline_on(store: SqliteStore, cls: type[Pipeline]) -> Pipeline:
    metrics = store.metrics
    return cls(CONFIG, store=store, enricher=Enricher(CONFIG.sentry, metrics), metrics=metrics)


async def queued_in(store: SqliteStore) -> list[str]:
    async with store.lane("am") as lane:
        assert lane is not None
        return [item.body for item in await lane.pending(100)]


async def until(condition: Callable[[], bool]) -> None:
    async with asyncio.timeout(10):
        while not condition():
            await asyncio.sleep(0.01)


@contextlib.asynccontextmanager
async def running(run: Pipeline) -> AsyncIterator[None]:
    task = asyncio.create_task(run.run())
    try:
        yield
    finally:
        task.cancel()
        await asyncio.gather(task, return_exceptions=True)


async def test_one_alert_the_pipeline_fails_on_is_quarantined_alone(
    store: SqliteStore, registry: CollectorRegistry
) -> None:
    run = pipeline_on(store, PoisonPipeline)
    for n in (1, 666, 2):
        await store.accept(sentry(n))
    commits = probes.Commits(store)
    await run.process(await store.take(10))
    assert commits.count == 1  # the batch and the quarantine: one transaction
    bodies = await queued_in(store)
    assert len(bodies) == 2
    assert all("666" not in body for body in bodies)
    [entry] = await store.quarantined()
    assert (entry.reason, entry.alert and entry.alert["identity"]) == ("pipeline_error", POISON)
    assert "ValueError: cannot decide" in entry.detail
    assert (await sizes(store)).inbox == 0
    value = registry.get_sample_value(
        "sentry_bridge_quarantined_total", {"reason": "pipeline_error"}
    )
    assert value == 1.0


async def test_a_failing_batch_is_retried_then_split_and_the_poison_quarantined(
    tmp_path: Path, registry: CollectorRegistry, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(pipeline, "RETRY_DELAY", 0.01)
    store = PoisonStore(tmp_path / "p", ["am"], max_queued=100, metrics=Metrics(registry))
    store.poisoned = set()
    await store.open()
    run = pipeline_on(store, Pipeline)
    try:
        for n in (1, 666, 2):
            await store.accept(sentry(n))
        taken = await store.take(10)
        store.poisoned = {e.inbox_id for e in taken.entries if e.alert.identity == POISON}
        await store.abandon(taken)
        async with running(run):
            await until_sizes(store, lambda s: s.inbox == 0, "the inbox never emptied")
        bodies = await queued_in(store)
        assert [json.loads(b)["labels"]["sentry_issue_id"] for b in bodies] == ["1", "2"]
        [entry] = await store.quarantined()
        assert entry.alert is not None
        assert entry.alert["identity"] == POISON
        assert "DataError: cannot store this alert" in entry.detail
    finally:
        await store.close()


async def test_a_batch_is_retried_while_the_store_fails_and_nothing_is_lost(
    store: SqliteStore, registry: CollectorRegistry, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(pipeline, "RETRY_DELAY", 0.01)
    run = pipeline_on(store, Pipeline)
    for n in (1, 2):
        await store.accept(sentry(n))
    commits = probes.FailingCommits()
    await probes.fail_commits(store, commits)
    # The batch fails RETRIES times, the first alert alone, and quarantining it too: the
    # store itself is failing, so nothing is quarantined and everything goes round again.
    commits.failing = pipeline.RETRIES + 2
    forwarded = {"outcome": "forwarded"}

    def counted() -> float:
        return registry.get_sample_value("sentry_bridge_alerts_total", forwarded) or 0.0

    async with running(run):
        # Counted once committed: the count follows the queue by a moment.
        await until_sizes(store, lambda s: s.behind == 2 and counted() >= 2, "never queued")
    assert commits.failing == 0
    assert await store.quarantined() == []
    bodies = await queued_in(store)
    assert [json.loads(b)["labels"]["sentry_issue_id"] for b in bodies] == ["1", "2"]
    assert (await sizes(store)).inbox == 0
    # Decided RETRIES + 2 times, committed once: counted once.
    assert counted() == 2


KINDS = st.sampled_from(["good", "good", "decide", "store"])


@given(kinds=st.lists(KINDS, min_size=1, max_size=8), transient=st.integers(0, 6))
@settings(max_examples=40, deadline=None)
def test_retries_match_a_model(
    tmp_path_factory: pytest.TempPathFactory, kinds: list[str], transient: int
) -> None:
    """Model (today's guarantees): every accepted entry ends exactly once, queued or
    quarantined; the ones a decision or the store refuses are quarantined, the queued keep
    their order; and while the store never fails on its own, no good entry is
    quarantined. ``transient``: COMMITs refused on the way (a store failing for a while)."""

    async def scenario() -> None:
        store = PoisonStore(
            tmp_path_factory.mktemp("retries"), ["am"], max_queued=100,
            metrics=Metrics(CollectorRegistry()),
        )  # fmt: skip
        await store.open()
        run = pipeline_on(store, PoisonPipeline)
        assert isinstance(run, PoisonPipeline)
        run.poison = frozenset(f"issue:{n}" for n, k in enumerate(kinds) if k == "decide")
        try:
            for n in range(len(kinds)):
                await store.accept(sentry(n))
            taken = await store.take(100)
            store.poisoned = {
                e.inbox_id for e, k in zip(taken.entries, kinds, strict=True) if k == "store"
            }
            await store.abandon(taken)
            commits = probes.FailingCommits()
            await probes.fail_commits(store, commits)
            commits.failing = transient
            async with running(run):
                await until_sizes(store, lambda s: s.inbox == 0, "the inbox never emptied")
            queued = [
                int(json.loads(b)["labels"]["sentry_issue_id"]) for b in await queued_in(store)
            ]
            kept = [
                int((q.alert or {})["identity"].split(":")[1]) for q in await store.quarantined()
            ]
            assert sorted(queued + kept) == list(range(len(kinds)))  # each once, none lost
            assert queued == sorted(queued)
            assert {n for n, k in enumerate(kinds) if k != "good"} <= set(kept)
            if not transient:
                assert {n for n, k in enumerate(kinds) if k == "good"} == set(queued)
        finally:
            await store.close()

    saved = pipeline.RETRY_DELAY
    pipeline.RETRY_DELAY = 0
    try:
        asyncio.run(scenario())
    finally:
        pipeline.RETRY_DELAY = saved


class RefuseReads:
    """Refuses reading the ``state`` table while ``on`` (an I/O error on a read)."""

    def __init__(self) -> None:
        self.on = True
        self.refused = 0

    def __call__(self, action: int, arg1: str | None, *_: object) -> int:
        if self.on and action == sqlite3.SQLITE_READ and arg1 == "state":
            self.refused += 1
            return sqlite3.SQLITE_DENY
        return sqlite3.SQLITE_OK


async def test_the_pipeline_keeps_running_when_reading_the_inbox_fails(
    store: SqliteStore, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(pipeline, "RETRY_DELAY", 0.01)
    refuse = RefuseReads()
    await store._file.call(lambda: store._file.db.set_authorizer(refuse))
    async with running(pipeline_on(store, Pipeline)):
        await store.accept(sentry(1))
        await until(lambda: refuse.refused >= 2)  # take() failed, and was tried again
        refuse.on = False
        await until_sizes(store, lambda s: s.behind == 1, "never queued")

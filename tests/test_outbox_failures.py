"""The outbox when things go wrong, against a real SQLite file: a failed COMMIT rolls
back, a store that keeps failing says so and recovers, the same body twice has one
effect, and the pipeline quarantines one bad alert alone and retries a failing batch.

Faults are injected at SQLite itself (an authorizer that refuses COMMIT: the statement
fails exactly as it does on a full disk, with the transaction left open) or, for a
poison alert, at the outbox boundary (a subclass whose ``complete`` refuses it)."""

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
from tests.store import probes

pytestmark = pytest.mark.anyio


class Commits:
    """Refuses the next ``failing`` COMMITs on the outbox's connection."""

    def __init__(self) -> None:
        self.failing = 0

    def __call__(self, action: int, arg1: str | None, *_: object) -> int:
        if action == sqlite3.SQLITE_TRANSACTION and arg1 == "COMMIT" and self.failing:
            self.failing -= 1
            return sqlite3.SQLITE_DENY
        return sqlite3.SQLITE_OK


async def install(box: SqliteStore, commits: Commits) -> None:
    # The connection belongs to the outbox's thread: set the authorizer there.
    await box._file.call(lambda: box._file.db.set_authorizer(commits))


@pytest.fixture
def registry() -> CollectorRegistry:
    return CollectorRegistry()


@pytest.fixture
def clock() -> Clock:
    return Clock()


@pytest.fixture
async def outbox(
    tmp_path: Path, registry: CollectorRegistry, clock: Clock
) -> AsyncIterator[SqliteStore]:
    box = SqliteStore(
        tmp_path, ["am"], max_queued=1000, metrics=Metrics(registry), clock=clock,
        body_retention=3600, max_bodies=3,
    )  # fmt: skip
    await box.open()
    yield box
    await box.close()


def store_errors(registry: CollectorRegistry) -> float:
    return registry.get_sample_value("sentry_bridge_store_errors_total") or 0.0


def digest(n: int) -> bytes:
    return hashlib.sha256(str(n).encode()).digest()


async def test_a_failed_commit_rolls_back_and_the_next_write_works(
    outbox: SqliteStore, registry: CollectorRegistry
) -> None:
    commits = Commits()
    await install(outbox, commits)
    commits.failing = 1
    with pytest.raises(StoreFull):
        await outbox.accept(sentry(1))
    assert store_errors(registry) == 1.0
    assert not await outbox._file.call(lambda: outbox._file.db.in_transaction)
    assert outbox.store_ok()  # one failure is not a failing store
    assert await outbox.accept(sentry(2))
    assert [e.alert.identity for e in (await outbox.take(10)).entries] == ["issue:2"]


async def test_a_store_that_keeps_failing_is_not_ok_until_a_write_succeeds(
    outbox: SqliteStore, registry: CollectorRegistry
) -> None:
    commits = Commits()
    await install(outbox, commits)
    commits.failing = SqliteStore.failing_after
    for n in range(SqliteStore.failing_after):
        with pytest.raises(StoreFull):
            await outbox.accept(sentry(n))
    assert not outbox.store_ok()
    assert store_errors(registry) == SqliteStore.failing_after
    assert await outbox.probe()  # the disk has room again
    assert outbox.store_ok()


async def test_the_same_body_within_the_retention_is_a_duplicate(
    outbox: SqliteStore, clock: Clock, registry: CollectorRegistry
) -> None:
    assert await outbox.accept(sentry(1), digest(1))
    # Concurrent copies commit in one group: exactly one of them is stored.
    results = await asyncio.gather(*(outbox.accept(sentry(1), digest(1)) for _ in range(3)))
    assert results == [False, False, False]
    assert registry.get_sample_value("sentry_bridge_webhooks_duplicate_total") == 3.0
    assert [e.alert.identity for e in (await outbox.take(10)).entries] == ["issue:1"]
    # No digest (an internal accept): never a duplicate.
    assert await outbox.accept(sentry(1))
    clock.now += timedelta(seconds=3601)
    assert await outbox.accept(sentry(1), digest(1))


async def test_seen_bodies_are_bounded_in_count(outbox: SqliteStore) -> None:
    for n in range(1, 5):  # max_bodies=3: the first is forgotten
        assert await outbox.accept(sentry(n), digest(n))
    assert await outbox.accept(sentry(1), digest(1))
    assert not await outbox.accept(sentry(4), digest(4))
    rows = await outbox._file.call(
        lambda: outbox._file.db.execute("SELECT count(*) FROM seen_body").fetchone()
    )
    assert rows[0] == 3


async def test_a_quarantined_body_is_kept_once_and_survives_a_restart(
    tmp_path: Path, outbox: SqliteStore, registry: CollectorRegistry
) -> None:
    body = b'{"action": "triggered"}'
    sha = hashlib.sha256(body).digest()
    assert await outbox.quarantine("invalid_payload", "no data", {"request-id": "r"}, body, sha)
    assert not await outbox.quarantine("invalid_payload", "no data", {}, body, sha)
    assert registry.get_sample_value("sentry_bridge_quarantine_webhooks") == 1.0
    await outbox.close()
    again = SqliteStore(tmp_path, ["am"], max_queued=10, metrics=Metrics(CollectorRegistry()))
    await again.open()
    [entry] = await again.quarantined()
    assert (entry.body, entry.headers, entry.detail) == (body, {"request-id": "r"}, "no data")
    assert again.quarantine_count() == 1
    await again.close()
    await outbox.open()  # for the fixture's close


# --- the pipeline -----------------------------------------------------------------------

CONFIG = config.parse({"sentry": {"allow_unauthenticated": True}}, env={})
POISON = "issue:666"


class PoisonOutbox(SqliteStore):
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


def pipeline_on(box: SqliteStore, cls: type[Pipeline]) -> Pipeline:
    metrics = box.metrics
    return cls(CONFIG, store=box, enricher=Enricher(CONFIG.sentry, metrics), metrics=metrics)


async def queued_in(box: SqliteStore) -> list[str]:
    async with box.lane("am") as lane:
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
    outbox: SqliteStore, registry: CollectorRegistry
) -> None:
    run = pipeline_on(outbox, PoisonPipeline)
    for n in (1, 666, 2):
        await outbox.accept(sentry(n))
    commits = probes.Commits(outbox)
    await run.process(await outbox.take(10))
    assert commits.count == 1  # the batch and the quarantine: one transaction
    bodies = await queued_in(outbox)
    assert len(bodies) == 2
    assert all("666" not in body for body in bodies)
    [entry] = await outbox.quarantined()
    assert (entry.reason, entry.alert and entry.alert["identity"]) == ("pipeline_error", POISON)
    assert "ValueError: cannot decide" in entry.detail
    assert outbox.inbox_count() == 0
    value = registry.get_sample_value(
        "sentry_bridge_quarantined_total", {"reason": "pipeline_error"}
    )
    assert value == 1.0


async def test_a_failing_batch_is_retried_then_split_and_the_poison_quarantined(
    tmp_path: Path, registry: CollectorRegistry, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(pipeline, "RETRY_DELAY", 0.01)
    box = PoisonOutbox(tmp_path / "p", ["am"], max_queued=100, metrics=Metrics(registry))
    box.poisoned = set()
    await box.open()
    run = pipeline_on(box, Pipeline)
    try:
        for n in (1, 666, 2):
            await box.accept(sentry(n))
        taken = await box.take(10)
        box.poisoned = {e.inbox_id for e in taken.entries if e.alert.identity == POISON}
        await box.abandon(taken)
        async with running(run):
            await until(lambda: box.inbox_count() == 0)
        bodies = await queued_in(box)
        assert [json.loads(b)["labels"]["sentry_issue_id"] for b in bodies] == ["1", "2"]
        [entry] = await box.quarantined()
        assert entry.alert is not None
        assert entry.alert["identity"] == POISON
        assert "DataError: cannot store this alert" in entry.detail
    finally:
        await box.close()


async def test_a_batch_is_retried_while_the_store_fails_and_nothing_is_lost(
    outbox: SqliteStore, registry: CollectorRegistry, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(pipeline, "RETRY_DELAY", 0.01)
    run = pipeline_on(outbox, Pipeline)
    for n in (1, 2):
        await outbox.accept(sentry(n))
    commits = Commits()
    await install(outbox, commits)
    # The batch fails RETRIES times, the first alert alone, and quarantining it too: the
    # store itself is failing, so nothing is quarantined and everything goes round again.
    commits.failing = pipeline.RETRIES + 2
    forwarded = {"outcome": "forwarded"}

    def counted() -> float:
        return registry.get_sample_value("sentry_bridge_alerts_total", forwarded) or 0.0

    async with running(run):
        # Counted once committed: the count follows the queue by a moment.
        await until(lambda: outbox.queued_count() == 2 and counted() >= 2)
    assert commits.failing == 0
    assert await outbox.quarantined() == []
    bodies = await queued_in(outbox)
    assert [json.loads(b)["labels"]["sentry_issue_id"] for b in bodies] == ["1", "2"]
    assert outbox.inbox_count() == 0
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
        box = PoisonOutbox(
            tmp_path_factory.mktemp("retries"), ["am"], max_queued=100,
            metrics=Metrics(CollectorRegistry()),
        )  # fmt: skip
        await box.open()
        run = pipeline_on(box, PoisonPipeline)
        assert isinstance(run, PoisonPipeline)
        run.poison = frozenset(f"issue:{n}" for n, k in enumerate(kinds) if k == "decide")
        try:
            for n in range(len(kinds)):
                await box.accept(sentry(n))
            taken = await box.take(100)
            box.poisoned = {
                e.inbox_id for e, k in zip(taken.entries, kinds, strict=True) if k == "store"
            }
            await box.abandon(taken)
            commits = Commits()
            await install(box, commits)
            commits.failing = transient
            async with running(run):
                await until(lambda: box.inbox_count() == 0)
            queued = [int(json.loads(b)["labels"]["sentry_issue_id"]) for b in await queued_in(box)]
            kept = [int((q.alert or {})["identity"].split(":")[1]) for q in await box.quarantined()]
            assert sorted(queued + kept) == list(range(len(kinds)))  # each once, none lost
            assert queued == sorted(queued)
            assert {n for n, k in enumerate(kinds) if k != "good"} <= set(kept)
            if not transient:
                assert {n for n, k in enumerate(kinds) if k == "good"} == set(queued)
        finally:
            await box.close()

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
    outbox: SqliteStore, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(pipeline, "RETRY_DELAY", 0.01)
    refuse = RefuseReads()
    await outbox._file.call(lambda: outbox._file.db.set_authorizer(refuse))
    async with running(pipeline_on(outbox, Pipeline)):
        await outbox.accept(sentry(1))
        await until(lambda: refuse.refused >= 2)  # take() failed, and was tried again
        refuse.on = False
        await until(lambda: outbox.queued_count() == 1)

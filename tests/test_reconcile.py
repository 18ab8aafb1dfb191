"""The reconciler (bridge/reconcile.py) against the Sentry API stand-in (tests/sentry_api.py)
and a real SQLite store, its inputs decided by the real pipeline: batches, the per-issue
fallback, 429 with Retry-After, errors, slow answers. Waits go to a recorded fake sleep."""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator, Iterator
from contextlib import asynccontextmanager
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest
from prometheus_client import CollectorRegistry

from bridge import config
from bridge.enrich import Enricher
from bridge.metrics import Metrics
from bridge.pipeline import Pipeline
from bridge.reconcile import BATCH, Reconciler
from bridge.store.sqlite import SqliteStore
from tests import factories
from tests.sentry_api import FakeSentryAPI, Reply

pytestmark = pytest.mark.anyio

TARGET = "am:9093"


@pytest.fixture
def api() -> Iterator[FakeSentryAPI]:
    with FakeSentryAPI(token="t0ken") as fake:
        yield fake


class Rig:
    def __init__(self, store: SqliteStore, pipeline: Pipeline, reconciler: Reconciler) -> None:
        self.store, self.pipeline, self.reconciler = store, pipeline, reconciler
        self.waits: list[float] = []

    async def fire(self, *issues: int) -> None:
        for n in issues:
            await self.store.accept(factories.issue(n, environment="production"))
        await self.decide()

    async def decide(self) -> None:
        """Everything in the inbox through the pipeline."""
        while (await factories.sizes(self.store)).inbox:
            await self.pipeline.process(await asyncio.wait_for(self.store.take(1000), 5))

    async def posts(self) -> list[tuple[str, bool]]:
        """What was queued since the last call: (issue id, firing)."""
        async with self.store.lane(TARGET) as lane:
            assert lane is not None
            queued = await lane.pending(10_000)
            if queued:
                await lane.advance(queued[-1].id)
        now = datetime.now(UTC)
        alerts = [json.loads(q.body) for q in queued]
        return [
            (a["labels"]["sentry_issue_id"], datetime.fromisoformat(a["endsAt"]) > now)
            for a in alerts
        ]

    def count(self, name: str, **labels: str) -> float:
        value = self.pipeline.metrics.registry.get_sample_value(name, labels)
        return value or 0.0


@asynccontextmanager
async def rig(tmp_path: Path, api: FakeSentryAPI, **sentry: Any) -> AsyncIterator[Rig]:
    settings = {"base_url": api.url, "api_token": "t0ken", "organization": "acme"} | sentry
    cfg = config.parse(
        {
            "sentry": {"allow_unauthenticated": True, **settings},
            "alertmanager": {"urls": f"http://{TARGET}", "alert_lifetime": "1h"},
        },
        env={},
    )
    metrics = Metrics(CollectorRegistry())
    store = SqliteStore(tmp_path, (TARGET,), max_queued=100_000, metrics=metrics)
    await store.open()
    enricher = Enricher(cfg.sentry.model_copy(update={"api_token": None}), metrics)
    pipeline = Pipeline(cfg, store=store, enricher=enricher, metrics=metrics)
    waits: list[float] = []

    async def sleep(seconds: float) -> None:
        waits.append(seconds)

    reconciler = Reconciler(cfg, store, metrics, sleep=sleep)
    built = Rig(store, pipeline, reconciler)
    built.waits = waits
    try:
        yield built
    finally:
        await reconciler.aclose()
        await enricher.aclose()
        await store.close()


async def test_sentry_resolved_with_no_webhook_resolves_the_alert(
    tmp_path: Path, api: FakeSentryAPI
) -> None:
    async with rig(tmp_path, api) as r:
        await r.fire(1, 2)
        assert await r.posts() == [("1", True), ("2", True)]
        api.status("1", "resolved")
        api.status("2", "unresolved")
        assert await r.reconciler.round() == 1  # issue 2's alert is fresh: nothing to do
        await r.decide()
        assert await r.posts() == [("1", False)]
        assert r.count("sentry_bridge_alerts_total", outcome="reconciled") == 1
        assert r.count("sentry_bridge_reconcile_requests_total", result="ok") == 1
        # Sentry's answer named both issues in one request, with the token.
        (seen,) = api.requests_to(api.list_path())
        assert "group=1&group=2" in seen.path
        assert seen.authorization == "Bearer t0ken"
        assert await r.reconciler.round() == 0  # resolved already: nothing more to say


async def test_a_thousand_issues_take_one_request_per_hundred(
    tmp_path: Path, api: FakeSentryAPI
) -> None:
    async with rig(tmp_path, api) as r:
        issues = range(1, 1001)
        await r.fire(*issues)
        for n in issues:
            api.status(str(n), "unresolved")
        api.clear()
        await r.reconciler.round()
        assert len(api.requests) == 1000 // BATCH == 10
        # One request at a time, MIN_GAP apart: the waits between them (fake sleep).
        assert len(r.waits) >= 9


async def test_without_an_organization_each_issue_is_asked_alone(
    tmp_path: Path, api: FakeSentryAPI
) -> None:
    async with rig(tmp_path, api, organization="") as r:
        await r.fire(1, 2, 3)
        api.status("2", "ignored")
        assert await r.reconciler.round() == 1  # 1 and 3: 404, left as they are
        assert sorted(s.path for s in api.requests) == [api.issue_path(str(n)) for n in (1, 2, 3)]
        assert r.count("sentry_bridge_reconcile_requests_total", result="not_found") == 2


async def test_429_waits_retry_after_then_goes_on(tmp_path: Path, api: FakeSentryAPI) -> None:
    async with rig(tmp_path, api) as r:
        await r.fire(1)
        api.status("1", "resolved")
        limited = Reply(429, {"detail": "rate limited"}, headers={"Retry-After": "7"})
        api.fail(limited, times=2)
        assert await r.reconciler.round() == 1
        assert len(api.requests) == 3
        assert sum(1 for w in r.waits if w > 6) == 2  # Retry-After honoured, each time
        assert r.count("sentry_bridge_reconcile_requests_total", result="rate_limited") == 2


async def test_errors_back_off_then_end_the_round(tmp_path: Path, api: FakeSentryAPI) -> None:
    async with rig(tmp_path, api) as r:
        await r.fire(1)
        api.status("1", "resolved")
        api.fail(Reply(502, {"detail": "bad gateway"}), times=3)
        assert await r.reconciler.round() == 0
        assert len(api.requests) == 3
        backoff = [w for w in r.waits if w > 0.5]  # not the gaps between requests
        assert backoff == pytest.approx([1.0, 2.0], abs=0.1)  # doubling
        assert r.count("sentry_bridge_reconcile_last_success_timestamp_seconds") == 0
        assert await r.reconciler.round() == 1  # the next round starts over


async def test_a_slow_answer_counts_as_a_timeout(tmp_path: Path, api: FakeSentryAPI) -> None:
    async with rig(tmp_path, api, api_timeout="0.2s") as r:
        await r.fire(1)
        api.status("1", "resolved")
        api.fail(Reply(200, [], delay=1.0))
        assert await r.reconciler.round() == 1  # the retry got the answer
        assert r.count("sentry_bridge_reconcile_requests_total", result="timeout") == 1


async def test_an_unauthorized_token_ends_the_round_at_once(
    tmp_path: Path, api: FakeSentryAPI
) -> None:
    async with rig(tmp_path, api, api_token="wrong") as r:
        await r.fire(1)
        api.status("1", "resolved")
        assert await r.reconciler.round() == 0
        assert len(api.requests) == 1


async def test_only_the_replica_holding_the_periodic_lease_asks(
    tmp_path: Path, api: FakeSentryAPI
) -> None:
    async with rig(tmp_path, api) as r:
        await r.fire(1)
        api.status("1", "resolved")
        held = [False, False, True]  # what Store.periodic answers, round by round
        r.store.periodic = lambda: _answer(held.pop(0))  # type: ignore[method-assign]
        rounds: list[int] = []

        async def sleep(seconds: float) -> None:
            rounds.append(len(api.requests))
            if not held:
                raise asyncio.CancelledError

        r.reconciler._sleep = sleep
        with pytest.raises(asyncio.CancelledError):
            await r.reconciler.run()
        assert rounds[:2] == [0, 0]  # not the holder: no request
        assert len(api.requests) == 1  # the holder: one round


async def _answer(value: bool) -> bool:
    return value


LAST_ROUND = "sentry_bridge_reconcile_last_success_timestamp_seconds"


async def test_the_last_round_has_no_series_without_a_token(
    tmp_path: Path, api: FakeSentryAPI
) -> None:
    """SentryBridgeReconcileStalled (the chart) must never fire where nothing reconciles."""
    async with rig(tmp_path, api, api_token=None) as r:
        assert not r.reconciler.enabled
        assert r.pipeline.metrics.registry.get_sample_value(LAST_ROUND) is None
        exposed = r.pipeline.metrics.exposition().decode()
        assert f"# TYPE {LAST_ROUND} gauge" in exposed  # the family, with no sample
        assert f"\n{LAST_ROUND} " not in exposed


async def test_the_last_round_is_zero_until_a_round_completes(
    tmp_path: Path, api: FakeSentryAPI
) -> None:
    """0, not absent, so the chart's alert counts from the process's start until then."""
    async with rig(tmp_path, api) as r:
        assert r.pipeline.metrics.registry.get_sample_value(LAST_ROUND) == 0.0
        assert r.reconciler.last_round is None
        await r.fire(1)
        api.fail(Reply(502, {"detail": "bad gateway"}), times=3)
        await r.reconciler.round()  # ended early: no round completed
        assert r.pipeline.metrics.registry.get_sample_value(LAST_ROUND) == 0.0
        await r.reconciler.round()
        assert r.reconciler.last_round is not None
        assert r.pipeline.metrics.registry.get_sample_value(LAST_ROUND) == r.reconciler.last_round

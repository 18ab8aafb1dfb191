"""The pipeline's decisions with a real SQLite store on a temp dir and fake clocks:
dedup, escalation, one alert per identity, resolution."""

from __future__ import annotations

import dataclasses
from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
from prometheus_client import CollectorRegistry

from bridge import config
from bridge.alertmanager import PostableAlert
from bridge.enrich import Enricher
from bridge.metrics import Metrics
from bridge.model import Kind, SentryAlert, State
from bridge.pipeline import Pipeline
from bridge.store.contract import Processed
from bridge.store.sqlite import SqliteStore
from tests.clock import Clock
from tests.factories import sentry_alert, stored_alert

pytestmark = pytest.mark.anyio

START = datetime(2026, 11, 23, 8, 0, tzinfo=UTC)

CONFIG = config.parse(
    {
        "sentry": {"allow_unauthenticated": True},
        "classification": {
            "default_severity": "medium",
            "severity_labels": {"critical": {"page": "true"}, "low": {"page": "false"}},
            "rules": [
                {"name": "health", "match": {"transaction": {"regex": ".*/healthz"}}, "drop": True},
                {"name": "staging", "match": {"environment": "staging"}, "severity": "low"},
                {"name": "many-users", "match": {"users": {"gt": 10}}, "severity": "critical"},
            ],
        },
        "dedup": {"window": "5m", "escalate_after": 3, "escalate_period": "30m"},
        "alertmanager": {"alert_lifetime": "1h"},
    },
    env={},
)


@dataclasses.dataclass
class Harness:
    pipeline: Pipeline
    store: SqliteStore
    clock: Clock
    registry: CollectorRegistry

    async def commit(self, alert: SentryAlert) -> Processed:
        """One webhook through the store and the pipeline, as ``Pipeline.run`` takes it."""
        await self.store.accept(alert)
        [processed] = await self.pipeline.process(await self.store.take(1))
        return processed

    async def process(self, *alerts: SentryAlert) -> None:
        """Webhooks accepted together, processed as one batch."""
        for alert in alerts:
            await self.store.accept(alert)
        taken = await self.store.take(len(alerts))
        assert len(taken.entries) == len(alerts)
        await self.pipeline.process(taken)

    async def active(self, identity: str) -> PostableAlert | None:
        return await stored_alert(self.store, identity)

    def outcome(self, name: str) -> float:
        value = self.registry.get_sample_value("sentry_bridge_alerts_total", {"outcome": name})
        return value or 0.0


@pytest.fixture
async def harness(tmp_path: Path) -> AsyncIterator[Harness]:
    clock = Clock(START)
    registry = CollectorRegistry()
    metrics = Metrics(registry)
    store = SqliteStore(tmp_path, ["am"], max_queued=1000, metrics=metrics, clock=clock)
    await store.open()
    enricher = Enricher(CONFIG.sentry, metrics)
    pipeline = Pipeline(CONFIG, store=store, enricher=enricher, metrics=metrics)
    yield Harness(pipeline, store, clock, registry)
    await enricher.aclose()
    await store.close()


def issue(**overrides: Any) -> SentryAlert:
    """Issue 42 of project ``backend`` in production."""
    return sentry_alert(
        **({"title": "ValueError", "project": "backend", "environment": "production"} | overrides)
    )


def only(processed: Processed) -> PostableAlert:
    assert len(processed.send) == 1
    return processed.send[0]


async def test_first_firing_is_forwarded_with_lifetime(harness: Harness) -> None:
    sent = only(await harness.commit(issue()))
    assert sent.labels["severity"] == "medium"
    assert sent.starts_at == START
    assert sent.ends_at == START + timedelta(hours=1)
    assert await harness.active("issue:42") is not None
    assert harness.outcome("forwarded") == 1


async def test_dropped_alert_sends_nothing(harness: Harness) -> None:
    processed = await harness.commit(issue(transaction="/api/healthz"))
    assert processed.send == ()
    assert harness.outcome("dropped") == 1
    assert await harness.active("issue:42") is None


async def test_repeat_within_window_is_a_duplicate_and_after_it_refreshes(
    harness: Harness,
) -> None:
    await harness.commit(issue())
    harness.clock.advance(minutes=1)
    assert (await harness.commit(issue())).send == ()
    assert harness.outcome("duplicate") == 1
    harness.clock.advance(minutes=40)  # past the window and the escalation period
    refreshed = only(await harness.commit(issue()))
    # Same alert, still firing: original startsAt, endsAt pushed out.
    assert refreshed.starts_at == START
    assert refreshed.ends_at == harness.clock.now + timedelta(hours=1)


async def test_higher_severity_is_never_suppressed_and_replaces_the_old_label_set(
    harness: Harness,
) -> None:
    first = only(await harness.commit(issue()))
    harness.clock.advance(seconds=10)
    processed = await harness.commit(issue(users=50))
    resolved, firing = processed.send
    assert resolved.labels == first.labels
    assert resolved.ends_at == harness.clock.now
    assert firing.labels["severity"] == "critical"
    assert firing.starts_at == harness.clock.now
    active = await harness.active("issue:42")
    assert active is not None
    assert active.labels == firing.labels


async def test_third_repeat_within_the_period_escalates(harness: Harness) -> None:
    alert = issue(environment="staging")
    assert only(await harness.commit(alert)).labels["severity"] == "low"
    harness.clock.advance(minutes=1)
    assert (await harness.commit(alert)).send == ()
    harness.clock.advance(minutes=1)
    resolved, escalated = (await harness.commit(alert)).send
    assert resolved.labels["severity"] == "low"
    assert escalated.labels["severity"] == "medium"
    assert escalated.labels["escalated"] == "true"
    value = harness.registry.get_sample_value("sentry_bridge_escalations_total")
    assert value == 1


async def test_resolve_sends_the_active_label_set_even_if_it_would_classify_otherwise(
    harness: Harness,
) -> None:
    fired = only(await harness.commit(issue(users=50)))
    harness.clock.advance(minutes=2)
    # Sentry's `issue` resource names no environment and no user count.
    resolve = issue(resource="issue", action="resolved", state=State.RESOLVED, environment=None)
    sent = only(await harness.commit(resolve))
    assert sent.labels == fired.labels
    assert sent.ends_at == harness.clock.now
    assert await harness.active("issue:42") is None
    # Firing again after the resolve is forwarded, not a duplicate.
    harness.clock.advance(seconds=1)
    assert only(await harness.commit(issue(users=50))).starts_at == harness.clock.now


async def test_resolve_of_unknown_identity_resolves_its_classification(harness: Harness) -> None:
    resolve = issue(
        resource="metric_alert",
        action="resolved",
        state=State.RESOLVED,
        kind=Kind.METRIC_ALERT,
        identity="metric_alert:7",
        alert_rule_id="7",
    )
    sent = only(await harness.commit(resolve))
    assert sent.labels["sentry_alert_rule_id"] == "7"
    assert sent.ends_at == harness.clock.now


async def test_active_state_survives_a_restart(harness: Harness, tmp_path: Path) -> None:
    fired = only(await harness.commit(issue()))
    await harness.store.close()
    reopened = SqliteStore(
        tmp_path, ["am"], max_queued=1000, metrics=Metrics(CollectorRegistry()), clock=harness.clock
    )
    await reopened.open()
    try:
        active = await stored_alert(reopened, "issue:42")
        assert active is not None
        assert active.labels == fired.labels
    finally:
        await reopened.close()
        await harness.store.open()  # the fixture closes it again


async def queued(store: SqliteStore) -> list[tuple[str, str]]:
    """What the store queued for Alertmanager, as (severity, "fire" or "resolve")."""
    out = []
    async with store.lane("am") as lane:
        assert lane is not None
        items = await lane.pending(1000)
    for item in items:
        alert = PostableAlert.model_validate_json(item.body)
        assert alert.ends_at is not None
        out.append((alert.labels["severity"], "resolve" if alert.ends_at <= START else "fire"))
    return out


def metric(action: str) -> SentryAlert:
    return issue(
        resource="metric_alert",
        action=action,
        kind=Kind.METRIC_ALERT,
        identity="metric_alert:7",
        alert_rule_id="7",
        state=State.RESOLVED if action == "resolved" else State.FIRING,
        users=50 if action == "critical" else None,
    )


async def test_a_batch_sees_its_own_earlier_decisions(harness: Harness) -> None:
    # Issue 8: critical then resolved in one batch used to resolve a label set never sent.
    await harness.process(metric("critical"), metric("resolved"))
    assert await queued(harness.store) == [("critical", "fire"), ("critical", "resolve")]
    assert await harness.active("metric_alert:7") is None


async def test_a_batch_rising_in_severity_leaves_one_alert(harness: Harness) -> None:
    await harness.process(issue(), issue(users=50))
    assert await queued(harness.store) == [
        ("medium", "fire"),
        ("medium", "resolve"),
        ("critical", "fire"),
    ]
    active = await harness.active("issue:42")
    assert active is not None
    assert active.labels["severity"] == "critical"


async def test_dedup_and_escalation_survive_a_restart(harness: Harness, tmp_path: Path) -> None:
    alert = issue(environment="staging")
    await harness.commit(alert)
    await harness.store.close()
    await harness.store.open()  # a restart: nothing in memory carries over
    harness.clock.advance(minutes=1)
    assert (await harness.commit(dataclasses.replace(alert, event_id="2"))).send == ()
    assert harness.outcome("duplicate") == 1
    await harness.store.close()
    await harness.store.open()
    harness.clock.advance(minutes=1)
    _, escalated = (await harness.commit(dataclasses.replace(alert, event_id="3"))).send
    assert escalated.labels["escalated"] == "true"


async def test_outcomes_are_counted(harness: Harness) -> None:
    await harness.commit(issue(occurred_at=START, received_at=START))
    harness.clock.advance(minutes=1)
    await harness.commit(issue(resource="issue", action="resolved", state=State.RESOLVED))
    await harness.commit(issue(received_at=START, event_id="late"))  # a late retry
    counts = {name: harness.outcome(name) for name in ("forwarded", "resolved", "stale")}
    assert counts == {"forwarded": 1, "resolved": 1, "stale": 1}
    assert (
        harness.registry.get_sample_value("sentry_bridge_alerts_total", {"outcome": "ignored"}) == 0
    )


async def test_a_backlog_does_not_make_events_after_a_resolve_stale(harness: Harness) -> None:
    # Accepted in order, processed together much later (a restart): the resolve carries no
    # time of its own, so it counts from its acceptance, not from when it is processed.
    await harness.commit(issue(received_at=START, event_id="1"))
    harness.clock.advance(minutes=1)
    await harness.store.accept(issue(resource="issue", action="resolved", state=State.RESOLVED))
    harness.clock.advance(minutes=1)
    await harness.store.accept(issue(received_at=harness.clock.now, event_id="2"))
    harness.clock.advance(minutes=30)
    await harness.pipeline.process(await harness.store.take(10))
    assert (harness.outcome("resolved"), harness.outcome("stale")) == (1, 0)
    active = await harness.active("issue:42")
    assert active is not None
    assert active.starts_at == harness.clock.now

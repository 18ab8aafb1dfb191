"""bridge/metrics.py: every family in one registry, exported at zero before it counts."""

from __future__ import annotations

from prometheus_client import CollectorRegistry
from prometheus_client.parser import text_string_to_metric_families

from bridge.metrics import Metrics


def names(text: bytes) -> set[str]:
    return {family.name for family in text_string_to_metric_families(text.decode())}


def test_one_registry_one_exposition_every_family_once() -> None:
    """The whole bridge is one process: /metrics is its registry, each family once (a
    repeated family makes Prometheus reject the scrape)."""
    metrics = Metrics(CollectorRegistry())
    metrics.add_process_collectors()
    text = metrics.exposition().decode()
    families = [line.split()[2] for line in text.splitlines() if line.startswith("# TYPE ")]
    assert len(families) == len(set(families))
    assert {
        "sentry_bridge_webhooks_received",
        "sentry_bridge_alerts",
        "sentry_bridge_pipeline_last_progress_timestamp_seconds",
        "process_resident_memory_bytes",
        "python_info",
    } <= names(metrics.exposition())


def test_every_outcome_is_exported_at_zero_before_the_first_webhook() -> None:
    registry = CollectorRegistry()
    Metrics(registry)
    outcomes = {"forwarded", "resolved", "duplicate", "stale", "dropped", "ignored", "reconciled"}
    outcomes |= {"escalated", "acknowledged"}  # the escalation timer (issue 16)
    for outcome in outcomes:
        value = registry.get_sample_value("sentry_bridge_alerts_total", {"outcome": outcome})
        assert value == 0, outcome
    exported = {
        sample.labels["outcome"]
        for family in text_string_to_metric_families(
            Metrics(CollectorRegistry()).exposition().decode()
        )
        if family.name == "sentry_bridge_alerts"
        for sample in family.samples
    }
    assert exported == outcomes


def test_children_count_into_the_labelled_metric_and_add_no_series_until_used() -> None:
    metrics = Metrics(CollectorRegistry())
    before = metrics.exposition()
    metrics.spoke("integration").set(5.0)
    metrics.spoke("integration").set(7.0)
    metrics.received("issue").inc()
    metrics.received("issue").inc()
    assert metrics.spoke("integration") is metrics.last_webhook.labels("integration")
    assert b'family="legacy"' not in metrics.exposition()  # never used: no series
    assert b'family="integration"' not in before
    samples = {
        (s.name, tuple(s.labels.values())): s.value
        for family in text_string_to_metric_families(metrics.exposition().decode())
        for s in family.samples
    }
    assert samples[("sentry_bridge_last_webhook_timestamp_seconds", ("integration",))] == 7.0
    assert samples[("sentry_bridge_webhooks_received_total", ("issue",))] == 2.0

"""bridge/metrics.py: the edge's and the backend's parts of one registry."""

from __future__ import annotations

from prometheus_client import CollectorRegistry
from prometheus_client.parser import text_string_to_metric_families

from bridge.metrics import Metrics


def names(text: bytes) -> set[str]:
    return {family.name for family in text_string_to_metric_families(text.decode())}


def test_edge_and_backend_parts_split_every_family_once() -> None:
    metrics = Metrics(CollectorRegistry())
    whole = names(metrics.exposition())
    edge = names(metrics.exposition("edge"))
    backend = names(metrics.exposition("backend"))
    assert edge == {
        "sentry_bridge_build_info",
        "sentry_bridge_webhooks_received",
        "sentry_bridge_webhooks_rejected",
        "sentry_bridge_webhook_request_duration_seconds",
        "sentry_bridge_config_last_reload_successful",
        "sentry_bridge_config_last_reload_success_timestamp_seconds",
        "sentry_bridge_config_reloads",
        "sentry_bridge_config_reloads_failed",
    }
    assert not edge & backend
    assert edge | backend == whole
    assert "sentry_bridge_alerts" in backend


def test_every_outcome_is_exported_at_zero_before_the_first_webhook() -> None:
    registry = CollectorRegistry()
    Metrics(registry)
    outcomes = {"forwarded", "resolved", "duplicate", "stale", "dropped", "ignored"}
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

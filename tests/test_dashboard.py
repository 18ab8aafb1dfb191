"""The Grafana dashboard (dashboards/sentry-bridge.json) queries only what the bridge exports.

Every PromQL expression is parsed for real (promql-parser) and each metric it selects must be
one ``bridge.metrics.Metrics`` registers, under the sample name Prometheus stores (``_total``
for counters, ``_bucket``/``_sum``/``_count`` for histograms, ``_info`` for info). The
PrometheusRule's expressions are checked the same way in tests/test_helm.py.
"""

from __future__ import annotations

import json
import re
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.promql_checks import (
    DASHBOARD,
    as_promql,
    exported_metric_names,
    metric_names,
    selected_metrics,
)

ROOT = Path(__file__).resolve().parents[1]
CHART_COPY = ROOT / "helm" / "sentry-alertmanager-bridge" / "dashboards" / "sentry-bridge.json"


def _dashboard() -> dict[str, Any]:
    data: dict[str, Any] = json.loads(DASHBOARD.read_text(encoding="utf-8"))
    return data


def _panels(panels: list[dict[str, Any]]) -> Iterator[dict[str, Any]]:
    for panel in panels:
        yield panel
        yield from _panels(panel.get("panels", []))


def _targets() -> Iterator[tuple[str, dict[str, Any]]]:
    for panel in _panels(_dashboard()["panels"]):
        for target in panel.get("targets", []):
            yield f"{panel['title']}/{target['refId']}", target


TARGETS = [pytest.param(target, id=name) for name, target in _targets()]


def test_exported_names_follow_the_sample_naming() -> None:
    names = exported_metric_names()
    assert "sentry_bridge_webhooks_received_total" in names
    assert "sentry_bridge_webhook_request_duration_seconds_bucket" in names
    assert "sentry_bridge_store_queued_alerts" in names
    assert "sentry_bridge_build_info" in names
    assert "sentry_bridge_webhooks_received" not in names


@pytest.mark.parametrize(
    "expr",
    [
        pytest.param("rate(sentry_bridge_webhooks_received[5m])", id="counter-without-total"),
        pytest.param("sentry_bridge_store_queued_alerts_total", id="gauge-with-total"),
        pytest.param("sentry_bridge_alerts_total_bucket", id="bucket-of-a-counter"),
    ],
)
def test_a_wrong_metric_name_is_caught(expr: str) -> None:
    assert not metric_names(expr) <= exported_metric_names()


def test_the_dashboard_has_queries() -> None:
    assert len(TARGETS) >= 20


@pytest.mark.parametrize("target", TARGETS)
def test_every_query_parses_and_uses_exported_metrics(target: dict[str, Any]) -> None:
    names = metric_names(as_promql(target["expr"]))
    assert names, "a panel query selects no metric"
    unknown = names - exported_metric_names()
    assert not unknown, f"not exported by bridge.metrics: {sorted(unknown)}"


@pytest.mark.parametrize("target", TARGETS)
def test_every_query_follows_the_dashboard_variables(target: dict[str, Any]) -> None:
    """A selector without the variables would mix in other installs of the bridge."""
    for selector in selected_metrics(as_promql(target["expr"])):
        labels = {m.name for m in selector.matchers.matchers}
        assert {"namespace", "job", "instance"} <= labels, str(selector)
    assert target["datasource"] == {"type": "prometheus", "uid": "${datasource}"}


def test_variable_queries_use_exported_metrics() -> None:
    variables = {v["name"]: v for v in _dashboard()["templating"]["list"]}
    assert variables["datasource"]["type"] == "datasource"
    assert variables["datasource"]["query"] == "prometheus"
    for name in ("namespace", "job", "instance"):
        query = variables[name]["query"]["query"]
        m = re.fullmatch(r"label_values\((.+), (\w+)\)", query)
        assert m, query
        assert m.group(2) == name
        assert metric_names(as_promql(m.group(1))) <= exported_metric_names()


def test_it_shows_what_operators_ask_for() -> None:
    """The panels the issue lists: webhooks by resource and outcome, alerts by severity,
    duplicates, escalations, delivery rate, latency and failures, store depth and age."""
    exprs = [target["expr"] for _, target in _targets()]
    queried = set().union(*(metric_names(as_promql(e)) for e in exprs))
    assert {
        "sentry_bridge_webhooks_received_total",
        "sentry_bridge_webhooks_rejected_total",
        "sentry_bridge_alerts_total",
        "sentry_bridge_alerts_forwarded_by_severity_total",
        "sentry_bridge_escalations_total",
        "sentry_bridge_alertmanager_alerts_sent_total",
        "sentry_bridge_alertmanager_requests_failed_total",
        "sentry_bridge_alertmanager_request_duration_seconds_bucket",
        "sentry_bridge_alertmanager_alerts_dropped_total",
        "sentry_bridge_store_queued_alerts",
        "sentry_bridge_store_queued_oldest_age_seconds",
    } <= queried
    assert any("by (resource)" in e for e in exprs)
    assert any("by (outcome)" in e for e in exprs)
    assert any("by (severity)" in e for e in exprs)
    assert any('outcome="duplicate"' in e for e in exprs)


@pytest.mark.parametrize(
    ("metric", "what"),
    [
        pytest.param("sentry_bridge_quarantine_webhooks", "webhooks held", id="quarantine-held"),
        pytest.param("sentry_bridge_quarantined_total", "quarantined by reason", id="quarantined"),
        pytest.param("sentry_bridge_alertmanager_up", "Alertmanager up", id="alertmanager-up"),
        pytest.param("sentry_bridge_store_errors_total", "store errors", id="store-errors"),
        pytest.param("sentry_bridge_config_reloads_total", "reloads", id="reloads"),
        pytest.param("sentry_bridge_config_reloads_failed_total", "refused", id="reloads-failed"),
        pytest.param(
            "sentry_bridge_config_last_reload_successful", "last reload", id="last-reload"
        ),
    ],
)
def test_it_shows_what_an_operator_acts_on(metric: str, what: str) -> None:
    """Issue 14: no panel showed the quarantine, reloads, Alertmanager up or store errors.
    Each has a time series (who and when) and, but for the counters of reloads, a stat in
    the overview (at a glance)."""
    kinds = {
        panel["type"]
        for panel in _panels(_dashboard()["panels"])
        for target in panel.get("targets", [])
        if metric in metric_names(as_promql(target["expr"]))
    }
    assert "timeseries" in kinds, f"no time series of {what}"
    if metric in {
        "sentry_bridge_quarantine_webhooks",
        "sentry_bridge_alertmanager_up",
        "sentry_bridge_store_errors_total",
        "sentry_bridge_config_last_reload_successful",
    }:
        assert "stat" in kinds, f"no overview stat of {what}"


def test_panels_do_not_overlap() -> None:
    taken: dict[tuple[int, int], str] = {}
    for panel in _panels(_dashboard()["panels"]):
        pos = panel["gridPos"]
        for x in range(pos["x"], pos["x"] + pos["w"]):
            for y in range(pos["y"], pos["y"] + pos["h"]):
                assert (x, y) not in taken, f"{panel['title']} overlaps {taken[(x, y)]}"
                taken[(x, y)] = panel["title"]


def test_panels_have_unique_ids_and_fit_the_grid() -> None:
    panels = list(_panels(_dashboard()["panels"]))
    ids = [p["id"] for p in panels]
    assert len(ids) == len(set(ids))
    for panel in panels:
        pos = panel["gridPos"]
        assert pos["x"] + pos["w"] <= 24, panel["title"]


def test_the_chart_ships_the_same_dashboard() -> None:
    """Helm reads files only inside the chart, so the chart holds a copy; keep it equal:
    cp dashboards/sentry-bridge.json helm/sentry-alertmanager-bridge/dashboards/"""
    assert CHART_COPY.read_bytes() == DASHBOARD.read_bytes()

"""bridge/sentry/metric.py: metric alert fixtures, and the number in description_text."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

import pytest
from starlette.datastructures import Headers

from bridge.model import Kind, State
from bridge.sentry.metric import MetricReading, parse_metric_description
from tests.sentry_payloads import (
    alert,
    assert_no_pii,
    assert_normalised,
    hook,
    load_fixture,
    patched,
    without,
)

METRIC = {"kind": Kind.METRIC_ALERT, "organization": "acme", "issue_id": None}

CASES = [
    pytest.param(
        "metric_alert_critical.json",
        hook("metric_alert"),
        {
            **METRIC,
            "resource": "metric_alert",
            "action": "critical",
            "state": State.FIRING,
            "identity": "metric_alert:7011",
            "title": "Checkout error spike",
            "project": "checkout-api",
            "environment": "production",
            "alert_rule_id": "7011",
            "alert_rule_name": "Checkout error spike",
            "metric_aggregate": "count()",
            "metric_value": 1204.0,
            "events": 1204,
            "users": None,
            "error_rate": None,
            "message": "1204 events in the last 10 minutes",
            "started_at": datetime(2024, 5, 14, 11, 4, tzinfo=UTC),
        },
        id="metric_alert-critical-count",
    ),
    pytest.param(
        "metric_alert_warning_users.json",
        hook("metric_alert"),
        {
            **METRIC,
            "action": "warning",
            "state": State.FIRING,
            "identity": "metric_alert:7012",
            "metric_aggregate": "count_unique(tags[sentry:user])",
            "metric_value": 38.0,
            "users": 38,
            "events": None,
        },
        id="metric_alert-warning-users",
    ),
    pytest.param(
        "metric_alert_critical_failure_rate.json",
        hook("metric_alert"),
        {
            **METRIC,
            "state": State.FIRING,
            "identity": "metric_alert:7013",
            "metric_value": 12.5,
            "error_rate": 0.125,
        },
        id="metric_alert-failure-rate",
    ),
    pytest.param(
        "metric_alert_critical_crash_free.json",
        hook("metric_alert"),
        {
            **METRIC,
            "identity": "metric_alert:7014",
            "project": "ios-app",
            "environment": None,
            "metric_aggregate": "percentage(sessions_crashed, sessions)",
            "metric_value": 97.1,
            "error_rate": 0.029,
        },
        id="metric_alert-crash-free",
    ),
    pytest.param(
        "metric_alert_warning_p95.json",
        hook("metric_alert"),
        {**METRIC, "identity": "metric_alert:7015", "latency_ms": 1532.7, "error_rate": None},
        id="metric_alert-p95",
    ),
    pytest.param(
        "metric_alert_resolved.json",
        hook("metric_alert"),
        {
            **METRIC,
            "action": "resolved",
            "state": State.RESOLVED,
            "identity": "metric_alert:7",
            "title": "Too many errors",
            "events": 1000,
            "web_url": "https://sentry.io/organizations/acme/alerts/rules/details/7/"
            "?alert=1&referrer=metric_alert_sentry_app&detection_type=static",
        },
        id="metric_alert-resolved-docs",
    ),
]


@pytest.mark.parametrize(("fixture", "headers", "expected"), CASES)
def test_normalise_fixture(fixture: str, headers: Headers, expected: dict[str, Any]) -> None:
    assert_normalised(fixture, headers, expected)


@pytest.mark.parametrize(("fixture", "headers", "expected"), CASES)
def test_alerts_carry_no_pii(fixture: str, headers: Headers, expected: dict[str, Any]) -> None:
    assert_no_pii(alert(headers, load_fixture(fixture)))


def test_metric_alert_falls_back_to_rule_name() -> None:
    data = without("metric_alert_critical.json", "data", "metric_alert", "alert_rule", "id")
    assert alert(hook("metric_alert"), data).identity == "metric_alert:Checkout error spike"


def test_metric_alert_open_fires() -> None:
    data = patched("metric_alert_critical.json", "open", "action")
    assert alert(hook("metric_alert"), data).state is State.FIRING


def test_metric_alert_numbers_unknown_when_text_does_not_parse() -> None:
    data = patched("metric_alert_critical.json", "something happened", "data", "description_text")
    result = alert(hook("metric_alert"), data)
    assert (result.metric_value, result.events, result.users, result.error_rate) == (None,) * 4
    assert result.metric_aggregate == "count()"


# --- description_text --------------------------------------------------------------------

R = MetricReading


@pytest.mark.parametrize(
    ("text", "aggregate", "expected"),
    [
        pytest.param(
            "1204 events in the last 10 minutes",
            "count()",
            R("count()", 1204.0, events=1204),
            id="count",
        ),
        pytest.param(
            "1204.0 events in the last hour",
            "count()",
            R("count()", 1204.0, events=1204),
            id="count-float",
        ),
        pytest.param(
            "38 users affected in the last day",
            "count_unique(tags[sentry:user])",
            R("count_unique(tags[sentry:user])", 38.0, users=38),
            id="users-affected",
        ),
        pytest.param(
            "12 count_unique(user) in the last 5 minutes",
            "count_unique(user)",
            R("count_unique(user)", 12.0, users=12),
            id="count-unique-user",
        ),
        pytest.param(
            "12.50% failure rate in the last 5 minutes",
            "failure_rate()",
            R("failure_rate()", 12.5, error_rate=0.125),
            id="failure-rate",
        ),
        pytest.param(
            "0.125 failure_rate() in the last 5 minutes",
            "failure_rate()",
            R("failure_rate()", 0.125, error_rate=0.125),
            id="failure-rate-older-sentry",
        ),
        pytest.param(
            "97.1% sessions crash free rate in the last hour",
            "percentage(sessions_crashed, sessions) AS _crash_rate_alert_aggregate",
            R("percentage(sessions_crashed, sessions)", 97.1, error_rate=0.029),
            id="crash-free-sessions",
        ),
        pytest.param(
            "99.5% users crash free rate in the last day",
            "percentage(users_crashed, users) AS _crash_rate_alert_aggregate",
            R("percentage(users_crashed, users)", 99.5, error_rate=0.005),
            id="crash-free-users",
        ),
        pytest.param(
            "1532.7 p95(transaction.duration) in the last 10 minutes",
            "p95(transaction.duration)",
            R("p95(transaction.duration)", 1532.7, latency_ms=1532.7),
            id="p95-ms",
        ),
        pytest.param(
            "1.53 s p95(duration) in the last 10 minutes",
            "p95(d:transactions/duration@millisecond)",
            R("p95(d:transactions/duration@millisecond)", 1.53, latency_ms=1530.0),
            id="p95-metrics-seconds",
        ),
        pytest.param(
            "250.5 ms avg(duration) in the last 10 minutes",
            "avg(d:spans/duration@millisecond)",
            R("avg(d:spans/duration@millisecond)", 250.5, latency_ms=250.5),
            id="avg-metrics-ms",
        ),
        pytest.param(
            "42 count(duration) in the last 10 minutes",
            "count(d:transactions/duration@millisecond)",
            R("count(d:transactions/duration@millisecond)", 42.0),
            id="metrics-count-has-no-unit",
        ),
        pytest.param(
            "812.0 p75(measurements.lcp) in the last 10 minutes",
            "p75(measurements.lcp)",
            R("p75(measurements.lcp)", 812.0, latency_ms=812.0),
            id="lcp",
        ),
        pytest.param(
            "0.82 apdex() in the last 10 minutes",
            "apdex()",
            R("apdex()", 0.82),
            id="apdex-value-only",
        ),
        pytest.param(
            "0.12 p75(measurements.cls) in the last 10 minutes",
            "p75(measurements.cls)",
            R("p75(measurements.cls)", 0.12),
            id="cls-is-not-a-duration",
        ),
        pytest.param(
            "Events 150% higher in the last 10 minutes compared to the same time one hour ago",
            "count()",
            R("count()"),
            id="percent-change-is-not-the-metric",
        ),
        pytest.param(
            "Failure rate 12.50% higher in the last 5 minutes"
            " compared to the same time one day ago",
            "failure_rate()",
            R("failure_rate()"),
            id="percent-change-failure-rate",
        ),
        pytest.param(
            "1000 events in the last 10 minutes",
            "count_unique(user)",
            R("count_unique(user)"),
            id="mismatch",
        ),
        pytest.param(
            "1000 events in the last 10 minutes",
            None,
            R("count()", 1000.0, events=1000),
            id="no-aggregate",
        ),
        pytest.param(
            "1000 widgets in the last 10 minutes", None, R(), id="no-aggregate-unknown-text"
        ),
        pytest.param(
            "1000 events in the last 10 minutes\nThreshold: Static",
            "count()",
            R("count()", 1000.0, events=1000),
            id="threshold-line",
        ),
        pytest.param(
            "12.5 events in the last 10 minutes",
            "count()",
            R("count()", 12.5),
            id="fractional-count",
        ),
        pytest.param("", "count()", R("count()"), id="empty"),
        pytest.param(None, "count()", R("count()"), id="none"),
        pytest.param("lots of events lately", "count()", R("count()"), id="garbage"),
    ],
)
def test_parse_metric_description(
    text: str | None, aggregate: str | None, expected: MetricReading
) -> None:
    assert parse_metric_description(text, aggregate) == expected

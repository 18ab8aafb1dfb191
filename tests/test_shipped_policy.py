"""The shipped config.yaml's policy, statement by statement, and where statements meet.

Each case is an alert and the rule and severity the shipped rules give it (severity None:
dropped). When the policy changes, change these cases with it: they are its specification.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from bridge import config
from bridge.classify import classify
from bridge.model import Kind, SentryAlert, Severity, State

ROOT = Path(__file__).resolve().parents[1]
POLICY = config.load(ROOT / "config.yaml", env={"SENTRY_CLIENT_SECRET": "x"}).classification

LOW, MEDIUM, HIGH, CRITICAL = Severity.LOW, Severity.MEDIUM, Severity.HIGH, Severity.CRITICAL
PROD: dict[str, Any] = {"environment": "production"}


def issue(**fields: Any) -> SentryAlert:
    values: dict[str, Any] = {
        "resource": "event_alert",
        "action": "triggered",
        "kind": Kind.ISSUE,
        "state": State.FIRING,
        "identity": "issue:1",
        "title": "ValueError: invalid literal for int()",
        "platform": "python",
        "culprit": "billing.views in charge",
        "handled": True,
    }
    values.update(fields)
    return SentryAlert(**values)


def metric(action: str, **fields: Any) -> SentryAlert:
    values: dict[str, Any] = {
        "resource": "metric_alert",
        "action": action,
        "kind": Kind.METRIC_ALERT,
        "state": State.FIRING,
        "identity": "metric_alert:7",
        "title": "Checkout",
        "environment": "production",
    }
    values.update(fields)
    return SentryAlert(**values)


def browser(**fields: Any) -> SentryAlert:
    values: dict[str, Any] = {"platform": "javascript", "culprit": "app/checkout", **PROD}
    values.update(fields)
    return issue(**values)


def uptime(**fields: Any) -> SentryAlert:
    """An uptime monitor's failure as an issue-platform event_alert (level info, no exception)."""
    values: dict[str, Any] = {
        "title": "Downtime detected for https://shop.example.com/healthz",
        "platform": "other",
        "culprit": None,
        "handled": None,
        "level": "info",
        "issue_category": "uptime",
        "issue_type": "uptime_domain_failure",
        "url": None,
        **PROD,
    }
    values.update(fields)
    return issue(**values)


CRON = {"issue_category": "cron", "issue_type": "monitor_check_in_failure", "title": "Cron failure"}

CASES = [
    # 1. health checks are dropped, before anything can raise them
    pytest.param(issue(transaction="/healthz", **PROD), "health-check", None, id="healthz"),
    pytest.param(issue(transaction="GET /health", **PROD), "health-check", None, id="health"),
    pytest.param(issue(transaction="/health/", **PROD), "health-check", None, id="health-slash"),
    pytest.param(
        issue(url="https://api.example.com/internal/healthz"),
        "health-check",
        None,
        id="url-healthz",
    ),
    pytest.param(
        issue(transaction="/healthz", users=500, handled=False, error_rate=0.5, **PROD),
        "health-check",
        None,
        id="healthz-in-production-with-many-users",
    ),
    pytest.param(
        issue(transaction="/api/healthcheck", **PROD), None, MEDIUM, id="healthcheck-is-not-health"
    ),
    pytest.param(issue(transaction="/health/db", **PROD), None, MEDIUM, id="health-subpath-kept"),
    # 0. outages (uptime, cron) in production are high, whatever their level
    pytest.param(uptime(), "outage-in-production", HIGH, id="uptime-info-in-production"),
    pytest.param(uptime(level="warning"), "outage-in-production", HIGH, id="uptime-warning"),
    pytest.param(
        uptime(transaction="/healthz"), "outage-in-production", HIGH, id="uptime-of-healthz"
    ),
    pytest.param(
        uptime(environment="prod", issue_category="outage"),
        "outage-in-production",
        HIGH,
        id="uptime-type-under-the-newer-outage-category",
    ),
    pytest.param(uptime(**CRON, level="info"), "outage-in-production", HIGH, id="cron-info"),
    pytest.param(
        uptime(**{**CRON, "issue_category": "outage"}),
        "outage-in-production",
        HIGH,
        id="cron-newer-category",
    ),
    pytest.param(uptime(environment="staging"), "non-production", LOW, id="uptime-staging"),
    pytest.param(uptime(environment=None), None, MEDIUM, id="uptime-environment-unknown"),
    pytest.param(
        uptime(issue_category="performance", issue_type="performance_n_plus_one_db_queries"),
        None,
        MEDIUM,
        id="performance-issue-is-not-an-outage",
    ),
    # 2. outside production: low, whatever else holds
    pytest.param(issue(environment="staging"), "non-production", LOW, id="staging"),
    pytest.param(
        issue(environment="staging", users=50), "non-production", LOW, id="staging-50-users"
    ),
    pytest.param(
        issue(environment="development", handled=False),
        "non-production",
        LOW,
        id="dev-unhandled",
    ),
    pytest.param(
        metric("critical", environment="staging"), "non-production", LOW, id="staging-metric"
    ),
    pytest.param(
        issue(environment="Production"), "non-production", LOW, id="environment-names-are-exact"
    ),
    # 3. many users
    pytest.param(issue(users=11, **PROD), "many-users", CRITICAL, id="11-users"),
    pytest.param(issue(users=10, **PROD), None, MEDIUM, id="10-users"),
    pytest.param(issue(users=50), "many-users", CRITICAL, id="users-unknown-environment"),
    pytest.param(metric("warning", users=38), "many-users", CRITICAL, id="users-metric-warning"),
    # 4. error rate
    pytest.param(metric("critical", error_rate=0.051), "high-error-rate", CRITICAL, id="5.1%"),
    pytest.param(metric("warning", error_rate=0.05), "metric-alert-warning", MEDIUM, id="5%"),
    pytest.param(
        metric("warning", error_rate=0.10),
        "high-error-rate",
        CRITICAL,
        id="metric-warning-at-10%",
    ),
    # 5. unhandled in production
    pytest.param(issue(handled=False, **PROD), "unhandled-in-production", CRITICAL, id="unhandled"),
    pytest.param(
        issue(handled=False, environment="prod"),
        "unhandled-in-production",
        CRITICAL,
        id="unhandled-prod",
    ),
    pytest.param(issue(handled=True, **PROD), None, MEDIUM, id="handled-production"),
    pytest.param(issue(handled=None, **PROD), None, MEDIUM, id="handling-unknown"),
    pytest.param(issue(handled=True), None, MEDIUM, id="unknown-environment-handled"),
    pytest.param(issue(handled=False), None, MEDIUM, id="unknown-environment-unhandled"),
    # 6. agent subsystem
    pytest.param(
        issue(tags=(("component", "agent"),), **PROD), "agent-subsystem", HIGH, id="agent-tag"
    ),
    pytest.param(
        issue(culprit="workers.agent.loop in run", **PROD),
        "agent-subsystem",
        HIGH,
        id="agent-culprit",
    ),
    pytest.param(issue(tags=(("component", "billing"),), **PROD), None, MEDIUM, id="other-tag"),
    pytest.param(
        issue(culprit="workers.agent.loop in run", handled=False, **PROD),
        "unhandled-in-production",
        CRITICAL,
        id="agent-unhandled-is-critical",
    ),
    pytest.param(
        issue(culprit="workers.agent.loop in run", environment="staging"),
        "non-production",
        LOW,
        id="agent-in-staging",
    ),
    # 7. latency
    pytest.param(metric("warning", latency_ms=3000.0), "latency-above-2s", LOW, id="3s"),
    pytest.param(metric("warning", latency_ms=6000.0), "latency-above-5s", MEDIUM, id="6s"),
    pytest.param(metric("warning", latency_ms=5000.0), "latency-above-2s", LOW, id="5s-exactly"),
    pytest.param(metric("warning", latency_ms=1500.0), "metric-alert-warning", MEDIUM, id="1.5s"),
    pytest.param(
        metric("critical", latency_ms=6000.0),
        "latency-above-5s",
        MEDIUM,
        id="latency-decides-over-the-trigger",
    ),
    # 8. browser rendering errors
    pytest.param(
        browser(title="ChunkLoadError: Loading chunk 42 failed."),
        "frontend-rendering",
        LOW,
        id="chunk-load",
    ),
    pytest.param(
        browser(title="Error: Hydration failed because the initial UI does not match"),
        "frontend-rendering",
        LOW,
        id="hydration",
    ),
    pytest.param(
        browser(title="Error: Minified React error #418"), "frontend-rendering", LOW, id="react"
    ),
    pytest.param(
        browser(title="TypeError: cart.items is undefined", culprit="renderCart(app/cart)"),
        "frontend-rendering",
        LOW,
        id="render-culprit",
    ),
    pytest.param(
        browser(platform="javascript-react", title="Error: Rendered fewer hooks than expected"),
        "frontend-rendering",
        LOW,
        id="project-platform",
    ),
    pytest.param(
        browser(handled=None, environment=None, title="ChunkLoadError"),
        "frontend-rendering",
        LOW,
        id="issue-resource-without-event",
    ),
    pytest.param(
        browser(title="ChunkLoadError: Loading chunk 42 failed.", handled=False),
        "unhandled-in-production",
        CRITICAL,
        id="unhandled-rendering-in-production",
    ),
    pytest.param(
        browser(title="ChunkLoadError", users=40), "many-users", CRITICAL, id="rendering-many-users"
    ),
    pytest.param(
        browser(platform="node", title="Error: Minified React error #418"),
        None,
        MEDIUM,
        id="node-is-not-a-browser",
    ),
    pytest.param(
        browser(title="TypeError: price is undefined"), None, MEDIUM, id="other-browser-error"
    ),
    # 9. metric alerts keep their trigger
    pytest.param(metric("critical"), "metric-alert-critical", CRITICAL, id="metric-critical"),
    pytest.param(metric("warning"), "metric-alert-warning", MEDIUM, id="metric-warning"),
    pytest.param(
        metric("critical", environment=None),
        "metric-alert-critical",
        CRITICAL,
        id="metric-all-environments",
    ),
    # 10. the default
    pytest.param(issue(**PROD), None, MEDIUM, id="default"),
    pytest.param(issue(), None, MEDIUM, id="default-knowing-nothing"),
]


@pytest.mark.parametrize(("alert", "rule", "severity"), CASES)
def test_shipped_policy(alert: SentryAlert, rule: str | None, severity: Severity | None) -> None:
    decision = classify(alert, POLICY)
    assert (decision.rule, decision.severity) == (rule, severity)


def test_every_shipped_rule_is_specified_here() -> None:
    """A rule added to config.yaml without a case here fails this test."""
    specified = {param.values[1] for param in CASES}
    assert {rule.name for rule in POLICY.rules} <= specified


def test_agent_alerts_carry_the_component_label() -> None:
    decision = classify(issue(tags=(("component", "agent"),), **PROD), POLICY)
    assert decision.labels == {"component": "agent"}


@pytest.mark.parametrize(
    ("severity", "priority", "page"),
    [(CRITICAL, "P1", "true"), (HIGH, "P2", "true"), (MEDIUM, "P3", "false"), (LOW, "P4", "false")],
)
def test_severity_labels(severity: Severity, priority: str, page: str) -> None:
    assert POLICY.severity_labels[severity] == {"priority": priority, "page": page}

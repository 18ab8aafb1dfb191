from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest

from bridge import labels as L
from bridge.alertmanager import LABEL_NAME
from bridge.classify import Decision
from bridge.model import Kind, SentryAlert, Severity, State

NOW = datetime(2026, 11, 23, 8, 0, tzinfo=UTC)
SEVERITY_LABELS = {
    Severity.CRITICAL: {"priority": "P1", "page": "true"},
    Severity.LOW: {"priority": "P4", "page": "false"},
}


def issue(**overrides: object) -> SentryAlert:
    values: dict[str, object] = {
        "resource": "event_alert",
        "action": "triggered",
        "kind": Kind.ISSUE,
        "state": State.FIRING,
        "identity": "issue:42",
        "issue_id": "42",
        "title": "ValueError: bad input",
        "project": "backend",
        "project_id": "7",
        "environment": "production",
    }
    values.update(overrides)
    return SentryAlert(**values)  # type: ignore[arg-type]


DEFAULT = Decision(rule=None, severity=Severity.CRITICAL, labels={}, annotations={})


def test_required_labels_for_an_issue() -> None:
    labels = L.build_labels(
        issue(), DEFAULT, Severity.CRITICAL, escalated=False, severity_labels=SEVERITY_LABELS
    )
    assert labels == {
        "alertname": "SentryIssue",
        "severity": "critical",
        "source": "sentry",
        "project": "backend",
        "environment": "production",
        "sentry_issue_id": "42",
        "priority": "P1",
        "page": "true",
    }


def test_metric_alert_identity_label_and_unknowns() -> None:
    alert = issue(
        resource="metric_alert",
        action="critical",
        kind=Kind.METRIC_ALERT,
        identity="metric_alert:99",
        issue_id=None,
        alert_rule_id="99",
        project=None,
        project_id=None,
        environment=None,
    )
    labels = L.build_labels(
        alert, DEFAULT, Severity.LOW, escalated=True, severity_labels=SEVERITY_LABELS
    )
    assert labels["alertname"] == "SentryMetricAlert"
    assert labels["sentry_alert_rule_id"] == "99"
    assert "sentry_issue_id" not in labels
    assert labels["project"] == "unknown"
    assert labels["environment"] == "unknown"
    assert labels["escalated"] == "true"
    assert labels["priority"] == "P4"


def test_project_falls_back_to_id() -> None:
    labels = L.build_labels(
        issue(project=None), DEFAULT, Severity.LOW, escalated=False, severity_labels={}
    )
    assert labels["project"] == "7"


def test_rule_labels_added_and_no_empty_values() -> None:
    decision = Decision(
        rule="agent", severity=Severity.HIGH, labels={"team": "agents", "x": ""}, annotations={}
    )
    labels = L.build_labels(
        issue(), decision, Severity.HIGH, escalated=False, severity_labels=SEVERITY_LABELS
    )
    assert labels["team"] == "agents"
    assert "x" not in labels
    assert all(value for value in labels.values())


@pytest.mark.parametrize(
    ("name", "expected"),
    [
        pytest.param("sentry_url", "sentry_url", id="valid"),
        pytest.param("sentry-url", "sentry_url", id="dash"),
        pytest.param("tags.component", "tags_component", id="dot"),
        pytest.param("9lives", "_9lives", id="leading-digit"),
        pytest.param("", "_", id="empty"),
    ],
)
def test_sanitize_name(name: str, expected: str) -> None:
    assert L.sanitize_name(name) == expected
    assert LABEL_NAME.match(L.sanitize_name(name))


def test_annotations_carry_links_counts_and_rule_without_pii() -> None:
    alert = issue(
        title="Login failed for alice@example.com from 203.0.113.9",
        culprit="auth.views in login",
        web_url="https://sentry.io/organizations/acme/issues/42/",
        users=12,
        events=340,
    )
    decision = Decision(
        rule="many-users",
        severity=Severity.CRITICAL,
        labels={},
        annotations={"runbook_url": "https://runbooks/x"},
    )
    annotations = L.build_annotations(alert, decision)
    assert annotations["summary"] == "Login failed for [email] from [ip]"
    assert annotations["sentry_url"] == "https://sentry.io/organizations/acme/issues/42/"
    assert annotations["users"] == "12"
    assert annotations["events"] == "340"
    assert annotations["classified_by"] == "many-users"
    assert annotations["runbook_url"] == "https://runbooks/x"
    assert "alice" not in " ".join(annotations.values())
    assert all(LABEL_NAME.match(name) for name in annotations)


def test_unknown_counts_are_not_annotated_and_default_rule_named() -> None:
    annotations = L.build_annotations(issue(), DEFAULT)
    assert "users" not in annotations
    assert "events" not in annotations
    assert annotations["classified_by"] == "default"


def test_scrub_caps_length() -> None:
    assert len(L.scrub("x" * 5000)) == L.ANNOTATION_MAX


def test_firing_and_resolved_keep_the_label_set() -> None:
    alert = issue(web_url="https://sentry.io/organizations/acme/issues/42/")
    fired = L.firing(
        alert, {"alertname": "SentryIssue"}, {"summary": "s"}, starts_at=NOW, now=NOW, lifetime=3600
    )
    assert fired.ends_at == NOW + timedelta(hours=1)
    assert fired.generator_url == alert.web_url
    later = NOW + timedelta(minutes=5)
    done = L.resolved(fired, later)
    assert done.labels == fired.labels
    assert done.starts_at == NOW
    assert done.ends_at == later
    assert done.wire()["endsAt"] == "2026-11-23T08:05:00Z"

from __future__ import annotations

import re
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest

from bridge import labels as L
from bridge import scrub as S
from bridge.alertmanager import LABEL_NAME
from bridge.classify import Decision
from bridge.model import Kind, SentryAlert, Severity
from tests.factories import sentry_alert
from tests.test_scrub import is_control

NOW = datetime(2026, 11, 23, 8, 0, tzinfo=UTC)
SEVERITY_LABELS = {
    Severity.CRITICAL: {"priority": "P1", "page": "true"},
    Severity.LOW: {"priority": "P4", "page": "false"},
}


def issue(**overrides: Any) -> SentryAlert:
    """Issue 42 of project ``backend`` (id 7) in production."""
    return sentry_alert(
        **({"project": "backend", "project_id": "7", "environment": "production"} | overrides)
    )


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


def test_credentials_in_exception_text_never_reach_annotations() -> None:
    """Issue 14: an exception Sentry reports quoting a DSN or a URL with its token went to
    Alertmanager as the summary and description."""
    alert = issue(
        title="OperationalError: connection to postgresql://app:Pa55w0rd@10.0.0.7/app failed",
        message="GET https://api.example/v1/items?access_token=tok-9f8e7d failed: 401",
        culprit="sentry_sdk.init(dsn='https://abcdef0123@o1.ingest.sentry.io/5')",
        evidence=(("Authorization", "Bearer eyJhbGciOi.eyJzdWIi"),),
    )
    text = str(L.build_annotations(alert, DEFAULT))
    for secret in ("Pa55w0rd", "tok-9f8e7d", "abcdef0123", "eyJhbGciOi"):
        assert secret not in text
    assert L.build_annotations(alert, DEFAULT)["summary"] == (
        "OperationalError: connection to postgresql://[secret]@[ip]/app failed"
    )


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


def test_scrubbing_only_ever_sees_capped_input(monkeypatch: pytest.MonkeyPatch) -> None:
    """Truncation comes before any pattern: a 200,000-character title never reaches one."""
    seen: list[int] = []

    class Recording:
        def __init__(self, pattern: re.Pattern[str]) -> None:
            self.pattern = pattern

        def sub(self, repl: Any, text: str) -> str:
            seen.append(len(text))
            return self.pattern.sub(repl, text)

    for name in ("_EMAIL", "_IPV4", "_IPV6", "_BREAKS", "_CONTROLS", "_PARAM", "_USERINFO"):
        monkeypatch.setattr(S, name, Recording(getattr(S, name)))
    unit = "jane.doe@example.com 2001:db8::1 10.0.0.1 \r\n\u202e "
    hostile = (unit * (200_000 // len(unit) + 1))[:200_000]
    alert = issue(title=hostile, message=hostile, environment=hostile, project=hostile)
    L.build_labels(alert, DEFAULT, Severity.LOW, escalated=False, severity_labels={})
    annotations = L.build_annotations(alert, DEFAULT)
    assert seen
    assert max(seen) <= L.ANNOTATION_MAX + S._MARGIN
    assert len(annotations["summary"]) <= L.ANNOTATION_MAX
    assert "jane" not in annotations["summary"]


def test_hostile_labels_are_scrubbed_and_short() -> None:
    alert = issue(
        environment="prod-jane@example.com\r\n\u202e" + "x" * 600_000,
        project="web\x00\x1b" + "y" * 100_000,
    )
    labels = L.build_labels(alert, DEFAULT, Severity.LOW, escalated=False, severity_labels={})
    assert labels["environment"].startswith("[email] xxx")
    assert labels["project"].startswith("webyyy")
    assert all(len(value) <= L.LABEL_MAX for value in labels.values())
    assert not any(is_control(c) for value in labels.values() for c in value)


def test_an_environment_that_scrubs_to_nothing_is_unknown() -> None:
    alert = issue(environment="\u200b\u202e", project="\x00")
    labels = L.build_labels(alert, DEFAULT, Severity.LOW, escalated=False, severity_labels={})
    assert (labels["environment"], labels["project"]) == ("unknown", "unknown")


def test_sentry_ids_stay_distinct_and_safe() -> None:
    def label(issue_id: str) -> str:
        alert = issue(issue_id=issue_id, identity=f"issue:{issue_id}")
        labels = L.build_labels(alert, DEFAULT, Severity.LOW, escalated=False, severity_labels={})
        return labels["sentry_issue_id"]

    assert label("42") == "42"
    odd = {label("1.2.3.4"), label("5.6.7.8"), label("a@b.com"), label("x" * 500)}
    assert len(odd) == 4  # scrubbing would have merged the first two
    assert all(len(v) <= L.LABEL_MAX and re.fullmatch(r"[A-Za-z0-9_.-]+", v) for v in odd)


def test_configured_labels_are_cleaned_not_scrubbed() -> None:
    decision = Decision(
        rule="r\u202e",
        severity=Severity.HIGH,
        labels={"team": "db@corp.example\r\n"},
        annotations={"runbook_url": "https://10.0.0.1/runbook\x00"},
    )
    labels = L.build_labels(issue(), decision, Severity.HIGH, escalated=False, severity_labels={})
    annotations = L.build_annotations(issue(), decision)
    assert labels["team"] == "db@corp.example"  # the operator's own text
    assert annotations["runbook_url"] == "https://10.0.0.1/runbook"
    assert annotations["classified_by"] == "r"


@pytest.mark.parametrize(
    "url",
    [
        pytest.param("not a uri", id="words"),
        pytest.param("javascript:alert(1)", id="scheme"),
        pytest.param("/organizations/acme/issues/1/", id="relative"),
        pytest.param("https://user:secret@sentry.io/x", id="userinfo"),
        pytest.param("https://sentry.io/a b", id="space"),
        pytest.param("https://sentry.io/\r\nx", id="crlf"),
        pytest.param("https://sentry.io/%zz", id="bad-escape"),
        pytest.param("https://sentry.io:http/", id="port"),
        pytest.param("https://sentry.io/" + "x" * 3000, id="too-long"),
    ],
)
def test_links_that_are_not_absolute_http_uris_are_dropped(url: str) -> None:
    alert = issue(web_url=url)
    assert "sentry_url" not in L.build_annotations(alert, DEFAULT)
    fired = L.firing(alert, {"alertname": "A"}, {}, starts_at=NOW, now=NOW, lifetime=60)
    assert fired.generator_url is None


def test_evidence_is_bounded_and_scrubbed() -> None:
    evidence = tuple((f"name{n}", f"value {n} from 2001:db8::{n}") for n in range(40))
    annotations = L.build_annotations(issue(evidence=evidence), DEFAULT)
    lines = annotations["evidence"].split("\n")
    assert lines[0] == "name0: value 0 from [ip]"
    assert len(lines) == L.EVIDENCE_MAX + 1
    assert lines[-1] == "…"


def test_all_annotations_together_are_bounded() -> None:
    decision = Decision(
        rule=None,
        severity=Severity.LOW,
        labels={},
        annotations={f"extra{n}": "z" * 5000 for n in range(10)},
    )
    annotations = L.build_annotations(issue(title="t" * 9000, message="m" * 9000), decision)
    assert sum(map(len, annotations.values())) <= L.ANNOTATIONS_MAX
    assert annotations["summary"].startswith("ttt")  # the first ones are kept
    fired = L.firing(
        issue(),
        {"alertname": "A"},
        annotations | {"late\u202e": "\x00" * 10 + "v"},
        starts_at=NOW,
        now=NOW,
        lifetime=60,
    )
    assert sum(map(len, fired.annotations.values())) <= L.ANNOTATIONS_MAX

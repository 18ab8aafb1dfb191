"""From a classified Sentry alert to the Alertmanager alert: labels, annotations, times.

Alertmanager identifies an alert by its label set alone, so labels hold only
what is stable for one Sentry identity (kind, project, environment, the Sentry
id, severity and what the rule and severity add). Everything that changes from
one webhook to the next (counts, links, titles) goes into annotations.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from datetime import datetime, timedelta

from bridge.alertmanager import LABEL_NAME, PostableAlert
from bridge.classify import Decision
from bridge.model import Kind, SentryAlert, Severity

ALERTNAMES = {Kind.ISSUE: "SentryIssue", Kind.METRIC_ALERT: "SentryMetricAlert"}

# Titles and messages are user-controlled text and may carry PII (an email in
# an exception message, a client IP); annotations must not.
_EMAIL = re.compile(r"[A-Za-z0-9._%+-]+@[A-Za-z0-9.-]+\.[A-Za-z]{2,}")
_IPV4 = re.compile(r"\b(?:\d{1,3}\.){3}\d{1,3}\b")
_IPV6 = re.compile(r"\b(?:[0-9A-Fa-f]{1,4}:){2,7}[0-9A-Fa-f]{1,4}\b")
_MAX_ANNOTATION = 1024


def scrub(text: str) -> str:
    """Replace emails and IP addresses; cap the length (annotations are not logs)."""
    text = _EMAIL.sub("[email]", text)
    text = _IPV4.sub("[ip]", text)
    text = _IPV6.sub("[ip]", text)
    if len(text) > _MAX_ANNOTATION:
        text = text[: _MAX_ANNOTATION - 1] + "…"
    return text


def sanitize_name(name: str) -> str:
    """Make a label or annotation name valid for Alertmanager 0.25
    (``^[a-zA-Z_][a-zA-Z0-9_]*$``; it answers 400 to ``sentry-url``)."""
    if LABEL_NAME.match(name):
        return name
    name = re.sub(r"[^a-zA-Z0-9_]", "_", name)
    return name if name and not name[0].isdigit() else f"_{name}"


def _clean(values: Mapping[str, str | None]) -> dict[str, str]:
    # An empty label is dropped by Alertmanager, silently changing the alert's identity.
    return {sanitize_name(k): v for k, v in values.items() if v is not None and v != ""}


def build_labels(
    alert: SentryAlert,
    decision: Decision,
    severity: Severity,
    *,
    escalated: bool,
    severity_labels: Mapping[Severity, Mapping[str, str]],
) -> dict[str, str]:
    labels: dict[str, str | None] = {
        "alertname": ALERTNAMES[alert.kind],
        "severity": severity.value,
        "source": "sentry",
        "project": alert.project or alert.project_id or "unknown",
        "environment": alert.environment or "unknown",
    }
    if alert.kind is Kind.ISSUE:
        labels["sentry_issue_id"] = alert.issue_id or alert.identity.partition(":")[2]
    else:
        labels["sentry_alert_rule_id"] = alert.alert_rule_id or alert.identity.partition(":")[2]
    labels.update(severity_labels.get(severity, {}))
    labels.update(decision.labels)
    if escalated:
        labels["escalated"] = "true"
    return _clean(labels)


def evidence(alert: SentryAlert) -> str | None:
    """An issue-platform occurrence's evidence, one "name: value" line per pair (already
    few and short, bridge.sentry.occurrence), scrubbed like every payload text."""
    if not alert.evidence:
        return None
    return scrub("\n".join(f"{name}: {value}" for name, value in alert.evidence))


def build_annotations(alert: SentryAlert, decision: Decision) -> dict[str, str]:
    description = alert.message or alert.culprit or alert.transaction or alert.title
    annotations: dict[str, str | None] = {
        "summary": scrub(alert.title),
        "description": scrub(description) if description else None,
        "sentry_url": alert.web_url,
        "sentry_short_id": alert.short_id,
        "sentry_alert_rule": alert.alert_rule_name,
        "level": alert.level,
        "users": None if alert.users is None else str(alert.users),
        "events": None if alert.events is None else str(alert.events),
        "error_rate": None if alert.error_rate is None else f"{alert.error_rate:.4g}",
        "latency_ms": None if alert.latency_ms is None else f"{alert.latency_ms:g}",
        "classified_by": decision.rule or "default",
        "evidence": evidence(alert),
    }
    annotations.update(decision.annotations)
    return _clean(annotations)


def firing(
    alert: SentryAlert,
    labels: Mapping[str, str],
    annotations: Mapping[str, str],
    *,
    starts_at: datetime,
    now: datetime,
    lifetime: float,
) -> PostableAlert:
    """A firing alert with an explicit ``endsAt``: Sentry firing again extends it,
    silence from Sentry lets it expire. Built without validation: the label and
    annotation names are sanitized here, and the sender validates every alert before
    it posts (``alertmanager.check_wire``), so nothing unchecked reaches Alertmanager."""
    return PostableAlert.model_construct(
        labels=dict(labels),
        annotations=dict(annotations),
        starts_at=starts_at,
        ends_at=now + timedelta(seconds=lifetime),
        generator_url=alert.web_url,
    )


def resolved(previous: PostableAlert, now: datetime) -> PostableAlert:
    """The same label set as was sent firing, ending now: Alertmanager resolves that very alert."""
    return previous.model_copy(update={"ends_at": now})

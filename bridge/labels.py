"""From a classified Sentry alert to the Alertmanager alert: labels, annotations, times.

Alertmanager identifies an alert by its label set alone, so labels hold only
what is stable for one Sentry identity (kind, project, environment, the Sentry
id, severity and what the rule and severity add). Everything that changes from
one webhook to the next (counts, links, titles) goes into annotations.

Everything taken from a payload is text a Sentry user controls, so before it is queued
each value goes through ``bridge.scrub.scrub`` (the one scrubber, which logs use too): cut
to a bounded length first, cleared of control characters, scrubbed of credentials, emails
and IP addresses, and capped: labels at ``LABEL_MAX``, annotations at ``ANNOTATION_MAX`` each and
``ANNOTATIONS_MAX`` together. Links that are not absolute http(s) URIs are dropped
(``alertmanager.is_link``). Values from the configuration are the operator's own: they
are cleaned and capped, not scrubbed.
"""

from __future__ import annotations

import functools
import hashlib
import re
from collections.abc import Iterable, Mapping
from datetime import datetime, timedelta

from bridge.alertmanager import LABEL_NAME, PostableAlert, built, ended, is_link
from bridge.classify import Decision
from bridge.model import Kind, SentryAlert, Severity
from bridge.scrub import LIMIT, clean, scrub

ALERTNAMES = {Kind.ISSUE: "SentryIssue", Kind.METRIC_ALERT: "SentryMetricAlert"}

LABEL_MAX = 128  # a label value: an identity and a routing key, not a message
ANNOTATION_MAX = LIMIT  # one annotation value
ANNOTATIONS_MAX = 16384  # all annotation values of one alert together
EVIDENCE_MAX = 16  # issue-platform evidence entries shown
_SAFE_ID = re.compile(r"[A-Za-z0-9_.-]{1,64}")


@functools.lru_cache(maxsize=4096)
def _is_link(url: str) -> bool:
    return is_link(url)


def link(url: str | None) -> str | None:
    """``url`` when Alertmanager accepts it as a link (``alertmanager.is_link``), else None.
    Cached: each alert asks twice (``sentry_url`` and ``generatorURL``)."""
    return url if url is not None and _is_link(url) else None


def _identifier(value: str) -> str:
    """A Sentry id as a label: ids are digits (or UUIDs), so anything else is replaced by
    a digest, which keeps distinct ids distinct (scrubbing could merge two identities)."""
    if _SAFE_ID.fullmatch(value):
        return value
    return "h" + hashlib.sha256(value.encode("utf-8", "replace")).hexdigest()[:24]


def bounded(annotations: Mapping[str, str]) -> dict[str, str]:
    """Annotations within ``ANNOTATIONS_MAX`` together, in order (the first ones are what
    a human reads first); each value cleaned and capped (line feeds kept, every other
    control character out), empty ones dropped, names made valid. What
    :func:`build_annotations` made passes unchanged (the fast path)."""
    total = 0
    for name, value in annotations.items():
        total += len(value)
        if not (
            value
            and len(value) <= ANNOTATION_MAX
            and value.isascii()
            and (value.isprintable() or value.replace("\n", "").isprintable())
            and (name in _VALID_NAMES or _valid_name(name))
        ):
            break
    else:
        if total <= ANNOTATIONS_MAX:
            return dict(annotations)
    out: dict[str, str] = {}
    budget = ANNOTATIONS_MAX
    for name, value in annotations.items():
        if budget < 2:  # room for one character and the ellipsis
            break
        value = clean(value, min(ANNOTATION_MAX, budget), lines=True)
        if value:
            out[sanitize_name(name)] = value
            budget -= len(value)
    return out


# Names already checked: they come from the code and the configuration, a few dozen.
_VALID_NAMES: set[str] = set()


def _valid_name(name: str) -> bool:
    if not LABEL_NAME.match(name):
        return False
    if len(_VALID_NAMES) < 1024:
        _VALID_NAMES.add(name)
    return True


def sanitize_name(name: str) -> str:
    """Make a label or annotation name valid for Alertmanager 0.25
    (``^[a-zA-Z_][a-zA-Z0-9_]*$``; it answers 400 to ``sentry-url``)."""
    if _valid_name(name):
        return name
    name = re.sub(r"[^a-zA-Z0-9_]", "_", name)
    return name if name and not name[0].isdigit() else f"_{name}"


def _clean(values: Mapping[str, str | None]) -> dict[str, str]:
    # An empty label is dropped by Alertmanager, silently changing the alert's identity.
    return {
        k if k in _VALID_NAMES else sanitize_name(k): v
        for k, v in values.items()
        if v is not None and v != ""
    }


def build_labels(
    alert: SentryAlert,
    decision: Decision,
    severity: Severity,
    *,
    escalated: bool,
    severity_labels: Mapping[Severity, Mapping[str, str]],
    environment: str | None = None,
) -> dict[str, str]:
    """The label set: payload text scrubbed and capped at ``LABEL_MAX``, Sentry ids kept
    distinct (``_identifier``), the configuration's labels cleaned. ``environment`` stands
    in for the alert's when it names none (the one its identity already fires in)."""
    project = alert.project or alert.project_id
    if alert.environment is not None:
        environment = alert.environment
    labels: dict[str, str | None] = {
        "alertname": ALERTNAMES[alert.kind],
        "severity": severity.value,
        "source": "sentry",
        "project": (scrub(project, LABEL_MAX) if project else "") or "unknown",
        "environment": (scrub(environment, LABEL_MAX) if environment else "") or "unknown",
    }
    if alert.kind is Kind.ISSUE:
        sentry_id = alert.issue_id or alert.identity.partition(":")[2]
        labels["sentry_issue_id"] = _identifier(sentry_id) if sentry_id else None
    else:
        sentry_id = alert.alert_rule_id or alert.identity.partition(":")[2]
        labels["sentry_alert_rule_id"] = _identifier(sentry_id) if sentry_id else None
    for name, value in (*severity_labels.get(severity, {}).items(), *decision.labels.items()):
        labels[name] = clean(value, LABEL_MAX)
    if escalated:
        labels["escalated"] = "true"
    return _clean(labels)


def build_annotations(alert: SentryAlert, decision: Decision) -> dict[str, str]:
    """Annotations: payload text scrubbed, the Sentry link only when it is a valid link,
    the rule's annotations cleaned, all of it within ``ANNOTATIONS_MAX``."""
    description = alert.message or alert.culprit or alert.transaction or alert.title
    annotations: dict[str, str | None] = {
        "summary": scrub(alert.title),
        "description": scrub(description) if description else None,
        "sentry_url": link(alert.web_url),
        "sentry_short_id": _short(alert.short_id),
        "sentry_alert_rule": _short(alert.alert_rule_name),
        "level": _short(alert.level),
        "users": None if alert.users is None else str(alert.users),
        "events": None if alert.events is None else str(alert.events),
        "error_rate": None if alert.error_rate is None else f"{alert.error_rate:.4g}",
        "latency_ms": None if alert.latency_ms is None else f"{alert.latency_ms:g}",
        "classified_by": _classified_by(decision),
        "evidence": evidence(alert),
    }
    annotations.update(decision.annotations)
    return bounded(_clean(annotations))


def _classified_by(decision: Decision) -> str:
    """The rule that decided, ``default``, or ``sentry`` when the alert rule's severity
    setting in Sentry did (bridge.classify: the settings come first)."""
    if "severity" in decision.settings:
        return "sentry"
    return clean(decision.rule, LABEL_MAX) if decision.rule else "default"


def environments(names: Iterable[str]) -> str:
    """The ``environments`` annotation: every environment seen while firing, each scrubbed
    as the ``environment`` label is, sorted, so the same environments make the same
    annotation whatever order the webhooks were decided in."""
    return ",".join(sorted({scrub(name, LABEL_MAX) or "unknown" for name in names}))


def _short(text: str | None) -> str | None:
    return scrub(text, LABEL_MAX) if text else None


def evidence(alert: SentryAlert) -> str | None:
    """An issue-platform occurrence's evidence, one ``name: value`` line each, scrubbed like
    every payload text: the first ``EVIDENCE_MAX`` entries, each name and value short."""
    if not alert.evidence:
        return None
    lines = []
    for n, (name, value) in enumerate(alert.evidence):
        if n == EVIDENCE_MAX:
            lines.append("…")
            break
        lines.append(f"{scrub(name, LABEL_MAX)}: {scrub(value, 512)}")
    return "\n".join(lines)


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
    silence from Sentry lets it expire. Built without validation: labels and annotations
    come from :func:`build_labels` / :func:`build_annotations` (names sanitized, values
    bounded; annotations added since are bounded here again), the link is checked here,
    and the sender validates every alert before it posts (``alertmanager.check_wire``),
    so nothing unchecked reaches Alertmanager."""
    return built(
        dict(labels),
        bounded(annotations),
        starts_at,
        now + timedelta(seconds=lifetime),
        link(alert.web_url),
    )


def resolved(previous: PostableAlert, now: datetime) -> PostableAlert:
    """The same label set as was sent firing, ending now: Alertmanager resolves that very alert."""
    return ended(previous, now)


_IDENTITY_LABELS = (("sentry_issue_id", "issue"), ("sentry_alert_rule_id", "metric_alert"))


def identity_from_labels(labels: Mapping[str, str]) -> str | None:
    """The Sentry identity (``issue:<id>`` / ``metric_alert:<id>``) a label set was built
    for by :func:`build_labels`; None for a label set the bridge did not build."""
    for label, kind in _IDENTITY_LABELS:
        if label in labels:
            return f"{kind}:{labels[label]}"
    return None

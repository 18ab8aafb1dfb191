"""Metric alert webhooks, as the internal alert.

Sentry's metric alert webhook carries the metric's value only as text, built by
integrations/metric_alerts.py ``get_incident_status_text`` (getsentry/sentry), e.g.
"1204 events in the last 10 minutes"; :func:`parse_metric_description` reads it back for the
rule's aggregate, and :func:`metric_alert` maps the incident onto the fields of a ``SentryAlert``.
"""

from __future__ import annotations

import dataclasses
import math
import re
from typing import Any

from bridge.errors import BadPayload
from bridge.model import Kind, State
from bridge.sentry import event, settings
from bridge.sentry.links import Site, http_url, locate
from bridge.sentry.wire import MetricAlertData, bounded_count


@dataclasses.dataclass(frozen=True, slots=True)
class MetricReading:
    """What ``description_text`` says, and what follows from it."""

    aggregate: str | None = None
    value: float | None = None
    users: int | None = None
    events: int | None = None
    error_rate: float | None = None
    latency_ms: float | None = None


# integrations/metric_alerts.py QUERY_AGGREGATION_DISPLAY; any other aggregate is shown as is.
_DISPLAY = {
    "count()": "events",
    "count_unique(tags[sentry:user])": "users affected",
    "percentage(sessions_crashed, sessions)": "% sessions crash free rate",
    "percentage(users_crashed, users)": "% users crash free rate",
    "failure_rate()": "% failure rate",
}
_CRASH_ALIAS = "AS _crash_rate_alert_aggregate"  # sentry/constants.py
_USER_AGGREGATES = frozenset(("count_unique(user)", "count_unique(tags[sentry:user])"))
_CRASH_FREE = frozenset(
    ("percentage(sessions_crashed, sessions)", "percentage(users_crashed, users)")
)
_DURATION = re.compile(
    r"^(?:p50|p75|p90|p95|p99|p100|avg|min|max|percentile)\("
    r"(?:transaction\.duration|span\.duration|span\.self_time|"
    r"measurements\.(?:lcp|fcp|fp|fid|inp|ttfb|app_start_cold|app_start_warm|"
    r"time_to_initial_display|time_to_full_display))[,)]"
)
# A metrics (MRI) aggregate, e.g. "p95(d:transactions/duration@millisecond)", is displayed as
# "p95(duration)" with the value formatted for its unit, e.g. "1.53 s"
# (snuba/metrics/naming_layer/mri.py, snuba/metrics/units.py get_duration).
_MRI = re.compile(r"^(?P<op>\w+)\([a-z]:[^/()]+/(?P<name>[^@()]+)@(?P<unit>\w+)\)$")
_MRI_TIME_UNITS = frozenset(
    ("nanosecond", "microsecond", "millisecond", "second", "minute", "hour", "day", "week")
)
_SHOWN_MS = {"ms": 1.0, "s": 1e3, "m": 6e4, "h": 3.6e6, "d": 8.64e7, "wk": 6.048e8, "mo": 2.6298e9}
# "<value><agg text> in the last <window>"; comparison alerts ("Events 150% higher in the last
# ...") start with a word, so they give no value: a change in percent is not the metric.
_STATUS = re.compile(r"^(?P<value>-?\d+(?:\.\d+)?)(?P<rest>.+?) in the last \S.*$")


def _integral(value: float) -> int | None:
    return bounded_count(value) if value.is_integer() else None


def parse_metric_description(text: str | None, aggregate: str | None) -> MetricReading:
    """Read the number out of a metric alert's ``description_text`` (built by
    integrations/metric_alerts.py ``get_incident_status_text``) for the rule's ``aggregate``.

    Nothing is guessed: when the text does not match the aggregate, only the aggregate is
    known. ``value`` is the number as displayed (12.5 for "12.50% failure rate")."""
    key = aggregate.split(_CRASH_ALIAS)[0].strip() if aggregate else None
    mri = _MRI.match(key) if key else None
    shown = f"{mri['op']}({mri['name']})" if mri else _DISPLAY.get(key, key) if key else None
    m = _STATUS.match((text or "").strip().split("\n")[0])
    if m is None:
        return MetricReading(aggregate=key)
    value, rest = float(m["value"]), m["rest"].strip()
    if not math.isfinite(value):  # "1" * 400 digits reads as infinity: no number at all
        return MetricReading(aggregate=key)
    if key is None:  # no aggregate in the payload: recognise Sentry's display text
        key = next((agg for agg, display in _DISPLAY.items() if display == rest), None)
        if key is None:
            return MetricReading()
        shown = rest
    unit_ms: float | None = None
    counting = mri is not None and mri["op"] in ("count", "count_unique")
    if mri and mri["unit"] in _MRI_TIME_UNITS and not counting:
        unit, _, rest = rest.partition(" ")
        unit_ms = _SHOWN_MS.get(unit)
        if unit_ms is None:
            return MetricReading(aggregate=key)
    if rest not in (shown, key):
        return MetricReading(aggregate=key)
    if key == "count()":
        return MetricReading(aggregate=key, value=value, events=_integral(value))
    if key in _USER_AGGREGATES or (mri and mri["op"] == "count_unique" and mri["name"] == "user"):
        return MetricReading(aggregate=key, value=value, users=_integral(value))
    if key == "failure_rate()":
        # Shown as a percentage since Sentry formats it with "% failure rate"; older Sentry
        # showed the raw ratio next to the aggregate itself.
        rate = value / 100 if rest.startswith("%") else value
        return MetricReading(aggregate=key, value=value, error_rate=round(rate, 10))
    if key in _CRASH_FREE:
        return MetricReading(aggregate=key, value=value, error_rate=round(1 - value / 100, 10))
    if unit_ms is not None:
        return MetricReading(aggregate=key, value=value, latency_ms=round(value * unit_ms, 6))
    if _DURATION.match(key):  # transaction and span durations are in milliseconds
        return MetricReading(aggregate=key, value=value, latency_ms=value)
    return MetricReading(aggregate=key, value=value)


def metric_alert(parsed: MetricAlertData, action: str, state: State, site: Site) -> dict[str, Any]:
    """The alert's fields (keyword arguments of :class:`~bridge.model.SentryAlert`)."""
    incident, rule = parsed.metric_alert, parsed.metric_alert.alert_rule
    key = rule.id or rule.name
    if not key:
        raise BadPayload("invalid_payload", "metric_alert: the alert rule has neither id nor name")
    reading = parse_metric_description(parsed.description_text, rule.aggregate)
    projects = sorted(set(rule.projects or incident.projects))
    org, _ = locate((parsed.web_url,), site.base_url)
    started = event.timestamp(incident.date_started)
    return dict(
        resource="metric_alert",
        action=action,
        kind=Kind.METRIC_ALERT,
        state=state,
        identity=f"metric_alert:{key}",
        title=rule.name or incident.title or parsed.description_title or "Sentry metric alert",
        organization=site.organization or org,
        project=",".join(projects) or None,
        environment=rule.environment,
        message=parsed.description_text,
        alert_rule_id=rule.id,
        alert_rule_name=rule.name,
        users=reading.users,
        events=reading.events,
        error_rate=reading.error_rate,
        latency_ms=reading.latency_ms,
        metric_value=reading.value,
        metric_aggregate=reading.aggregate,
        rule_settings=settings.from_triggers(rule.triggers, action),
        web_url=http_url(parsed.web_url),
        started_at=started,
        # One incident's webhooks (critical, warning, resolved) share its start: a retry of an
        # earlier incident's webhook is told from the next incident by it.
        occurred_at=started or event.timestamp(incident.date_detected),
    )

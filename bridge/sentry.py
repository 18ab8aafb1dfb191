"""Sentry's side of the wire: who sent it, what it is, and the one alert it means.

Sentry delivers alerts in three families, each checked and normalised here into a
:class:`~bridge.model.SentryAlert` (sources in getsentry/sentry unless noted):

* **Integration platform** (internal or public integration). Headers ``Request-ID``,
  ``Sentry-Hook-Resource``, ``Sentry-Hook-Timestamp`` and ``Sentry-Hook-Signature``: the hex
  HMAC-SHA256 of the raw body keyed with the client secret; the timestamp is not signed.
  Body ``{"action", "installation": {"uuid"}, "data", "actor"}``
  (sentry_apps/api/serializers/app_platform_event.py). Resources ``event_alert``,
  ``activity_alert``, ``metric_alert``, ``issue``, ``error``, ``installation``, ``comment``...
* **Project service hooks**. Headers ``X-ServiceHook-Timestamp``, ``X-ServiceHook-GUID`` and
  ``X-ServiceHook-Signature``: the same scheme keyed with the hook's secret, over the body
  only (sentry_apps/models/servicehook.py ``build_signature``). Body ``{"project", "group",
  "event"}`` (sentry_apps/tasks/service_hooks.py ``get_payload_v0``); it does not say whether
  ``event.alert`` or ``event.created`` sent it, so the action is ``event``.
* **The legacy WebHooks plugin**: unsigned (the bridge wants ``?token=``); body ``{"id",
  "project", "project_slug", "level", "culprit", "message", "url", "triggering_rules",
  "event"}`` (plugins/sentry_webhooks/plugin.py ``get_group_data``).

Sentry adds fields freely, so the wire models ignore what they do not name and are lenient
about optional fields; only what an alert cannot do without (an issue id, the event of an
issue alert, the incident of a metric alert) is a :class:`~bridge.errors.BadPayload`.
"""

from __future__ import annotations

import dataclasses
import hashlib
import hmac
import math
import re
from collections.abc import Iterable, Mapping
from datetime import UTC, datetime
from typing import Annotated, Any, TypeVar
from urllib.parse import unquote, urlsplit, urlunsplit

from pydantic import AliasChoices, BaseModel, BeforeValidator, ConfigDict, Field, ValidationError

from bridge.config import Sentry
from bridge.errors import BadPayload, Unauthorized
from bridge.model import Ignored, Kind, SentryAlert, State

# Why a webhook makes no alert; the ``reason`` of :class:`~bridge.model.Ignored`.
IGNORE_REASONS = ("not_an_alert", "no_state_change", "unknown_resource", "unknown_action")

# --- authentication ----------------------------------------------------------------------


def _lower(headers: Mapping[str, str]) -> dict[str, str]:
    return {k.lower(): v for k, v in headers.items()}


def _hmac_matches(body: bytes, signature: str, secrets: Iterable[str]) -> bool:
    given = signature.strip().lower().encode("utf-8", "replace")
    # Every secret is tried so a rotated-in secret works alongside the old one.
    matches = [
        hmac.compare_digest(
            hmac.new(secret.encode("utf-8"), body, hashlib.sha256).hexdigest().encode(), given
        )
        for secret in secrets
    ]
    return any(matches)


def authenticate(headers: Mapping[str, str], body: bytes, token: str | None, cfg: Sentry) -> str:
    """Check the webhook's credentials; return the method that vouched for it:
    ``integration``, ``service_hook``, ``legacy_token`` or ``none``."""
    h = _lower(headers)
    hook_sig = h.get("sentry-hook-signature")
    service_sig = h.get("x-servicehook-signature")
    if hook_sig is not None and cfg.client_secrets:
        if _hmac_matches(body, hook_sig, (s.get_secret_value() for s in cfg.client_secrets)):
            return "integration"
        raise Unauthorized("bad_signature", "Sentry-Hook-Signature does not match")
    if service_sig is not None and cfg.service_hook_secrets:
        secrets = (s.get_secret_value() for s in cfg.service_hook_secrets)
        if _hmac_matches(body, service_sig, secrets):
            return "service_hook"
        raise Unauthorized("bad_signature", "X-ServiceHook-Signature does not match")
    if token is not None and cfg.legacy_token is not None:
        expected = cfg.legacy_token.get_secret_value().encode("utf-8")
        if hmac.compare_digest(token.encode("utf-8", "replace"), expected):
            return "legacy_token"
        raise Unauthorized("bad_token", "the token query parameter does not match")
    if cfg.allow_unauthenticated:
        return "none"
    if hook_sig is not None or service_sig is not None:
        raise Unauthorized("bad_signature", "signed, but no secret is configured for that scheme")
    if token is not None:
        raise Unauthorized("bad_token", "a token was given but sentry.legacy_token is not set")
    raise Unauthorized("missing_signature", "no signature or token")


# --- which webhook is it -----------------------------------------------------------------

_INTEGRATION_RESOURCES = frozenset(
    ("event_alert", "metric_alert", "issue", "error", "activity_alert", "installation")
)


def _is_service_hook_body(data: object) -> bool:
    return (
        isinstance(data, dict)
        and isinstance(data.get("group"), dict)
        and isinstance(data.get("event"), dict)
        and "action" not in data
    )


def _is_legacy_body(data: object) -> bool:
    return (
        isinstance(data, dict)
        and isinstance(data.get("event"), dict)
        and "id" in data
        and "project" in data
        and "action" not in data
        and "data" not in data
    )


def detect_resource(headers: Mapping[str, str], data: object) -> str:
    """The ``resource`` metrics label, one of :data:`bridge.metrics.RESOURCES`."""
    h = _lower(headers)
    hook = h.get("sentry-hook-resource")
    if hook is not None:
        return hook if hook in _INTEGRATION_RESOURCES else "other"
    if any(name.startswith("x-servicehook-") for name in h) or _is_service_hook_body(data):
        return "service_hook"
    if _is_legacy_body(data):
        return "legacy"
    return "other"


# --- wire models -------------------------------------------------------------------------


def _text(value: Any) -> Any:
    """Optional descriptive fields: numbers become strings, odd shapes become unknown."""
    if isinstance(value, bool) or value is None:
        return None
    if isinstance(value, int | float | str):
        return str(value)
    return None


def _id(value: Any) -> Any:
    if isinstance(value, int) and not isinstance(value, bool):
        return str(value)
    return value


def _count(value: Any) -> Any:
    """Sentry's issue serializer sends ``count`` as a string and ``userCount`` as a number."""
    try:
        return int(value) if not isinstance(value, bool) and value is not None else None
    except (TypeError, ValueError):
        return None


Text = Annotated[str | None, BeforeValidator(_text)]
Id = Annotated[str, BeforeValidator(_id)]
Count = Annotated[int | None, BeforeValidator(_count)]


def _texts(value: Any) -> Any:
    return [str(v) for v in value if isinstance(v, str | int)] if isinstance(value, list) else []


Texts = Annotated[list[str], BeforeValidator(_texts)]


class _Wire(BaseModel):
    model_config = ConfigDict(extra="ignore", frozen=True)


class WireProject(_Wire):
    id: Text = None
    slug: Text = None
    name: Text = None


class WireEvent(_Wire):
    """An event: ``Event.as_dict()`` plus links (``event_alert``, ``error``; sentry_apps/tasks/
    sentry_apps.py ``_webhook_event_data``), raw event data (legacy plugin) or the camelCase
    ``EventSerializer`` output (service hooks; api/serializers/models/event.py)."""

    event_id: Text = Field(None, validation_alias=AliasChoices("event_id", "eventID"))
    issue_id: Text = Field(None, validation_alias=AliasChoices("issue_id", "group_id", "groupID"))
    project: Text = Field(None, validation_alias=AliasChoices("project", "projectID"))
    title: Text = None
    message: Text = None
    culprit: Text = None
    level: Text = None
    platform: Text = None
    environment: Text = None
    transaction: Text = None
    release: Any = None  # a version string, or a release object in the serialized event
    when: Text = Field(None, validation_alias=AliasChoices("datetime", "dateCreated"))
    timestamp: Any = None
    tags: Any = None
    request: Any = None
    exception: Any = None
    entries: Any = None
    metadata: Any = None
    url: Text = None
    web_url: Text = None
    issue_url: Text = None


class WireIssue(_Wire):
    """``serialize(group)`` (camelCase), plus ``url``/``web_url``/``project_url`` when sent
    through ``_webhook_issue_data`` (``issue.created``, ``activity_alert``)."""

    id: Id
    short_id: Text = Field(None, alias="shortId")
    title: Text = None
    culprit: Text = None
    level: Text = None
    platform: Text = None
    project: WireProject | None = None
    count: Count = None
    user_count: Count = Field(None, alias="userCount")
    first_seen: Text = Field(None, alias="firstSeen")
    metadata: Any = None
    url: Text = None
    web_url: Text = None
    permalink: Text = None
    project_url: Text = None


class WireBody(_Wire):
    action: str
    data: dict[str, Any]


class WireRuleRef(_Wire):
    id: Text = None
    title: Text = None
    web_url: Text = None


class EventAlertData(_Wire):
    event: WireEvent
    triggered_rule: Text = None
    issue_alert: WireRuleRef | None = None


class ErrorData(_Wire):
    error: WireEvent


class IssueData(_Wire):
    issue: WireIssue


class WireActivity(_Wire):
    type: Text = None


class ActivityAlertData(_Wire):
    """sentry/notifications/notification_action/activity_registry/sentry_app.py
    ``ActivityAlertWebhookPayload``: the issue, the activity and the workflow that fired."""

    issue: WireIssue
    activity: WireActivity
    alert: WireRuleRef | None = None


class WireAlertRule(_Wire):
    id: Text = None
    name: Text = None
    aggregate: Text = None
    environment: Text = None
    projects: Texts = []


class WireIncident(_Wire):
    identifier: Text = None
    title: Text = None
    projects: Texts = []
    date_started: Text = None
    alert_rule: WireAlertRule


class MetricAlertData(_Wire):
    """rules/actions/notify_event_service.py ``build_incident_attachment``: the snake-cased
    incident with its alert rule, and the texts of integrations/metric_alerts.py."""

    metric_alert: WireIncident
    description_text: Text = None
    description_title: Text = None
    web_url: Text = None


class ServiceHookBody(_Wire):
    project: WireProject | None = None
    group: WireIssue
    event: WireEvent


class LegacyBody(_Wire):
    id: Id
    project: Text = None
    project_slug: Text = None
    level: Text = None
    culprit: Text = None
    message: Text = None
    url: Text = None
    triggering_rules: Texts = []
    event: WireEvent


_M = TypeVar("_M", bound=BaseModel)


def _parse(model: type[_M], data: object, what: str) -> _M:
    try:
        return model.model_validate(data)
    except ValidationError as exc:
        err = exc.errors(include_url=False, include_input=False)[0]
        where = ".".join(str(part) for part in err["loc"]) or "body"
        raise BadPayload("invalid_payload", f"{what}: {where}: {err['type']}") from None


# --- metric alert descriptions -----------------------------------------------------------


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
_NUMBER = re.compile(r"^-?\d+(?:\.\d+)?$")


def _integral(value: float) -> int | None:
    return int(value) if math.isfinite(value) and value.is_integer() and value >= 0 else None


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
    reading = MetricReading(aggregate=key, value=value)
    if key == "count()":
        return dataclasses.replace(reading, events=_integral(value))
    if key in _USER_AGGREGATES or (mri and mri["op"] == "count_unique" and mri["name"] == "user"):
        return dataclasses.replace(reading, users=_integral(value))
    if key == "failure_rate()":
        # Shown as a percentage since Sentry formats it with "% failure rate"; older Sentry
        # showed the raw ratio next to the aggregate itself.
        rate = value / 100 if rest.startswith("%") else value
        return dataclasses.replace(reading, error_rate=round(rate, 10))
    if key in _CRASH_FREE:
        return dataclasses.replace(reading, error_rate=round(1 - value / 100, 10))
    if unit_ms is not None:
        return dataclasses.replace(reading, latency_ms=round(value * unit_ms, 6))
    if _DURATION.match(key):  # transaction and span durations are in milliseconds
        return dataclasses.replace(reading, latency_ms=value)
    return reading


# --- facts drawn from events and URLs ----------------------------------------------------

# Tags naming a person; never carried into alerts (as_dict strips "sentry:" from keys, the
# legacy plugin does not, so keys are compared without it).
_PII_TAGS = frozenset(("user", "user.email", "user.ip", "user.username", "user.id", "ip", "email"))


def _strip_query(url: str) -> str:
    """Query strings and fragments carry session ids and emails; keep scheme, host and path."""
    try:
        parts = urlsplit(url)
    except ValueError:
        return url.split("?")[0].split("#")[0]
    return urlunsplit((parts.scheme, parts.netloc, parts.path, "", ""))


def _tags(raw: Any) -> tuple[tuple[str, str], ...]:
    """Sentry sends ``[[key, value], ...]`` (event data) or ``[{"key", "value"}, ...]``
    (serialized events)."""
    pairs: list[tuple[str, str]] = []
    for item in raw if isinstance(raw, list) else ():
        if isinstance(item, list | tuple) and len(item) == 2:
            key, value = item
        elif isinstance(item, dict):
            key, value = item.get("key"), item.get("value")
        else:
            continue
        if not isinstance(key, str) or value is None or isinstance(value, dict | list):
            continue
        key = key.removeprefix("sentry:")
        if key in _PII_TAGS:
            continue
        text = str(value)
        pairs.append((key, _strip_query(text) if key == "url" else text))
    return tuple(pairs)


def _exception_values(ev: WireEvent) -> list[Any]:
    if isinstance(ev.exception, dict) and isinstance(ev.exception.get("values"), list):
        return list(ev.exception["values"])
    for entry in ev.entries if isinstance(ev.entries, list) else ():
        if isinstance(entry, dict) and entry.get("type") == "exception":
            data = entry.get("data")
            if isinstance(data, dict) and isinstance(data.get("values"), list):
                return list(data["values"])
    return []


def _handled(ev: WireEvent, tags: Mapping[str, str]) -> bool | None:
    flags = [
        value["mechanism"]["handled"]
        for value in _exception_values(ev)
        if isinstance(value, dict)
        and isinstance(value.get("mechanism"), dict)
        and isinstance(value["mechanism"].get("handled"), bool)
    ]
    if flags:
        return all(flags)  # one unhandled exception in the chain makes the event unhandled
    return {"yes": True, "no": False}.get(tags.get("handled", ""))


def _request_url(ev: WireEvent, tags: Mapping[str, str]) -> str | None:
    url = ev.request.get("url") if isinstance(ev.request, dict) else None
    for entry in ev.entries if isinstance(ev.entries, list) and url is None else ():
        if isinstance(entry, dict) and entry.get("type") == "request":
            data = entry.get("data")
            url = data.get("url") if isinstance(data, dict) else None
    if isinstance(url, str) and url:
        return _strip_query(url)
    return tags.get("url")  # already stripped


def _release(ev: WireEvent, tags: Mapping[str, str]) -> str | None:
    if isinstance(ev.release, str) and ev.release:
        return ev.release
    if isinstance(ev.release, dict) and isinstance(ev.release.get("version"), str):
        return str(ev.release["version"])
    return tags.get("release")


def _time(value: Any) -> datetime | None:
    """ISO 8601 strings or Unix timestamps, always timezone-aware UTC."""
    if isinstance(value, int | float) and not isinstance(value, bool) and math.isfinite(value):
        return datetime.fromtimestamp(value, tz=UTC)
    if not isinstance(value, str) or not value:
        return None
    if _NUMBER.match(value):
        return _time(float(value))
    try:
        parsed = datetime.fromisoformat(value)
    except ValueError:
        return None
    return parsed.replace(tzinfo=UTC) if parsed.tzinfo is None else parsed.astimezone(UTC)


_URL_PATTERNS = (
    re.compile(r"/api/0/projects/(?P<org>[^/]+)/(?P<project>[^/]+)/"),
    re.compile(r"/organizations/(?P<org>[^/]+)/projects/(?P<project>[^/]+)/"),
    re.compile(r"/api/0/organizations/(?P<org>[^/]+)/"),
    re.compile(r"/organizations/(?P<org>[^/]+)/"),
)
# Sentry before 10 linked issues as /<org>/<project>/issues/<id>/.
_OLD_ISSUE_URL = re.compile(r"/(?P<org>[^/]+)/(?P<project>[^/]+)/issues/\d+/?$")
_NOT_SLUGS = frozenset(("api", "organizations", "settings", "0", "issues", "projects"))
_NOT_ORG_HOSTS = frozenset(("www", "us", "de", "api"))  # region and site hosts, not orgs


def _locate(urls: Iterable[str | None], base_url: str) -> tuple[str | None, str | None]:
    """Organization and project slugs from Sentry's links, when their path carries them:
    ``/api/0/projects/<org>/<project>/...``, ``/organizations/<org>/...``, or a customer
    domain ``https://<org>.sentry.io/...``."""
    org: str | None = None
    project: str | None = None
    base_host = urlsplit(base_url).hostname or ""
    for url in urls:
        if not url:
            continue
        try:
            parts = urlsplit(url)
        except ValueError:
            continue
        path = parts.path if parts.path.endswith("/") else parts.path + "/"
        for pattern in _URL_PATTERNS:
            m = pattern.search(path)
            if m:
                org = org or unquote(m["org"])
                if "project" in m.groupdict():
                    project = project or unquote(m["project"])
        m = _OLD_ISSUE_URL.search(parts.path) if "/organizations/" not in path else None
        if m and m["org"] not in _NOT_SLUGS and m["project"] not in _NOT_SLUGS:
            org, project = org or unquote(m["org"]), project or unquote(m["project"])
        host = parts.hostname or ""
        sub = host.removesuffix("." + base_host) if base_host else host
        if base_host and sub != host and "." not in sub and sub not in _NOT_ORG_HOSTS:
            org = org or sub
    return org, project


def _title(*candidates: str | None, fallback: str) -> str:
    return next((c for c in candidates if c), fallback)


def _metadata_title(metadata: Any) -> str | None:
    if isinstance(metadata, dict):
        kind, value = metadata.get("type"), metadata.get("value")
        if isinstance(kind, str) and isinstance(value, str):
            return f"{kind}: {value}"
        if isinstance(metadata.get("title"), str):
            return str(metadata["title"])
    return None


def _event_alert(
    ev: WireEvent,
    *,
    resource: str,
    action: str,
    base_url: str,
    issue_id: str | None = None,
    project_slug: str | None = None,
    links: Iterable[str | None] = (),
) -> dict[str, Any]:
    """The fields every event-carrying webhook shares, as keyword arguments for SentryAlert."""
    issue_id = issue_id or ev.issue_id
    if not issue_id:
        raise BadPayload("invalid_payload", f"{resource}: the event names no issue")
    tags = _tags(ev.tags)
    tag_map = dict(tags)
    org, slug = _locate((ev.url, ev.web_url, ev.issue_url, *links), base_url)
    return {
        "resource": resource,
        "action": action,
        "kind": Kind.ISSUE,
        "state": State.FIRING,
        "identity": f"issue:{issue_id}",
        "title": _title(
            ev.title, _metadata_title(ev.metadata), ev.message, fallback=f"Sentry issue {issue_id}"
        ),
        "organization": org,
        "project": project_slug or slug or ev.project,
        "project_id": ev.project,
        "environment": ev.environment or tag_map.get("environment"),
        "issue_id": issue_id,
        "event_id": ev.event_id,
        "level": ev.level or tag_map.get("level"),
        "platform": ev.platform,
        "culprit": ev.culprit,
        "transaction": ev.transaction or tag_map.get("transaction"),
        "url": _request_url(ev, tag_map),
        "release": _release(ev, tag_map),
        "handled": _handled(ev, tag_map),
        "tags": tags,
        "message": ev.message or None,
        "web_url": ev.web_url,
        "issue_api_url": ev.issue_url or f"{base_url}/api/0/issues/{issue_id}/",
        "started_at": _time(ev.when) or _time(ev.timestamp),
    }


def _issue_alert(
    issue: WireIssue, *, resource: str, action: str, state: State, base_url: str
) -> dict[str, Any]:
    project = issue.project or WireProject()
    org, slug = _locate((issue.url, issue.web_url, issue.permalink, issue.project_url), base_url)
    web_url = issue.web_url or issue.permalink
    if web_url is None and org:
        web_url = f"{base_url}/organizations/{org}/issues/{issue.id}/"
    return {
        "resource": resource,
        "action": action,
        "kind": Kind.ISSUE,
        "state": state,
        "identity": f"issue:{issue.id}",
        "title": _title(
            issue.title, _metadata_title(issue.metadata), fallback=f"Sentry issue {issue.id}"
        ),
        "organization": org,
        "project": project.slug or slug or project.id,
        "project_id": project.id,
        "issue_id": issue.id,
        "short_id": issue.short_id,
        "level": issue.level,
        "platform": issue.platform,
        "culprit": issue.culprit,
        "users": issue.user_count,
        "events": issue.count,
        "web_url": web_url,
        "issue_api_url": issue.url or f"{base_url}/api/0/issues/{issue.id}/",
        "started_at": _time(issue.first_seen),
    }


# --- one function per resource -----------------------------------------------------------

_ISSUE_STATES = {
    "created": State.FIRING,
    "unresolved": State.FIRING,
    "resolved": State.RESOLVED,
    "ignored": State.RESOLVED,
    "archived": State.RESOLVED,
}
_METRIC_STATES = {
    "critical": State.FIRING,
    "warning": State.FIRING,
    "open": State.FIRING,
    "resolved": State.RESOLVED,
}
# activity_registry/sentry_app.py ActivityAlertType: status changes that end the issue.
_ACTIVITY_RESOLVING = frozenset(
    (
        "status_resolved",
        "status_resolved_in_release",
        "status_resolved_by_age",
        "status_resolved_in_commit",
        "status_ignored",
    )
)


def _normalise_event_alert(body: WireBody, base_url: str) -> SentryAlert:
    data = _parse(EventAlertData, body.data, "event_alert")
    rule = data.issue_alert or WireRuleRef()
    fields = _event_alert(data.event, resource="event_alert", action=body.action, base_url=base_url)
    return SentryAlert(
        **fields, alert_rule_id=rule.id, alert_rule_name=data.triggered_rule or rule.title
    )


def _normalise_error(body: WireBody, base_url: str) -> SentryAlert:
    data = _parse(ErrorData, body.data, "error")
    return SentryAlert(
        **_event_alert(data.error, resource="error", action=body.action, base_url=base_url)
    )


def _normalise_issue(body: WireBody, base_url: str) -> SentryAlert | Ignored:
    if body.action == "assigned":
        return Ignored("issue", body.action, "no_state_change")
    state = _ISSUE_STATES.get(body.action)
    if state is None:
        return Ignored("issue", body.action, "unknown_action")
    issue = _parse(IssueData, body.data, "issue").issue
    fields = _issue_alert(
        issue, resource="issue", action=body.action, state=state, base_url=base_url
    )
    return SentryAlert(**fields)


def _normalise_activity_alert(body: WireBody, base_url: str) -> SentryAlert:
    data = _parse(ActivityAlertData, body.data, "activity_alert")
    # Activity alerts also fire on status changes; a resolution must not raise an alert.
    resolving = data.activity.type in _ACTIVITY_RESOLVING
    state = State.RESOLVED if resolving else State.FIRING
    fields = _issue_alert(
        data.issue, resource="activity_alert", action=body.action, state=state, base_url=base_url
    )
    rule = data.alert or WireRuleRef()
    return SentryAlert(**fields, alert_rule_id=rule.id, alert_rule_name=rule.title)


def _normalise_metric_alert(body: WireBody, base_url: str) -> SentryAlert | Ignored:
    state = _METRIC_STATES.get(body.action)
    if state is None:
        return Ignored("metric_alert", body.action, "unknown_action")
    data = _parse(MetricAlertData, body.data, "metric_alert")
    incident, rule = data.metric_alert, data.metric_alert.alert_rule
    key = rule.id or rule.name
    if not key:
        raise BadPayload("invalid_payload", "metric_alert: the alert rule has neither id nor name")
    reading = parse_metric_description(data.description_text, rule.aggregate)
    projects = sorted(set(rule.projects or incident.projects))
    org, _ = _locate((data.web_url,), base_url)
    return SentryAlert(
        resource="metric_alert",
        action=body.action,
        kind=Kind.METRIC_ALERT,
        state=state,
        identity=f"metric_alert:{key}",
        title=_title(
            rule.name, incident.title, data.description_title, fallback="Sentry metric alert"
        ),
        organization=org,
        project=",".join(projects) or None,
        environment=rule.environment,
        message=data.description_text,
        alert_rule_id=rule.id,
        alert_rule_name=rule.name,
        users=reading.users,
        events=reading.events,
        error_rate=reading.error_rate,
        latency_ms=reading.latency_ms,
        metric_value=reading.value,
        metric_aggregate=reading.aggregate,
        web_url=data.web_url,
        started_at=_time(incident.date_started),
    )


def _normalise_service_hook(data: object, base_url: str) -> SentryAlert:
    body = _parse(ServiceHookBody, data, "service_hook")
    group, project = body.group, body.project or WireProject()
    fields = _event_alert(
        body.event,
        resource="service_hook",
        action="event",
        base_url=base_url,
        issue_id=group.id,
        project_slug=project.slug or (group.project.slug if group.project else None),
        links=(group.url, group.permalink),
    )
    fields["project_id"] = fields["project_id"] or (group.project.id if group.project else None)
    fields["web_url"] = body.event.url or group.url or group.permalink
    fields["issue_api_url"] = f"{base_url}/api/0/issues/{group.id}/"
    fields["level"] = fields["level"] or group.level
    return SentryAlert(
        **fields, short_id=group.short_id, users=group.user_count, events=group.count
    )


def _normalise_legacy(data: object, base_url: str) -> SentryAlert:
    body = _parse(LegacyBody, data, "legacy")
    fields = _event_alert(
        body.event,
        resource="legacy",
        action="triggered",
        base_url=base_url,
        issue_id=body.id,
        project_slug=body.project_slug or body.project,
        links=(body.url,),
    )
    fields["web_url"] = _strip_query(body.url) if body.url else None
    fields["level"] = body.level or fields["level"]
    fields["culprit"] = body.culprit or fields["culprit"]
    rules = body.triggering_rules
    return SentryAlert(**fields, alert_rule_name=", ".join(rules) or None)


def normalise(headers: Mapping[str, str], data: object, *, base_url: str) -> SentryAlert | Ignored:
    """Turn a parsed webhook body into the internal alert, or say why it makes none."""
    base_url = base_url.rstrip("/")
    resource = detect_resource(headers, data)
    if resource == "service_hook":
        return _normalise_service_hook(data, base_url)
    if resource == "legacy":
        return _normalise_legacy(data, base_url)
    raw_action = data.get("action") if isinstance(data, dict) else None
    action = raw_action[:64] if isinstance(raw_action, str) else ""
    if resource == "other":
        named = _lower(headers).get("sentry-hook-resource", "other")[:64]
        return Ignored(named, action, "unknown_resource")
    if resource == "installation":
        return Ignored(resource, action, "not_an_alert")
    body = _parse(WireBody, data, resource)
    body = body.model_copy(update={"action": body.action[:64]})  # it ends up in log lines
    if resource == "event_alert":
        if body.action != "triggered":
            return Ignored(resource, body.action, "unknown_action")
        return _normalise_event_alert(body, base_url)
    if resource == "activity_alert":
        if body.action != "triggered":
            return Ignored(resource, body.action, "unknown_action")
        return _normalise_activity_alert(body, base_url)
    if resource == "error":
        if body.action != "created":
            return Ignored(resource, body.action, "unknown_action")
        return _normalise_error(body, base_url)
    if resource == "issue":
        return _normalise_issue(body, base_url)
    return _normalise_metric_alert(body, base_url)

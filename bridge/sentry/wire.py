"""Sentry's webhook bodies as pydantic models (sources in getsentry/sentry unless noted).

Sentry adds fields freely, so these models ignore what they do not name and are lenient
about optional fields: a number where text is expected becomes text, an odd shape becomes
unknown (``None``). Only what an alert cannot do without (an issue id, the event of an issue
alert, the incident of a metric alert) fails, as a :class:`~bridge.errors.BadPayload` that
names the field and never its value.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from typing import Annotated, Any, Generic, TypeVar

from pydantic import (
    AliasChoices,
    BaseModel,
    BeforeValidator,
    ConfigDict,
    Field,
    GetCoreSchemaHandler,
    StrictBool,
    ValidationError,
)
from pydantic_core import CoreSchema, core_schema

from bridge.errors import BadPayload


class LowerHeaders(dict[str, str]):
    """Request headers with lower-case names, built once per request by the HTTP edge."""


def lower_headers(headers: Mapping[str, str]) -> LowerHeaders:
    """HTTP header names are case-insensitive; plain dicts (CLI, tests) are not."""
    if isinstance(headers, LowerHeaders):
        return headers
    return LowerHeaders((k.lower(), v) for k, v in headers.items())


# --- lenient field types -----------------------------------------------------------------


class _Text:
    """Optional descriptive fields: numbers become strings, odd shapes (booleans too) become
    unknown. Decided in pydantic-core: a text field, the usual case, calls no Python (a
    before-validator did, some 20 times per event; issue 15)."""

    def __get_pydantic_core_schema__(
        self, source: Any, handler: GetCoreSchemaHandler
    ) -> CoreSchema:
        number = (core_schema.int_schema(strict=True), core_schema.float_schema(strict=True))
        text = core_schema.union_schema(
            [
                core_schema.str_schema(strict=True),
                *(core_schema.no_info_after_validator_function(str, n) for n in number),
            ]
        )
        return core_schema.with_default_schema(text, default=None, on_error="default")


def _id(value: Any) -> Any:
    if isinstance(value, int) and not isinstance(value, bool):
        return str(value)
    return value


# Counts above this are clamped: every store and JSON reader downstream takes a signed 64-bit
# integer, and no Sentry issue has seen more events.
MAX_COUNT = 2**63 - 1


def bounded_count(value: Any) -> int | None:
    """A count of events or users: a non-negative integer, or unknown (None). Out-of-range
    numbers (``1e400`` is JSON for infinity, ``-3``, NaN) are unknown, huge ones clamped."""
    if isinstance(value, bool) or value is None:
        return None
    if isinstance(value, float) and not math.isfinite(value):
        return None
    try:
        # int("1" * 5000) raises ValueError (the interpreter's digit limit): unknown too.
        number = int(value)
    except (TypeError, ValueError, OverflowError):
        return None
    return None if number < 0 else min(number, MAX_COUNT)


def _count(value: Any) -> Any:
    """Sentry's issue serializer sends ``count`` as a string and ``userCount`` as a number."""
    return bounded_count(value)


def _texts(value: Any) -> Any:
    return [str(v) for v in value if isinstance(v, str | int)] if isinstance(value, list) else []


Text = Annotated[str | None, _Text()]
Id = Annotated[str, BeforeValidator(_id)]
Count = Annotated[int | None, BeforeValidator(_count)]
Texts = Annotated[list[str], BeforeValidator(_texts)]


class _Unknown:
    """``Annotated[X | None, _Unknown()]``: a value that is not an ``X`` is unknown (None)
    instead of an error, decided in pydantic-core, so a typed subtree costs no Python objects
    for what it does not name (unlike ``Any`` or a before-validator, which need them all)."""

    def __get_pydantic_core_schema__(
        self, source: Any, handler: GetCoreSchemaHandler
    ) -> CoreSchema:
        return core_schema.with_default_schema(handler(source), default=None, on_error="default")


class _Wire(BaseModel):
    model_config = ConfigDict(extra="ignore", frozen=True)


# --- shared parts ------------------------------------------------------------------------


class WireProject(_Wire):
    id: Text = None
    slug: Text = None
    name: Text = None


class WireMechanism(_Wire):
    handled: Annotated[StrictBool | None, _Unknown()] = None


class WireExceptionValue(_Wire):
    mechanism: Annotated[WireMechanism | None, _Unknown()] = None


class WireInterface(_Wire):
    """The two interfaces the bridge reads, at the event's top (``exception``, ``request``)
    or as an ``entries`` item's ``data``; of each only what it reads (bridge.sentry.event),
    not the stack frames, headers and cookies beside it."""

    values: Annotated[list[Annotated[WireExceptionValue | None, _Unknown()]] | None, _Unknown()] = (
        None  # the exception chain
    )
    url: Any = None  # the request's


class WireEntry(_Wire):
    """One of a serialized event's ``entries``: ``{"type": "exception", "data": {...}}``."""

    type: Any = None
    data: Annotated[WireInterface | None, _Unknown()] = None


Interface = Annotated[WireInterface | None, _Unknown()]


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
    event_type: Text = Field(None, alias="type")  # "error", "default", "transaction", ...
    release: Any = None  # a version string, or a release object in the serialized event
    when: Text = Field(None, validation_alias=AliasChoices("datetime", "dateCreated"))
    timestamp: Any = None  # the client's clock: when the SDK says the event happened
    # Sentry's clock: when its ingestion received the event (``received``, set on ingest,
    # in event data; ``dateReceived`` in EventSerializer's output).
    received: Any = Field(None, validation_alias=AliasChoices("received", "dateReceived"))
    tags: Any = None
    request: Interface = None
    exception: Interface = None
    entries: Annotated[list[Annotated[WireEntry | None, _Unknown()]] | None, _Unknown()] = None
    metadata: Any = None
    url: Text = None
    web_url: Text = Field(None, validation_alias=AliasChoices("web_url", "webUrl"))
    issue_url: Text = None
    # An issue-platform event's occurrence (bridge.sentry.occurrence reads it).
    occurrence: Any = None


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
    # The group type (api/serializers/models/group.py: ``issueCategory`` is the category's
    # name lower-cased, ``issueType`` the type's slug; sentry/issues/grouptype.py).
    issue_category: Text = Field(None, alias="issueCategory")
    issue_type: Text = Field(None, alias="issueType")
    url: Text = None
    web_url: Text = Field(None, validation_alias=AliasChoices("web_url", "webUrl"))
    permalink: Text = None
    project_url: Text = None


class WireRuleRef(_Wire):
    id: Text = None
    title: Text = None
    web_url: Text = Field(None, validation_alias=AliasChoices("web_url", "webUrl"))
    # The alert rule action's settings, [{"name", "value"}] (bridge.sentry.settings).
    settings: Any = None


# --- integration platform: {"action", "installation", "data", "actor"} -------------------
# (sentry_apps/api/serializers/app_platform_event.py)


class WireBody(_Wire):
    action: str
    data: dict[str, Any]


_D = TypeVar("_D", bound=BaseModel)


class Envelope(_Wire, Generic[_D]):
    """The same body with its ``data`` typed, to validate the raw bytes in one step."""

    action: str
    data: _D


class EventAlertData(_Wire):
    event: WireEvent
    triggered_rule: Text = None
    issue_alert: WireRuleRef | None = None
    # Not Sentry's: ``sentry-bridge doctor`` marks its test alert so (bridge.doctor).
    bridge_test: bool = False


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
    # Each trigger with its actions; ours carry the settings (bridge.sentry.settings).
    triggers: Any = None


class WireIncident(_Wire):
    identifier: Text = None
    title: Text = None
    projects: Texts = []
    date_started: Text = None
    date_detected: Text = None
    alert_rule: WireAlertRule


class MetricAlertData(_Wire):
    """rules/actions/notify_event_service.py ``build_incident_attachment``: the snake-cased
    incident with its alert rule, and the texts of integrations/metric_alerts.py."""

    metric_alert: WireIncident
    description_text: Text = None
    description_title: Text = None
    web_url: Text = None


# --- project service hooks and the legacy WebHooks plugin --------------------------------


class ServiceHookBody(_Wire):
    """sentry_apps/tasks/service_hooks.py ``get_payload_v0``."""

    project: WireProject | None = None
    group: WireIssue
    event: WireEvent


class LegacyBody(_Wire):
    """plugins/sentry_webhooks/plugin.py ``get_group_data``."""

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


def parse(model: type[_M], data: object, what: str) -> _M:
    """Validate ``data``; a failure names the first bad field's path and error type only."""
    try:
        return model.model_validate(data)
    except ValidationError as exc:
        err = exc.errors(include_url=False, include_input=False)[0]
        where = ".".join(str(part) for part in err["loc"]) or "body"
        raise BadPayload("invalid_payload", f"{what}: {where}: {err['type']}") from None

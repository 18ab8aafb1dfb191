"""Which Sentry webhook a body is, and the one internal alert it means.

Sentry delivers alerts in three families, each normalised here into a
:class:`~bridge.model.SentryAlert` (sources in getsentry/sentry):

* **Integration platform** (internal or public integration): header ``Sentry-Hook-Resource``
  names the resource (``event_alert``, ``activity_alert``, ``metric_alert``, ``issue``,
  ``error``, ``installation``, ``comment``...); body ``{"action", "installation", "data",
  "actor"}`` (sentry_apps/api/serializers/app_platform_event.py).
* **Project service hooks**: ``X-ServiceHook-*`` headers; body ``{"project", "group",
  "event"}`` (sentry_apps/tasks/service_hooks.py ``get_payload_v0``). It does not say whether
  ``event.alert`` or ``event.created`` sent it, so the action is ``event``.
* **The legacy WebHooks plugin**: body ``{"id", "project", "project_slug", "level", "culprit",
  "message", "url", "triggering_rules", "event"}`` (plugins/sentry_webhooks/plugin.py).

This module says which webhook it is, what its action means and who maps it; the parts live
beside it in ``bridge.sentry``: ``auth`` (signatures), ``wire`` (pydantic models of the bodies),
``issue`` and ``metric`` (the mapping of issue and metric alerts), with ``event`` (facts from
events), ``occurrence`` (issue-platform issues: uptime, cron, performance, metric issues) and
``links`` (org, project and issue from links, the URLs of the Sentry that sent them) beneath.
A body signed for the integration platform is read by its ``Sentry-Hook-Resource`` only,
never by its shape, so each credential vouches for its own family (``auth``).
"""

from __future__ import annotations

import functools
from collections.abc import Callable, Mapping
from typing import Any, Generic, TypeVar

import pydantic_core
from pydantic import BaseModel, ValidationError

from bridge.errors import BadPayload
from bridge.model import Ignored, SentryAlert, State
from bridge.sentry import issue
from bridge.sentry.links import Site
from bridge.sentry.metric import metric_alert
from bridge.sentry.wire import (
    ActivityAlertData,
    Envelope,
    ErrorData,
    EventAlertData,
    IssueData,
    MetricAlertData,
    WireBody,
    lower_headers,
    parse,
)

# Why a webhook makes no alert; the ``reason`` of :class:`~bridge.model.Ignored`.
IGNORE_REASONS = ("not_an_alert", "no_state_change", "unknown_resource", "unknown_action")

_D = TypeVar("_D", bound=BaseModel)


class _Resource(Generic[_D]):
    """What an integration-platform resource's actions mean (None: no state change), the
    model of its ``data`` and the function that maps it (to the alert's fields, or to why the
    webhook makes none); any other action is ignored."""

    def __init__(
        self,
        states: Mapping[str, State | None],
        model: type[_D],
        mapper: Callable[[_D, str, State, Site], dict[str, Any] | Ignored],
    ) -> None:
        self.states = states
        self.model = model
        self.envelope = Envelope[model]  # type: ignore[valid-type]
        self.mapper = mapper


_TRIGGERED = {"triggered": State.FIRING}
_RESOURCES: dict[str, _Resource[Any]] = {
    "event_alert": _Resource(_TRIGGERED, EventAlertData, issue.event_alert),
    "activity_alert": _Resource(_TRIGGERED, ActivityAlertData, issue.activity_alert),
    "error": _Resource({"created": State.FIRING}, ErrorData, issue.error),
    "issue": _Resource(
        {
            "created": State.FIRING,
            "unresolved": State.FIRING,
            "resolved": State.RESOLVED,
            "ignored": State.RESOLVED,
            "archived": State.RESOLVED,
            "assigned": None,
        },
        IssueData,
        issue.issue,
    ),
    "metric_alert": _Resource(
        {
            "critical": State.FIRING,
            "warning": State.FIRING,
            "open": State.FIRING,
            "resolved": State.RESOLVED,
        },
        MetricAlertData,
        metric_alert,
    ),
}
_INTEGRATION_RESOURCES = frozenset((*_RESOURCES, "installation"))


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
    h = lower_headers(headers)
    hook = h.get("sentry-hook-resource")
    if hook is not None:
        return hook if hook in _INTEGRATION_RESOURCES else "other"
    if "sentry-hook-signature" in h:
        return "other"  # an integration's body names its resource; it is never read by shape
    if any(name.startswith("x-servicehook-") for name in h) or _is_service_hook_body(data):
        return "service_hook"
    if _is_legacy_body(data):
        return "legacy"
    return "other"


def _alert(fields: dict[str, Any] | Ignored, request_id: str | None) -> SentryAlert | Ignored:
    if isinstance(fields, Ignored):
        return fields
    fields["request_id"] = request_id
    return SentryAlert.of(fields)


@functools.lru_cache(maxsize=8)  # the config's two values: the same on every webhook
def _site(base_url: str, organization: str | None) -> Site:
    return Site(base_url.rstrip("/"), organization or None)


def _state(spec: _Resource[Any], resource: str, action: str) -> State | Ignored:
    """What ``action`` means for ``resource``, or why it makes no alert."""
    if action not in spec.states:
        return Ignored(resource, action, "unknown_action")
    state = spec.states[action]
    return Ignored(resource, action, "no_state_change") if state is None else state


def normalise(
    headers: Mapping[str, str],
    data: object,
    *,
    base_url: str,
    organization: str | None = None,
    request_id: str | None = None,
) -> SentryAlert | Ignored:
    """Turn a parsed webhook body into the internal alert, or say why it makes none.
    ``organization`` is ``sentry.organization``: the org slug when the config names it."""
    site = _site(base_url, organization)
    resource = detect_resource(headers, data)
    if resource == "service_hook":
        return _alert(issue.service_hook(data, site), request_id)
    if resource == "legacy":
        return _alert(issue.legacy(data, site), request_id)
    raw_action = data.get("action") if isinstance(data, dict) else None
    action = raw_action[:64] if isinstance(raw_action, str) else ""  # it ends up in log lines
    if resource == "other":
        named = lower_headers(headers).get("sentry-hook-resource", "other")[:64]
        return Ignored(named, action, "unknown_resource")
    if resource == "installation":
        return Ignored(resource, action, "not_an_alert")
    body = parse(WireBody, data, resource)
    spec = _RESOURCES[resource]
    action = body.action[:64]
    state = _state(spec, resource, action)  # before the data: an ignored action needs none
    if isinstance(state, Ignored):
        return state
    parsed = parse(spec.model, body.data, resource)
    return _alert(spec.mapper(parsed, action, state, site), request_id)


def loads(body: bytes) -> Any:
    """The body as Python objects, for the general path. pydantic's parser rather than
    ``json.loads``: it refuses what the typed path refuses too, notably a lone surrogate
    escape (``"\\ud800"``), which is not text and could not be sent on in a label."""
    try:
        return pydantic_core.from_json(body)
    except ValueError:
        raise BadPayload("invalid_json", "the body is not JSON") from None


def read(
    headers: Mapping[str, str],
    body: bytes,
    *,
    base_url: str,
    organization: str | None = None,
    request_id: str | None = None,
) -> tuple[str, SentryAlert | Ignored]:
    """The raw body's resource (the metrics label) and what :func:`normalise` makes of it.

    An integration-platform alert is validated straight from the bytes into its typed
    model (pydantic parses the JSON and builds only the fields the models name, instead of
    every object of a several-KB event). Anything that does not validate there takes the
    general path, so the result, including every error and ignore reason, is the same."""
    resource = lower_headers(headers).get("sentry-hook-resource")
    spec = _RESOURCES.get(resource) if resource is not None else None
    if spec is not None and resource is not None:
        try:
            envelope = spec.envelope.model_validate_json(body)
        except ValidationError:
            pass
        else:
            action = envelope.action[:64]
            state = _state(spec, resource, action)
            if isinstance(state, Ignored):
                return resource, state
            fields = spec.mapper(envelope.data, action, state, _site(base_url, organization))
            return resource, _alert(fields, request_id)
    data = loads(body)
    result = normalise(
        headers, data, base_url=base_url, organization=organization, request_id=request_id
    )
    return detect_resource(headers, data), result

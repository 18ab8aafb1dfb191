"""Sentry's side of the wire: who sent it, what it is, and the one alert it means.

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
beside it: ``sentry_auth`` (signatures), ``sentry_wire`` (pydantic models of the bodies),
``sentry_issue`` and ``sentry_metric`` (the mapping of issue and metric alerts), with
``sentry_event`` (facts from events) and ``sentry_links`` (org and project from links, URLs
built from ``base_url``) beneath them.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Any

from bridge import sentry_issue as issue
from bridge.model import Ignored, SentryAlert, State
from bridge.sentry_auth import authenticate
from bridge.sentry_metric import MetricReading, normalise_metric_alert, parse_metric_description
from bridge.sentry_wire import WireBody, lower_headers, parse

__all__ = [
    "IGNORE_REASONS",
    "MetricReading",
    "authenticate",
    "detect_resource",
    "normalise",
    "parse_metric_description",
]

# Why a webhook makes no alert; the ``reason`` of :class:`~bridge.model.Ignored`.
IGNORE_REASONS = ("not_an_alert", "no_state_change", "unknown_resource", "unknown_action")

_Handler = Callable[[dict[str, Any], str, State, str], SentryAlert]
_TRIGGERED = {"triggered": State.FIRING}
# Integration-platform resources: what each action means (None: no state change), and the
# function that maps the ``data``. Any other action is ignored as unknown.
_RESOURCES: dict[str, tuple[Mapping[str, State | None], _Handler]] = {
    "event_alert": (_TRIGGERED, issue.normalise_event_alert),
    "activity_alert": (_TRIGGERED, issue.normalise_activity_alert),
    "error": ({"created": State.FIRING}, issue.normalise_error),
    "issue": (
        {
            "created": State.FIRING,
            "unresolved": State.FIRING,
            "resolved": State.RESOLVED,
            "ignored": State.RESOLVED,
            "archived": State.RESOLVED,
            "assigned": None,
        },
        issue.normalise_issue,
    ),
    "metric_alert": (
        {
            "critical": State.FIRING,
            "warning": State.FIRING,
            "open": State.FIRING,
            "resolved": State.RESOLVED,
        },
        normalise_metric_alert,
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
    if any(name.startswith("x-servicehook-") for name in h) or _is_service_hook_body(data):
        return "service_hook"
    if _is_legacy_body(data):
        return "legacy"
    return "other"


def normalise(headers: Mapping[str, str], data: object, *, base_url: str) -> SentryAlert | Ignored:
    """Turn a parsed webhook body into the internal alert, or say why it makes none."""
    base_url = base_url.rstrip("/")
    resource = detect_resource(headers, data)
    if resource == "service_hook":
        return issue.normalise_service_hook(data, base_url)
    if resource == "legacy":
        return issue.normalise_legacy(data, base_url)
    raw_action = data.get("action") if isinstance(data, dict) else None
    action = raw_action[:64] if isinstance(raw_action, str) else ""  # it ends up in log lines
    if resource == "other":
        named = lower_headers(headers).get("sentry-hook-resource", "other")[:64]
        return Ignored(named, action, "unknown_resource")
    if resource == "installation":
        return Ignored(resource, action, "not_an_alert")
    body = parse(WireBody, data, resource)
    action = body.action[:64]
    states, handler = _RESOURCES[resource]
    if action not in states:
        return Ignored(resource, action, "unknown_action")
    state = states[action]
    if state is None:
        return Ignored(resource, action, "no_state_change")
    return handler(body.data, action, state, base_url)

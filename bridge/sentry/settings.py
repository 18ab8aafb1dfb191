"""The settings a user chose for the bridge's alert rule action in Sentry's alert rule editor.

Sentry sends them, as a list of ``{"name", "value"}``, in every webhook of the alert rule
(getsentry/sentry, sources read 2026-12):

* issue alerts: ``data.issue_alert.settings`` (sentry_apps/tasks/sentry_apps.py
  ``send_alert_webhook``; sentry-docs ui-components/alert-rule-action.mdx);
* metric alerts: the trigger action's ``settings``, in
  ``data.metric_alert.alert_rule.triggers[].actions[]`` where the action's ``type`` is
  ``sentry_app`` (rules/actions/notify_event_service.py ``find_alert_rule_action_ui_component``
  looks for them the same way);
* the new engine's activity alerts: ``data.alert.settings``
  (notifications/notification_action/activity_registry/sentry_app.py ``WorkflowData``).

Only the names the bridge knows are kept, each value bounded; whether a value is allowed
is decided later against the config (``bridge.classify``), so a value Sentry saved before
the config changed is ignored there rather than refused here.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

# The setting names of the schema `sentry-bridge sentry-schema` prints; saved alert rules
# keep them, so they never change (issue 17).
SEVERITY, TEAM, SERVICE, RUNBOOK_URL = "severity", "team", "service", "runbook_url"
# Issue 17: which of the config's escalation policies (escalation.policies) applies.
ESCALATION_POLICY = "escalation_policy"
NAMES = (SEVERITY, TEAM, SERVICE, RUNBOOK_URL, ESCALATION_POLICY)
# The escalation option that asks for no escalation at all.
NO_POLICY = "none"
# "Use the rules": the severity option that leaves the severity to classification.rules.
USE_RULES = "rules"
_MAX_VALUE = 2048  # a runbook URL is the longest value; anything longer is not ours

Settings = tuple[tuple[str, str], ...]


def read(raw: Any) -> Settings:
    """``[{"name": ..., "value": ...}, ...]`` as known (name, value) pairs; anything else
    (absent, not a list, an entry of another shape) contributes nothing."""
    if not isinstance(raw, list):
        return ()
    found: dict[str, str] = {}
    for entry in raw:
        if not isinstance(entry, dict):
            continue
        name, value = entry.get("name"), entry.get("value")
        if name in NAMES and name not in found and isinstance(value, str | int | float):
            text = str(value).strip()
            if text and len(text) <= _MAX_VALUE:
                found[name] = text
    return tuple((name, found[name]) for name in NAMES if name in found)


def from_triggers(triggers: Any, action: str) -> Settings:
    """A metric alert's settings: those of a ``sentry_app`` action carrying some, in the
    trigger the webhook is about (``label`` ``critical`` / ``warning``) first, else any."""
    if not isinstance(triggers, list):
        return ()
    ordered: Iterable[Any] = sorted(
        (t for t in triggers if isinstance(t, dict)),
        key=lambda t: t.get("label") != action,
    )
    for trigger in ordered:
        for act in trigger.get("actions") or ():
            if isinstance(act, dict) and act.get("type") == "sentry_app":
                found = read(act.get("settings"))
                if found:
                    return found
    return ()

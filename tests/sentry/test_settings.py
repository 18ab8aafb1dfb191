"""The alert rule action's settings, read from each webhook that carries them, in the shapes
getsentry/sentry sends: ``data.issue_alert.settings`` (sentry_apps/tasks/sentry_apps.py
``send_alert_webhook``; sentry-docs ui-components/alert-rule-action.mdx), the metric alert
trigger action's ``settings`` (rules/actions/notify_event_service.py
``find_alert_rule_action_ui_component``), ``data.alert.settings`` of activity alerts
(notifications/notification_action/activity_registry/sentry_app.py ``WorkflowData``)."""

from __future__ import annotations

import copy
from typing import Any

import pytest

from bridge.model import SentryAlert
from bridge.sentry import settings
from tests.sentry_payloads import alert, hook, load_fixture, patched

CHOSEN = [
    {"name": "severity", "value": "critical"},
    {"name": "team", "value": "payments"},
    {"name": "runbook_url", "value": "https://wiki.example.com/runbooks/checkout"},
]
EXPECTED = (
    ("severity", "critical"),
    ("team", "payments"),
    ("runbook_url", "https://wiki.example.com/runbooks/checkout"),
)


def metric_with(trigger_settings: dict[str, Any]) -> dict[str, Any]:
    """metric_alert_critical.json with each trigger's sentry_app action given settings."""
    data = load_fixture("metric_alert_critical.json")
    for trigger in data["data"]["metric_alert"]["alert_rule"]["triggers"]:
        for action in trigger["actions"]:
            action["settings"] = copy.deepcopy(trigger_settings.get(trigger["label"]))
    return data


def test_issue_alert_settings() -> None:
    data = patched("event_alert.json", CHOSEN, "data", "issue_alert", "settings")
    assert alert(hook("event_alert"), data).rule_settings == EXPECTED


def test_activity_alert_settings() -> None:
    data = patched("activity_alert_status_escalating.json", CHOSEN, "data", "alert", "settings")
    assert alert(hook("activity_alert"), data).rule_settings == EXPECTED


def test_metric_alert_takes_the_firing_triggers_action() -> None:
    data = metric_with(
        {"critical": [{"name": "severity", "value": "critical"}], "warning": CHOSEN[1:]}
    )
    critical = alert(hook("metric_alert"), data)
    assert critical.rule_settings == (("severity", "critical"),)
    data["action"] = "warning"
    assert alert(hook("metric_alert"), data).rule_settings == EXPECTED[1:]


def test_metric_alert_resolved_takes_any_triggers_settings() -> None:
    data = metric_with({"warning": CHOSEN})
    data["action"] = "resolved"
    assert alert(hook("metric_alert"), data).rule_settings == EXPECTED


@pytest.mark.parametrize(
    ("fixture", "resource"),
    [
        pytest.param("event_alert.json", "event_alert", id="issue-alert-other-names"),
        pytest.param("metric_alert_critical.json", "metric_alert", id="metric-settings-null"),
        pytest.param("activity_alert_status_escalating.json", "activity_alert", id="activity"),
    ],
)
def test_without_our_settings_nothing_changes(fixture: str, resource: str) -> None:
    # event_alert.json carries another integration's {"name": "channel"}: not ours.
    assert alert(hook(resource), load_fixture(fixture)).rule_settings == ()


@pytest.mark.parametrize(
    ("raw", "expected"),
    [
        pytest.param(None, (), id="absent"),
        pytest.param({"severity": "low"}, (), id="not-a-list"),
        pytest.param(["severity"], (), id="not-objects"),
        pytest.param([{"name": "labels", "value": "x"}], (), id="unknown-name"),
        pytest.param([{"name": "team", "value": "  "}], (), id="blank"),
        pytest.param([{"name": "team", "value": "x" * 3000}], (), id="too-long"),
        pytest.param([{"name": "team", "value": ["a"]}], (), id="not-a-scalar"),
        pytest.param(
            [{"name": "team", "value": "a"}, {"name": "team", "value": "b"}],
            (("team", "a"),),
            id="first-wins",
        ),
        pytest.param(
            [{"name": "runbook_url", "value": "u"}, {"name": "severity", "value": "low"}],
            (("severity", "low"), ("runbook_url", "u")),
            id="ordered-by-name",
        ),
    ],
)
def test_read(raw: object, expected: tuple[tuple[str, str], ...]) -> None:
    assert settings.read(raw) == expected


def test_settings_survive_the_stores_json_round_trip() -> None:
    data = patched("event_alert.json", CHOSEN, "data", "issue_alert", "settings")
    before = alert(hook("event_alert"), data)
    after = SentryAlert.from_json(before.to_json())
    assert after == before

"""Settings chosen in Sentry's alert rule editor, end to end: the bridge as a process on the
shipped config (with teams and services listed), webhooks carrying the settings in the shapes
Sentry sends them, into a real Alertmanager; and the editor's save and options requests,
signed as Sentry signs them (sentry_apps/external_requests/ in getsentry/sentry), on the
webhook port."""

from __future__ import annotations

import contextlib
import copy
import hashlib
import hmac
import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
import yaml

from tests.integration import procs
from tests.integration.conftest import CLIENT_SECRET, ENV, Alertmanager, Bridge, fixture

CHOSEN = [
    {"name": "severity", "value": "medium"},
    {"name": "team", "value": "payments"},
    {"name": "service", "value": "checkout"},
    {"name": "runbook_url", "value": "https://wiki.example.com/runbooks/checkout"},
]


@pytest.fixture
def bridge(alertmanager: Alertmanager, tmp_path: Path) -> Iterator[Bridge]:
    path = procs.write_config(tmp_path / "config.yaml", [alertmanager.url])
    data = yaml.safe_load(path.read_text(encoding="utf-8"))
    data["classification"]["rule_settings"] = {
        "teams": ["payments", "search"],
        "services": ["checkout"],
    }
    path.write_text(yaml.safe_dump(data), encoding="utf-8")
    with (
        procs.bridge(path, tmp_path / "data", tmp_path / "bridge.log", ENV) as process,
        procs.client(base_url=process.url, timeout=10) as client,
    ):
        yield Bridge(process, client)


def with_settings(name: str, settings: list[dict[str, str]], *path: str) -> dict[str, Any]:
    data = fixture(name)
    node = data
    for key in path:
        node = node[key]
    node["settings"] = copy.deepcopy(settings)
    return data


def app_signature(body: str) -> str:
    return hmac.new(CLIENT_SECRET.encode(), body.encode(), hashlib.sha256).hexdigest()


def test_an_issue_alert_rules_settings_decide_severity_and_labels(
    bridge: Bridge, alertmanager: Alertmanager
) -> None:
    # The shipped policy makes this unhandled production error critical; the rule says medium.
    settings = [*CHOSEN, {"name": "priority", "value": "P0"}]  # a name the bridge ignores
    payload = with_settings("event_alert.json", settings, "data", "issue_alert")
    assert bridge.post(payload, resource="event_alert").status_code == 202
    [alert] = alertmanager.wait_for(lambda alerts: len(alerts) == 1)
    assert alert["labels"] == alert["labels"] | {
        "severity": "medium",
        "team": "payments",
        "service": "checkout",
    }
    assert "priority" not in alert["labels"] or alert["labels"]["priority"] == "P3"
    assert alert["annotations"]["runbook_url"] == "https://wiki.example.com/runbooks/checkout"


def test_a_value_the_config_does_not_list_never_becomes_a_label(
    bridge: Bridge, alertmanager: Alertmanager
) -> None:
    forged = [{"name": "team", "value": "root"}, {"name": "runbook_url", "value": "javascript:x"}]
    payload = with_settings("event_alert.json", forged, "data", "issue_alert")
    assert bridge.post(payload, resource="event_alert").status_code == 202
    [alert] = alertmanager.wait_for(lambda alerts: len(alerts) == 1)
    assert "team" not in alert["labels"]
    assert "runbook_url" not in alert["annotations"]
    assert alert["labels"]["severity"] == "critical"  # the shipped rules, as without settings


def test_a_metric_alerts_trigger_action_settings(
    bridge: Bridge, alertmanager: Alertmanager
) -> None:
    payload = fixture("metric_alert_critical.json")
    for trigger in payload["data"]["metric_alert"]["alert_rule"]["triggers"]:
        for action in trigger["actions"]:
            action["settings"] = [
                {"name": "severity", "value": "high"},
                {"name": "team", "value": "search"},
            ]
    assert bridge.post(payload, resource="metric_alert").status_code == 202
    [alert] = alertmanager.wait_for(lambda alerts: len(alerts) == 1)
    # The shipped metric-alert-critical rule would say critical.
    assert alert["labels"]["severity"] == "high"
    assert alert["labels"]["team"] == "search"


def test_an_activity_alerts_settings(bridge: Bridge, alertmanager: Alertmanager) -> None:
    payload = with_settings("activity_alert_status_escalating.json", CHOSEN, "data", "alert")
    assert bridge.post(payload, resource="activity_alert").status_code == 202
    [alert] = alertmanager.wait_for(lambda alerts: len(alerts) == 1)
    # medium chosen, one step up since Sentry says the issue is escalating.
    assert alert["labels"] == alert["labels"] | {"severity": "high", "escalated": "true"}
    assert alert["labels"]["team"] == "payments"


def test_a_rule_marked_override_sentry_wins(bridge: Bridge, alertmanager: Alertmanager) -> None:
    # Issue 17's example: the shipped non-production rule wins over a chosen severity.
    staging = with_settings(
        "event_alert_python.json",
        [{"name": "severity", "value": "critical"}, {"name": "team", "value": "search"}],
        "data",
        "issue_alert",
    )
    assert bridge.post(staging, resource="event_alert").status_code == 202
    [staged] = alertmanager.wait_for(lambda alerts: len(alerts) == 1)
    assert staged["labels"]["environment"] == "staging"
    assert staged["labels"]["severity"] == "low"
    assert staged["labels"]["team"] == "search"


def save(bridge: Bridge, fields: list[dict[str, str]], signature: str | None) -> httpx.Response:
    body = json.dumps({"fields": fields, "installationId": "d1b5cd8e-2f0b-4b6c-9d36-3f7c"})
    headers = {"Content-Type": "application/json", "Request-ID": "aa11"}
    if signature is not None:
        headers["Sentry-App-Signature"] = signature or app_signature(body)
    return bridge.client.post("/sentry/alert-rule-action", content=body, headers=headers)


def test_a_bad_setting_is_refused_at_save_time_with_a_message(bridge: Bridge) -> None:
    bad = [{"name": "severity", "value": "critical"}, {"name": "team", "value": "paymnets"}]
    response = save(bridge, bad, "")
    assert response.status_code == 400
    assert response.json()["message"] == "team 'paymnets' is not one of payments, search"
    assert save(bridge, CHOSEN, "").status_code == 200


def test_a_forged_validation_request_is_refused(bridge: Bridge) -> None:
    assert save(bridge, CHOSEN, "f" * 64).status_code == 401
    assert save(bridge, CHOSEN, None).status_code == 401


def test_options_come_from_the_config_and_alertmanagers_running_config(bridge: Bridge) -> None:
    headers = {"Sentry-App-Signature": app_signature("")}
    params = {"installationId": "d1b5cd8e", "projectSlug": "web-frontend"}
    teams = bridge.client.get("/sentry/options/team", params=params, headers=headers)
    assert teams.json() == [{"label": t, "value": t} for t in ("payments", "search")]
    receivers = bridge.client.get("/sentry/options/receiver", params=params, headers=headers)
    assert receivers.json() == [{"label": "null", "value": "null"}]  # tests/integration/am.py
    with contextlib.suppress(KeyError):
        del headers["Sentry-App-Signature"]
    assert bridge.client.get("/sentry/options/team", headers=headers).status_code == 401

"""Reloading the config of the running bridge (one process), as Prometheus does:
SIGHUP and ``POST /-/reload``; a broken file is refused and the running rules stay."""

from __future__ import annotations

import signal
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import yaml

from tests.integration.conftest import Alertmanager, Bridge, fixture

TOP_RULE = {
    "name": "reloaded-rule",
    "match": {"kind": "metric_alert"},
    "severity": "low",
    "labels": {"team": "reloaded"},
}


def config_of(bridge: Bridge) -> Path:
    return bridge.process.log.parent / "config.yaml"


def edit(path: Path, change: Callable[[dict[str, Any]], None]) -> None:
    data = yaml.safe_load(path.read_text(encoding="utf-8"))
    change(data)
    path.write_text(yaml.safe_dump(data), encoding="utf-8")


def add_top_rule(data: dict[str, Any]) -> None:
    data["classification"]["rules"].insert(0, TOP_RULE)


def wait_metric(bridge: Bridge, name: str, value: float, timeout: float = 15.0) -> None:
    deadline = time.monotonic() + timeout
    while bridge.metric(name) != value:
        assert time.monotonic() < deadline, f"{name} never became {value}"
        time.sleep(0.05)


def post_metric_alert(bridge: Bridge, rule_id: str) -> None:
    body = fixture("metric_alert_critical.json")
    body["data"]["metric_alert"]["alert_rule"]["id"] = rule_id
    assert bridge.post(body, resource="metric_alert").status_code == 202


def firing_for(alertmanager: Alertmanager, rule_id: str) -> dict[str, Any]:
    alerts = alertmanager.wait_for(
        lambda alerts: any(a["labels"].get("sentry_alert_rule_id") == rule_id for a in alerts)
    )
    [alert] = [a for a in alerts if a["labels"]["sentry_alert_rule_id"] == rule_id]
    return alert


def test_sighup_reload_classifies_the_next_webhook_by_the_new_rule(
    bridge: Bridge, alertmanager: Alertmanager
) -> None:
    post_metric_alert(bridge, "1")
    assert firing_for(alertmanager, "1")["labels"]["severity"] == "critical"
    assert bridge.metric("sentry_bridge_config_last_reload_successful") == 1
    started = bridge.metric("sentry_bridge_config_last_reload_success_timestamp_seconds")

    edit(config_of(bridge), add_top_rule)
    bridge.process.proc.send_signal(signal.SIGHUP)
    wait_metric(bridge, "sentry_bridge_config_reloads_total", 1)

    assert bridge.process.proc.poll() is None  # SIGHUP no longer kills it
    assert bridge.metric("sentry_bridge_config_last_reload_successful") == 1
    assert bridge.metric("sentry_bridge_config_last_reload_success_timestamp_seconds") > started
    post_metric_alert(bridge, "2")
    alert = firing_for(alertmanager, "2")
    assert alert["labels"]["severity"] == "low"
    assert alert["labels"]["team"] == "reloaded"
    assert alert["annotations"]["classified_by"] == "reloaded-rule"
    assert '"trigger": "SIGHUP"' in bridge.process.logs()


def test_a_broken_config_is_refused_and_the_old_rules_stay(
    bridge: Bridge, alertmanager: Alertmanager
) -> None:
    path = config_of(bridge)
    edit(path, add_top_rule)
    assert bridge.admin("POST", "/-/reload").json() == {
        "status": "reloaded",
        "restart_required": [],
    }

    def break_it(data: dict[str, Any]) -> None:
        data["classification"]["rules"][0]["match"]["kindd"] = "metric_alert"

    edit(path, break_it)
    response = bridge.admin("POST", "/-/reload")
    assert response.status_code == 400
    assert "classification.rules[0].match.kindd: unknown key" in response.json()["error"]
    assert bridge.metric("sentry_bridge_config_last_reload_successful") == 0
    assert bridge.metric("sentry_bridge_config_reloads_failed_total") == 1
    assert "config reload refused" in bridge.process.logs()

    # The rules of the last good reload are in force, in the edge and the pipeline.
    post_metric_alert(bridge, "3")
    assert firing_for(alertmanager, "3")["annotations"]["classified_by"] == "reloaded-rule"
    assert bridge.process.proc.poll() is None


def test_what_needs_a_restart_is_said_and_the_rest_applied(
    bridge: Bridge, alertmanager: Alertmanager
) -> None:
    def change(data: dict[str, Any]) -> None:
        add_top_rule(data)
        data["alertmanager"]["urls"] = "http://127.0.0.1:1"
        data["store"]["max_queued"] = 5
        data["server"]["max_body_bytes"] = 4096

    edit(config_of(bridge), change)
    answer = bridge.admin("POST", "/-/reload").json()
    assert answer["status"] == "reloaded"
    assert set(answer["restart_required"]) == {"alertmanager.urls", "store"}
    assert "take effect only after a restart" in bridge.process.logs()

    # Still delivering to the Alertmanager it started with, by the new rule; and the new
    # body limit holds at the edge.
    post_metric_alert(bridge, "4")
    assert firing_for(alertmanager, "4")["labels"]["severity"] == "low"
    assert bridge.post(b"x" * 5000, resource="metric_alert").status_code == 413

"""Sentry's payloads, signed as Sentry signs them, through the bridge under Uvicorn into a
real Alertmanager, checked through Alertmanager's own ``GET /api/v2/alerts``.

The bridge runs the shipped config.yaml, so these tests also pin the shipped policy's
effect on real payloads (tests/test_shipped_policy.py covers it rule by rule).
"""

from __future__ import annotations

import copy
import json
import time
from datetime import UTC, datetime
from typing import Any

from prometheus_client.parser import text_string_to_metric_families

from tests.integration.conftest import (
    HOOK_SECRET,
    LEGACY_TOKEN,
    Alertmanager,
    Bridge,
    fixture,
    sign,
)

FRONTEND_ISSUE = "1117540176"  # event_alert.json, error_created.json, issue_*.json
CHECKOUT_ISSUE = "4507718802"  # event_alert_python.json (staging), service_hook_event.json


def for_issue(alerts: list[dict[str, Any]], issue_id: str) -> list[dict[str, Any]]:
    return [a for a in alerts if a["labels"].get("sentry_issue_id") == issue_id]


def another_event(payload: dict[str, Any], n: int) -> dict[str, Any]:
    """The same issue's alert for another event: a distinct body (the very same body again
    is a retry, acknowledged with no effect)."""
    again = copy.deepcopy(payload)
    event = again["data"]["event"]
    event["event_id"] = f"{n:032x}"
    now = time.time()  # it happened now, after anything the test did before
    event["datetime"] = datetime.fromtimestamp(now, UTC).isoformat().replace("+00:00", "Z")
    event["timestamp"] = event["received"] = now
    return again


def for_rule(alerts: list[dict[str, Any]], rule_id: str) -> list[dict[str, Any]]:
    return [a for a in alerts if a["labels"].get("sentry_alert_rule_id") == rule_id]


def sent(bridge: Bridge) -> float:
    """``sentry_bridge_alertmanager_alerts_sent_total`` over every Alertmanager."""
    prefix = "sentry_bridge_alertmanager_alerts_sent_total{"
    lines = bridge.client.get("/metrics").text.splitlines()
    return sum(float(line.rpartition(" ")[2]) for line in lines if line.startswith(prefix))


def nothing_else_reaches(bridge: Bridge, alertmanager: Alertmanager) -> None:
    """Asserts that what was posted before reached Alertmanager as nothing: a metric alert
    goes in after it, and once the bridge's own counter says Alertmanager took an alert,
    whatever the earlier webhooks made would have been sent (the inbox is taken and the
    queue delivered in order), so the metric alert must be all Alertmanager holds."""
    response = bridge.post(fixture("metric_alert_critical.json"), resource="metric_alert")
    assert response.status_code == 202
    deadline = time.monotonic() + 10
    while not sent(bridge):
        assert time.monotonic() < deadline, "the metric alert was never sent"
        time.sleep(0.05)
    assert sent(bridge) == 1
    alertnames = [alert["labels"]["alertname"] for alert in alertmanager.sentry_alerts()]
    assert alertnames == ["SentryMetricAlert"]


def test_issue_alert_arrives_with_labels_and_annotations(
    bridge: Bridge, alertmanager: Alertmanager
) -> None:
    response = bridge.post(fixture("event_alert.json"), resource="event_alert")
    assert response.status_code == 202, response.text

    alerts = alertmanager.wait_for(lambda a: len(for_issue(a, FRONTEND_ISSUE)) == 1)
    [alert] = for_issue(alerts, FRONTEND_ISSUE)
    labels = alert["labels"]
    # An unhandled error in production: critical by the shipped policy, and it pages.
    assert labels == labels | {
        "alertname": "SentryIssue",
        "severity": "critical",
        "source": "sentry",
        "project": "web-frontend",
        "environment": "production",
        "sentry_issue_id": FRONTEND_ISSUE,
        "priority": "P1",
        "page": "true",
    }
    assert "escalated" not in labels
    annotations = alert["annotations"]
    assert annotations["summary"]
    assert annotations["classified_by"] != "default"
    assert annotations["sentry_url"].startswith("https://")
    assert alert["generatorURL"] == annotations["sentry_url"]
    assert alert["status"]["state"] == "active"


def test_duplicate_is_not_a_second_alert(bridge: Bridge, alertmanager: Alertmanager) -> None:
    payload = fixture("event_alert.json")
    for n in range(2):
        response = bridge.post(another_event(payload, n), resource="event_alert")
        assert response.status_code == 202
    alertmanager.wait_for(lambda a: len(for_issue(a, FRONTEND_ISSUE)) == 1)
    deadline = time.monotonic() + 10
    while bridge.metric("sentry_bridge_alerts_total", {"outcome": "duplicate"}) < 1:
        assert time.monotonic() < deadline, "the repeat was never counted as a duplicate"
        time.sleep(0.1)
    assert bridge.metric("sentry_bridge_alerts_total", {"outcome": "forwarded"}) == 1
    assert len(for_issue(alertmanager.sentry_alerts(), FRONTEND_ISSUE)) == 1


def test_the_same_body_again_is_acknowledged_with_no_effect(
    bridge: Bridge, alertmanager: Alertmanager
) -> None:
    """Sentry retries resend the very body, and a captured body can be replayed: a
    resolve replayed after the issue fired again must not end the new page."""
    firing = fixture("event_alert.json")
    resolved = fixture("issue_resolved.json")
    assert bridge.post(firing, resource="event_alert").status_code == 202
    alertmanager.wait_for(lambda a: len(for_issue(a, FRONTEND_ISSUE)) == 1)
    assert bridge.post(resolved, resource="issue").status_code == 202
    alertmanager.wait_for(lambda a: for_issue(a, FRONTEND_ISSUE) == [])
    assert bridge.post(another_event(firing, 1), resource="event_alert").status_code == 202
    alertmanager.wait_for(lambda a: len(for_issue(a, FRONTEND_ISSUE)) == 1)
    replay = bridge.post(resolved, resource="issue")
    assert (replay.status_code, replay.json()) == (200, {"status": "duplicate"})
    assert bridge.metric("sentry_bridge_webhooks_duplicate_total") == 1
    assert len(for_issue(alertmanager.sentry_alerts(), FRONTEND_ISSUE)) == 1


def test_a_signed_body_the_bridge_cannot_read_is_quarantined(
    bridge: Bridge, alertmanager: Alertmanager
) -> None:
    body = json.dumps({"action": "triggered", "data": {"event": "not an event"}}).encode()
    response = bridge.post(body, resource="event_alert")
    assert (response.status_code, response.json()["status"]) == (202, "quarantined")
    assert bridge.metric("sentry_bridge_quarantined_total", {"reason": "invalid_payload"}) == 1
    bridge.until_metric("sentry_bridge_quarantine_webhooks", lambda kept: kept == 1)
    assert bridge.client.get("/-/ready").status_code == 200


def test_issue_resolved_in_sentry_resolves_the_same_alert(
    bridge: Bridge, alertmanager: Alertmanager
) -> None:
    bridge.post(fixture("event_alert.json"), resource="event_alert")
    [firing] = for_issue(
        alertmanager.wait_for(lambda a: len(for_issue(a, FRONTEND_ISSUE)) == 1), FRONTEND_ISSUE
    )
    # The issue resource names no environment and carries other counts: classified on
    # its own it would be another label set. The bridge resolves the one it sent.
    assert bridge.post(fixture("issue_resolved.json"), resource="issue").status_code == 202
    alertmanager.wait_for(lambda a: for_issue(a, FRONTEND_ISSUE) == [])
    assert firing["labels"]["environment"] == "production"


def test_metric_alert_critical_warning_resolved(bridge: Bridge, alertmanager: Alertmanager) -> None:
    critical = fixture("metric_alert_critical.json")
    rule_id = str(critical["data"]["metric_alert"]["alert_rule"]["id"])
    bridge.post(critical, resource="metric_alert")
    [alert] = for_rule(alertmanager.wait_for(lambda a: len(for_rule(a, rule_id)) == 1), rule_id)
    assert alert["labels"]["alertname"] == "SentryMetricAlert"
    assert alert["labels"]["severity"] == "critical"

    warning = copy.deepcopy(critical)
    warning["action"] = "warning"
    bridge.post(warning, resource="metric_alert")
    # One alert per rule: the critical label set is resolved as the warning one fires.
    alerts = alertmanager.wait_for(
        lambda a: [x["labels"]["severity"] for x in for_rule(a, rule_id)] == ["medium"]
    )
    assert for_rule(alerts, rule_id)[0]["labels"]["page"] == "false"

    resolved = copy.deepcopy(critical)
    resolved["action"] = "resolved"
    bridge.post(resolved, resource="metric_alert")
    alertmanager.wait_for(lambda a: for_rule(a, rule_id) == [])


def test_alert_that_keeps_coming_back_is_escalated(
    bridge: Bridge, alertmanager: Alertmanager
) -> None:
    payload = fixture("event_alert_python.json")  # staging: low by the shipped policy
    bridge.post(payload, resource="event_alert")
    [first] = for_issue(
        alertmanager.wait_for(lambda a: len(for_issue(a, CHECKOUT_ISSUE)) == 1), CHECKOUT_ISSUE
    )
    assert first["labels"]["severity"] == "low"
    for n in range(2):  # the third time within the period escalates
        bridge.post(another_event(payload, n), resource="event_alert")
    alerts = alertmanager.wait_for(
        lambda a: [x["labels"].get("escalated") for x in for_issue(a, CHECKOUT_ISSUE)] == ["true"]
    )
    [escalated] = for_issue(alerts, CHECKOUT_ISSUE)
    assert escalated["labels"]["severity"] == "medium"
    assert bridge.metric("sentry_bridge_escalations_total") == 1


def test_bad_signature_is_refused_and_nothing_reaches_alertmanager(
    bridge: Bridge, alertmanager: Alertmanager
) -> None:
    response = bridge.post(fixture("event_alert.json"), resource="event_alert", secret="wrong")
    assert response.status_code == 401
    assert response.json()["reason"] == "bad_signature"
    unsigned = bridge.post(fixture("event_alert.json"), resource="event_alert", secret=None)
    assert unsigned.status_code == 401
    nothing_else_reaches(bridge, alertmanager)
    assert bridge.metric("sentry_bridge_webhooks_rejected_total", {"reason": "bad_signature"}) == 1
    assert bridge.client.get("/-/ready").status_code == 200


def test_service_hook_and_legacy_plugin(bridge: Bridge, alertmanager: Alertmanager) -> None:
    body = json.dumps(fixture("service_hook_event.json")).encode()
    response = bridge.post(
        body,
        secret=None,
        headers={"X-ServiceHook-Signature": sign(body, HOOK_SECRET), "X-ServiceHook-GUID": "g"},
    )
    assert response.status_code == 202, response.text
    legacy = bridge.post(fixture("legacy_webhook.json"), secret=None, params={"token": "nope"})
    assert legacy.status_code == 401
    legacy = bridge.post(
        fixture("legacy_webhook.json"), secret=None, params={"token": LEGACY_TOKEN}
    )
    assert legacy.status_code == 202
    alerts = alertmanager.wait_for(
        lambda a: len(for_issue(a, CHECKOUT_ISSUE)) == 1 and len(for_issue(a, FRONTEND_ISSUE)) == 1
    )
    assert for_issue(alerts, CHECKOUT_ISSUE)[0]["labels"]["environment"] == "staging"


def test_installation_is_acknowledged_without_an_alert(
    bridge: Bridge, alertmanager: Alertmanager
) -> None:
    response = bridge.post(fixture("installation_created.json"), resource="installation")
    assert response.status_code == 200
    assert response.json()["status"] == "ignored"
    assert bridge.metric("sentry_bridge_alerts_total", {"outcome": "ignored"}) == 1
    nothing_else_reaches(bridge, alertmanager)


def test_metrics_of_the_edge_and_the_pipeline_once_each(bridge: Bridge) -> None:
    """serve's one process keeps one registry: /metrics has the edge's families and the
    pipeline's, each exactly once (a repeated family makes Prometheus reject the scrape)."""
    bridge.post(fixture("event_alert.json"), resource="event_alert")
    text = bridge.client.get("/metrics").text
    families = [line.split()[2] for line in text.splitlines() if line.startswith("# TYPE ")]
    assert len(families) == len(set(families))
    parsed = {family.name for family in text_string_to_metric_families(text)}
    # The edge's, and the pipeline's.
    assert {"sentry_bridge_webhooks_received", "sentry_bridge_build_info"} <= parsed
    assert {"sentry_bridge_alerts", "sentry_bridge_store_queued_alerts"} <= parsed
    assert bridge.metric("sentry_bridge_webhooks_received_total", {"resource": "event_alert"}) == 1

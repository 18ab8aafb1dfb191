"""Every body captured from a real Sentry delivery (tests/fixtures/sentry/captured/), signed
as Sentry signs it, through the bridge under Uvicorn into a real Alertmanager, and found
there through Alertmanager's own ``GET /api/v2/alerts``.

Older Sentry's event_alert bodies (no ``issue_id``) used to get 400 and were lost; the
legacy plugin's bodies from Sentry 8 and 2020 must page too.
"""

from __future__ import annotations

import copy
import json
from pathlib import Path
from typing import Any

from tests.integration import procs
from tests.integration.conftest import ENV, LEGACY_TOKEN, Alertmanager, Bridge
from tests.sentry_payloads import CAPTURED

LEGACY_HEADERS = {"User-Agent": "sentry-webhooks/9.1.2"}


def _capture(name: str) -> dict[str, Any]:
    data: dict[str, Any] = json.loads((CAPTURED / name).read_text(encoding="utf-8"))
    return data


def _by_issue(alerts: list[dict[str, Any]]) -> dict[str, dict[str, Any]]:
    return {a["labels"]["sentry_issue_id"]: a for a in alerts if "sentry_issue_id" in a["labels"]}


def test_every_captured_body_reaches_alertmanager(
    bridge: Bridge, alertmanager: Alertmanager
) -> None:
    firing = {
        "zulip_event_alert_python_2020.json": "1635244907",
        "zulip_event_alert_golang_message_2020.json": "1638844654",
        "zulip_event_alert_sample_event_2023.json": "4218258981",
    }
    for name in firing:
        response = bridge.post(_capture(name), resource="event_alert")
        assert response.status_code == 202, (name, response.text)
    legacy = {
        "zulip_legacy_webhook_python_2020.json": "1972208801",
        "zulip_legacy_webhook_sentry8_2016.json": "156699934",
        "alerta_legacy_webhook_sentry9_2019.json": "5",
    }
    for name in legacy:
        response = bridge.post(
            _capture(name), secret=None, headers=LEGACY_HEADERS, params={"token": LEGACY_TOKEN}
        )
        assert response.status_code == 202, (name, response.text)

    expected = set(firing.values()) | set(legacy.values())
    alerts = _by_issue(alertmanager.wait_for(lambda a: expected <= set(_by_issue(a))))
    for issue_id in expected:
        alert = alerts[issue_id]
        assert alert["labels"]["alertname"] == "SentryIssue"
        assert alert["status"]["state"] == "active"
        # Every one of these links to its issue's page in the form sentry.io serves.
        assert alert["generatorURL"].endswith(f".sentry.io/issues/{issue_id}/"), alert
    assert alerts["4218258981"]["labels"]["environment"] == "prod"
    # sentry.io's "Send Test Notification" of 2023 (tagged sample_event=yes): a test, no page.
    assert alerts["4218258981"]["labels"]["sentry_test"] == "true"
    assert alerts["4218258981"]["labels"]["severity"] == "low"
    assert alerts["156699934"]["labels"]["environment"] == "production"
    assert alerts["1635244907"]["labels"]["project"] == "zulip-integration-testing"
    assert alerts["1972208801"]["labels"]["project"] == "foo-live"

    # The 2020 issue.created of an issue already firing from its event alert: accepted, and
    # still exactly one alert for that issue.
    created = _capture("zulip_issue_created_2020.json")
    assert bridge.post(created, resource="issue").status_code == 202
    # The captured resolve and ignore of issue 1638821441, each after it fires (the captured
    # issue.created, re-numbered to that issue, and a later lastSeen for the second firing).
    refire = copy.deepcopy(created)
    refire["data"]["issue"]["id"] = "1638821441"
    for name, last_seen in (
        ("zulip_issue_resolved_2020.json", "2020-04-30T05:54:15Z"),
        ("zulip_issue_ignored_2020.json", "2020-04-30T06:10:00Z"),
    ):
        refire["data"]["issue"]["lastSeen"] = last_seen
        assert bridge.post(refire, resource="issue").status_code == 202
        alertmanager.wait_for(lambda a: "1638821441" in _by_issue(a))
        assert bridge.post(_capture(name), resource="issue").status_code == 202, name
        alertmanager.wait_for(lambda a: "1638821441" not in _by_issue(a))

    assigned = bridge.post(_capture("zulip_issue_assigned_to_team_2020.json"), resource="issue")
    assert assigned.status_code == 200
    assert assigned.json()["status"] == "ignored"

    final = alertmanager.wait_for(lambda a: set(_by_issue(a)) == expected)
    assert sorted(a["labels"]["sentry_issue_id"] for a in final) == sorted(expected)


def test_an_uptime_failure_pages_high_with_its_evidence(
    bridge: Bridge, alertmanager: Alertmanager
) -> None:
    """An issue-platform event (no exception, level from the occurrence) under the shipped
    policy: an outage in production is high, and the occurrence's evidence is annotated."""
    from tests.sentry_payloads import load_fixture

    assert (
        bridge.post(load_fixture("event_alert_uptime.json"), resource="event_alert").status_code
        == 202
    )
    alerts = _by_issue(alertmanager.wait_for(lambda a: "5102938475" in _by_issue(a)))
    alert = alerts["5102938475"]
    assert alert["labels"]["severity"] == "high"
    assert alert["labels"]["page"] == "true"
    assert alert["annotations"]["classified_by"] == "outage-in-production"
    assert alert["annotations"]["evidence"].startswith(
        "Failure reason: timeout - Timed out after 10000ms\n"
    )
    assert alert["generatorURL"] == "https://acme.sentry.io/issues/5102938475/"


def test_with_the_organization_configured_every_issue_alert_links(
    alertmanager: Alertmanager, tmp_path: Path
) -> None:
    """The 2020 issue.created names no organization anywhere; SENTRY_ORGANIZATION (the
    shipped config's sentry.organization) gives its alert the issue's page all the same."""
    config = procs.write_config(tmp_path / "config.yaml", [alertmanager.url])
    env = {**ENV, "SENTRY_ORGANIZATION": "acme"}
    with (
        procs.bridge(config, tmp_path / "data", tmp_path / "bridge.log", env) as process,
        procs.client(base_url=process.url, timeout=10) as client,
    ):
        running = Bridge(process, client)
        response = running.post(_capture("zulip_issue_created_2020.json"), resource="issue")
        assert response.status_code == 202, response.text
        alerts = _by_issue(alertmanager.wait_for(lambda a: "1635244907" in _by_issue(a)))
    alert = alerts["1635244907"]
    assert alert["generatorURL"] == "https://acme.sentry.io/issues/1635244907/"
    assert alert["annotations"]["sentry_url"] == alert["generatorURL"]

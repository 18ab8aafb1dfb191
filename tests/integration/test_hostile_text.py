"""Hostile text from a signed webhook, through the bridge under Uvicorn into a real
Alertmanager: it arrives valid, bounded and scrubbed, and re-sends keep working for the
alerts around it (issue 8, "Hardening": a 200,000-character title stalled the pipeline,
a non-URI ``web_url`` was refused with 422 on every re-send, an email in ``environment``
became a label, control characters reached labels and annotations)."""

from __future__ import annotations

import copy
import json
import time
import unicodedata
from typing import Any

from bridge.alertmanager import is_link
from bridge.labels import ANNOTATION_MAX, ANNOTATIONS_MAX, LABEL_MAX
from tests.integration.conftest import Alertmanager, BridgeFactory, fixture

ISSUE = "1117540176"  # event_alert.json
HOSTILE_ISSUE = "7000000001"
NEIGHBOURS = ["7000000002", "7000000003", "7000000004"]


def for_issue(alerts: list[dict[str, Any]], issue_id: str) -> list[dict[str, Any]]:
    return [a for a in alerts if a["labels"].get("sentry_issue_id") == issue_id]


def event_alert(issue_id: str) -> dict[str, Any]:
    payload: dict[str, Any] = json.loads(
        json.dumps(fixture("event_alert.json")).replace(ISSUE, issue_id)
    )
    return payload


def hostile(issue_id: str) -> dict[str, Any]:
    payload = copy.deepcopy(event_alert(issue_id))
    event = payload["data"]["event"]
    unit = "jane.doe@example.com from 2001:db8::1 \r\n\u202e\x00\x1b[2J fe80::1%eth0 "
    event["title"] = (unit * (200_000 // len(unit) + 1))[:200_000]
    event["message"] = event["title"]
    event["environment"] = "prod-ops@example.com\r\n\u202e"
    event["tags"] = [t for t in event["tags"] if t[0] != "environment"]
    event["tags"].append(["environment", event["environment"]])
    event["web_url"] = "not a uri"
    return payload


def is_control(char: str) -> bool:
    return unicodedata.category(char) in {"Cc", "Cf", "Cs", "Zl", "Zp"}


def test_hostile_text_arrives_valid_and_scrubbed_and_resends_go_on(
    alertmanager: Alertmanager, bridge_factory: BridgeFactory
) -> None:
    with bridge_factory([alertmanager.url], resend_interval="1s") as bridge:
        for issue_id in NEIGHBOURS[:2]:
            assert bridge.post(event_alert(issue_id), resource="event_alert").status_code == 202
        started = time.monotonic()
        response = bridge.post(hostile(HOSTILE_ISSUE), resource="event_alert")
        assert response.status_code == 202, response.text
        assert bridge.post(event_alert(NEIGHBOURS[2]), resource="event_alert").status_code == 202

        alerts = alertmanager.wait_for(
            lambda a: all(len(for_issue(a, i)) == 1 for i in [HOSTILE_ISSUE, *NEIGHBOURS])
        )
        assert time.monotonic() - started < 15  # no quadratic stall
        [alert] = for_issue(alerts, HOSTILE_ISSUE)
        labels, annotations = alert["labels"], alert["annotations"]
        assert labels["environment"] == "[email]"
        text = " ".join([*labels.values(), *annotations.values()])
        for leak in ("jane", "ops@", "example.com", "2001:db8", "fe80", "\r", "\n", "\u202e"):
            assert leak not in text
        assert not any(is_control(c) for c in text)
        assert all(len(v) <= LABEL_MAX for v in labels.values())
        assert all(len(v) <= ANNOTATION_MAX for v in annotations.values())
        assert sum(map(len, annotations.values())) <= ANNOTATIONS_MAX
        assert annotations["summary"].startswith("[email] from [ip] ")
        # "not a uri" is dropped, never sent (a link built from issue_url may replace it).
        assert annotations.get("sentry_url") != "not a uri"
        assert is_link(annotations.get("sentry_url", "https://x/"))
        assert alert.get("generatorURL", "") == "" or is_link(alert["generatorURL"])

        # Re-sends go on, every second, for the hostile alert and its neighbours alike:
        # Alertmanager's updatedAt moves on for each of them, and nothing was refused.
        before = {a["labels"]["sentry_issue_id"]: a["updatedAt"] for a in alerts}
        alertmanager.wait_for(
            lambda a: all(
                x["updatedAt"] != before[i]
                for i in [HOSTILE_ISSUE, *NEIGHBOURS]
                for x in for_issue(a, i)
            )
        )
        assert bridge.metric("sentry_bridge_dead_letters_total") == 0

"""Issue 16, items 5, 6 and 7 through the HTTP edge into a real Alertmanager: Sentry's "Send
Test Notification" never pages and ends by itself; the last webhook of each family is timed;
the right legacy token with a body the legacy plugin does not send is quarantined, not 401.
"""

from __future__ import annotations

import json
from datetime import datetime, timedelta
from typing import Any

from tests.integration.conftest import LEGACY_TOKEN, Alertmanager, Bridge, fixture
from tests.integration.test_end_to_end import FRONTEND_ISSUE, for_issue
from tests.sentry_payloads import SENTRY_6_PLUGIN

TEST_ISSUE = "6012345678"  # event_alert_test_notification.json


def _time(text: str) -> datetime:
    return datetime.fromisoformat(text.replace("Z", "+00:00"))


def test_sentrys_test_notification_reaches_alertmanager_but_never_pages(
    bridge: Bridge, alertmanager: Alertmanager
) -> None:
    """The alert builder's test, for a rule on production errors: the same event without the
    test's signs pages (the control); the test arrives low, ``sentry_test``, with no page
    label, and Alertmanager holds it for 5 minutes, not ``alert_lifetime``. On the code
    before issue 16 it paged as critical."""
    assert bridge.post(fixture("event_alert.json"), resource="event_alert").status_code == 202
    test = bridge.post(fixture("event_alert_test_notification.json"), resource="event_alert")
    assert test.status_code == 202

    def both(alerts: list[dict[str, Any]]) -> bool:
        return bool(for_issue(alerts, FRONTEND_ISSUE)) and bool(for_issue(alerts, TEST_ISSUE))

    alerts = alertmanager.wait_for(both)
    [control] = for_issue(alerts, FRONTEND_ISSUE)
    assert control["labels"]["page"] == "true"  # the shipped rules page this event
    [tested] = for_issue(alerts, TEST_ISSUE)
    labels = tested["labels"]
    assert labels["sentry_test"] == "true"
    assert labels["severity"] == "low"
    assert labels.get("page") != "true"  # the shipped severity_labels say page="false"
    assert "escalated" not in labels
    assert _time(tested["endsAt"]) - _time(tested["startsAt"]) == timedelta(minutes=5)
    assert _time(control["endsAt"]) - _time(control["startsAt"]) == timedelta(hours=1)
    family = {"family": "integration"}
    assert bridge.metric("sentry_bridge_last_webhook_timestamp_seconds", family) > 0


def test_the_right_legacy_token_with_an_unknown_body_is_quarantined_not_refused(
    bridge: Bridge, alertmanager: Alertmanager
) -> None:
    """Sentry 5/6's WebHooks plugin sent only these keys; with the right token it was a 401
    (Sentry never retries a 4xx: the alert was lost). Now it is kept for an operator, and
    never read as an alert; a wrong token is still refused."""
    body = json.dumps(SENTRY_6_PLUGIN).encode()
    headers = {"User-Agent": "sentry-webhooks/6.0"}
    wrong = bridge.post(body, secret=None, headers=headers, params={"token": "nope"})
    assert (wrong.status_code, wrong.json()["reason"]) == (401, "bad_token")
    right = bridge.post(body, secret=None, headers=headers, params={"token": LEGACY_TOKEN})
    assert (right.status_code, right.json()) == (
        202,
        {"status": "quarantined", "reason": "unknown_legacy_body"},
    )
    reason = {"reason": "unknown_legacy_body"}
    assert bridge.metric("sentry_bridge_quarantined_total", reason) == 1.0
    listed = bridge.admin("GET", "/-/quarantine").json()
    assert listed["reasons"] == {"unknown_legacy_body": 1}
    assert bridge.metric("sentry_bridge_last_webhook_timestamp_seconds", {"family": "legacy"}) > 0
    # Alertmanager got nothing from it: a real legacy alert goes in after it, and is all.
    legacy = bridge.post(
        fixture("legacy_webhook.json"), secret=None, params={"token": LEGACY_TOKEN}
    )
    assert legacy.status_code == 202
    alerts = alertmanager.wait_for(lambda a: bool(a))
    assert {a["labels"]["sentry_issue_id"] for a in alerts} == {FRONTEND_ISSUE}

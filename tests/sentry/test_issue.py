"""bridge/sentry/issue.py: every issue and event webhook fixture, normalised."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

import pytest
from starlette.datastructures import Headers

from bridge.model import Kind, State
from tests.sentry_payloads import (
    LEGACY,
    SERVICE_HOOK,
    alert,
    assert_no_pii,
    assert_normalised,
    hook,
    load_fixture,
    patched,
)

ISSUE_1 = {"kind": Kind.ISSUE, "identity": "issue:1117540176", "issue_id": "1117540176"}
ISSUE_2 = {"kind": Kind.ISSUE, "identity": "issue:4507718802", "issue_id": "4507718802"}
JS_EVENT = {
    **ISSUE_1,
    "state": State.FIRING,
    "organization": "acme",
    "project": "web-frontend",
    "project_id": "4505321",
    "environment": "production",
    "level": "error",
    "platform": "javascript",
    "culprit": "renderCart(app/cart)",
    "transaction": "/cart",
    "url": "https://shop.example.com/cart",
    "release": "web-frontend@3.14.0",
    "handled": False,
    "title": "TypeError: cart.items is undefined",
    "users": None,
    "events": None,
}
PY_EVENT = {
    **ISSUE_2,
    "state": State.FIRING,
    "organization": "acme",
    "project": "checkout-api",
    "project_id": "4505322",
    "environment": "staging",
    "level": "warning",
    "platform": "python",
    "transaction": "/api/checkout/",
    "url": "https://api.shop.example.com/api/checkout/",
    "release": "checkout-api@2.3.1",
    "handled": True,
    "event_id": "9b3d8a3b2a5f4b1c8e6d0a1f2c3b4a5e",
    "message": "Internal Server Error: /api/checkout/",
}
GROUP_1 = {
    **ISSUE_1,
    "organization": "acme",
    "project": "web-frontend",
    "project_id": "4505321",
    "short_id": "WEB-FRONTEND-3K",
    "environment": None,  # the issue resource does not say
    "level": "error",
    "users": 41,
    "events": 327,
    "started_at": datetime(2024, 5, 14, 9, 20, 58, 391000, tzinfo=UTC),
}

CASES = [
    pytest.param(
        "event_alert.json",
        hook("event_alert"),
        {
            **JS_EVENT,
            "resource": "event_alert",
            "action": "triggered",
            "event_id": "e4874d664c3540c1a32eab185f12c5ab",
            "alert_rule_name": "Checkout errors in production",
            "alert_rule_id": None,
            "message": None,
            # The issue's page in the customer-domain form sentry.io serves, not the event's.
            "web_url": "https://acme.sentry.io/issues/1117540176/",
            "issue_api_url": "https://sentry.io/api/0/issues/1117540176/",
            "started_at": datetime(2024, 5, 14, 9, 21, 7, 412000, tzinfo=UTC),
            "occurred_at": datetime(2024, 5, 14, 9, 21, 7, 412000, tzinfo=UTC),
            "issue_category": "error",
            "issue_type": "error",
            "evidence": (),
        },
        id="event_alert-js",
    ),
    pytest.param(
        "event_alert_python.json",
        hook("event_alert"),
        {
            **PY_EVENT,
            "resource": "event_alert",
            "action": "triggered",
            "alert_rule_id": "313",
            "alert_rule_name": "Checkout DB errors",
            "issue_api_url": "https://sentry.io/api/0/organizations/acme/issues/4507718802/",
        },
        id="event_alert-python-handled",
    ),
    pytest.param(
        "error_created.json",
        hook("error"),
        {
            **JS_EVENT,
            "resource": "error",
            "action": "created",
            "event_id": "bb78c1407cea4519aa397afc059c793d",
            "alert_rule_name": None,
            "issue_api_url": "https://sentry.io/api/0/organizations/acme/issues/1117540176/",
        },
        id="error-created",
    ),
    pytest.param(
        "issue_created.json",
        hook("issue"),
        {
            **GROUP_1,
            "resource": "issue",
            "action": "created",
            "state": State.FIRING,
            "users": 1,
            "events": 1,
            "web_url": "https://acme.sentry.io/issues/1117540176/",
            "issue_category": "error",
            "issue_type": "error",
            "occurred_at": None,
            "issue_api_url": "https://sentry.io/api/0/organizations/acme/issues/1117540176/",
        },
        id="issue-created",
    ),
    pytest.param(
        "issue_resolved.json",
        hook("issue"),
        {
            **GROUP_1,
            "resource": "issue",
            "action": "resolved",
            "state": State.RESOLVED,
            # No url fields in workflow notifications: the permalink, and an API URL built from
            # base_url and the organization of the permalink's customer domain.
            "web_url": "https://acme.sentry.io/issues/1117540176/",
            "issue_api_url": "https://sentry.io/api/0/organizations/acme/issues/1117540176/",
        },
        id="issue-resolved",
    ),
    pytest.param(
        "issue_ignored.json",
        hook("issue"),
        {**GROUP_1, "resource": "issue", "action": "ignored", "state": State.RESOLVED},
        id="issue-ignored",
    ),
    pytest.param(
        "issue_unresolved.json",
        hook("issue"),
        {**GROUP_1, "resource": "issue", "action": "unresolved", "state": State.FIRING},
        id="issue-unresolved",
    ),
    pytest.param(
        "activity_alert_status_resolved.json",
        hook("activity_alert"),
        {**ISSUE_2, "resource": "activity_alert", "action": "triggered", "state": State.RESOLVED},
        id="activity_alert-status-resolved",
    ),
    pytest.param(
        "service_hook_event.json",
        SERVICE_HOOK,
        {
            **PY_EVENT,
            "resource": "service_hook",
            "action": "event",
            "short_id": "CHECKOUT-API-2F",
            "users": 12,
            "events": 58,
            "web_url": "https://acme.sentry.io/issues/4507718802/",
            "issue_api_url": "https://sentry.io/api/0/organizations/acme/issues/4507718802/",
        },
        id="service_hook",
    ),
    pytest.param(
        "legacy_webhook.json",
        LEGACY,
        {
            **JS_EVENT,
            "resource": "legacy",
            "action": "triggered",
            "alert_rule_name": "Checkout errors in production",
            "web_url": "https://acme.sentry.io/issues/1117540176/",
            "issue_api_url": "https://sentry.io/api/0/organizations/acme/issues/1117540176/",
        },
        id="legacy",
    ),
]


@pytest.mark.parametrize(("fixture", "headers", "expected"), CASES)
def test_normalise_fixture(fixture: str, headers: Headers, expected: dict[str, Any]) -> None:
    assert_normalised(fixture, headers, expected)


@pytest.mark.parametrize(("fixture", "headers", "expected"), CASES)
def test_alerts_carry_no_pii(fixture: str, headers: Headers, expected: dict[str, Any]) -> None:
    assert_no_pii(alert(headers, load_fixture(fixture)))


def test_issue_archived_resolves() -> None:
    data = patched("issue_ignored.json", "archived", "action")
    assert alert(hook("issue"), data).state is State.RESOLVED


# --- Sentry's "Send Test Notification" (issue 16, item 5) -----------------------------------


def _with_tag(fixture: str, key: str, value: str) -> dict[str, Any]:
    data = load_fixture(fixture)
    data["data"]["event"]["tags"].append([key, value])
    return data


@pytest.mark.parametrize(
    ("headers", "data", "test"),
    [
        pytest.param(
            hook("event_alert"),
            load_fixture("event_alert_test_notification.json"),
            True,
            id="all-three-signs",
        ),
        pytest.param(
            hook("event_alert"),
            patched("event_alert.json", {"id": -1, "title": "draft"}, "data", "issue_alert"),
            True,
            id="rule-id-minus-one",
        ),
        pytest.param(
            hook("event_alert"),
            _with_tag("event_alert.json", "sample_event", "yes"),
            True,
            id="sample-event-tag",
        ),
        pytest.param(
            hook("event_alert"),
            patched("event_alert_uptime.json", 9001, "data", "event", "occurrence", "type"),
            True,
            id="group-type-9001",
        ),
        pytest.param(
            hook("issue"),
            patched("issue_created.json", "test_notification", "data", "issue", "issueCategory"),
            True,
            id="issue-category",
        ),
        pytest.param(
            SERVICE_HOOK,
            patched("service_hook_event.json", "test_notification", "group", "issueCategory"),
            True,
            id="service-hook-group-category",
        ),
        pytest.param(hook("event_alert"), load_fixture("event_alert.json"), False, id="plain"),
        pytest.param(
            hook("event_alert"),
            _with_tag("event_alert.json", "sample_event", "no"),
            False,
            id="sample-event-no",
        ),
        pytest.param(
            hook("event_alert"),
            patched("event_alert.json", {"id": 1, "title": "r"}, "data", "issue_alert"),
            False,
            id="rule-id-one",
        ),
        pytest.param(hook("issue"), load_fixture("issue_created.json"), False, id="issue"),
    ],
)
def test_a_test_notification_is_recognised_by_any_one_sign(
    headers: Headers, data: dict[str, Any], test: bool
) -> None:
    assert alert(headers, data).test is test

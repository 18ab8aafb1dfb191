"""bridge/sentry.py: signatures, resource detection, normalisation of every fixture."""

from __future__ import annotations

import copy
import hashlib
import hmac
import json
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest
from starlette.datastructures import Headers

from bridge import config, sentry
from bridge.errors import REJECT_REASONS, BadPayload, Unauthorized
from bridge.metrics import RESOURCES
from bridge.model import Ignored, Kind, SentryAlert, State

FIXTURES = Path(__file__).parent / "fixtures" / "sentry"
BASE = "https://sentry.io"


def load_fixture(name: str) -> dict[str, Any]:
    data = json.loads((FIXTURES / name).read_text(encoding="utf-8"))
    assert isinstance(data, dict)
    return data


def hook(resource: str) -> Headers:
    return Headers({"Sentry-Hook-Resource": resource, "Request-ID": "0f9e8d7c"})


SERVICE_HOOK = Headers({"X-ServiceHook-GUID": "a1b2c3", "X-ServiceHook-Timestamp": "1715684566"})
LEGACY = Headers({"User-Agent": "sentry-webhooks/24.5.0"})


def sign(body: bytes, secret: str) -> str:
    return hmac.new(secret.encode(), body, hashlib.sha256).hexdigest()


def alert(headers: Headers, data: object) -> SentryAlert:
    result = sentry.normalise(headers, data, base_url=BASE)
    assert isinstance(result, SentryAlert), result
    return result


# --- every fixture -----------------------------------------------------------------------

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
METRIC = {"kind": Kind.METRIC_ALERT, "organization": "acme", "issue_id": None}

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
            "web_url": "https://sentry.io/organizations/acme/issues/1117540176/events/"
            "e4874d664c3540c1a32eab185f12c5ab/",
            "issue_api_url": "https://sentry.io/api/0/issues/1117540176/",
            "started_at": datetime(2024, 5, 14, 9, 21, 7, 412000, tzinfo=UTC),
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
            "web_url": "https://sentry.io/organizations/acme/issues/1117540176/",
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
            # No url fields in workflow notifications: the permalink, and an API URL from base_url.
            "web_url": "https://acme.sentry.io/issues/1117540176/",
            "issue_api_url": "https://sentry.io/api/0/issues/1117540176/",
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
        "activity_alert_triggered.json",
        hook("activity_alert"),
        {
            **ISSUE_2,
            "resource": "activity_alert",
            "action": "triggered",
            "state": State.FIRING,
            "organization": "acme",
            "project": "checkout-api",
            "alert_rule_id": "88",
            "alert_rule_name": "Seer findings for checkout",
            "users": 12,
            "events": 58,
            "web_url": "https://sentry.io/organizations/acme/issues/4507718802/",
        },
        id="activity_alert-seer",
    ),
    pytest.param(
        "activity_alert_status_resolved.json",
        hook("activity_alert"),
        {**ISSUE_2, "resource": "activity_alert", "action": "triggered", "state": State.RESOLVED},
        id="activity_alert-status-resolved",
    ),
    pytest.param(
        "metric_alert_critical.json",
        hook("metric_alert"),
        {
            **METRIC,
            "resource": "metric_alert",
            "action": "critical",
            "state": State.FIRING,
            "identity": "metric_alert:7011",
            "title": "Checkout error spike",
            "project": "checkout-api",
            "environment": "production",
            "alert_rule_id": "7011",
            "alert_rule_name": "Checkout error spike",
            "metric_aggregate": "count()",
            "metric_value": 1204.0,
            "events": 1204,
            "users": None,
            "error_rate": None,
            "message": "1204 events in the last 10 minutes",
            "started_at": datetime(2024, 5, 14, 11, 4, tzinfo=UTC),
        },
        id="metric_alert-critical-count",
    ),
    pytest.param(
        "metric_alert_warning_users.json",
        hook("metric_alert"),
        {
            **METRIC,
            "action": "warning",
            "state": State.FIRING,
            "identity": "metric_alert:7012",
            "metric_aggregate": "count_unique(tags[sentry:user])",
            "metric_value": 38.0,
            "users": 38,
            "events": None,
        },
        id="metric_alert-warning-users",
    ),
    pytest.param(
        "metric_alert_critical_failure_rate.json",
        hook("metric_alert"),
        {
            **METRIC,
            "state": State.FIRING,
            "identity": "metric_alert:7013",
            "metric_value": 12.5,
            "error_rate": 0.125,
        },
        id="metric_alert-failure-rate",
    ),
    pytest.param(
        "metric_alert_critical_crash_free.json",
        hook("metric_alert"),
        {
            **METRIC,
            "identity": "metric_alert:7014",
            "project": "ios-app",
            "environment": None,
            "metric_aggregate": "percentage(sessions_crashed, sessions)",
            "metric_value": 97.1,
            "error_rate": 0.029,
        },
        id="metric_alert-crash-free",
    ),
    pytest.param(
        "metric_alert_warning_p95.json",
        hook("metric_alert"),
        {**METRIC, "identity": "metric_alert:7015", "latency_ms": 1532.7, "error_rate": None},
        id="metric_alert-p95",
    ),
    pytest.param(
        "metric_alert_resolved.json",
        hook("metric_alert"),
        {
            **METRIC,
            "action": "resolved",
            "state": State.RESOLVED,
            "identity": "metric_alert:7",
            "title": "Too many errors",
            "events": 1000,
            "web_url": "https://sentry.io/organizations/acme/alerts/rules/details/7/"
            "?alert=1&referrer=metric_alert_sentry_app&detection_type=static",
        },
        id="metric_alert-resolved-docs",
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
            "web_url": "https://acme.sentry.io/issues/4507718802/events/"
            "9b3d8a3b2a5f4b1c8e6d0a1f2c3b4a5e/",
            "issue_api_url": "https://sentry.io/api/0/issues/4507718802/",
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
            "issue_api_url": "https://sentry.io/api/0/issues/1117540176/",
        },
        id="legacy",
    ),
]


@pytest.mark.parametrize(("fixture", "headers", "expected"), CASES)
def test_normalise_fixture(fixture: str, headers: Headers, expected: dict[str, Any]) -> None:
    result = alert(headers, load_fixture(fixture))
    got = {name: getattr(result, name) for name in expected}
    assert got == expected
    assert result.started_at is None or result.started_at.tzinfo is not None


@pytest.mark.parametrize(("fixture", "headers", "expected"), CASES)
def test_alerts_carry_no_pii(fixture: str, headers: Headers, expected: dict[str, Any]) -> None:
    text = json.dumps(alert(headers, load_fixture(fixture)).to_json())
    for secret in ("jane.doe@example.com", "jdoe", "203.0.113.7", "198.51.100.23", "SPRING24"):
        assert secret not in text


@pytest.mark.parametrize(
    ("fixture", "headers", "expected"),
    [
        pytest.param(
            "installation_created.json",
            hook("installation"),
            Ignored("installation", "created", "not_an_alert"),
            id="installation",
        ),
        pytest.param(
            "issue_assigned.json",
            hook("issue"),
            Ignored("issue", "assigned", "no_state_change"),
            id="issue-assigned",
        ),
        pytest.param(
            "comment_created.json",
            hook("comment"),
            Ignored("comment", "created", "unknown_resource"),
            id="comment",
        ),
        pytest.param(
            "metric_alert_critical.json",
            Headers({}),
            Ignored("other", "critical", "unknown_resource"),
            id="integration-body-without-header",
        ),
    ],
)
def test_ignored_fixtures(fixture: str, headers: Headers, expected: Ignored) -> None:
    assert sentry.normalise(headers, load_fixture(fixture), base_url=BASE) == expected


# --- resource detection ------------------------------------------------------------------


@pytest.mark.parametrize(
    ("headers", "fixture", "expected"),
    [
        pytest.param(hook("event_alert"), "event_alert.json", "event_alert", id="event"),
        pytest.param(
            hook("metric_alert"), "metric_alert_resolved.json", "metric_alert", id="metric"
        ),
        pytest.param(hook("issue"), "issue_created.json", "issue", id="issue"),
        pytest.param(hook("error"), "error_created.json", "error", id="error"),
        pytest.param(
            hook("activity_alert"), "activity_alert_triggered.json", "activity_alert", id="act"
        ),
        pytest.param(
            hook("installation"), "installation_created.json", "installation", id="install"
        ),
        pytest.param(hook("comment"), "comment_created.json", "other", id="comment"),
        pytest.param(SERVICE_HOOK, "service_hook_event.json", "service_hook", id="service-hook"),
        pytest.param(Headers({}), "service_hook_event.json", "service_hook", id="hook-body-only"),
        pytest.param(LEGACY, "legacy_webhook.json", "legacy", id="legacy"),
        pytest.param(Headers({}), "issue_created.json", "other", id="no-header"),
    ],
)
def test_detect_resource(headers: Headers, fixture: str, expected: str) -> None:
    resource = sentry.detect_resource(headers, load_fixture(fixture))
    assert resource == expected
    assert resource in RESOURCES


def test_detect_resource_plain_dict_headers_any_case() -> None:
    assert sentry.detect_resource({"SENTRY-HOOK-RESOURCE": "issue"}, {}) == "issue"
    assert sentry.detect_resource({}, ["not", "an", "object"]) == "other"


# --- authentication ----------------------------------------------------------------------


def cfg(**sentry_cfg: Any) -> config.Sentry:
    return config.parse({"sentry": sentry_cfg}, env={}).sentry


BODY = json.dumps(load_fixture("event_alert.json")).encode()


@pytest.mark.parametrize(
    ("headers", "token", "settings", "expected"),
    [
        pytest.param(
            {"Sentry-Hook-Signature": sign(BODY, "s1")},
            None,
            {"client_secrets": ["s1", "s2"]},
            "integration",
            id="integration",
        ),
        pytest.param(
            {"sentry-hook-signature": sign(BODY, "s2").upper()},
            None,
            {"client_secrets": "s1,s2"},
            "integration",
            id="rotated-second-secret",
        ),
        pytest.param(
            {"X-ServiceHook-Signature": sign(BODY, "hook"), "X-ServiceHook-GUID": "a1"},
            None,
            {"service_hook_secrets": ["hook"]},
            "service_hook",
            id="service-hook",
        ),
        pytest.param({}, "t0ken", {"legacy_token": "t0ken"}, "legacy_token", id="legacy-token"),
        pytest.param({}, None, {"allow_unauthenticated": True}, "none", id="unauthenticated"),
        pytest.param(
            {"Sentry-Hook-Signature": "00"},
            None,
            {"allow_unauthenticated": True},
            "none",
            id="unverifiable-but-allowed",
        ),
    ],
)
def test_authenticate_accepts(
    headers: dict[str, str], token: str | None, settings: dict[str, Any], expected: str
) -> None:
    assert sentry.authenticate(Headers(headers), BODY, token, cfg(**settings)) == expected


@pytest.mark.parametrize(
    ("headers", "body", "token", "settings", "reason"),
    [
        pytest.param(
            {"Sentry-Hook-Signature": sign(BODY, "other")},
            BODY,
            None,
            {"client_secrets": ["s1", "s2"]},
            "bad_signature",
            id="wrong-secret",
        ),
        pytest.param(
            {"Sentry-Hook-Signature": sign(BODY, "s1")},
            BODY + b" ",
            None,
            {"client_secrets": ["s1"]},
            "bad_signature",
            id="body-changed",
        ),
        pytest.param(
            {"Sentry-Hook-Signature": "ü-not-hex"},
            BODY,
            None,
            {"client_secrets": ["s1"]},
            "bad_signature",
            id="garbage-signature",
        ),
        pytest.param(
            {"X-ServiceHook-Signature": sign(BODY, "s1")},
            BODY,
            None,
            {"service_hook_secrets": ["hook"], "client_secrets": ["s1"]},
            "bad_signature",
            id="service-hook-signed-with-client-secret",
        ),
        pytest.param(
            {"Sentry-Hook-Signature": sign(BODY, "hook")},
            BODY,
            None,
            {"service_hook_secrets": ["hook"]},
            "bad_signature",
            id="no-client-secret-configured",
        ),
        pytest.param({}, BODY, None, {"client_secrets": ["s1"]}, "missing_signature", id="missing"),
        pytest.param({}, BODY, "nope", {"legacy_token": "t0ken"}, "bad_token", id="bad-token"),
        pytest.param({}, BODY, "t0ken", {"client_secrets": ["s1"]}, "bad_token", id="no-token-set"),
    ],
)
def test_authenticate_rejects(
    headers: dict[str, str], body: bytes, token: str | None, settings: dict[str, Any], reason: str
) -> None:
    with pytest.raises(Unauthorized) as info:
        sentry.authenticate(Headers(headers), body, token, cfg(**settings))
    assert info.value.reason == reason
    assert reason in REJECT_REASONS
    assert info.value.status_code == 401
    for secret in ("s1", "s2", "hook", "t0ken", "nope"):
        assert secret not in info.value.detail.split()
    for value in headers.values():
        assert value not in info.value.detail


def test_service_hook_signature_ignores_timestamp() -> None:
    """Sentry signs the body alone (ServiceHook.build_signature), not the timestamp."""
    headers = {"X-ServiceHook-Signature": sign(BODY, "hook"), "X-ServiceHook-Timestamp": "1"}
    settings = cfg(service_hook_secrets=["hook"])
    assert sentry.authenticate(headers, BODY, None, settings) == "service_hook"
    stamped = {**headers, "X-ServiceHook-Signature": sign(b"1" + BODY, "hook")}
    with pytest.raises(Unauthorized):
        sentry.authenticate(stamped, BODY, None, settings)


# --- shapes Sentry does not send ---------------------------------------------------------


def _without(fixture: str, *path: str) -> dict[str, Any]:
    data = copy.deepcopy(load_fixture(fixture))
    node = data
    for key in path[:-1]:
        node = node[key]
    del node[path[-1]]
    return data


def _with(fixture: str, value: Any, *path: str) -> dict[str, Any]:
    data = copy.deepcopy(load_fixture(fixture))
    node = data
    for key in path[:-1]:
        node = node[key]
    node[path[-1]] = value
    return data


@pytest.mark.parametrize(
    ("headers", "data"),
    [
        pytest.param(
            hook("event_alert"),
            _without("event_alert.json", "data", "event"),
            id="no-event",
        ),
        pytest.param(
            hook("event_alert"),
            _with("event_alert.json", "a string", "data", "event"),
            id="event-not-object",
        ),
        pytest.param(
            hook("event_alert"),
            _without("event_alert.json", "data", "event", "issue_id"),  # and no group_id either
            id="event-without-issue",
        ),
        pytest.param(
            hook("error"), _without("error_created.json", "data", "error"), id="error-no-error"
        ),
        pytest.param(
            hook("issue"), _without("issue_created.json", "data", "issue", "id"), id="issue-no-id"
        ),
        pytest.param(
            hook("issue"),
            _with("issue_created.json", {"id": "1"}, "data", "issue", "id"),
            id="issue-id-object",
        ),
        pytest.param(
            hook("metric_alert"),
            _without("metric_alert_critical.json", "data", "metric_alert", "alert_rule"),
            id="metric-no-rule",
        ),
        pytest.param(
            hook("metric_alert"),
            _with(
                "metric_alert_critical.json",
                {"aggregate": "count()"},
                "data",
                "metric_alert",
                "alert_rule",
            ),
            id="metric-rule-without-id-or-name",
        ),
        pytest.param(
            hook("activity_alert"),
            _without("activity_alert_triggered.json", "data", "issue"),
            id="activity-no-issue",
        ),
        pytest.param(hook("issue"), _without("issue_created.json", "data"), id="no-data"),
        pytest.param(hook("issue"), ["not", "an", "object"], id="array-body"),
        pytest.param(
            SERVICE_HOOK, _without("service_hook_event.json", "group"), id="hook-no-group"
        ),
        pytest.param(LEGACY, _with("legacy_webhook.json", {"n": 1}, "id"), id="legacy-id-object"),
    ],
)
def test_bad_shapes_raise_bad_payload(headers: Headers, data: object) -> None:
    with pytest.raises(BadPayload) as info:
        sentry.normalise(headers, data, base_url=BASE)
    assert info.value.reason == "invalid_payload"
    assert info.value.status_code == 400
    assert "cart.items" not in info.value.detail  # names the field, never payload values


@pytest.mark.parametrize(
    ("headers", "data", "expected"),
    [
        pytest.param(
            hook("seer"),
            {"action": "root_cause_started", "data": {}},
            Ignored("seer", "root_cause_started", "unknown_resource"),
            id="seer",
        ),
        pytest.param(
            hook("event_alert"),
            _with("event_alert.json", "snoozed", "action"),
            Ignored("event_alert", "snoozed", "unknown_action"),
            id="event_alert-action",
        ),
        pytest.param(
            hook("metric_alert"),
            _with("metric_alert_critical.json", "muted", "action"),
            Ignored("metric_alert", "muted", "unknown_action"),
            id="metric_alert-action",
        ),
        pytest.param(
            hook("issue"),
            _with("issue_created.json", "merged", "action"),
            Ignored("issue", "merged", "unknown_action"),
            id="issue-action",
        ),
        pytest.param(
            hook("error"),
            _with("error_created.json", "deleted", "action"),
            Ignored("error", "deleted", "unknown_action"),
            id="error-action",
        ),
        pytest.param(
            hook("activity_alert"),
            _with("activity_alert_triggered.json", "updated", "action"),
            Ignored("activity_alert", "updated", "unknown_action"),
            id="activity-action",
        ),
        pytest.param(
            Headers({}),
            {"hello": "world"},
            Ignored("other", "", "unknown_resource"),
            id="unknown-body",
        ),
    ],
)
def test_unknown_resource_or_action_is_ignored(
    headers: Headers, data: object, expected: Ignored
) -> None:
    assert sentry.normalise(headers, data, base_url=BASE) == expected
    assert expected.reason in sentry.IGNORE_REASONS


def test_metric_alert_falls_back_to_rule_name() -> None:
    data = _without("metric_alert_critical.json", "data", "metric_alert", "alert_rule", "id")
    assert alert(hook("metric_alert"), data).identity == "metric_alert:Checkout error spike"


def test_metric_alert_open_fires() -> None:
    data = _with("metric_alert_critical.json", "open", "action")
    assert alert(hook("metric_alert"), data).state is State.FIRING


def test_issue_archived_resolves() -> None:
    data = _with("issue_ignored.json", "archived", "action")
    assert alert(hook("issue"), data).state is State.RESOLVED


def test_issue_without_links_builds_them_from_base_url() -> None:
    data = _with("issue_resolved.json", None, "data", "issue", "permalink")
    result = sentry.normalise(hook("issue"), data, base_url="https://sentry.example.com/")
    assert isinstance(result, SentryAlert)
    assert result.organization is None
    assert result.web_url is None
    assert result.issue_api_url == "https://sentry.example.com/api/0/issues/1117540176/"


# --- event details -----------------------------------------------------------------------


def test_tags_drop_pii_and_keep_the_rest() -> None:
    data = load_fixture("event_alert_python.json")
    data["data"]["event"]["tags"] = [
        ["user", "email:jane.doe@example.com"],
        ["sentry:user", "id:8812"],
        ["user.email", "jane.doe@example.com"],
        ["user.ip", "198.51.100.23"],
        ["user.username", "jdoe"],
        ["user.id", "8812"],
        ["ip", "198.51.100.23"],
        ["email", "jane.doe@example.com"],
        {"key": "sentry:release", "value": "checkout-api@2.3.1"},
        {"key": "browser", "value": "Firefox 126", "query": "browser:Firefox"},
        ["url", "https://api.shop.example.com/api/checkout/?email=jane.doe@example.com#frag"],
        ["broken"],
        ["nothing", None],
    ]
    assert alert(hook("event_alert"), data).tags == (
        ("release", "checkout-api@2.3.1"),
        ("browser", "Firefox 126"),
        ("url", "https://api.shop.example.com/api/checkout/"),
    )


@pytest.mark.parametrize(
    ("mechanisms", "tag", "expected"),
    [
        pytest.param([True], None, True, id="handled"),
        pytest.param([False], "yes", False, id="mechanism-wins-over-tag"),
        pytest.param([True, False], None, False, id="one-unhandled-in-chain"),
        pytest.param([None], "no", False, id="tag-when-no-mechanism-flag"),
        pytest.param([None], "yes", True, id="tag-yes"),
        pytest.param([None], None, None, id="unknown"),
    ],
)
def test_handled(mechanisms: list[bool | None], tag: str | None, expected: bool | None) -> None:
    data = load_fixture("event_alert_python.json")
    event = data["data"]["event"]
    first = event["exception"]["values"][0]
    event["exception"]["values"] = [
        {
            **first,
            "mechanism": {"type": "generic"} if m is None else {"type": "generic", "handled": m},
        }
        for m in mechanisms
    ]
    event["tags"] = [["handled", tag]] if tag else []
    assert alert(hook("event_alert"), data).handled is expected


def test_event_fields_fall_back_to_tags() -> None:
    data = load_fixture("event_alert_python.json")
    event = data["data"]["event"]
    for key in ("environment", "transaction", "release", "request", "level", "datetime"):
        del event[key]
    result = alert(hook("event_alert"), data)
    assert (result.environment, result.transaction, result.release, result.level) == (
        "staging",
        "/api/checkout/",
        "checkout-api@2.3.1",
        "warning",
    )
    assert result.url == "https://api.shop.example.com/api/checkout/"
    assert result.started_at == datetime(2024, 5, 14, 11, 2, 45, 118274, tzinfo=UTC)


@pytest.mark.parametrize(
    ("url", "org", "project"),
    [
        pytest.param(
            "https://sentry.io/api/0/projects/acme/shop/events/ab/", "acme", "shop", id="api-event"
        ),
        pytest.param(
            "https://sentry.io/organizations/acme/issues/1/", "acme", None, id="organizations"
        ),
        pytest.param(
            "https://sentry.io/api/0/organizations/acme/issues/1/", "acme", None, id="api-issue"
        ),
        pytest.param(
            "https://acme.sentry.io/issues/1/?referrer=webhooks_plugin", "acme", None, id="domain"
        ),
        pytest.param("https://us.sentry.io/api/0/issues/1/", None, None, id="region-host"),
        pytest.param("https://sentry.io/acme/shop/issues/1/", "acme", "shop", id="sentry-9"),
        pytest.param("https://elsewhere.example.com/acme/issues/1/", None, None, id="foreign"),
    ],
)
def test_organization_and_project_from_links(
    url: str, org: str | None, project: str | None
) -> None:
    data = load_fixture("event_alert.json")
    event = data["data"]["event"]
    event["url"] = url
    del event["web_url"], event["issue_url"]
    result = alert(hook("event_alert"), data)
    assert result.organization == org
    assert result.project == (project or "4505321")  # else the event's numeric project id


def test_self_hosted_customer_domain_uses_base_url() -> None:
    data = load_fixture("legacy_webhook.json")
    data["url"] = "https://acme.sentry.example.com/issues/1117540176/"
    result = sentry.normalise(LEGACY, data, base_url="https://sentry.example.com")
    assert isinstance(result, SentryAlert)
    assert result.organization == "acme"
    assert result.issue_api_url == "https://sentry.example.com/api/0/issues/1117540176/"


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        pytest.param(
            1715678467.412, datetime(2024, 5, 14, 9, 21, 7, 412000, tzinfo=UTC), id="unix"
        ),
        pytest.param("2024-05-14T09:21:07Z", datetime(2024, 5, 14, 9, 21, 7, tzinfo=UTC), id="z"),
        pytest.param(
            "2024-05-14T11:21:07+02:00", datetime(2024, 5, 14, 9, 21, 7, tzinfo=UTC), id="offset"
        ),
        pytest.param(
            "2024-05-14T09:21:07", datetime(2024, 5, 14, 9, 21, 7, tzinfo=UTC), id="naive"
        ),
        pytest.param("yesterday", None, id="garbage"),
    ],
)
def test_started_at_is_utc(value: Any, expected: datetime | None) -> None:
    data = load_fixture("legacy_webhook.json")
    data["event"]["timestamp"] = value
    assert alert(LEGACY, data).started_at == expected


# --- metric alert descriptions -----------------------------------------------------------

R = sentry.MetricReading


@pytest.mark.parametrize(
    ("text", "aggregate", "expected"),
    [
        pytest.param(
            "1204 events in the last 10 minutes",
            "count()",
            R("count()", 1204.0, events=1204),
            id="count",
        ),
        pytest.param(
            "1204.0 events in the last hour",
            "count()",
            R("count()", 1204.0, events=1204),
            id="count-float",
        ),
        pytest.param(
            "38 users affected in the last day",
            "count_unique(tags[sentry:user])",
            R("count_unique(tags[sentry:user])", 38.0, users=38),
            id="users-affected",
        ),
        pytest.param(
            "12 count_unique(user) in the last 5 minutes",
            "count_unique(user)",
            R("count_unique(user)", 12.0, users=12),
            id="count-unique-user",
        ),
        pytest.param(
            "12.50% failure rate in the last 5 minutes",
            "failure_rate()",
            R("failure_rate()", 12.5, error_rate=0.125),
            id="failure-rate",
        ),
        pytest.param(
            "0.125 failure_rate() in the last 5 minutes",
            "failure_rate()",
            R("failure_rate()", 0.125, error_rate=0.125),
            id="failure-rate-older-sentry",
        ),
        pytest.param(
            "97.1% sessions crash free rate in the last hour",
            "percentage(sessions_crashed, sessions) AS _crash_rate_alert_aggregate",
            R("percentage(sessions_crashed, sessions)", 97.1, error_rate=0.029),
            id="crash-free-sessions",
        ),
        pytest.param(
            "99.5% users crash free rate in the last day",
            "percentage(users_crashed, users) AS _crash_rate_alert_aggregate",
            R("percentage(users_crashed, users)", 99.5, error_rate=0.005),
            id="crash-free-users",
        ),
        pytest.param(
            "1532.7 p95(transaction.duration) in the last 10 minutes",
            "p95(transaction.duration)",
            R("p95(transaction.duration)", 1532.7, latency_ms=1532.7),
            id="p95-ms",
        ),
        pytest.param(
            "1.53 s p95(duration) in the last 10 minutes",
            "p95(d:transactions/duration@millisecond)",
            R("p95(d:transactions/duration@millisecond)", 1.53, latency_ms=1530.0),
            id="p95-metrics-seconds",
        ),
        pytest.param(
            "250.5 ms avg(duration) in the last 10 minutes",
            "avg(d:spans/duration@millisecond)",
            R("avg(d:spans/duration@millisecond)", 250.5, latency_ms=250.5),
            id="avg-metrics-ms",
        ),
        pytest.param(
            "42 count(duration) in the last 10 minutes",
            "count(d:transactions/duration@millisecond)",
            R("count(d:transactions/duration@millisecond)", 42.0),
            id="metrics-count-has-no-unit",
        ),
        pytest.param(
            "812.0 p75(measurements.lcp) in the last 10 minutes",
            "p75(measurements.lcp)",
            R("p75(measurements.lcp)", 812.0, latency_ms=812.0),
            id="lcp",
        ),
        pytest.param(
            "0.82 apdex() in the last 10 minutes",
            "apdex()",
            R("apdex()", 0.82),
            id="apdex-value-only",
        ),
        pytest.param(
            "0.12 p75(measurements.cls) in the last 10 minutes",
            "p75(measurements.cls)",
            R("p75(measurements.cls)", 0.12),
            id="cls-is-not-a-duration",
        ),
        pytest.param(
            "Events 150% higher in the last 10 minutes compared to the same time one hour ago",
            "count()",
            R("count()"),
            id="percent-change-is-not-the-metric",
        ),
        pytest.param(
            "Failure rate 12.50% higher in the last 5 minutes"
            " compared to the same time one day ago",
            "failure_rate()",
            R("failure_rate()"),
            id="percent-change-failure-rate",
        ),
        pytest.param(
            "1000 events in the last 10 minutes",
            "count_unique(user)",
            R("count_unique(user)"),
            id="mismatch",
        ),
        pytest.param(
            "1000 events in the last 10 minutes",
            None,
            R("count()", 1000.0, events=1000),
            id="no-aggregate",
        ),
        pytest.param(
            "1000 widgets in the last 10 minutes", None, R(), id="no-aggregate-unknown-text"
        ),
        pytest.param(
            "1000 events in the last 10 minutes\nThreshold: Static",
            "count()",
            R("count()", 1000.0, events=1000),
            id="threshold-line",
        ),
        pytest.param(
            "12.5 events in the last 10 minutes",
            "count()",
            R("count()", 12.5),
            id="fractional-count",
        ),
        pytest.param("", "count()", R("count()"), id="empty"),
        pytest.param(None, "count()", R("count()"), id="none"),
        pytest.param("lots of events lately", "count()", R("count()"), id="garbage"),
    ],
)
def test_parse_metric_description(
    text: str | None, aggregate: str | None, expected: sentry.MetricReading
) -> None:
    assert sentry.parse_metric_description(text, aggregate) == expected


def test_metric_alert_numbers_unknown_when_text_does_not_parse() -> None:
    data = _with("metric_alert_critical.json", "something happened", "data", "description_text")
    result = alert(hook("metric_alert"), data)
    assert (result.metric_value, result.events, result.users, result.error_rate) == (None,) * 4
    assert result.metric_aggregate == "count()"

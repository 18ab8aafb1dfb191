"""bridge/sentry.py: resource detection, actions that make no alert, the public API.

Also the helpers the other tests/test_sentry_*.py modules share.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
from starlette.datastructures import Headers

from bridge import sentry, sentry_auth, sentry_metric
from bridge.metrics import RESOURCES
from bridge.model import Ignored, SentryAlert

FIXTURES = Path(__file__).parent / "fixtures" / "sentry"
BASE = "https://sentry.io"

# Helpers shared by the tests/test_sentry_*.py modules.


def load_fixture(name: str) -> dict[str, Any]:
    data = json.loads((FIXTURES / name).read_text(encoding="utf-8"))
    assert isinstance(data, dict)
    return data


def _edit(fixture: str, path: tuple[str, ...]) -> tuple[dict[str, Any], dict[str, Any]]:
    data = load_fixture(fixture)
    node = data
    for key in path[:-1]:
        node = node[key]
    return data, node


def without(fixture: str, *path: str) -> dict[str, Any]:
    """The fixture with the value at ``path`` removed."""
    data, node = _edit(fixture, path)
    del node[path[-1]]
    return data


def patched(fixture: str, value: Any, *path: str) -> dict[str, Any]:
    """The fixture with the value at ``path`` replaced."""
    data, node = _edit(fixture, path)
    node[path[-1]] = value
    return data


def hook(resource: str) -> Headers:
    return Headers({"Sentry-Hook-Resource": resource, "Request-ID": "0f9e8d7c"})


SERVICE_HOOK = Headers({"X-ServiceHook-GUID": "a1b2c3", "X-ServiceHook-Timestamp": "1715684566"})
LEGACY = Headers({"User-Agent": "sentry-webhooks/24.5.0"})


def alert(headers: Headers, data: object, base_url: str = BASE) -> SentryAlert:
    result = sentry.normalise(headers, data, base_url=base_url)
    assert isinstance(result, SentryAlert), result
    return result


def assert_normalised(fixture: str, headers: Headers, expected: dict[str, Any]) -> None:
    result = alert(headers, load_fixture(fixture))
    got = {name: getattr(result, name) for name in expected}
    assert got == expected
    assert result.started_at is None or result.started_at.tzinfo is not None


def assert_no_pii(result: SentryAlert) -> None:
    """The fixtures carry these on purpose (tests/fixtures/sentry/SOURCES.md)."""
    text = json.dumps(result.to_json())
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


def test_public_api_is_reexported() -> None:
    """Callers (app.py, cli.py, tests) import the whole API from bridge.sentry."""
    assert sentry.authenticate is sentry_auth.authenticate
    assert sentry.parse_metric_description is sentry_metric.parse_metric_description
    assert sentry.MetricReading is sentry_metric.MetricReading
    assert set(sentry.__all__) == {
        "IGNORE_REASONS",
        "MetricReading",
        "authenticate",
        "detect_resource",
        "normalise",
        "parse_metric_description",
    }


# --- what makes no alert -----------------------------------------------------------------


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
            patched("event_alert.json", "snoozed", "action"),
            Ignored("event_alert", "snoozed", "unknown_action"),
            id="event_alert-action",
        ),
        pytest.param(
            hook("metric_alert"),
            patched("metric_alert_critical.json", "muted", "action"),
            Ignored("metric_alert", "muted", "unknown_action"),
            id="metric_alert-action",
        ),
        pytest.param(
            hook("issue"),
            patched("issue_created.json", "merged", "action"),
            Ignored("issue", "merged", "unknown_action"),
            id="issue-action",
        ),
        pytest.param(
            hook("error"),
            patched("error_created.json", "deleted", "action"),
            Ignored("error", "deleted", "unknown_action"),
            id="error-action",
        ),
        pytest.param(
            hook("activity_alert"),
            patched("activity_alert_triggered.json", "updated", "action"),
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

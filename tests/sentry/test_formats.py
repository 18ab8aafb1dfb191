"""bridge/sentry/formats.py: resource detection, actions that make no alert, the public API."""

from __future__ import annotations

import pytest
from starlette.datastructures import Headers

from bridge import sentry
from bridge.metrics import RESOURCES
from bridge.model import Ignored
from bridge.sentry import auth as sentry_auth
from bridge.sentry import metric as sentry_metric
from tests.sentry_payloads import BASE, LEGACY, SERVICE_HOOK, hook, load_fixture, patched


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
        "LowerHeaders",
        "MetricReading",
        "UNKNOWN_LEGACY_BODY",
        "authenticate",
        "detect_resource",
        "family",
        "loads",
        "normalise",
        "parse_metric_description",
        "read",
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

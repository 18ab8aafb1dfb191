"""bridge/sentry/wire.py: shapes Sentry does not send are refused, naming the field."""

from __future__ import annotations

import json
from typing import Any

import pytest
from starlette.datastructures import Headers

from bridge import sentry
from bridge.errors import BadPayload
from bridge.sentry import wire
from tests.sentry_payloads import BASE, LEGACY, SERVICE_HOOK, hook, patched, without


def _without_issue() -> dict[str, Any]:
    data = without("event_alert.json", "data", "event", "issue_id")
    for link in ("issue_url", "web_url", "url"):
        del data["data"]["event"][link]
    return data


@pytest.mark.parametrize(
    ("headers", "data"),
    [
        pytest.param(
            hook("event_alert"),
            without("event_alert.json", "data", "event"),
            id="no-event",
        ),
        pytest.param(
            hook("event_alert"),
            patched("event_alert.json", "a string", "data", "event"),
            id="event-not-object",
        ),
        pytest.param(
            hook("event_alert"),
            _without_issue(),  # no issue_id, group_id, nor a link naming the issue
            id="event-without-issue",
        ),
        pytest.param(
            hook("error"), without("error_created.json", "data", "error"), id="error-no-error"
        ),
        pytest.param(
            hook("issue"), without("issue_created.json", "data", "issue", "id"), id="issue-no-id"
        ),
        pytest.param(
            hook("issue"),
            patched("issue_created.json", {"id": "1"}, "data", "issue", "id"),
            id="issue-id-object",
        ),
        pytest.param(
            hook("metric_alert"),
            without("metric_alert_critical.json", "data", "metric_alert", "alert_rule"),
            id="metric-no-rule",
        ),
        pytest.param(
            hook("metric_alert"),
            patched(
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
            without("activity_alert_triggered.json", "data", "issue"),
            id="activity-no-issue",
        ),
        pytest.param(hook("issue"), without("issue_created.json", "data"), id="no-data"),
        pytest.param(hook("issue"), ["not", "an", "object"], id="array-body"),
        pytest.param(SERVICE_HOOK, without("service_hook_event.json", "group"), id="hook-no-group"),
        pytest.param(LEGACY, patched("legacy_webhook.json", {"n": 1}, "id"), id="legacy-id-object"),
    ],
)
def test_bad_shapes_raise_bad_payload(headers: Headers, data: object) -> None:
    with pytest.raises(BadPayload) as info:
        sentry.normalise(headers, data, base_url=BASE)
    assert info.value.reason == "invalid_payload"
    assert info.value.status_code == 400
    assert "cart.items" not in info.value.detail  # names the field, never payload values


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        pytest.param("api", "api", id="text"),
        pytest.param("", "", id="empty-text"),
        pytest.param(12, "12", id="integer"),
        pytest.param(2**70, str(2**70), id="big-integer"),
        pytest.param(1.5, "1.5", id="float"),
        pytest.param(True, None, id="boolean"),
        pytest.param(None, None, id="null"),
        pytest.param(["api"], None, id="list"),
        pytest.param({"name": "api"}, None, id="object"),
    ],
)
def test_descriptive_text_is_lenient(value: object, expected: str | None) -> None:
    """A descriptive field (``Text``) takes numbers as text and any other shape as unknown,
    from the raw bytes (the typed path) and from parsed JSON (the general path) alike."""
    project = {"id": value}
    from_bytes = wire.WireProject.model_validate_json(json.dumps(project))
    from_json = wire.WireProject.model_validate(project)
    assert from_bytes.id == from_json.id == expected

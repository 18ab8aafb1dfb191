"""Bodies captured from real Sentry deliveries (tests/fixtures/sentry/captured/, sources in
tests/fixtures/sentry/SOURCES.md), each read into the alert it means, through both paths."""

from __future__ import annotations

import json
from datetime import UTC, datetime
from typing import Any

import pytest
from starlette.datastructures import Headers

from bridge import sentry
from bridge.model import Ignored, Kind, SentryAlert, State
from tests.sentry_payloads import BASE, CAPTURED, LEGACY, assert_no_pii, hook

ZULIP_PROJECT = {"project": "zulip-integration-testing", "project_id": "5216640"}


def _at(text: str) -> datetime:
    return datetime.fromisoformat(text).astimezone(UTC)


# (file, the headers it arrived with, what it must read as)
CASES: list[Any] = [
    pytest.param(
        "zulip_event_alert_python_2020.json",
        hook("event_alert"),
        {
            # Sentry of April 2020: no issue_id, the issue only in issue_url /api/0/issues/<id>/.
            "identity": "issue:1635244907",
            "issue_id": "1635244907",
            "kind": Kind.ISSUE,
            "state": State.FIRING,
            "title": "Exception: Custom exception!",
            "organization": "example-org",
            **ZULIP_PROJECT,
            "environment": None,
            "level": "error",
            "platform": "python",
            "culprit": "__main__ in <module>",
            "issue_category": "error",
            "alert_rule_name": "Send a webhook payload to Webhook.site",
            "web_url": "https://example-org.sentry.io/issues/1635244907/",
            "issue_api_url": "https://sentry.io/api/0/issues/1635244907/",
            "occurred_at": _at("2020-04-28T13:56:05.903736Z"),
        },
        id="event_alert-2020-python",
    ),
    pytest.param(
        "zulip_event_alert_golang_message_2020.json",
        hook("event_alert"),
        {
            "identity": "issue:1638844654",
            "title": "A test message event from golang.",
            "message": "A test message event from golang.",
            "level": "info",
            "platform": "go",
            "culprit": None,  # "" in the body
            "handled": None,
            **ZULIP_PROJECT,
            "web_url": "https://example-org.sentry.io/issues/1638844654/",
            "occurred_at": _at("2020-04-30T06:14:13.611851Z"),
        },
        id="event_alert-2020-go-message",
    ),
    pytest.param(
        "zulip_event_alert_sample_event_2023.json",
        hook("event_alert"),
        {
            "identity": "issue:4218258981",
            "title": "This is an example Python exception",
            "project": "python",
            "project_id": "4505278293147648",
            "environment": "prod",
            "url": "http://example.com/foo",  # the request URL without its query string
            "alert_rule_name": None,  # "triggered_rule": ""
            # Sentry's "Send Test Notification" as sentry.io sent it: tagged sample_event=yes.
            "test": True,
            "web_url": "https://example-org.sentry.io/issues/4218258981/",
            "occurred_at": _at("2023-05-31T11:06:16.247Z"),
        },
        id="event_alert-2023-sample-event",
    ),
    pytest.param(
        "zulip_issue_created_2020.json",
        hook("issue"),
        {
            "identity": "issue:1635244907",
            "state": State.FIRING,
            "short_id": "ZULIP-INTEGRATION-TESTING-2",
            **ZULIP_PROJECT,
            "users": 0,
            "events": 1,
            "issue_category": None,  # the 2020 serializer had no issueCategory
            "organization": None,  # no link names it: sentry.organization would
            "web_url": None,
            "started_at": _at("2020-04-28T13:56:05.903736Z"),
            "occurred_at": None,
        },
        id="issue-created-2020",
    ),
    pytest.param(
        "zulip_issue_resolved_2020.json",
        hook("issue"),
        {"identity": "issue:1638821441", "state": State.RESOLVED, **ZULIP_PROJECT},
        id="issue-resolved-2020",
    ),
    pytest.param(
        "zulip_issue_ignored_2020.json",
        hook("issue"),
        {"identity": "issue:1638821441", "state": State.RESOLVED, "action": "ignored"},
        id="issue-ignored-2020",
    ),
    pytest.param(
        "zulip_issue_assigned_to_team_2020.json",
        hook("issue"),
        Ignored("issue", "assigned", "no_state_change"),
        id="issue-assigned-2020",
    ),
    pytest.param(
        "zulip_legacy_webhook_python_2020.json",
        LEGACY,
        {
            "resource": "legacy",
            "identity": "issue:1972208801",
            "title": "ValueError: new sentry error.",
            "organization": "bar-foundation",
            "project": "foo-live",
            "project_id": "218288",
            "alert_rule_name": "Send a notification for new events",
            "web_url": "https://bar-foundation.sentry.io/issues/1972208801/",
            "occurred_at": datetime.fromtimestamp(1603322711.147672, tz=UTC),
        },
        id="legacy-2020",
    ),
    pytest.param(
        "alerta_legacy_webhook_sentry9_2019.json",
        LEGACY,
        {
            # Sentry 9.1: the event's own "request", "logentry", "user" (dropped: PII), the
            # project slug beside a link naming another project (the slug wins).
            "resource": "legacy",
            "identity": "issue:5",
            "event_id": "2c02659ec60b48f3b31f8de77e1a2510",
            "organization": "example-org",
            "project": "internal",
            "environment": None,
            "url": "http://example.com/foo",
            "alert_rule_name": None,  # "triggering_rules": []
            "web_url": "https://example-org.sentry.io/issues/5/",
            "occurred_at": datetime.fromtimestamp(1576578404.933, tz=UTC),
        },
        id="legacy-sentry-9",
    ),
    pytest.param(
        "zulip_legacy_webhook_sentry8_2016.json",
        LEGACY,
        {
            # Sentry 8: "sentry.interfaces.*" keys, the Sentry 9 /<org>/<project>/issues/<id>/ url.
            "resource": "legacy",
            "identity": "issue:156699934",
            "title": "This is an example python exception",
            "organization": "zulip",
            "project": "zulip",
            "environment": "production",
            "level": "error",
            "url": "http://example.com/foo",
            "web_url": "https://zulip.sentry.io/issues/156699934/",
            "occurred_at": None,  # only "received", which is not the event's time
        },
        id="legacy-sentry-8",
    ),
]


def test_every_captured_fixture_has_a_case() -> None:
    files = sorted(path.name for path in CAPTURED.glob("*.json"))
    assert files == sorted(case.values[0] for case in CASES)


@pytest.mark.parametrize(("fixture", "headers", "expected"), CASES)
def test_captured_fixture(fixture: str, headers: Headers, expected: Any) -> None:
    raw = (CAPTURED / fixture).read_bytes()
    _, fast = sentry.read(headers, raw, base_url=BASE)
    slow = sentry.normalise(headers, json.loads(raw), base_url=BASE)
    assert fast == slow
    if isinstance(expected, Ignored):
        assert fast == expected
        return
    assert isinstance(fast, SentryAlert)
    assert {name: getattr(fast, name) for name in expected} == expected
    assert_no_pii(fast)
    for secret in ("foo@example.com", "sentry@example.com", "127.0.0.1", "162.218.85.90"):
        assert secret not in json.dumps(fast.to_json())


@pytest.mark.parametrize(("fixture", "headers", "expected"), CASES)
def test_with_the_organization_configured_every_issue_alert_links(
    fixture: str, headers: Headers, expected: Any
) -> None:
    result = sentry.normalise(
        headers, json.loads((CAPTURED / fixture).read_bytes()), base_url=BASE, organization="acme"
    )
    if isinstance(result, SentryAlert):
        assert result.web_url == f"https://acme.sentry.io/issues/{result.issue_id}/"

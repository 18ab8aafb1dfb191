"""Every format Sentry sends today and sent in the past (issue 8): the issue from older
``event_alert`` links, ``activity_alert`` status changes, metric alert ``open``, the time a
webhook reports, and links built for the Sentry that sent them."""

from __future__ import annotations

import copy
import json
from datetime import UTC, datetime
from typing import Any

import pytest

from bridge import sentry
from bridge.errors import BadPayload
from bridge.model import Ignored, SentryAlert, State
from tests.sentry_payloads import BASE, LEGACY, SERVICE_HOOK, alert, hook, load_fixture, patched


def _event_alert_linking(**links: str) -> dict[str, Any]:
    """event_alert.json as older Sentry sent it: no issue_id, only the given links."""
    data = load_fixture("event_alert.json")
    event = data["data"]["event"]
    for name in ("issue_id", "issue_url", "web_url", "url"):
        event.pop(name)
    event.update(links)
    return data


@pytest.mark.parametrize(
    "links",
    [
        pytest.param({"issue_url": "https://sentry.io/api/0/issues/77/"}, id="old-issue-url"),
        pytest.param(
            {"issue_url": "https://sentry.io/api/0/organizations/acme/issues/77/"},
            id="org-issue-url",
        ),
        pytest.param(
            {"web_url": "https://sentry.io/organizations/acme/issues/77/events/e4874d66/"},
            id="web-url",
        ),
        pytest.param(
            {"web_url": "https://acme.sentry.io/issues/77/events/e4874d66/"},
            id="customer-domain-web-url",
        ),
        pytest.param({"web_url": "https://sentry.io/acme/shop/issues/77/"}, id="sentry-9-web-url"),
        pytest.param(
            {
                "issue_url": "https://sentry.io/api/0/issues/77/",
                "web_url": "https://sentry.io/organizations/acme/issues/78/",
            },
            id="issue-url-first",
        ),
    ],
)
def test_event_alert_issue_from_its_links(links: dict[str, str]) -> None:
    """Sentry versions without ``issue_id`` were refused 400 and, never retried, lost."""
    result = alert(hook("event_alert"), _event_alert_linking(**links))
    assert (result.issue_id, result.identity) == ("77", "issue:77")


@pytest.mark.parametrize(
    "links",
    [
        pytest.param({}, id="no-links"),
        pytest.param({"url": "https://sentry.io/api/0/projects/acme/shop/events/ab/"}, id="event"),
        pytest.param({"web_url": "https://sentry.io/organizations/acme/issues/x/"}, id="not-id"),
    ],
)
def test_event_alert_naming_no_issue_is_still_refused(links: dict[str, str]) -> None:
    body = json.dumps(_event_alert_linking(**links)).encode()
    with pytest.raises(BadPayload) as info:
        sentry.read(hook("event_alert"), body, base_url=BASE)
    assert "names no issue" in str(info.value)


# --- activity_alert: Sentry's new alert engine ---------------------------------------------


def _activity(kind: str, fixture: str = "activity_alert_status_resolved.json") -> dict[str, Any]:
    return patched(fixture, {"type": kind, "details": {}}, "data", "activity")


@pytest.mark.parametrize(
    ("activity", "state", "escalating"),
    [
        ("status_resolved", State.RESOLVED, False),
        ("status_resolved_in_release", State.RESOLVED, False),
        ("status_resolved_by_age", State.RESOLVED, False),
        ("status_resolved_in_commit", State.RESOLVED, False),
        ("status_ignored", State.RESOLVED, False),
        ("status_regression", State.FIRING, False),
        ("status_unresolved", State.FIRING, False),
        ("status_escalating", State.FIRING, True),
    ],
)
def test_activity_status_changes(activity: str, state: State, escalating: bool) -> None:
    result = alert(hook("activity_alert"), _activity(activity))
    assert (result.state, result.escalating) == (state, escalating)
    assert result.identity == "issue:4507718802"


@pytest.mark.parametrize(
    "activity",
    [
        "seer_root_cause_started",
        "seer_root_cause_completed",
        "seer_solution_completed",
        "seer_pr_created",
        "seer_pr_iteration_completed",
        "appeared_in_pull_request",  # SET_RESOLVED_IN_PULL_REQUEST: links a PR, resolves nothing
        "note",
        "",
    ],
)
def test_other_activities_are_acknowledged_and_ignored(activity: str) -> None:
    body = json.dumps(_activity(activity)).encode()
    for result in (
        sentry.read(hook("activity_alert"), body, base_url=BASE)[1],
        sentry.normalise(hook("activity_alert"), json.loads(body), base_url=BASE),
    ):
        assert result == Ignored("activity_alert", "triggered", "no_state_change")


def test_activity_without_a_type_is_ignored() -> None:
    data = patched("activity_alert_status_resolved.json", {}, "data", "activity")
    result = sentry.normalise(hook("activity_alert"), data, base_url=BASE)
    assert result == Ignored("activity_alert", "triggered", "no_state_change")


def test_escalating_fixture() -> None:
    result = alert(hook("activity_alert"), load_fixture("activity_alert_status_escalating.json"))
    assert result.escalating
    assert result.state is State.FIRING


@pytest.mark.parametrize("name", ["web_url", "webUrl"])
def test_activity_accepts_web_url_in_either_case(name: str) -> None:
    data = _activity("status_regression")
    issue = data["data"]["issue"]
    for key in ("url", "web_url", "project_url", "permalink"):
        issue.pop(key, None)
    issue[name] = "https://sentry.example.com/organizations/acme/issues/4507718802/"
    result = alert(hook("activity_alert"), data, base_url="https://sentry.example.com")
    assert result.organization == "acme"
    assert result.web_url == "https://sentry.example.com/organizations/acme/issues/4507718802/"


# --- metric alerts -------------------------------------------------------------------------


def test_metric_alert_open_fires_keyed_on_the_alert_rule_id() -> None:
    data = patched("metric_alert_critical.json", "open", "action")
    result = alert(hook("metric_alert"), data)
    rule = data["data"]["metric_alert"]["alert_rule"]
    assert result.state is State.FIRING
    assert result.identity == f"metric_alert:{rule['id']}"
    renamed = copy.deepcopy(data)
    renamed["data"]["metric_alert"]["alert_rule"]["name"] = "Renamed"
    assert alert(hook("metric_alert"), renamed).identity == result.identity


# --- when the reported thing happened -------------------------------------------------------


def test_occurred_at_is_the_events_own_time() -> None:
    result = alert(hook("event_alert"), load_fixture("event_alert.json"))
    assert result.occurred_at == datetime(2024, 5, 14, 9, 21, 7, 412000, tzinfo=UTC)
    no_datetime = load_fixture("event_alert.json")
    del no_datetime["data"]["event"]["datetime"]
    fallback = alert(hook("event_alert"), no_datetime)
    assert fallback.occurred_at == datetime.fromtimestamp(1715678467.412, tz=UTC)


@pytest.mark.parametrize(
    "fixture", ["issue_created.json", "issue_resolved.json", "activity_alert_status_resolved.json"]
)
def test_issue_webhooks_report_no_time(fixture: str) -> None:
    resource = "activity_alert" if fixture.startswith("activity") else "issue"
    assert alert(hook(resource), load_fixture(fixture)).occurred_at is None


@pytest.mark.parametrize(
    ("headers", "fixture", "received"),
    [
        pytest.param(hook("event_alert"), "event_alert_python.json", 1715684565.301, id="event"),
        pytest.param(hook("error"), "error_created.json", 1715678458.391, id="error"),
        pytest.param(LEGACY, "legacy_webhook.json", 1715678467.412, id="legacy-plugin"),
        pytest.param(
            SERVICE_HOOK, "service_hook_event.json", 1715684565.301, id="service-hook-dateReceived"
        ),
    ],
)
def test_received_at_is_sentrys_own_time_not_the_clients(
    headers: Any, fixture: str, received: float
) -> None:
    """Issue 16: Sentry stamps each event when its server receives it; that orders webhooks,
    the event's ``timestamp`` (the client's clock) never does."""
    data = load_fixture(fixture)
    result = alert(headers, data)
    assert result.received_at == datetime.fromtimestamp(received, tz=UTC)
    lagging = copy.deepcopy(data)
    envelope = lagging.get("data", lagging)
    event = envelope.get("event") or envelope["error"]
    event["timestamp"] = received - 3600  # a phone an hour behind
    assert alert(headers, lagging).received_at == result.received_at


@pytest.mark.parametrize(
    "fixture", ["issue_created.json", "issue_resolved.json", "activity_alert_status_resolved.json"]
)
def test_issue_webhooks_carry_no_sentry_time(fixture: str) -> None:
    resource = "activity_alert" if fixture.startswith("activity") else "issue"
    assert alert(hook(resource), load_fixture(fixture)).received_at is None


def test_metric_alert_occurred_at_is_the_incidents_start() -> None:
    data = load_fixture("metric_alert_critical.json")
    started = data["data"]["metric_alert"]["date_started"]
    result = alert(hook("metric_alert"), data)
    assert result.occurred_at == datetime.fromisoformat(started).astimezone(UTC)
    detected_only = copy.deepcopy(data)
    detected_only["data"]["metric_alert"]["date_started"] = None
    detected_only["data"]["metric_alert"]["date_detected"] = "2024-05-14T09:30:00Z"
    result = alert(hook("metric_alert"), detected_only)
    assert result.occurred_at == datetime(2024, 5, 14, 9, 30, tzinfo=UTC)


# --- links built for the Sentry that sent them ---------------------------------------------


def _read(
    resource: str, data: dict[str, Any], base_url: str = BASE, organization: str | None = None
) -> SentryAlert:
    body = json.dumps(data).encode()
    _, fast = sentry.read(hook(resource), body, base_url=base_url, organization=organization)
    slow = sentry.normalise(hook(resource), data, base_url=base_url, organization=organization)
    assert fast == slow
    assert isinstance(fast, SentryAlert)
    return fast


def _bare_resolved() -> dict[str, Any]:
    """issue.resolved with no link naming the organization (workflow notifications send the
    bare serializer; the permalink is null without a user)."""
    return patched("issue_resolved.json", None, "data", "issue", "permalink")


@pytest.mark.parametrize(
    ("base_url", "organization", "expected"),
    [
        ("https://sentry.io", "acme", "https://acme.sentry.io/issues/1117540176/"),
        ("https://de.sentry.io", "acme", "https://acme.sentry.io/issues/1117540176/"),
        (
            "https://sentry.example.com",
            "acme",
            "https://sentry.example.com/organizations/acme/issues/1117540176/",
        ),
        ("https://sentry.io", None, None),
    ],
)
def test_configured_organization_gives_every_issue_alert_its_link(
    base_url: str, organization: str | None, expected: str | None
) -> None:
    result = _read("issue", _bare_resolved(), base_url, organization)
    assert result.web_url == expected
    assert result.organization == organization


def test_event_web_url_is_replaced_by_the_issue_page() -> None:
    """event.web_url (/organizations/<org>/issues/<id>/events/<id>/ on sentry.io) is not the
    page a customer-domain Sentry serves; the issue's own page is."""
    result = _read("event_alert", load_fixture("event_alert.json"))
    assert result.web_url == "https://acme.sentry.io/issues/1117540176/"


def test_self_hosted_sentry_is_told_by_its_links() -> None:
    """A self-hosted Sentry whose base_url was left at the default: its links say which
    Sentry it is, and the page is built there in the self-hosted form."""
    data = load_fixture("issue_created.json")
    issue = data["data"]["issue"]
    issue["url"] = "https://sentry.corp.example/api/0/organizations/acme/issues/1117540176/"
    issue["web_url"] = "https://sentry.corp.example/organizations/acme/issues/1117540176/"
    issue["project_url"] = "https://sentry.corp.example/organizations/acme/projects/web/"
    result = _read("issue", data)
    assert result.web_url == "https://sentry.corp.example/organizations/acme/issues/1117540176/"


@pytest.mark.parametrize("url", ["javascript:alert(1)", "not a url", "/relative/issues/1/", ""])
def test_links_that_are_not_http_are_dropped(url: str) -> None:
    data = patched("issue_resolved.json", url, "data", "issue", "permalink")
    assert _read("issue", data).web_url is None
    metric = patched("metric_alert_critical.json", url, "data", "web_url")
    assert _read("metric_alert", metric).web_url is None


def test_every_issue_alert_fixture_has_a_link_when_the_org_is_configured() -> None:
    from tests.sentry_payloads import FIXTURES

    checked = []
    for path in sorted(FIXTURES.glob("*.json")):
        data = json.loads(path.read_text(encoding="utf-8"))
        resource = sentry.detect_resource({}, data)
        if resource == "other":
            resource = next(
                (r for r in ("event_alert", "issue", "activity_alert", "error") if r in path.name),
                "other",
            )
        result = sentry.normalise(
            hook(resource) if resource not in ("legacy", "service_hook") else {},
            data,
            base_url=BASE,
            organization="acme",
        )
        if isinstance(result, SentryAlert) and result.issue_id:
            assert result.web_url == f"https://acme.sentry.io/issues/{result.issue_id}/", path
            checked.append(path.name)
    assert len(checked) == 14, checked  # every issue fixture but the ignored ones


def test_a_configured_self_hosted_base_url_is_trusted_over_the_links() -> None:
    data = load_fixture("issue_created.json")
    issue = data["data"]["issue"]
    issue["url"] = "http://localhost:9000/api/0/organizations/acme/issues/1117540176/"
    issue["web_url"] = "http://localhost:9000/organizations/acme/issues/1117540176/"
    result = _read("issue", data, base_url="https://sentry.example.com")
    assert result.web_url == "https://sentry.example.com/organizations/acme/issues/1117540176/"

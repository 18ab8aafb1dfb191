"""bridge.sentry.read: the raw body's fast path gives what normalise gives, always.

``read`` validates integration-platform bodies straight from the bytes; everything
else, and anything that does not validate there, goes through ``sentry.loads`` and
``normalise``. Every alert fixture is read under the header set Sentry sends it with, and
one webhook per way to no alert (each ignore reason, by each path that reaches it), as
captured and re-serialised; fixtures are also edited into shapes the fast path refuses.
The outcome (the alert, the ignore reason, or the error) must be the one ``normalise``
gives, and the one the case is there for.
"""

from __future__ import annotations

import json
from typing import Any

import pytest

from bridge import sentry
from bridge.errors import BadPayload
from bridge.model import Ignored, SentryAlert
from tests.sentry_payloads import BASE, FIXTURES, LEGACY, SERVICE_HOOK, hook, load_fixture

HEADER_SETS = {
    **{
        name: hook(name)
        for name in (
            "event_alert",
            "activity_alert",
            "error",
            "issue",
            "metric_alert",
            "installation",
            "comment",
        )
    },
    "service_hook": SERVICE_HOOK,
    "legacy": LEGACY,
}
# Every fixture that is an alert, under the header set Sentry sends it with: the alert.
ALERTS = {
    "activity_alert": [
        "activity_alert_status_escalating.json",
        "activity_alert_status_resolved.json",
    ],
    "error": ["error_created.json"],
    "event_alert": [
        "captured/zulip_event_alert_golang_message_2020.json",
        "captured/zulip_event_alert_python_2020.json",
        "captured/zulip_event_alert_sample_event_2023.json",
        "event_alert.json",
        "event_alert_cron.json",
        "event_alert_python.json",
        "event_alert_test_notification.json",
        "event_alert_uptime.json",
    ],
    "issue": [
        "captured/zulip_issue_created_2020.json",
        "captured/zulip_issue_ignored_2020.json",
        "captured/zulip_issue_resolved_2020.json",
        "issue_created.json",
        "issue_ignored.json",
        "issue_resolved.json",
        "issue_unresolved.json",
    ],
    "legacy": [  # the general path: no typed model for the plugin's body
        "captured/alerta_legacy_webhook_sentry9_2019.json",
        "captured/zulip_legacy_webhook_python_2020.json",
        "captured/zulip_legacy_webhook_sentry8_2016.json",
        "legacy_webhook.json",
        "service_hook_event.json",
    ],
    "metric_alert": [
        "metric_alert_critical.json",
        "metric_alert_critical_crash_free.json",
        "metric_alert_critical_failure_rate.json",
        "metric_alert_resolved.json",
        "metric_alert_warning_p95.json",
        "metric_alert_warning_users.json",
    ],
    "service_hook": ["service_hook_event.json"],
}
# One webhook per reason the bridge gives for no alert, and one per path that reaches it
# (the typed fast path decides some, the general path the others): (header set, fixture).
NO_ALERT = {
    "no_state_change": ("issue", "issue_assigned.json"),  # fast path
    "not_an_alert": ("installation", "installation_created.json"),
    "unknown_action-fast": ("issue", "activity_alert_triggered.json"),
    "unknown_action-general": ("metric_alert", "issue_created.json"),
    "unknown_resource": ("comment", "comment_created.json"),
    # Not an ignore reason but a refusal: a body under a header set it does not fit.
    "invalid_payload": ("service_hook", "event_alert.json"),
}
CASES = [
    pytest.param(headers_name, fixture, "alert", id=f"{headers_name}-{fixture}")
    for headers_name, fixtures in ALERTS.items()
    for fixture in fixtures
] + [
    pytest.param(headers_name, fixture, reason.split("-")[0], id=f"{reason}-{fixture}")
    for reason, (headers_name, fixture) in NO_ALERT.items()
]


def _outcome(fn: Any) -> object:
    try:
        return fn()
    except BadPayload as exc:
        return ("error", exc.reason, exc.detail)


def _both(headers: Any, body: bytes) -> tuple[object, object]:
    def slow() -> tuple[str, SentryAlert | Ignored]:
        data = sentry.loads(body)
        result = sentry.normalise(headers, data, base_url=BASE, request_id="r-1")
        return sentry.detect_resource(headers, data), result

    fast = _outcome(lambda: sentry.read(headers, body, base_url=BASE, request_id="r-1"))
    return fast, _outcome(slow)


def _kind(outcome: object) -> str:
    """The kind of outcome: "alert", the ignore reason, or the error's reason."""
    assert isinstance(outcome, tuple)
    match outcome:
        case (_, SentryAlert()):
            return "alert"
        case (_, Ignored(reason=reason)):
            return reason
        case ("error", reason, _):
            return str(reason)
    raise AssertionError(f"not an outcome: {outcome!r}")


@pytest.mark.parametrize(("headers_name", "fixture", "expected"), CASES)
def test_read_matches_normalise(headers_name: str, fixture: str, expected: str) -> None:
    """Each alert fixture, and each way to no alert, as captured and re-serialised: the
    same outcome both ways, and the one the case is here for."""
    headers = HEADER_SETS[headers_name]
    captured = (FIXTURES / fixture).read_bytes()
    compact = json.dumps(json.loads(captured), separators=(",", ":")).encode()
    for body in (captured, compact):
        fast, slow = _both(headers, body)
        assert fast == slow
        assert _kind(fast) == expected


def test_every_alert_fixture_is_a_case() -> None:
    """A fixture added later is read here too, or is a webhook that is no alert."""
    names = {path.name for path in FIXTURES.glob("*.json")}
    names |= {f"captured/{path.name}" for path in (FIXTURES / "captured").glob("*.json")}
    covered = {fixture for fixtures in ALERTS.values() for fixture in fixtures}
    not_alerts = {
        "activity_alert_triggered.json",
        "captured/zulip_issue_assigned_to_team_2020.json",
        "comment_created.json",
        "installation_created.json",
        "issue_assigned.json",
    }
    assert names - not_alerts == covered


def _edited(fixture: str, value: object, *path: str) -> bytes:
    data = load_fixture(fixture)
    node: Any = data
    for key in path[:-1]:
        node = node[key]
    node[path[-1]] = value
    return json.dumps(data).encode()


@pytest.mark.parametrize(
    ("resource", "body"),
    [
        # Odd shapes the typed fast path refuses; normalise is lenient or names the field.
        ("event_alert", _edited("event_alert.json", {"odd": 1}, "data", "event", "title")),
        ("event_alert", _edited("event_alert.json", None, "data", "event")),
        ("event_alert", _edited("event_alert.json", "updated", "action")),
        ("event_alert", _edited("event_alert.json", 7, "action")),
        ("event_alert", _edited("event_alert.json", [], "data")),
        ("issue", _edited("issue_created.json", None, "data", "issue", "id")),
        ("issue", _edited("issue_assigned.json", {"odd": True}, "data", "issue")),
        ("metric_alert", _edited("metric_alert_critical.json", 5, "data", "metric_alert")),
        ("metric_alert", _edited("metric_alert_critical.json", 99, "data", "web_url")),
        ("error", b'{"action": "created", "data": {"error": {"issue_id": NaN}}}'),
        ("error", b"[1, 2, 3]"),
        ("error", b"not json at all"),
        ("issue", b"\xff\xfe{}"),
    ],
    ids=lambda value: value if isinstance(value, str) else None,
)
def test_read_falls_back_to_the_same_outcome(resource: str, body: bytes) -> None:
    fast, slow = _both(hook(resource), body)
    assert fast == slow


@pytest.mark.parametrize("resource", ["event_alert", "error", "legacy"])
def test_a_lone_surrogate_is_not_json(resource: str) -> None:
    """Not text: it could be neither stored in a label nor sent to Alertmanager."""
    body = b'{"action": "created", "data": {"error": {"issue_id": "\\ud800"}}}'
    headers = HEADER_SETS[resource]
    with pytest.raises(BadPayload) as caught:
        sentry.read(headers, body, base_url=BASE)
    assert caught.value.reason == "invalid_json"


def test_read_carries_the_request_id() -> None:
    body = (FIXTURES / "event_alert.json").read_bytes()
    resource, result = sentry.read(hook("event_alert"), body, base_url=BASE, request_id="r-9")
    assert resource == "event_alert"
    assert isinstance(result, SentryAlert)
    assert result.request_id == "r-9"


@pytest.mark.parametrize(
    ("resource", "fixture"),
    [
        ("event_alert", "event_alert.json"),
        ("metric_alert", "metric_alert_critical.json"),
        ("issue", "issue_resolved.json"),
        ("activity_alert", "activity_alert_status_resolved.json"),
        ("error", "error_created.json"),
    ],
)
def test_integration_alerts_take_the_typed_path(
    resource: str, fixture: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The fast path is taken: with the general parser broken, valid alerts still read."""

    def broken(*args: object, **kwargs: object) -> object:
        raise AssertionError("the general parser was called")

    body = (FIXTURES / fixture).read_bytes()
    expected = sentry.read(hook(resource), body, base_url=BASE)
    monkeypatch.setattr(sentry, "loads", broken)
    assert sentry.read(hook(resource), body, base_url=BASE) == expected
    assert isinstance(expected[1], SentryAlert)


def test_lower_headers_reuses_a_lowered_dict() -> None:
    lowered = sentry.LowerHeaders({"sentry-hook-resource": "issue"})
    assert sentry.detect_resource(lowered, {}) == "issue"
    from bridge.sentry.wire import lower_headers

    assert lower_headers(lowered) is lowered
    assert lower_headers({"Sentry-Hook-Resource": "issue"}) == lowered

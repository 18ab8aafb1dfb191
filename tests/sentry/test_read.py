"""bridge.sentry.read: the raw body's fast path gives what normalise gives, always.

``read`` validates integration-platform bodies straight from the bytes; everything
else, and anything that does not validate there, goes through ``sentry.loads`` and
``normalise``. Each fixture is read under every kind of header set, as captured and
re-serialised, and edited into shapes the fast path refuses; the outcome (the alert,
the ignore reason, or the error) must be the one ``normalise`` gives.
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
FIXTURE_NAMES = sorted(
    [path.name for path in FIXTURES.glob("*.json")]
    + [f"captured/{path.name}" for path in (FIXTURES / "captured").glob("*.json")]
)


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


@pytest.mark.parametrize("headers_name", sorted(HEADER_SETS))
@pytest.mark.parametrize("fixture", FIXTURE_NAMES)
def test_read_matches_normalise_for_every_fixture_and_header_set(
    fixture: str, headers_name: str
) -> None:
    headers = HEADER_SETS[headers_name]
    captured = (FIXTURES / fixture).read_bytes()
    compact = json.dumps(json.loads(captured), separators=(",", ":")).encode()
    for body in (captured, compact):
        fast, slow = _both(headers, body)
        assert fast == slow


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

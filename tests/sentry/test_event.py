"""bridge/sentry/event.py: tags without PII, handled, fallbacks to tags, times in UTC."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

import pytest
from hypothesis import example, given
from hypothesis import strategies as st

from bridge.sentry.event import tags
from bridge.sentry.links import strip_query
from tests.sentry_payloads import LEGACY, alert, hook, load_fixture


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


_ODD = {"exception": ["a list"], "entries": {"not": "a list"}, "request": "a string"}


@pytest.mark.parametrize(
    ("changes", "handled", "url"),
    [
        pytest.param(_ODD, True, "https://tag.example/", id="odd-interfaces-are-unknown"),
        pytest.param(
            {
                "exception": {"values": {"not": "a list"}},
                "entries": [
                    "not an entry",
                    {"type": "exception", "data": ["not an object"]},
                    {"type": "exception", "data": {"values": [1, {"mechanism": "odd"}]}},
                    {"type": "exception", "data": {"values": [{"mechanism": {"handled": 1}}]}},
                    {"type": "request", "data": {"url": 42}},
                    {"type": "request", "data": {"url": "https://entry.example/p?q=1"}},
                ],
                "request": {"url": None, "headers": [["a", "b"]]},
            },
            True,
            "https://tag.example/",
            id="odd-values-skipped-first-list-wins",
        ),
        pytest.param(
            {
                "exception": None,
                "entries": [
                    {"type": "exception", "data": {"values": [{"mechanism": {"handled": False}}]}},
                    {"type": "request", "data": {"url": "https://entry.example/p?q=1"}},
                ],
                "request": None,
            },
            False,
            "https://entry.example/p",
            id="entries-read-when-top-is-absent",
        ),
    ],
)
def test_interfaces_of_an_odd_shape_are_unknown_not_errors(
    changes: dict[str, Any], handled: bool, url: str
) -> None:
    """The exception and request interfaces are typed down to what the bridge reads; any
    other shape reads as absent (a tag decides), as when they were untyped."""
    data = load_fixture("event_alert_python.json")
    event = data["data"]["event"]
    event.update(changes)
    event["tags"] = [["handled", "yes"], ["url", "https://tag.example/"]]
    result = alert(hook("event_alert"), data)
    assert (result.handled, result.url) == (handled, url)


def _tags_as_specified(raw: Any) -> tuple[tuple[str, str], ...]:
    """The rule ``event.tags`` keeps, written plainly: pairs or ``{"key", "value"}``
    objects; a text key (``sentry:`` dropped) not naming a person; a value that is neither
    missing nor an object or a list, as text; a ``url`` without its query."""
    kept = []
    for item in raw if isinstance(raw, list) else []:
        if isinstance(item, (list, tuple)) and len(item) == 2:
            key, value = item
        elif isinstance(item, dict):
            key, value = item.get("key"), item.get("value")
        else:
            continue
        if not isinstance(key, str) or value is None or isinstance(value, (dict, list)):
            continue
        key = key.removeprefix("sentry:")
        if key in {"user", "user.email", "user.ip", "user.username", "user.id", "ip", "email"}:
            continue
        kept.append((key, strip_query(str(value)) if key == "url" else str(value)))
    return tuple(kept)


_SCALARS = st.none() | st.booleans() | st.integers() | st.floats() | st.text(max_size=8)
_KEYS = st.sampled_from(["browser", "sentry:release", "url", "user.ip", "sentry:user", "level"])
_TAG = st.one_of(
    st.lists(_KEYS | _SCALARS, max_size=3),
    st.tuples(_KEYS, _SCALARS | st.lists(_SCALARS, max_size=1)),
    st.fixed_dictionaries({"key": _KEYS | _SCALARS}, optional={"value": _SCALARS}),
    _SCALARS,
)


@given(st.lists(_TAG, max_size=12) | _SCALARS)
@example([["url", "https://shop.example/a?email=x@example.com"], ["sentry:level", 3.5]])
def test_tags_keep_what_the_rule_says(raw: Any) -> None:
    assert tags(raw) == _tags_as_specified(raw)

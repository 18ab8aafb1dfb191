"""Out-of-range numbers in a body are unknown (None) or clamped, never an error: a 500 would
make Sentry retry a body that can never succeed, and a 400 would lose a real alert."""

from __future__ import annotations

import json
import re
from datetime import UTC, datetime, timedelta, timezone
from typing import Any

import pytest
from hypothesis import example, given, settings
from hypothesis import strategies as st

from bridge import sentry
from bridge.errors import BadPayload
from bridge.model import SentryAlert
from bridge.sentry import event
from bridge.sentry.metric import parse_metric_description
from bridge.sentry.wire import MAX_COUNT, bounded_count
from tests.conftest import examples
from tests.sentry_payloads import BASE, FIXTURES, hook, load_fixture


def _read_both(resource: str, raw: bytes) -> SentryAlert:
    """The typed fast path and the general path agree, and neither raises."""
    _, fast = sentry.read(hook(resource), raw, base_url=BASE)
    slow = sentry.normalise(hook(resource), sentry.loads(raw), base_url=BASE)
    assert fast == slow
    assert isinstance(fast, SentryAlert)
    # It must survive the store, which keeps it as JSON (both engines), too.
    assert SentryAlert.from_json(json.loads(json.dumps(fast.to_json(), allow_nan=False))) == fast
    return fast


def _body(fixture: str, values: dict[str, str], *path: str) -> bytes:
    """The fixture with raw JSON text as the values of ``path``'s keys (``1e400`` cannot be
    written through json.dumps)."""
    data = load_fixture(fixture)
    node = data
    for key in path:
        node = node[key]
    for key in values:
        node[key] = f"@@{key}@@"
    text = json.dumps(data)
    for key, raw in values.items():
        text = text.replace(f'"@@{key}@@"', raw)
    return text.encode()


@pytest.mark.parametrize(
    "value",
    [
        "1e300",
        "-1e300",
        "1e400",
        "-1e400",
        "1715678467412",
        "253402300800",
        "-62135596801",
        '"1e300"',
    ],
)
def test_event_timestamps_out_of_range_are_unknown(value: str) -> None:
    raw = _body("event_alert.json", {"timestamp": value, "datetime": "null"}, "data", "event")
    result = _read_both("event_alert", raw)
    assert result.started_at is None
    assert result.occurred_at is None


@pytest.mark.parametrize(
    "value",
    [
        '"9999-12-31T23:59:59-05:00"',
        '"0001-01-01T00:00:00+01:00"',
        '"1715678467412"',
        '"12345678901234567890123456789"',
        '"' + "9" * 5000 + '"',
        "1715678467412",
        "1e400",
    ],
)
def test_issue_first_seen_out_of_range_is_unknown(value: str) -> None:
    raw = _body("issue_created.json", {"firstSeen": value}, "data", "issue")
    assert _read_both("issue", raw).started_at is None


@pytest.mark.parametrize(
    ("count", "user_count", "events", "users"),
    [
        ('"1e400"', "1e400", None, None),
        ("1e400", "-1e400", None, None),
        ('"-5"', "-3", None, None),
        ('"NaN"', "1.5", None, 1),
        ('"' + "9" * 30 + '"', "1" + "0" * 30, MAX_COUNT, MAX_COUNT),
        ('"' + "9" * 5000 + '"', "[]", None, None),
        ('"327"', "41", 327, 41),
    ],
)
def test_issue_counts_out_of_range(
    count: str, user_count: str, events: int | None, users: int | None
) -> None:
    values = {"count": count, "userCount": user_count}
    result = _read_both("issue", _body("issue_resolved.json", values, "data", "issue"))
    assert (result.events, result.users) == (events, users)


@pytest.mark.parametrize(
    ("date", "expected"),
    [
        ('"2024-05-14T09:27:00Z"', datetime(2024, 5, 14, 9, 27, tzinfo=UTC)),
        ("1e300", None),
        ('"99999-01-01"', None),
    ],
)
def test_metric_incident_dates_out_of_range(date: str, expected: datetime | None) -> None:
    dates = {"date_started": date, "date_detected": date}
    raw = _body("metric_alert_critical.json", dates, "data", "metric_alert")
    result = _read_both("metric_alert", raw)
    assert result.started_at == expected == result.occurred_at


@pytest.mark.parametrize(
    ("text", "aggregate"),
    [
        ("1" * 400 + " events in the last 10 minutes", "count()"),
        ("1" * 400 + " users affected in the last hour", "count_unique(tags[sentry:user])"),
        ("1" * 400 + "% failure rate in the last hour", "failure_rate()"),
        ("1" * 400 + " in the last hour", "p95(transaction.duration)"),
    ],
)
def test_metric_values_out_of_range_are_unknown(text: str, aggregate: str) -> None:
    reading = parse_metric_description(text, aggregate)
    assert reading.value is None
    assert reading.users is None
    assert reading.events is None
    assert reading.error_rate is None
    assert reading.latency_ms is None


def test_metric_alert_with_an_infinite_value_goes_through() -> None:
    data = load_fixture("metric_alert_critical.json")
    data["data"]["description_text"] = "1" * 400 + " events in the last 10 minutes"
    result = _read_both("metric_alert", json.dumps(data).encode())
    assert result.metric_value is None
    assert result.events is None


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        (0, 0),
        (12, 12),
        ("12", 12),
        (12.0, 12),
        (-1, None),
        (float("inf"), None),
        (float("nan"), None),
        (True, None),
        (None, None),
        ("x", None),
        (10**30, MAX_COUNT),
        ("9" * 5000, None),
        ([1], None),
    ],
)
def test_bounded_count(value: Any, expected: int | None) -> None:
    assert bounded_count(value) == expected


@pytest.mark.parametrize(
    "value",
    [1e300, -1e300, float("inf"), float("nan"), 1715678467412, 253402300800, "x" * 100, "1e5"],
)
def test_timestamp_out_of_range(value: Any) -> None:
    assert event.timestamp(value) is None


def test_timestamp_in_range() -> None:
    assert event.timestamp(1715678467.412) == datetime.fromtimestamp(1715678467.412, tz=UTC)
    assert event.timestamp("2024-05-14T09:21:07Z") == datetime(2024, 5, 14, 9, 21, 7, tzinfo=UTC)


_EARLIEST, _LATEST = datetime(2000, 1, 1, tzinfo=UTC), datetime(2200, 1, 1, tzinfo=UTC)
_ZONES = st.integers(-14 * 60, 14 * 60).map(lambda m: timezone(timedelta(minutes=m)))


@given(
    st.one_of(
        st.floats(allow_nan=True, allow_infinity=True),
        st.integers(-(2**70), 2**70),
        st.builds(
            lambda when, zone: when.replace(tzinfo=zone).isoformat(),
            st.datetimes(min_value=datetime(1, 1, 2), max_value=datetime(9999, 12, 30)),
            st.none() | _ZONES,
        ),
        st.booleans(),
        st.text(max_size=70),
    )
)
@settings(max_examples=examples(4))
@example(float(_LATEST.timestamp()) - 1e-7)  # rounds up to the bound: out
@example(_EARLIEST.timestamp())
@example("2024-05-14T09:21:07+00:00")
@example("2024-05-14T11:21:07.5+02:00")
def test_timestamp_is_utc_in_range_or_unknown(value: Any) -> None:
    """What each shape means, said apart from how ``event.timestamp`` reads it: a number, or
    text of digits, is seconds since the epoch; other text is ISO 8601 (UTC when it names no
    zone); either only from 2000 to before 2200. Anything else (flags too) is unknown."""

    def seconds(number: float) -> datetime | None:
        try:
            return datetime.fromtimestamp(number, tz=UTC)
        except (ValueError, OverflowError, OSError):
            return None

    expected: datetime | None = None
    if isinstance(value, int | float) and not isinstance(value, bool):
        expected = seconds(value)
    elif isinstance(value, str) and re.match(r"^-?\d+(?:\.\d+)?$", value):
        expected = seconds(float(value))
    elif isinstance(value, str):
        try:
            parsed = datetime.fromisoformat(value)
            expected = (
                parsed.replace(tzinfo=UTC) if parsed.tzinfo is None else parsed.astimezone(UTC)
            )
        except (ValueError, OverflowError):
            expected = None
    if expected is not None and not _EARLIEST <= expected < _LATEST:
        expected = None
    found = event.timestamp(value)
    assert found == expected
    assert found is None or found.tzinfo is UTC


# --- any number anywhere ------------------------------------------------------------------

_RESOURCES = {
    "event_alert.json": "event_alert",
    "event_alert_uptime.json": "event_alert",
    "issue_resolved.json": "issue",
    "metric_alert_critical.json": "metric_alert",
    "activity_alert_status_escalating.json": "activity_alert",
    "captured/zulip_event_alert_python_2020.json": "event_alert",
}


def _leaves(node: Any, path: tuple[Any, ...] = ()) -> list[tuple[Any, ...]]:
    if isinstance(node, dict):
        return [leaf for key, value in node.items() for leaf in _leaves(value, (*path, key))]
    if isinstance(node, list):
        return [leaf for i, value in enumerate(node) for leaf in _leaves(value, (*path, i))]
    return [path]


_NUMBERS = st.one_of(
    st.sampled_from(
        ["1e400", "-1e400", "1e300", "-0", "1" + "0" * 400, "-" + "9" * 4300, "9" * 5000]
    ),
    st.integers(min_value=-(10**40), max_value=10**40).map(str),
    st.floats(allow_nan=False, allow_infinity=False).map(repr),
).map(lambda text: text if text not in ("inf", "-inf") else "1e400")


@given(data=st.data())
@settings(max_examples=examples(1.5))
def test_any_number_in_any_field_reads_the_same_on_both_paths(data: st.DataObject) -> None:
    """A number in place of any value of a real body: both paths give the same alert, the
    same ignore reason or the same BadPayload (400), and nothing else is ever raised."""
    fixture = data.draw(st.sampled_from(sorted(_RESOURCES)))
    body = (
        load_fixture(fixture)
        if "/" not in fixture
        else json.loads((FIXTURES / fixture).read_text(encoding="utf-8"))
    )
    paths = data.draw(st.lists(st.sampled_from(_leaves(body)), min_size=1, max_size=4))
    raws = [data.draw(_NUMBERS) for _ in paths]
    for n, path in enumerate(paths):
        node = body
        for key in path[:-1]:
            node = node[key]
        node[path[-1]] = f"@@{n}@@"
    text = json.dumps(body)
    for n, raw in enumerate(raws):
        text = text.replace(f'"@@{n}@@"', raw)
    headers = hook(_RESOURCES[fixture])

    def outcome(fn: Any) -> object:
        try:
            return fn()
        except BadPayload as exc:
            return ("error", exc.reason, exc.detail)

    fast = outcome(lambda: sentry.read(headers, text.encode(), base_url=BASE)[1])
    slow = outcome(lambda: sentry.normalise(headers, sentry.loads(text.encode()), base_url=BASE))
    assert fast == slow
    if isinstance(fast, SentryAlert):
        stored = json.loads(json.dumps(fast.to_json(), allow_nan=False))
        assert SentryAlert.from_json(stored) == fast

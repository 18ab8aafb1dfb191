"""bridge/logs.py: one JSON object per line."""

from __future__ import annotations

import enum
import json
import logging
import sys
from datetime import UTC, datetime

import pytest

from bridge.logs import _OPERATOR_FIELDS, JSONFormatter, _scrubbed


def record(created: float, **extra: object) -> logging.LogRecord:
    rec = logging.makeLogRecord({"name": "bridge.test", "levelno": logging.INFO})
    rec.levelname = "INFO"
    rec.msg, rec.args = "webhook %s", ("forwarded",)
    rec.created = created
    rec.__dict__.update(extra)
    return rec


@pytest.mark.parametrize("created", [0.0, 1_764_400_000.0, 1_764_400_000.25, 1_764_400_059.999])
def test_timestamp_is_utc_iso8601_to_the_millisecond(created: float) -> None:
    formatter = JSONFormatter()
    line = json.loads(formatter.format(record(created)))
    assert line["ts"] == datetime.fromtimestamp(created, UTC).isoformat(timespec="milliseconds")


def test_the_second_is_cached_but_follows_the_clock() -> None:
    formatter = JSONFormatter()
    stamps = [json.loads(formatter.format(record(t)))["ts"] for t in (10.5, 10.75, 11.0, 10.5)]
    assert stamps == [
        "1970-01-01T00:00:10.500+00:00",
        "1970-01-01T00:00:10.750+00:00",
        "1970-01-01T00:00:11.000+00:00",
        "1970-01-01T00:00:10.500+00:00",
    ]


def test_extras_become_keys_none_is_left_out_and_odd_values_become_text() -> None:
    line = json.loads(
        JSONFormatter().format(record(1.0, request_id="r-1", rule=None, at=datetime(2024, 1, 1)))
    )
    assert line["msg"] == "webhook forwarded"
    assert line["level"] == "info"
    assert line["logger"] == "bridge.test"
    assert line["request_id"] == "r-1"
    assert "rule" not in line
    assert line["at"] == "2024-01-01 00:00:00"
    assert "args" not in line  # LogRecord's own attributes are not extras
    assert "created" not in line


class _Outcome(enum.StrEnum):
    FORWARDED = "forwarded"


class _Count(enum.IntEnum):
    ONE = 1


def test_every_kind_of_field_is_written_as_the_generic_scrub_writes_it_in_call_order() -> None:
    # The formatter's inline cases (short text, numbers, flags) agree with ``_scrubbed``,
    # which every other value goes through, and the fields keep the order they came in.
    values: dict[str, object] = {
        "plain": "backend",
        "pii": "mail jane@example.com from 10.1.2.3",
        "alertmanager": "http://user:pw@am:9093",  # the operator's: credentials only
        "long": "x@example.com " * 40,
        "count": 3,
        "ratio": 0.5,
        "flag": True,
        "outcome": _Outcome.FORWARDED,
        "size": _Count.ONE,
        "items": ["a@example.com", 2],
        "mapping": {"k": "10.0.0.1"},
        "at": datetime(2024, 1, 1),
    }
    line = json.loads(JSONFormatter().format(record(1.0, **values)))
    expected = {k: _scrubbed(v, k in _OPERATOR_FIELDS) for k, v in values.items()}
    assert [k for k in line if k in values] == list(values)
    assert line == {**line, **json.loads(json.dumps(expected, default=str))}
    assert "jane@example.com" not in json.dumps(line)
    assert line["alertmanager"] == "http://[secret]@am:9093"


def test_exceptions_are_included() -> None:
    try:
        raise ValueError("boom")
    except ValueError:
        rec = record(1.0)
        rec.exc_info = sys.exc_info()
    line = json.loads(JSONFormatter().format(rec))
    assert "ValueError: boom" in line["exc"]

"""bridge/logs.py: ``log_format: text``, and uvicorn's lines in the same form (its
``color_message`` with ANSI codes dropped)."""

from __future__ import annotations

import json
import logging
import sys
from collections.abc import Iterator

import pytest

from bridge import logs


def record(**extra: object) -> logging.LogRecord:
    rec = logging.makeLogRecord({"name": "uvicorn.error", "levelno": logging.INFO})
    rec.levelname = "INFO"
    rec.msg, rec.args = "Started server process [%d]", (42,)
    rec.created = 1_764_400_000.25
    rec.__dict__.update(extra)
    return rec


COLOR = {"color_message": "Started server process [\x1b[36m%d\x1b[0m]"}


def test_json_drops_uvicorns_color_message() -> None:
    line = json.loads(logs.JSONFormatter().format(record(**COLOR)))
    assert line["msg"] == "Started server process [42]"
    assert "color_message" not in line


def test_text_is_one_key_value_line_with_the_same_fields() -> None:
    text = logs.TextFormatter().format(
        record(**COLOR, request_id="r-1", rule=None, identities=["issue:1"], reason="a b")
    )
    assert text == (
        "2025-11-29T07:06:40.250+00:00 info uvicorn.error: Started server process [42] "
        'request_id=r-1 identities=["issue:1"] reason="a b"'
    )
    assert "\x1b" not in text


def test_text_includes_the_exception() -> None:
    try:
        raise ValueError("boom")
    except ValueError:
        text = logs.TextFormatter().format(record(exc_info=sys.exc_info()))
    assert text.splitlines()[-1] == "ValueError: boom"


@pytest.fixture
def restore_root() -> Iterator[None]:
    root = logging.getLogger()
    handlers, level = root.handlers[:], root.level
    yield
    root.handlers[:] = handlers
    root.setLevel(level)


@pytest.mark.usefixtures("restore_root")
@pytest.mark.parametrize(
    ("log_format", "formatter"), [("json", logs.JSONFormatter), ("text", logs.TextFormatter)]
)
def test_setup_picks_the_format(
    log_format: logs.Format, formatter: type[logging.Formatter]
) -> None:
    logs.setup("warning", log_format)
    [handler] = logging.getLogger().handlers
    assert type(handler.formatter) is formatter
    assert logging.getLogger().level == logging.WARNING

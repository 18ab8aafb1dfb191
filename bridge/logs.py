"""One JSON object per log line, so a log pipeline can index request ids and outcomes.

Fields passed with ``extra={...}`` become top-level keys; ``None`` values are
left out. Callers pass no secrets and no payloads: that is policed where the
line is written, not here.
"""

from __future__ import annotations

import json
import logging
import sys
from datetime import UTC, datetime
from typing import Any, Literal

# Attributes every LogRecord has; anything else came from `extra`. Uvicorn's
# ``color_message`` is its message again with ANSI colour codes: not for a log pipeline.
_STANDARD = frozenset(vars(logging.makeLogRecord({}))) | {
    "message",
    "asctime",
    "taskName",
    "color_message",
}


# One encoder for every line (json.dumps with ``default`` builds a new one per call).
_encode = json.JSONEncoder(default=str).encode


class JSONFormatter(logging.Formatter):
    def __init__(self) -> None:
        super().__init__()
        self._second = -1
        self._prefix = ""

    def _timestamp(self, created: float) -> str:
        # The part up to the second changes once a second; only milliseconds per line.
        second = int(created)
        if second != self._second:
            self._second = second
            self._prefix = datetime.fromtimestamp(second, UTC).strftime("%Y-%m-%dT%H:%M:%S")
        return f"{self._prefix}.{int((created - second) * 1000):03d}+00:00"

    def format(self, record: logging.LogRecord) -> str:
        line: dict[str, Any] = {
            "ts": self._timestamp(record.created),
            "level": record.levelname.lower(),
            "logger": record.name,
            "msg": record.getMessage(),
        }
        for key, value in record.__dict__.items():
            if value is not None and key not in _STANDARD:
                line[key] = value
        if record.exc_info:
            line["exc"] = self.formatException(record.exc_info)
        return _encode(line)


class TextFormatter(JSONFormatter):
    """``ts level logger: msg key=value ...`` for a terminal; the same fields as JSON."""

    def format(self, record: logging.LogRecord) -> str:
        parts = [
            self._timestamp(record.created),
            record.levelname.lower(),
            f"{record.name}: {record.getMessage()}",
        ]
        for key, value in record.__dict__.items():
            if value is not None and key not in _STANDARD:
                text = value if isinstance(value, str) and " " not in value else _encode(value)
                parts.append(f"{key}={text}")
        if record.exc_info:
            parts.append("\n" + self.formatException(record.exc_info))
        return " ".join(parts)


Format = Literal["json", "text"]


def setup(level: str = "info", log_format: Format = "json") -> None:
    # The lines carry neither source location nor thread/process: skip collecting them
    # (the logging HOWTO's "Optimization"; findCaller walks the stack on every line).
    logging._srcfile = None
    logging.logThreads = False
    logging.logProcesses = False
    logging.logMultiprocessing = False
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(TextFormatter() if log_format == "text" else JSONFormatter())
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(level.upper())
    # Uvicorn's access log would add a second, unstructured line per webhook.
    logging.getLogger("uvicorn.access").disabled = True
    logging.getLogger("httpx").setLevel(logging.WARNING)

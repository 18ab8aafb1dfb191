"""One JSON object per log line, so a log pipeline can index request ids and outcomes.

Fields passed with ``extra={...}`` become top-level keys; ``None`` values are
left out. Callers pass no secrets and no payloads, and every line is scrubbed here as
well, with the scrubber labels and annotations use (``bridge.scrub``): project and
environment names, Alertmanager's and Sentry's error text and exception tracebacks are
text from outside that may quote an email, a client's address or a credential. Fields
that name the operator's own infrastructure (``_OPERATOR_FIELDS``) lose credentials only:
an Alertmanager's address there is what the operator needs to read.
"""

from __future__ import annotations

import functools
import json
import logging
import sys
from datetime import UTC, datetime
from typing import Any, Literal

from bridge.scrub import redact, scrub, scrub_lines

# Attributes every LogRecord has; anything else came from `extra`. Uvicorn's
# ``color_message`` is its message again with ANSI colour codes: not for a log pipeline.
_STANDARD = frozenset(vars(logging.makeLogRecord({}))) | {
    "message",
    "asctime",
    "taskName",
    "color_message",
}


# Extras that hold the operator's own text (its Alertmanagers' host:port, paths, the store).
_OPERATOR_FIELDS = frozenset({"alertmanager", "alertmanagers", "config", "data_dir", "backend"})


# Most fields repeat from line to line (outcomes, projects, environments, identities):
# short values are scrubbed once.
_CACHED_LENGTH = 256
_scrub_cached = functools.lru_cache(maxsize=4096)(scrub)
_redact_cached = functools.lru_cache(maxsize=256)(redact)


def _scrubbed(value: Any, keep_addresses: bool) -> Any:
    """A field's value scrubbed: text, and the text in lists and mappings; numbers, flags
    and times as they are."""
    if isinstance(value, str):
        if len(value) <= _CACHED_LENGTH:
            return _redact_cached(value) if keep_addresses else _scrub_cached(value)
        return redact(value) if keep_addresses else scrub(value)
    if isinstance(value, _AS_THEY_ARE):
        return value
    if isinstance(value, _SEQUENCES):
        return [_scrubbed(v, keep_addresses) for v in value]
    if isinstance(value, dict):
        return {str(k): _scrubbed(v, keep_addresses) for k, v in value.items()}
    return _scrubbed(str(value), keep_addresses)


_AS_THEY_ARE = (int, float, datetime)  # bool is an int
_SEQUENCES = (list, tuple, set, frozenset)


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

    def _message(self, record: logging.LogRecord) -> str:
        message = record.getMessage()
        if record.name.startswith("uvicorn"):
            # The server's own lifecycle lines ("Uvicorn running on http://0.0.0.0:8080"):
            # client addresses reach uvicorn's loggers only in access lines (disabled).
            return redact(message)
        if len(message) <= _CACHED_LENGTH and "\n" not in message:
            return _scrub_cached(message)
        return scrub_lines(message)

    def _fields(self, record: logging.LogRecord) -> dict[str, Any]:
        """The ``extra`` fields, scrubbed, ``None`` left out. One loop with the common cases
        inline (short text, numbers, flags): a webhook's line has a dozen fields, and a
        call per field was most of the line's cost (issue 15's profile)."""
        fields: dict[str, Any] = {}
        for key, value in record.__dict__.items():
            if value is None or key in _STANDARD:
                continue
            kind = type(value)
            if kind is str and len(value) <= _CACHED_LENGTH:
                cached = _redact_cached if key in _OPERATOR_FIELDS else _scrub_cached
                fields[key] = cached(value)
            elif kind is int or kind is bool or kind is float:
                fields[key] = value
            else:
                fields[key] = _scrubbed(value, key in _OPERATOR_FIELDS)
        return fields

    def _exception(self, record: logging.LogRecord) -> str | None:
        # A traceback quotes exception messages: a payload's text, a URL with its token.
        return scrub_lines(self.formatException(record.exc_info)) if record.exc_info else None

    def format(self, record: logging.LogRecord) -> str:
        line: dict[str, Any] = {
            "ts": self._timestamp(record.created),
            "level": record.levelname.lower(),
            "logger": record.name,
            "msg": self._message(record),
        }
        line.update(self._fields(record))
        exc = self._exception(record)
        if exc is not None:
            line["exc"] = exc
        return _encode(line)


class TextFormatter(JSONFormatter):
    """``ts level logger: msg key=value ...`` for a terminal; the same fields as JSON."""

    def format(self, record: logging.LogRecord) -> str:
        parts = [
            self._timestamp(record.created),
            record.levelname.lower(),
            f"{record.name}: {self._message(record)}",
        ]
        for key, value in self._fields(record).items():
            text = value if isinstance(value, str) and " " not in value else _encode(value)
            parts.append(f"{key}={text}")
        exc = self._exception(record)
        if exc is not None:
            parts.append("\n" + exc)
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

"""Values as PostgreSQL can hold them: ``text`` and ``jsonb`` refuse NUL.

PostgreSQL text cannot contain the character NUL, and ``jsonb`` refuses the escape
``\\u0000`` (PostgreSQL docs, "JSON Types": "the jsonb type also rejects \\u0000, because that
cannot be represented in PostgreSQL's text type"). A Sentry title or tag can carry one, and
an alert with it must neither fail its batch nor be lost:

- JSON kept as ``text`` (the inbox, the queue) needs nothing: ``json.dumps`` writes NUL as
  the six characters ``\\u0000``, and reading it back restores it exactly.
- JSON kept as ``jsonb`` (the identity states) is escaped reversibly with a private-use
  character: NUL becomes U+E000 U+E001 and U+E000 itself U+E000 U+E000, so equal values
  stay equal in SQL (``state->'alert' = $1::jsonb``) and decode to what was written.
- a plain string (an identity, a reason) gets the same escape.

Only strings holding NUL or U+E000 are touched: the check is one ``in`` on the JSON text.
"""

from __future__ import annotations

import json
from typing import Any

_MARK = "\ue000"
_NUL_ESCAPE = "\\u0000"  # how json.dumps writes NUL
_MARK_ESCAPE = "\\ue000"  # and the mark (ASCII-only output): jsonb::text gives it back raw


def text(value: str) -> str:
    """A string PostgreSQL text can hold, decoded by :func:`untext`."""
    if "\x00" not in value and _MARK not in value:
        return value
    return value.replace(_MARK, _MARK + _MARK).replace("\x00", _MARK + "\ue001")


def untext(value: str) -> str:
    if _MARK not in value:
        return value
    out: list[str] = []
    chars = iter(value)
    for char in chars:
        if char == _MARK:
            char = "\x00" if next(chars, _MARK) == "\ue001" else _MARK
        out.append(char)
    return "".join(out)


def dumps(value: Any) -> str:
    """JSON text, compact, for a ``text`` column (NUL stays escaped as ``\\u0000``)."""
    return json.dumps(value, separators=(",", ":"))


def to_jsonb(value: Any) -> str:
    """JSON text a ``jsonb`` parameter accepts."""
    encoded = dumps(value)
    if _NUL_ESCAPE not in encoded and _MARK_ESCAPE not in encoded:
        return encoded
    return dumps(_walk(value, text))


def from_jsonb(encoded: str) -> Any:
    """What :func:`to_jsonb` was given."""
    value = json.loads(encoded)
    return _walk(value, untext) if _MARK in encoded else value


def wire_from_jsonb(encoded: str) -> str:
    """A jsonb alert read back as text, as wire JSON to post."""
    return dumps(from_jsonb(encoded)) if _MARK in encoded else encoded


def _walk(value: Any, fix: Any) -> Any:
    if isinstance(value, str):
        return fix(value)
    if isinstance(value, dict):
        return {fix(k): _walk(v, fix) for k, v in value.items()}
    if isinstance(value, list):
        return [_walk(v, fix) for v in value]
    return value

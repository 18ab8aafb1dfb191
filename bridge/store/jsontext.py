"""Compact JSON text of the plain values the stores keep (an alert's or a state's
``to_json``: dicts, lists, tuples, text, numbers, enums, None).

pydantic-core's serialiser writes it at about a third of the cost of ``json.dumps``
(issue 15's profile: encoding the state and the inbox alert was some 4 % of a webhook's
CPU on SQLite). It reads back the same with any JSON parser; the text differs from
``json.dumps``'s only in writing non-ASCII as UTF-8 rather than ``\\u`` escapes (as
the wire JSON of a post already is). Text it cannot write as UTF-8 (a lone surrogate,
which the edge never lets in) goes through ``json.dumps`` and its escapes instead.
"""

from __future__ import annotations

import json
from typing import Any

import pydantic_core


def dumps(value: Any) -> str:
    """``value`` as compact JSON text (``json.dumps(value, separators=(",", ":"))``)."""
    try:
        return pydantic_core.to_json(value).decode()
    except pydantic_core.PydanticSerializationError:
        return json.dumps(value, separators=(",", ":"))

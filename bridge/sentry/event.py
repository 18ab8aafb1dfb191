"""Facts read out of a Sentry event, in whichever of its three shapes it arrives.

``Event.as_dict()`` (integration platform), raw event data (legacy plugin) and the camelCase
``EventSerializer`` output (service hooks) keep the same facts in different places: tags as
pairs or as objects, the exception and request at the top or under ``entries``. Each function
here looks in every place and prefers the event's own field to its tag. No PII comes out.
"""

from __future__ import annotations

import math
import re
from collections.abc import Mapping
from datetime import UTC, datetime
from typing import Any

from bridge.sentry.links import strip_query
from bridge.sentry.wire import WireEvent, WireExceptionValue, WireInterface

# Tags naming a person; never carried into alerts (as_dict strips "sentry:" from keys, the
# legacy plugin does not, so keys are compared without it).
_PII_TAGS = frozenset(("user", "user.email", "user.ip", "user.username", "user.id", "ip", "email"))
_NUMBER = re.compile(r"^-?\d+(?:\.\d+)?$")


def tags(raw: Any) -> tuple[tuple[str, str], ...]:
    """Sentry sends ``[[key, value], ...]`` (event data) or ``[{"key", "value"}, ...]``
    (serialized events)."""
    pairs: list[tuple[str, str]] = []
    for item in raw if isinstance(raw, list) else ():
        # Exact types first: a parsed body holds only lists, dicts and scalars, and each
        # tag is a few checks (a union in isinstance builds the union on every call; an
        # event has a dozen tags or more: issue 15's profile).
        if type(item) is list or isinstance(item, _PAIR):
            if len(item) != 2:
                continue
            key, value = item
        elif isinstance(item, dict):
            key, value = item.get("key"), item.get("value")
        else:
            continue
        if type(value) is str:
            text = value
        elif value is None or isinstance(value, _NOT_TAG_VALUE):
            continue
        else:
            text = str(value)
        if not isinstance(key, str):
            continue
        key = key.removeprefix("sentry:")
        if key in _PII_TAGS:
            continue
        pairs.append((key, strip_query(text) if key == "url" else text))
    return tuple(pairs)


_PAIR = (list, tuple)
_NOT_TAG_VALUE = (dict, list)


def _interfaces(ev: WireEvent, name: str) -> list[WireInterface]:
    """An interface (``exception``, ``request``) at the top of the event, then the ``data`` of
    the serialized event's ``entries`` of that type (a shape other than an object is unknown:
    ``bridge.sentry.wire``)."""
    found = [ev.exception if name == "exception" else ev.request]
    for entry in ev.entries or ():
        if entry is not None and entry.type == name:
            found.append(entry.data)
    return [item for item in found if item is not None]


def _exception_values(ev: WireEvent) -> list[WireExceptionValue | None]:
    for exception in _interfaces(ev, "exception"):
        if exception.values is not None:
            return exception.values
    return []


def handled(ev: WireEvent, tag_map: Mapping[str, str]) -> bool | None:
    flags = [
        value.mechanism.handled
        for value in _exception_values(ev)
        if value is not None and value.mechanism is not None and value.mechanism.handled is not None
    ]
    if flags:
        return all(flags)  # one unhandled exception in the chain makes the event unhandled
    return {"yes": True, "no": False}.get(tag_map.get("handled", ""))


def request_url(ev: WireEvent, tag_map: Mapping[str, str]) -> str | None:
    urls = (request.url for request in _interfaces(ev, "request"))
    url = next((u for u in urls if u is not None), None)
    if isinstance(url, str) and url:
        return strip_query(url)
    return tag_map.get("url")  # already stripped


def release(ev: WireEvent, tag_map: Mapping[str, str]) -> str | None:
    if isinstance(ev.release, str) and ev.release:
        return ev.release
    if isinstance(ev.release, dict) and isinstance(ev.release.get("version"), str):
        return str(ev.release["version"])
    return tag_map.get("release")


# Times outside these years are unknown: a Sentry event happens in neither, and later stages
# add and subtract durations from these times without overflowing datetime's year 1..9999.
_EARLIEST = datetime(2000, 1, 1, tzinfo=UTC)
_LATEST = datetime(2200, 1, 1, tzinfo=UTC)


def _plausible(when: datetime) -> datetime | None:
    return when if _EARLIEST <= when < _LATEST else None


_LATEST_SECONDS = _LATEST.timestamp()
_NUMBERS = (int, float)


def timestamp(value: Any) -> datetime | None:
    """ISO 8601 strings or Unix timestamps (seconds), always timezone-aware UTC; None when
    out of range (``1e300``, a millisecond epoch, year 9999) or not a time at all. (Exact
    types first, the bound computed once: two or three calls per webhook; issue 15.)"""
    kind = type(value)
    if kind is float or kind is int or (kind is not bool and isinstance(value, _NUMBERS)):
        if not math.isfinite(value) or abs(value) > _LATEST_SECONDS:
            return None
        return _plausible(datetime.fromtimestamp(value, tz=UTC))
    if not isinstance(value, str) or not value or len(value) > 64:
        return None
    if _NUMBER.match(value):
        return timestamp(float(value))
    try:
        parsed = datetime.fromisoformat(value)
        if parsed.tzinfo is None:
            parsed = parsed.replace(tzinfo=UTC)
        elif parsed.tzinfo is not UTC:  # "Z" and "+00:00" parse to UTC itself
            parsed = parsed.astimezone(UTC)
    except (ValueError, OverflowError):  # "0001-01-01T00:00:00+01:00" is before year 1 in UTC
        return None
    return _plausible(parsed)


def metadata_title(metadata: Any) -> str | None:
    """The title Sentry shows for an issue or event, from its ``metadata``."""
    if isinstance(metadata, dict):
        kind, value = metadata.get("type"), metadata.get("value")
        if isinstance(kind, str) and isinstance(value, str):
            return f"{kind}: {value}"
        if isinstance(metadata.get("title"), str):
            return str(metadata["title"])
    return None

"""Sentry payloads for the tests: the captured fixtures, edited copies, and the
checks the tests/test_sentry*.py modules share."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from starlette.datastructures import Headers

from bridge import sentry
from bridge.model import SentryAlert

FIXTURES = Path(__file__).parent / "fixtures" / "sentry"
CAPTURED = FIXTURES / "captured"  # bodies of real Sentry deliveries (SOURCES.md)
BASE = "https://sentry.io"


# Everything Sentry 5/6's WebHooks plugin sent (getsentry/sentry-webhooks README): no event.
SENTRY_6_PLUGIN: dict[str, Any] = {
    "id": "134343",
    "project": "web-frontend",
    "message": "This is an example",
    "culprit": "foo.bar.baz",
    "logger": "root",
    "level": "error",
}


def load_fixture(name: str) -> dict[str, Any]:
    data = json.loads((FIXTURES / name).read_text(encoding="utf-8"))
    assert isinstance(data, dict)
    return data


def _edit(fixture: str, path: tuple[str, ...]) -> tuple[dict[str, Any], dict[str, Any]]:
    data = load_fixture(fixture)
    node = data
    for key in path[:-1]:
        node = node[key]
    return data, node


def without(fixture: str, *path: str) -> dict[str, Any]:
    """The fixture with the value at ``path`` removed."""
    data, node = _edit(fixture, path)
    del node[path[-1]]
    return data


def patched(fixture: str, value: Any, *path: str) -> dict[str, Any]:
    """The fixture with the value at ``path`` replaced."""
    data, node = _edit(fixture, path)
    node[path[-1]] = value
    return data


def hook(resource: str) -> Headers:
    return Headers({"Sentry-Hook-Resource": resource, "Request-ID": "0f9e8d7c"})


SERVICE_HOOK = Headers({"X-ServiceHook-GUID": "a1b2c3", "X-ServiceHook-Timestamp": "1715684566"})
LEGACY = Headers({"User-Agent": "sentry-webhooks/24.5.0"})


def alert(headers: Headers, data: object, base_url: str = BASE) -> SentryAlert:
    result = sentry.normalise(headers, data, base_url=base_url)
    assert isinstance(result, SentryAlert), result
    return result


def assert_normalised(fixture: str, headers: Headers, expected: dict[str, Any]) -> None:
    result = alert(headers, load_fixture(fixture))
    got = {name: getattr(result, name) for name in expected}
    assert got == expected
    assert result.started_at is None or result.started_at.tzinfo is not None


def assert_no_pii(result: SentryAlert) -> None:
    """The fixtures carry these on purpose (tests/fixtures/sentry/SOURCES.md)."""
    text = json.dumps(result.to_json())
    for secret in ("jane.doe@example.com", "jdoe", "203.0.113.7", "198.51.100.23", "SPRING24"):
        assert secret not in text

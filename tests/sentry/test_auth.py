"""bridge/sentry_auth.py: the integration, service hook and legacy token checks."""

from __future__ import annotations

import hashlib
import hmac
import json
from typing import Any

import pytest
from starlette.datastructures import Headers

from bridge import config
from bridge.errors import REJECT_REASONS, Unauthorized
from bridge.sentry.auth import authenticate
from tests.sentry_payloads import load_fixture


def sign(body: bytes, secret: str) -> str:
    return hmac.new(secret.encode(), body, hashlib.sha256).hexdigest()


def cfg(**sentry_cfg: Any) -> config.Sentry:
    return config.parse({"sentry": sentry_cfg}, env={}).sentry


BODY = json.dumps(load_fixture("event_alert.json")).encode()


@pytest.mark.parametrize(
    ("headers", "token", "settings", "expected"),
    [
        pytest.param(
            {"Sentry-Hook-Signature": sign(BODY, "s1")},
            None,
            {"client_secrets": ["s1", "s2"]},
            "integration",
            id="integration",
        ),
        pytest.param(
            {"sentry-hook-signature": sign(BODY, "s2").upper()},
            None,
            {"client_secrets": "s1,s2"},
            "integration",
            id="rotated-second-secret",
        ),
        pytest.param(
            {"X-ServiceHook-Signature": sign(BODY, "hook"), "X-ServiceHook-GUID": "a1"},
            None,
            {"service_hook_secrets": ["hook"]},
            "service_hook",
            id="service-hook",
        ),
        pytest.param({}, "t0ken", {"legacy_token": "t0ken"}, "legacy_token", id="legacy-token"),
        pytest.param({}, None, {"allow_unauthenticated": True}, "none", id="unauthenticated"),
        pytest.param(
            {"Sentry-Hook-Signature": "00"},
            None,
            {"allow_unauthenticated": True},
            "none",
            id="unverifiable-but-allowed",
        ),
    ],
)
def test_authenticate_accepts(
    headers: dict[str, str], token: str | None, settings: dict[str, Any], expected: str
) -> None:
    assert authenticate(Headers(headers), BODY, token, cfg(**settings)) == expected


@pytest.mark.parametrize(
    ("headers", "body", "token", "settings", "reason"),
    [
        pytest.param(
            {"Sentry-Hook-Signature": sign(BODY, "other")},
            BODY,
            None,
            {"client_secrets": ["s1", "s2"]},
            "bad_signature",
            id="wrong-secret",
        ),
        pytest.param(
            {"Sentry-Hook-Signature": sign(BODY, "s1")},
            BODY + b" ",
            None,
            {"client_secrets": ["s1"]},
            "bad_signature",
            id="body-changed",
        ),
        pytest.param(
            {"Sentry-Hook-Signature": "ü-not-hex"},
            BODY,
            None,
            {"client_secrets": ["s1"]},
            "bad_signature",
            id="garbage-signature",
        ),
        pytest.param(
            {"X-ServiceHook-Signature": sign(BODY, "s1")},
            BODY,
            None,
            {"service_hook_secrets": ["hook"], "client_secrets": ["s1"]},
            "bad_signature",
            id="service-hook-signed-with-client-secret",
        ),
        pytest.param(
            {"Sentry-Hook-Signature": sign(BODY, "hook")},
            BODY,
            None,
            {"service_hook_secrets": ["hook"]},
            "bad_signature",
            id="no-client-secret-configured",
        ),
        pytest.param({}, BODY, None, {"client_secrets": ["s1"]}, "missing_signature", id="missing"),
        pytest.param({}, BODY, "nope", {"legacy_token": "t0ken"}, "bad_token", id="bad-token"),
        pytest.param({}, BODY, "t0ken", {"client_secrets": ["s1"]}, "bad_token", id="no-token-set"),
    ],
)
def test_authenticate_rejects(
    headers: dict[str, str], body: bytes, token: str | None, settings: dict[str, Any], reason: str
) -> None:
    with pytest.raises(Unauthorized) as info:
        authenticate(Headers(headers), body, token, cfg(**settings))
    assert info.value.reason == reason
    assert reason in REJECT_REASONS
    assert info.value.status_code == 401
    for secret in ("s1", "s2", "hook", "t0ken", "nope"):
        assert secret not in info.value.detail.split()
    for value in headers.values():
        assert value not in info.value.detail


def test_service_hook_signature_ignores_timestamp() -> None:
    """Sentry signs the body alone (ServiceHook.build_signature), not the timestamp."""
    headers = {"X-ServiceHook-Signature": sign(BODY, "hook"), "X-ServiceHook-Timestamp": "1"}
    settings = cfg(service_hook_secrets=["hook"])
    assert authenticate(headers, BODY, None, settings) == "service_hook"
    stamped = {**headers, "X-ServiceHook-Signature": sign(b"1" + BODY, "hook")}
    with pytest.raises(Unauthorized):
        authenticate(stamped, BODY, None, settings)

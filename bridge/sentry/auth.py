"""Who sent a webhook: Sentry's signatures, or the legacy plugin's URL token.

* Integration platform: ``Sentry-Hook-Signature`` is the hex HMAC-SHA256 of the raw body keyed
  with the client secret; ``Sentry-Hook-Timestamp`` is not signed
  (getsentry/sentry sentry_apps/api/serializers/app_platform_event.py).
* Project service hooks: ``X-ServiceHook-Signature``, the same scheme keyed with the hook's
  secret, over the body only (sentry_apps/models/servicehook.py ``build_signature``).
* The legacy WebHooks plugin cannot sign, so the bridge wants ``?token=`` in its URL.
"""

from __future__ import annotations

import hmac
from collections.abc import Iterable, Mapping

from bridge.config import Sentry
from bridge.errors import Unauthorized
from bridge.sentry.wire import lower_headers


def _hmac_matches(body: bytes, signature: str, secrets: Iterable[str]) -> bool:
    given = signature.strip().lower().encode("utf-8", "replace")
    # Every secret is tried so a rotated-in secret works alongside the old one.
    # hmac.digest is the one-shot C path (no HMAC object per webhook).
    matches = [
        hmac.compare_digest(
            hmac.digest(secret.encode("utf-8"), body, "sha256").hex().encode(), given
        )
        for secret in secrets
    ]
    return any(matches)


def authenticate(headers: Mapping[str, str], body: bytes, token: str | None, cfg: Sentry) -> str:
    """Check the webhook's credentials; return the method that vouched for it:
    ``integration``, ``service_hook``, ``legacy_token`` or ``none``."""
    h = lower_headers(headers)
    hook_sig = h.get("sentry-hook-signature")
    service_sig = h.get("x-servicehook-signature")
    if hook_sig is not None and cfg.client_secrets:
        if _hmac_matches(body, hook_sig, (s.get_secret_value() for s in cfg.client_secrets)):
            return "integration"
        raise Unauthorized("bad_signature", "Sentry-Hook-Signature does not match")
    if service_sig is not None and cfg.service_hook_secrets:
        secrets = (s.get_secret_value() for s in cfg.service_hook_secrets)
        if _hmac_matches(body, service_sig, secrets):
            return "service_hook"
        raise Unauthorized("bad_signature", "X-ServiceHook-Signature does not match")
    if token is not None and cfg.legacy_token is not None:
        expected = cfg.legacy_token.get_secret_value().encode("utf-8")
        if hmac.compare_digest(token.encode("utf-8", "replace"), expected):
            return "legacy_token"
        raise Unauthorized("bad_token", "the token query parameter does not match")
    if cfg.allow_unauthenticated:
        return "none"
    if hook_sig is not None or service_sig is not None:
        raise Unauthorized("bad_signature", "signed, but no secret is configured for that scheme")
    if token is not None:
        raise Unauthorized("bad_token", "a token was given but sentry.legacy_token is not set")
    raise Unauthorized("missing_signature", "no signature or token")

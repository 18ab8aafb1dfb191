"""Who sent a webhook: Sentry's signatures, or the legacy plugin's URL token.

* Integration platform: ``Sentry-Hook-Signature`` is the hex HMAC-SHA256 of the raw body keyed
  with the client secret; ``Sentry-Hook-Timestamp`` is not signed
  (getsentry/sentry sentry_apps/api/serializers/app_platform_event.py).
* Project service hooks: ``X-ServiceHook-Signature``, the same scheme keyed with the hook's
  secret, over the body only (sentry_apps/models/servicehook.py ``build_signature``).
* The legacy WebHooks plugin cannot sign, so the bridge wants ``?token=`` in its URL.

Each credential vouches for its own family only, told by the headers Sentry sends with it
(``Sentry-Hook-*``: integration; ``X-ServiceHook-*``: service hook; neither: the legacy
plugin, which sends only ``User-Agent: sentry-webhooks/...``). The URL token sits in proxy
logs and Sentry's UI, so it must not vouch for an integration's ``metric_alert resolved``;
a service hook's secret must not vouch for a body read as an integration resource.

A body with the right token that is not one the legacy plugin sends (Sentry 5/6's plugin
sent only ``id``, ``project``, ``message``, ``culprit``, ``logger``, ``level``; or another
family's body) is still authenticated, so it is never refused (issue 16, item 7): the method
is :data:`UNKNOWN_LEGACY_BODY` and the edge quarantines it, never reads it as an alert.
"""

from __future__ import annotations

import hmac
from collections.abc import Iterable, Mapping

import pydantic_core

from bridge.config import Sentry
from bridge.errors import Unauthorized
from bridge.sentry.formats import detect_resource
from bridge.sentry.wire import lower_headers

# The method of a body the legacy token vouches for but the legacy plugin would not send.
UNKNOWN_LEGACY_BODY = "legacy_token_unknown_body"


def _hmac_matches(body: bytes, signature: str, secrets: Iterable[str]) -> bool:
    given = signature.strip().lower().encode("utf-8", "replace")
    # Every secret is tried so a rotated-in secret works alongside the old one.
    # hmac.digest is the one-shot C path (no HMAC object per webhook). An empty key is
    # never used (the config refuses them; this holds however the config was built).
    matches = [
        hmac.compare_digest(
            hmac.digest(secret.encode("utf-8"), body, "sha256").hex().encode(), given
        )
        for secret in secrets
        if secret
    ]
    return any(matches)


def family(headers: Mapping[str, str]) -> str:
    """``integration``, ``service_hook`` or ``legacy``: which family the request's headers
    say it is, before any credential is looked at."""
    h = lower_headers(headers)
    if any(name.startswith("sentry-hook-") for name in h):
        return "integration"
    if any(name.startswith("x-servicehook-") for name in h):
        return "service_hook"
    return "legacy"


def _legacy_body(body: bytes) -> bool:
    """The token vouches for the legacy plugin's body shape only. A body that is not JSON is
    let through: reading it answers 400 either way."""
    try:
        data = pydantic_core.from_json(body)
    except ValueError:
        return True
    return detect_resource({}, data) == "legacy"


def authenticate(headers: Mapping[str, str], body: bytes, token: str | None, cfg: Sentry) -> str:
    """Check the webhook's credentials; return the method that vouched for it:
    ``integration``, ``service_hook``, ``legacy_token``, :data:`UNKNOWN_LEGACY_BODY` or
    ``none``."""
    h = lower_headers(headers)
    kind = family(h)
    if kind == "integration":
        signature, secrets, method = h.get("sentry-hook-signature"), cfg.client_secrets, kind
        header = "Sentry-Hook-Signature"
    elif kind == "service_hook":
        signature, secrets, method = (
            h.get("x-servicehook-signature"),
            cfg.service_hook_secrets,
            kind,
        )
        header = "X-ServiceHook-Signature"
    else:
        return _legacy(body, token, cfg)
    if signature is not None and secrets:
        if _hmac_matches(body, signature, (s.get_secret_value() for s in secrets)):
            return method
        raise Unauthorized("bad_signature", f"{header} does not match")
    if cfg.allow_unauthenticated:
        return "none"
    if signature is not None:
        raise Unauthorized("bad_signature", "signed, but no secret is configured for that scheme")
    if token is not None:
        raise Unauthorized(
            "bad_token", "the token authenticates only the legacy WebHooks plugin, not this family"
        )
    raise Unauthorized("missing_signature", f"no {header}")


def _legacy(body: bytes, token: str | None, cfg: Sentry) -> str:
    if token is not None and cfg.legacy_token is not None:
        expected = cfg.legacy_token.get_secret_value().encode("utf-8")
        if not expected or not hmac.compare_digest(token.encode("utf-8", "replace"), expected):
            raise Unauthorized("bad_token", "the token query parameter does not match")
        return "legacy_token" if _legacy_body(body) else UNKNOWN_LEGACY_BODY
    if cfg.allow_unauthenticated:
        return "none"
    if token is not None:
        raise Unauthorized("bad_token", "a token was given but sentry.legacy_token is not set")
    raise Unauthorized("missing_signature", "no signature or token")

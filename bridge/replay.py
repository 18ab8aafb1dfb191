"""Optional replay bound: refuse webhooks whose timestamp is too far from now.

Sentry sends ``Sentry-Hook-Timestamp`` (integration platform) and
``X-ServiceHook-Timestamp`` (service hooks) as Unix seconds, but signs only the body
(getsentry/sentry sentry_apps/api/serializers/app_platform_event.py, servicehook.py
``build_signature``). Anyone holding a captured webhook can therefore change the
timestamp: this check does not prove when Sentry sent it. It shortens how long a replay
of a captured webhook works unaltered, and together with remembering recent Request-IDs
it bounds replays. Off unless ``sentry.max_timestamp_skew`` is set; the legacy plugin
sends no timestamp and is not checked.
"""

from __future__ import annotations

from collections.abc import Mapping

from bridge.errors import Unauthorized

HEADERS = ("sentry-hook-timestamp", "x-servicehook-timestamp")


def check_timestamp(headers: Mapping[str, str], max_skew: float | None, now: float) -> None:
    """Raise :class:`Unauthorized` (``bad_timestamp``) if a signed webhook's timestamp is
    missing, unreadable, or further than ``max_skew`` seconds from ``now``."""
    if max_skew is None:
        return
    signed = "sentry-hook-signature" in headers or "x-servicehook-signature" in headers
    value = next((headers[name] for name in HEADERS if name in headers), None)
    if value is None:
        if signed:
            raise Unauthorized("bad_timestamp", "no Sentry-Hook-Timestamp")
        return  # the legacy plugin sends none
    try:
        sent = float(value.strip())
    except ValueError:
        raise Unauthorized("bad_timestamp", "the timestamp is not Unix seconds") from None
    if abs(now - sent) > max_skew:
        raise Unauthorized(
            "bad_timestamp",
            f"the timestamp is {now - sent:+.0f}s from the bridge's clock "
            f"(sentry.max_timestamp_skew: {max_skew:g}s)",
        )

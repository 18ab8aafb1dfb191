"""The bridge's exceptions, one small tree::

    BridgeError
    ├── ConfigError        config file or environment is wrong; fail at start with the message
    ├── StoreError         the store cannot be used as it is (e.g. its schema is newer than us)
    ├── StoreFull          the store takes nothing more now: it holds store.max_queued alerts
    │                      or cannot be written; a retry later may succeed
    └── WebhookError       a webhook is refused; carries the HTTP status and a bounded reason
        ├── Unauthorized   401: missing or bad signature or token
        ├── TooLarge       413: body over server.max_body_bytes
        ├── SlowBody       408: the body did not arrive within server.read_timeout
        ├── Unavailable    503: StoreFull at the edge, no commit within server.store_timeout,
        │                  or busy (server.max_concurrency); Sentry retries
        └── BadPayload     400: not JSON, or not a shape Sentry sends

The store raises ``StoreError`` and ``StoreFull`` and knows nothing of HTTP; the edge
(``bridge.app``) answers ``StoreFull`` with ``Unavailable`` (503, ``store_full``).
``reason`` is a short snake_case word from a closed set: it is both the JSON
answer's ``reason`` and the ``reason`` label of the rejection metric.
"""

from __future__ import annotations


class BridgeError(Exception):
    pass


class ConfigError(BridgeError):
    pass


class StoreError(BridgeError):
    pass


class StoreFull(BridgeError):
    """The store cannot take a webhook now (full at ``max_queued``, or failing)."""

    def __init__(self, detail: str = "the store is full") -> None:
        super().__init__(detail)
        self.detail = detail


class WebhookError(BridgeError):
    status_code = 400

    def __init__(self, reason: str, detail: str = "") -> None:
        super().__init__(detail or reason)
        self.reason = reason
        self.detail = detail or reason


class Unauthorized(WebhookError):
    status_code = 401


class TooLarge(WebhookError):
    status_code = 413


class SlowBody(WebhookError):
    status_code = 408


class BadPayload(WebhookError):
    status_code = 400


# Every value the `reason` label of sentry_bridge_webhooks_rejected_total can take.
REJECT_REASONS = (
    "missing_signature",
    "bad_signature",
    "bad_token",
    "bad_timestamp",
    "too_large",
    "invalid_json",
    "invalid_payload",
    "store_full",
    "store_timeout",
    "body_timeout",
    "busy",
    "evicted",
    "internal_error",
)


class Unavailable(WebhookError):
    """503: the bridge cannot take the webhook now; Sentry retries."""

    status_code = 503

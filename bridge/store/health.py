"""Whether a store's writes keep failing, for every engine (``Store.store_ok``).

One failed write is a blip (the transaction is rolled back, the caller retries or answers
503); ``failing_after`` failed in a row, with none succeeding in between, is a store that is
failing: ``/-/ready`` goes red until a write succeeds again. Every failure is counted in
``sentry_bridge_store_errors_total``.
"""

from __future__ import annotations

from bridge.metrics import Metrics


class WriteHealth:
    def __init__(self, metrics: Metrics, failing_after: int) -> None:
        self._metrics = metrics
        self._failing_after = failing_after
        self._failures = 0  # in a row; reset by the next successful write

    def failed(self) -> None:
        self._failures += 1
        self._metrics.store_errors.inc()

    def succeeded(self) -> None:
        self._failures = 0

    @property
    def ok(self) -> bool:
        return self._failures < self._failing_after

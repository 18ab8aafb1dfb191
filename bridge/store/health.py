"""Whether a store's writes keep failing, for every engine (``Store.store_ok``), and the
one place that says so in the log.

One failed write is a blip (the transaction is rolled back, the caller retries or answers
503); ``failing_after`` failed in a row, with none succeeding in between, is a store that is
failing: ``/-/ready`` goes red until a write succeeds again. Every failure is counted in
``sentry_bridge_store_errors_total``; the log says the first failure of a run (with its
error, on one line) and the write that ends it, not each failed commit (issue 15: a full
disk logged a traceback per group commit, several a second).
"""

from __future__ import annotations

import contextlib
import logging
import time
from collections.abc import Callable, Iterator

from bridge.metrics import Metrics

log = logging.getLogger("bridge.store")


class WriteHealth:
    def __init__(
        self,
        metrics: Metrics,
        failing_after: int,
        *,
        what: str = "the store",
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self._metrics = metrics
        self._failing_after = failing_after
        self._what = what  # for the log: "the store", "the spool"
        self._clock = clock
        self._failures = 0  # in a row; reset by the next successful write
        self._since = 0.0  # when the first of them failed

    def failed(self, error: BaseException | None = None) -> None:
        self._failures += 1
        self._metrics.store_errors.inc()
        if self._failures == 1:
            self._since = self._clock()
            log.error(
                "cannot write %s; said once until a write succeeds (each failed write "
                "counts in sentry_bridge_store_errors_total)",
                self._what,
                extra={"error": "unknown" if error is None else _one_line(error)},
            )

    def succeeded(self) -> None:
        if self._failures:
            log.warning(
                "%s can be written again",
                self._what,
                extra={
                    "failed_writes": self._failures,
                    "seconds": round(self._clock() - self._since, 3),
                },
            )
        self._failures = 0

    @contextlib.contextmanager
    def watch(
        self, errors: type[BaseException] | tuple[type[BaseException], ...]
    ) -> Iterator[None]:
        """One write: ``failed`` when it raises one of ``errors``, else ``succeeded``."""
        try:
            yield
        except errors as exc:
            self.failed(exc)
            raise
        self.succeeded()

    @property
    def ok(self) -> bool:
        return self._failures < self._failing_after


def _one_line(error: BaseException) -> str:
    """The error and what it was raised from, on one line (no traceback)."""
    parts: list[str] = []
    seen: BaseException | None = error
    while seen is not None and len(parts) < 3:
        parts.append(f"{type(seen).__name__}: {seen}".strip().rstrip(":"))
        seen = seen.__cause__
    return " <- ".join(parts)

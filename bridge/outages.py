"""Whether each Alertmanager answers, said once per outage rather than once per retry.

Delivery retries a failing Alertmanager every few seconds; a log line per attempt would
bury the one line that matters. :class:`Outages` turns the stream of attempts into
events: the first failure of an outage is a warning (later ones are debug), the first
success after it says the Alertmanager recovered and for how long it was down. The
``sentry_bridge_alertmanager_up`` gauge follows the same state, and :func:`probe` sets it
at start (``GET /-/ready``, Alertmanager's readiness endpoint), so a typo in the URL shows
at once rather than with the first alert.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable, Iterable

import httpx

from bridge.metrics import Metrics

log = logging.getLogger("bridge.delivery")


class Outages:
    def __init__(
        self, metrics: Metrics, names: Iterable[str], clock: Callable[[], float] = time.monotonic
    ) -> None:
        self.metrics = metrics
        self.clock = clock
        # name -> (when the outage began, failed attempts since), for the ones down now
        self.down: dict[str, tuple[float, int]] = {}
        for name in names:
            metrics.am_up.labels(name).set(1)

    def failed(self, name: str, reason: str, **detail: object) -> None:
        self.metrics.am_up.labels(name).set(0)
        if name in self.down:
            since, attempts = self.down[name]
            self.down[name] = (since, attempts + 1)
            log.debug("alertmanager still failing", extra={"alertmanager": name, "reason": reason})
            return
        self.down[name] = (self.clock(), 1)
        log.warning(
            "alertmanager failing; retrying until it answers (said once per outage)",
            extra={"alertmanager": name, "reason": reason, **detail},
        )

    def answered(self, name: str) -> None:
        self.metrics.am_up.labels(name).set(1)
        outage = self.down.pop(name, None)
        if outage is not None:
            since, attempts = outage
            log.info(
                "alertmanager recovered",
                extra={
                    "alertmanager": name,
                    "down_seconds": round(self.clock() - since, 3),
                    "failed_attempts": attempts,
                },
            )


async def probe(
    client: httpx.AsyncClient, targets: Iterable[tuple[str, str]], outages: Outages
) -> None:
    """At start: ask every Alertmanager (name, base URL) whether it is ready; warn about
    each that does not answer. Never raises: the bridge starts either way (it queues)."""

    async def one(name: str, url: str) -> None:
        try:
            response = await client.get(f"{url}/-/ready")
        except Exception as exc:  # best effort: whatever went wrong, start and say so
            outages.metrics.am_up.labels(name).set(0)
            log.warning(
                "alertmanager does not answer at start; alerts wait in the store until it does",
                extra={"alertmanager": name, "error": type(exc).__name__},
            )
            outages.down.setdefault(name, (outages.clock(), 0))
            return
        if response.status_code >= 400:
            outages.metrics.am_up.labels(name).set(0)
            log.warning(
                "alertmanager is not ready at start",
                extra={"alertmanager": name, "status": response.status_code},
            )
            outages.down.setdefault(name, (outages.clock(), 0))

    await asyncio.gather(*(one(name, url) for name, url in targets))

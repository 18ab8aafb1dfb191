"""Everything behind the 202: the outbox, the pipeline, delivery and enrichment, composed.

The HTTP edge (``bridge.app``) hands each accepted alert to an :class:`Intake`. Two kinds:

* :class:`Backend` runs the parts in the calling process, on its event loop (the tests,
  and anything embedding the bridge);
* ``bridge.worker.WorkerIntake`` runs a :class:`Backend` in a child process, so the
  pipeline's CPU (classification, delivery, re-sends of every active alert) never
  delays an answer to Sentry; ``serve`` uses it.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Mapping
from typing import Any, Protocol

import httpx

from bridge.alertmanager import target_name
from bridge.config import Config
from bridge.delivery import Delivery
from bridge.enrich import Enricher
from bridge.errors import OutboxFull
from bridge.metrics import Metrics
from bridge.model import SentryAlert
from bridge.pipeline import Pipeline
from bridge.store.sqlite import Outbox

log = logging.getLogger("bridge.backend")

STORE_PROBE_INTERVAL = 2.0  # seconds between write probes while the store is failing


class Intake(Protocol):
    """What the HTTP edge needs from whatever is behind it."""

    async def start(self) -> None:
        """Open the outbox and start processing; the bridge is ready after this."""

    async def accept(self, alert: SentryAlert, digest: bytes | None = None) -> bool:
        """Durable before it returns; raises ``OutboxFull`` (503) when it cannot be. False
        when the body of ``digest`` (SHA-256) was accepted before: a duplicate, no effect."""

    async def quarantine(
        self, reason: str, detail: str, headers: Mapping[str, str], body: bytes, digest: bytes
    ) -> bool:
        """Keep an authenticated webhook that cannot be processed, durably (``OutboxFull``
        when it cannot be); False when the same body was seen before."""

    def ignored(self) -> None:
        """Count a webhook that made no alert (the ``alerts`` metric lives here)."""

    async def exposition(self) -> bytes:
        """Prometheus text of the families kept behind the edge (``Metrics.exposition``'s
        "backend" part); the edge adds its own part."""

    def healthy(self) -> bool:
        """False once it can no longer accept alerts (a dead worker process)."""

    def store_ok(self) -> bool:
        """False while the outbox file keeps failing to be written (/-/ready red)."""

    async def stop(self, grace: float) -> None:
        """Finish what was accepted within ``grace`` seconds; the rest stays on disk."""

    async def reload(self, config: Config) -> None:
        """Apply a reloaded, validated config (``bridge.reload`` kept what needs a restart)."""

    async def status(self, limit: int) -> dict[str, Any]:
        """What the bridge holds, for ``GET /-/status`` (bridge/status.py)."""

    async def requeue_dead_letters(self) -> dict[str, int]:
        """Queue the dead letters again after a fix (``Outbox.requeue_dead_letters``)."""

    def hurry(self) -> None:
        """A second Ctrl+C, or SIGTERM during the drain: end ``stop`` at once; what is
        undelivered stays in the outbox."""


class Backend:
    """The parts, in this process, sharing ``metrics`` with the edge."""

    def __init__(
        self,
        config: Config,
        metrics: Metrics,
        *,
        alertmanager_transport: httpx.AsyncBaseTransport | None = None,
        sentry_transport: httpx.AsyncBaseTransport | None = None,
    ) -> None:
        self.metrics = metrics
        targets = [target_name(url) for url in config.alertmanager.urls]
        self.outbox = Outbox(
            config.outbox.data_dir,
            targets,
            max_queued=config.outbox.max_queued,
            metrics=metrics,
            body_retention=config.dedup.body_retention,
            max_bodies=config.dedup.max_bodies,
        )
        self.enricher = Enricher(config.sentry, metrics, transport=sentry_transport)
        self.pipeline = Pipeline(config, store=self.outbox, enricher=self.enricher, metrics=metrics)
        self.delivery = Delivery(
            self.outbox, config.alertmanager, metrics, transport=alertmanager_transport
        )
        self._tasks: list[asyncio.Task[None]] = []
        self._hurry = asyncio.Event()

    async def start(self) -> None:
        await self.outbox.open()
        self._tasks = [
            asyncio.create_task(self.pipeline.run(), name="pipeline"),
            asyncio.create_task(self.delivery.run(), name="delivery"),
            asyncio.create_task(self._watch_store(), name="store-probe"),
            asyncio.create_task(self.delivery.probe(), name="probe alertmanagers"),
        ]

    async def accept(self, alert: SentryAlert, digest: bytes | None = None) -> bool:
        return await self.outbox.accept(alert, digest)

    async def quarantine(
        self, reason: str, detail: str, headers: Mapping[str, str], body: bytes, digest: bytes
    ) -> bool:
        try:
            return await self.outbox.quarantine(reason, detail, headers, body, digest)
        except Exception:
            log.exception("cannot write the quarantine", extra={"reason": reason})
            raise OutboxFull("the outbox cannot be written") from None

    def ignored(self) -> None:
        self.metrics.alerts.labels("ignored").inc()

    async def exposition(self) -> bytes:
        return self.metrics.exposition("backend")

    def healthy(self) -> bool:
        return True

    def store_ok(self) -> bool:
        return self.outbox.store_ok()

    async def _watch_store(self) -> None:
        """While the store is failing, try a tiny write now and then, so it turns healthy
        again once it can be written even if nothing else writes (out of the balancer)."""
        while True:
            await asyncio.sleep(STORE_PROBE_INTERVAL)
            if not self.outbox.store_ok():
                with contextlib.suppress(Exception):
                    await self.outbox.probe()

    async def stop(self, grace: float) -> None:
        """SIGTERM: finish what was accepted, within the grace period; the rest stays on
        disk. Grace 0 (the edge is gone) closes at once."""
        deadline = time.monotonic() + grace
        # Polled: the pipeline empties the inbox in batches and signals nothing per batch.
        while (  # noqa: ASYNC110
            self.outbox.inbox_count() and time.monotonic() < deadline and not self._hurry.is_set()
        ):
            await asyncio.sleep(0.05)
        flushed = await self._drain(max(0.0, deadline - time.monotonic()))
        log.info(
            "shutdown",
            extra={
                "flushed": flushed,
                "inbox": self.outbox.inbox_count(),
                "queued": self.outbox.queued_count(),
                "cut_short": self._hurry.is_set() or None,
            },
        )
        for task in self._tasks:
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)
        await self.delivery.aclose()
        await self.enricher.aclose()
        await self.outbox.close()

    async def _drain(self, timeout: float) -> bool:  # noqa: ASYNC109 - a budget, not a cancel
        """Delivery's drain, unless hurry() cuts it short."""
        if self._hurry.is_set():
            return False
        drain = asyncio.ensure_future(self.delivery.drain(timeout))
        hurry = asyncio.ensure_future(self._hurry.wait())
        try:
            await asyncio.wait({drain, hurry}, return_when=asyncio.FIRST_COMPLETED)
        finally:
            hurry.cancel()
            drain.cancel()
        return drain.done() and not drain.cancelled() and drain.result()

    def hurry(self) -> None:
        self._hurry.set()

    async def status(self, limit: int) -> dict[str, Any]:
        snapshot = await self.outbox.snapshot(limit)
        return {
            **snapshot,
            "active_count": self.outbox.active_count(),
            "inbox": self.outbox.inbox_count(),
            "queue_depth": self.outbox.queue_depths(),
            "alertmanager_down": sorted(self.delivery.outages.down),
        }

    async def requeue_dead_letters(self) -> dict[str, int]:
        counts = await self.outbox.requeue_dead_letters()
        log.warning("dead letters re-queued", extra=counts)
        return counts

    async def reload(self, config: Config) -> None:
        # What the pipeline and delivery read per alert and per round; the rest
        # (outbox, clients, dedup tables) bridge.reload keeps as it was.
        self.pipeline.config = config
        self.delivery.cfg = config.alertmanager
        log.info("pipeline config replaced", extra={"rules": len(config.classification.rules)})

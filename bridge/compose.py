"""The bridge composed from its config: the one place for the wiring.

``serve`` runs everything in one process, on one event loop (README, "How it runs"):

    config -> metrics -> store (the SQLite store) -> enricher -> pipeline -> delivery
                                   `-> reconciler (with a Sentry API token) -> store's inbox

The HTTP edge (``bridge.app``) commits each accepted webhook to the store itself
(``Bridge.accept``: the store's own group commit) and answers; the pipeline task takes
from the store's inbox, delivery's tasks post from its queues. Nothing else passes
between the edge and what runs behind the 202.

One process rather than the former edge + worker pair, measured (README, "Performance"):
less CPU per webhook (no marshalled round trip per webhook), 58 % of the idle memory (one
interpreter), one registry, and no protocol to keep alive; what it gives up is the second
core a single pod could use, which replicas on PostgreSQL give back.

Health (``/-/healthy``, the liveness probe) is this replica's own progress: it goes red,
with a log line saying why, when the pipeline or a delivery task ends (an exception
escaped, or it was cancelled), or when the pipeline has neither completed a batch nor been
idle for ``server.progress_timeout`` (stuck: an enrichment or a store call that never
returns). Idle is the store's ``take`` waiting with nothing this replica may claim
(``Store.idle``): on PostgreSQL, webhooks of identities another replica holds are that
replica's progress, not this one's. ``sentry_bridge_pipeline_last_progress_timestamp_seconds``
is when the pipeline last completed a batch or was idle.

A stop (SIGTERM) waits, within the grace period, for this replica's own work only: with
SQLite until the pipeline is idle (the inbox is this replica's alone), with PostgreSQL
until it has finished the batch it had taken (or was idle); the rest of the shared inbox
stays in the database for the other replicas.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Callable, Mapping
from typing import Any

import httpx
from prometheus_client import CollectorRegistry

from bridge.alertmanager import build_client, public_url, target_name
from bridge.config import Config
from bridge.delivery import Delivery
from bridge.enrich import Enricher
from bridge.errors import StoreFull
from bridge.escalation import Escalator, Silences
from bridge.metrics import Metrics
from bridge.model import SentryAlert
from bridge.pipeline import Pipeline
from bridge.reconcile import Reconciler
from bridge.state import Policy
from bridge.store import describe, open_store
from bridge.store.contract import Sizes

log = logging.getLogger("bridge.compose")

STORE_PROBE_INTERVAL = 2.0  # seconds between write probes while the store is failing
# The tasks whose end makes the bridge unhealthy: without them nothing accepted moves
# (or nobody would notice that it stopped moving).
ESSENTIAL = frozenset({"pipeline", "delivery", "progress"})


class Bridge:
    """The store, the pipeline, delivery and enrichment, and what the edge shares."""

    def __init__(
        self,
        config: Config,
        metrics: Metrics,
        *,
        alertmanager_transport: httpx.AsyncBaseTransport | None = None,
        sentry_transport: httpx.AsyncBaseTransport | None = None,
    ) -> None:
        self.config = config
        self.metrics = metrics
        targets = [target_name(url) for url in config.alertmanager.urls]
        self.store = open_store(config, metrics, targets)
        self.enricher = Enricher(config.sentry, metrics, transport=sentry_transport)
        # Escalation (issue 16): is a due step's alert silenced in an Alertmanager?
        self._am_client = build_client(config.alertmanager, alertmanager_transport)
        silences = Silences(self._am_client, config.alertmanager.urls)
        self.pipeline = Pipeline(
            config, store=self.store, enricher=self.enricher, metrics=metrics, silences=silences
        )
        self.escalator = Escalator(self.store, config.escalation.interval)
        self.delivery = Delivery(
            self.store, config.alertmanager, metrics, transport=alertmanager_transport
        )
        # Sentry's status as the truth, with an API token (bridge/reconcile.py).
        self.reconciler = Reconciler(config, self.store, metrics, transport=sentry_transport)
        self.ready = False
        # When SIGTERM/SIGINT arrived (time.monotonic()): the drain gets what is left of the
        # grace period after the in-flight webhooks, not all of it again.
        self.stopping_since: float | None = None
        # Called once when an essential task ends unasked (serve then exits 1).
        self.on_failure: Callable[[], None] | None = None
        self.failure: str | None = None  # why an essential task is gone, for good
        self.stuck: str | None = None  # why the pipeline is not progressing, while it lasts
        self._tasks: list[asyncio.Task[None]] = []
        self._stopping = False
        self._hurry = asyncio.Event()
        self._batches_seen = -1
        self._progress_at = 0.0

    def grace_left(self) -> float:
        grace = self.config.shutdown.grace_period
        if self.stopping_since is None:
            return grace
        return max(0.0, grace - (time.monotonic() - self.stopping_since))

    # --- start and stop --------------------------------------------------------------

    async def start(self) -> None:
        """Open the store and start the tasks; the bridge is ready after this."""
        await self.store.open()
        self.check_progress(time.monotonic())
        work = {
            "pipeline": self.pipeline.run(),
            "delivery": self.delivery.run(),
            "store-probe": self._watch_store(),
            "probe alertmanagers": self.delivery.probe(),
            "progress": self._watch_progress(),
            "escalation": self.escalator.run(),
        }
        if self.reconciler.enabled:
            work["reconcile"] = self.reconciler.run()
        for name, coroutine in work.items():
            task = asyncio.create_task(coroutine, name=name)
            task.add_done_callback(self._ended)
            self._tasks.append(task)

    async def stop(self, grace: float) -> None:
        """SIGTERM: finish this replica's own work (the module docstring says what that
        is), within the grace period; the rest stays in the store. Grace 0 closes at once."""
        deadline = time.monotonic() + grace
        if self.config.store.backend == "postgres":
            # Shared by the other replicas: this one finishes the batch it has taken, and
            # the rest of the inbox stays in the database for them.
            self.pipeline.finish()
        # Until this replica has nothing left it may take (Store.idle) or has finished its
        # batch, never for the whole inbox: what other replicas hold is theirs. Polled:
        # the pipeline signals nothing per batch.
        while (  # noqa: ASYNC110
            not (self.store.idle() or self.pipeline.finished)
            and time.monotonic() < deadline
            and not self._hurry.is_set()
            and self.failure is None
        ):
            await asyncio.sleep(0.05)
        flushed = await self._drain(max(0.0, deadline - time.monotonic()))
        left: dict[str, int] = {}
        with contextlib.suppress(Exception):  # a store that cannot be read: said already
            async with asyncio.timeout(1.0):  # a log line is not worth the grace period
                sizes = await self.store.sizes()
            left = {"inbox": sizes.inbox, "queued": sizes.behind}
        log.info(
            "shutdown",
            extra={"flushed": flushed, **left, "cut_short": self._hurry.is_set() or None},
        )
        self._stopping = True
        for task in self._tasks:
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)
        await self.delivery.aclose()
        await self._am_client.aclose()
        await self.enricher.aclose()
        await self.reconciler.aclose()
        await self.store.close()

    async def _drain(self, timeout: float) -> bool:  # noqa: ASYNC109 - a budget, not a cancel
        """Delivery's drain, unless hurry() cuts it short."""
        if self._hurry.is_set() or self.failure is not None:
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
        """A second Ctrl+C, or SIGTERM during the drain: end ``stop`` at once; what is
        undelivered stays in the store."""
        self._hurry.set()

    # --- health ----------------------------------------------------------------------

    def healthy(self) -> str | None:
        """None when healthy, else why not (the answer of /-/healthy)."""
        return self.failure or self.stuck

    def store_ok(self) -> bool:
        """False while the store keeps failing to be written (/-/ready red)."""
        return self.store.store_ok()

    def _ended(self, task: asyncio.Task[None]) -> None:
        name = task.get_name()
        failed = None if task.cancelled() else task.exception()
        if self._stopping or (name not in ESSENTIAL and failed is None):
            return  # stopping, or a one-off probe that is done
        if task.cancelled():
            why = f"the {name} task was cancelled"
        elif failed is not None:
            why = f"the {name} task failed: {type(failed).__name__}: {failed}"
        else:
            why = f"the {name} task ended"
        if name not in ESSENTIAL:
            log.error("%s", why, exc_info=failed)
            return
        log.error("%s; the bridge is unhealthy", why, exc_info=failed)
        if self.failure is None:
            self.failure = why
            if self.on_failure is not None:
                self.on_failure()

    def check_progress(self, now: float) -> None:
        """The watchdog's look (``now``: time.monotonic()): the pipeline progresses when it
        handled a batch since the last look or is idle (its take found nothing this
        replica may claim); otherwise it is stuck once that has lasted
        ``server.progress_timeout``."""
        batches = self.pipeline.batches
        # Finished (a stop on PostgreSQL): done with its own work, as idle is.
        if batches != self._batches_seen or self.store.idle() or self.pipeline.finished:
            self._batches_seen = batches
            self._progress_at = now
            self.metrics.pipeline_last_progress.set(time.time())
            if self.stuck is not None:
                log.warning("the pipeline progresses again")
                self.stuck = None
            return
        timeout = self.config.server.progress_timeout
        if self.stuck is None and now - self._progress_at > timeout:
            self.stuck = (
                f"the pipeline completed no batch for {now - self._progress_at:.0f}s "
                f"(server.progress_timeout {timeout:g}s) and was not idle"
            )
            log.error("%s; the bridge is unhealthy", self.stuck)

    async def _watch_progress(self) -> None:
        while True:
            await asyncio.sleep(min(1.0, self.config.server.progress_timeout / 4))
            self.check_progress(time.monotonic())

    async def _watch_store(self) -> None:
        """While the store is failing, try a tiny write now and then, so it turns healthy
        again once it can be written even if nothing else writes (out of the balancer)."""
        while True:
            await asyncio.sleep(STORE_PROBE_INTERVAL)
            if not self.store.store_ok():
                with contextlib.suppress(Exception):
                    await self.store.probe()

    # --- the edge ----------------------------------------------------------------------

    async def accept(self, alert: SentryAlert, digest: bytes | None = None) -> bool:
        """Committed before it returns; raises ``StoreFull`` (503) when it cannot be.
        False when the body of ``digest`` (SHA-256) was accepted before."""
        return await self.store.accept(alert, digest)

    async def quarantine(
        self, reason: str, detail: str, headers: Mapping[str, str], body: bytes, digest: bytes
    ) -> bool:
        """Keep an authenticated webhook that cannot be processed, durably (``StoreFull``
        when it cannot be); False when the same body was seen before."""
        try:
            return await self.store.quarantine(reason, detail, headers, body, digest)
        except Exception:
            log.exception("cannot write the quarantine", extra={"reason": reason})
            raise StoreFull("the store cannot be written") from None

    def ignored(self) -> None:
        self.metrics.alerts.labels("ignored").inc()

    # --- operators ---------------------------------------------------------------------

    def reload(self, config: Config) -> None:
        """Apply a reloaded, validated config (``bridge.reload`` kept what needs a restart):
        what the pipeline and delivery read per alert and per round."""
        self.config = config
        self.pipeline.config = config
        self.pipeline.policy = Policy.from_config(config)  # escalation policies (dedup is kept)
        self.delivery.cfg = config.alertmanager
        log.info("pipeline config replaced", extra={"rules": len(config.classification.rules)})

    async def sizes(self, max_age: float = 1.0) -> Sizes:
        """What the store holds (read at most ``max_age`` seconds ago), shown by the gauges
        too: for each scrape of ``/metrics``, and read now for ``/-/status``."""
        sizes = await self.store.sizes(max_age)
        self.metrics.show_store(sizes)
        return sizes

    async def status(self, limit: int) -> dict[str, Any]:
        """What the bridge holds, for ``GET /-/status`` (bridge/status.py)."""
        snapshot = await self.store.snapshot(limit)
        sizes = await self.sizes(0)
        oldest = snapshot["quarantine_oldest_at"]
        return {
            **snapshot,
            "quarantine_oldest_age_seconds": None if oldest is None else time.time() - oldest,
            # What this bridge uses, so a client command need not guess (bridge/client.py).
            "store": describe(self.config),
            "alertmanagers": [public_url(url) for url in self.config.alertmanager.urls],
            "active_count": sizes.active,
            "inbox": sizes.inbox,
            "queue_depth": dict(sizes.queued),
            "alertmanager_down": sorted(self.delivery.outages.down),
            # This replica's reconciler: rounds run on the one holding the periodic lease.
            "reconciler": {
                "enabled": self.reconciler.enabled,
                "interval_seconds": self.reconciler.interval,
                "last_round_at": self.reconciler.last_round,
            },
        }

    async def requeue_dead_letters(self) -> dict[str, int]:
        counts = await self.store.requeue_dead_letters()
        log.warning("dead letters re-queued", extra=counts)
        return counts


def build(
    config: Config,
    *,
    registry: CollectorRegistry | None = None,
    alertmanager_transport: httpx.AsyncBaseTransport | None = None,
    sentry_transport: httpx.AsyncBaseTransport | None = None,
) -> Bridge:
    """The bridge from its config, its metrics on ``registry`` (a fresh one by default)."""
    metrics = Metrics(registry if registry is not None else CollectorRegistry())
    return Bridge(
        config,
        metrics,
        alertmanager_transport=alertmanager_transport,
        sentry_transport=sentry_transport,
    )

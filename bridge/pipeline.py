"""The stages a webhook goes through, composed in one place.

Request path (``accept``): the normalised alert is stored durably in the
outbox's inbox and the webhook is answered; nothing slow happens there.

Background (``run``), per batch of accepted alerts, in arrival order:

1. enrich   - affected users and events from Sentry's API (cached, strict timeout)
2. classify - first matching rule: a severity with labels, or drop
3. escalate - an identity that keeps firing moves one severity step up
4. dedup    - the same label set again within the window is not forwarded
5. replace  - one alert per Sentry identity: a changed label set resolves the old one
6. commit   - alerts queued for every Alertmanager and the active table updated,
              in one transaction; ``delivery.Delivery`` sends them.

A resolve from Sentry sends the label set that is active for the identity, so
Alertmanager resolves that very alert however the resolve payload would classify.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable, Sequence
from datetime import UTC, datetime

from bridge import labels as L
from bridge.alertmanager import PostableAlert
from bridge.classify import Decision, classify
from bridge.config import Config
from bridge.dedup import Repeats, fingerprint
from bridge.enrich import Enricher
from bridge.metrics import Metrics
from bridge.model import SentryAlert, Severity, State
from bridge.outbox import Outbox, Processed

log = logging.getLogger("bridge.pipeline")

BATCH = 256
YIELD_EVERY = 16  # decisions between yields to the event loop, a few ms at most
# A batch that raises (the store, enrichment) is tried again this many times, RETRY_DELAY
# apart, then alert by alert: an alert that still fails alone is quarantined alone.
RETRIES = 3
RETRY_DELAY = 1.0


def utcnow() -> datetime:
    return datetime.now(UTC)


class Pipeline:
    def __init__(
        self,
        config: Config,
        *,
        outbox: Outbox,
        enricher: Enricher,
        repeats: Repeats,
        metrics: Metrics,
        clock: Callable[[], datetime] = utcnow,
    ) -> None:
        self.config = config
        self.outbox = outbox
        self.enricher = enricher
        self.repeats = repeats
        self.metrics = metrics
        self.clock = clock

    async def accept(self, alert: SentryAlert) -> None:
        """The request path: durable before the 2xx (raises ``OutboxFull``)."""
        await self.outbox.accept(alert)

    async def run(self) -> None:
        """Process accepted alerts until cancelled."""
        while True:
            try:
                batch = await self.outbox.take(BATCH)
            except Exception:
                # Reading the store failed; take() kept the entries, in order.
                log.exception("cannot read the inbox; retrying")
                await asyncio.sleep(RETRY_DELAY)
                continue
            await self._process_retrying(batch)

    async def _process_retrying(self, batch: Sequence[tuple[int, SentryAlert]]) -> None:
        for _ in range(RETRIES):
            if await self._try(batch):
                return
            await asyncio.sleep(RETRY_DELAY)
        for n, entry in enumerate(batch):
            try:
                await self._try([entry], reraise=True)
                continue
            except Exception as exc:
                log.exception("pipeline failed on one alert", extra={"inbox_id": entry[0]})
                failed = [(entry[0], entry[1], f"{type(exc).__name__}: {exc}")]
            try:
                await self.outbox.quarantine_taken(failed)
            except Exception:
                # The store itself fails: everything left stays in the inbox and is handed
                # out again after a pause (and at the next start in any case).
                log.exception("cannot quarantine; retrying later", extra={"inbox_id": entry[0]})
                self.outbox.requeue(batch[n:])
                await asyncio.sleep(RETRY_DELAY)
                return

    async def _try(
        self, batch: Sequence[tuple[int, SentryAlert]], *, reraise: bool = False
    ) -> bool:
        """Process ``batch``; if it fails, undo what its decisions did to the repeat
        counts (nothing was committed), so a retry decides the same."""
        saved = self.repeats.checkpoint(alert.identity for _, alert in batch)
        try:
            await self.process(batch)
            return True
        except Exception:
            self.repeats.rollback(saved)
            if reraise:
                raise
            log.exception("pipeline batch failed", extra={"alerts": len(batch)})
            return False

    async def process(self, batch: Sequence[tuple[int, SentryAlert]]) -> None:
        # Enrichment is I/O: run the batch's look-ups concurrently (the enricher
        # collapses look-ups of one issue); the decisions then run in order.
        alerts = [alert for _, alert in batch]
        if self.enricher.enabled:
            alerts = await asyncio.gather(*(self.enricher.enrich(alert) for alert in alerts))
        results: list[Processed] = []
        failed: list[tuple[int, SentryAlert, str]] = []
        for n, ((inbox_id, _), alert) in enumerate(zip(batch, alerts, strict=True), 1):
            try:
                results.append(self.decide(inbox_id, alert))
            except Exception as exc:
                # One bad alert is quarantined alone; its batch goes on.
                log.exception("pipeline failed on one alert", extra={"inbox_id": inbox_id})
                failed.append((inbox_id, alert, f"{type(exc).__name__}: {exc}"))
            if n % YIELD_EVERY == 0:
                # Let the intake's group commits (the edge waits on them for its 202)
                # run between decisions, rather than after a whole batch of them.
                await asyncio.sleep(0)
        await self.outbox.complete(results)
        self._update_gauges()
        if failed:
            try:
                await self.outbox.quarantine_taken(failed)
            except Exception:
                # The rest of the batch is committed: only the failed go round again.
                log.exception("cannot quarantine; retrying later", extra={"alerts": len(failed)})
                self.outbox.requeue([(inbox_id, alert) for inbox_id, alert, _ in failed])
                await asyncio.sleep(RETRY_DELAY)

    def decide(self, inbox_id: int, alert: SentryAlert) -> Processed:
        now = self.clock()
        if alert.state is State.RESOLVED:
            return self._resolve(inbox_id, alert, now)

        decision = classify(alert, self.config.classification)
        if decision.dropped:
            return self._outcome(inbox_id, alert, "dropped", decision)
        assert decision.severity is not None
        severity, escalated = decision.severity, False
        if self.repeats.record(alert.identity) and severity is not Severity.CRITICAL:
            severity, escalated = severity.escalate(), True

        labels = L.build_labels(
            alert,
            decision,
            severity,
            escalated=escalated,
            severity_labels=self.config.classification.severity_labels,
        )
        label_hash = fingerprint(labels)
        if self.repeats.is_duplicate(alert.identity, label_hash):
            return self._outcome(
                inbox_id, alert, "duplicate", decision, severity, label_hash, escalated=escalated
            )

        previous = self.outbox.active(alert.identity)
        send: list[PostableAlert] = []
        starts_at = now
        if previous is not None and previous.labels == labels and previous.starts_at:
            starts_at = previous.starts_at  # the same alert, still firing
        elif previous is not None:
            send.append(L.resolved(previous, now))  # one alert per identity
            self.metrics.resolutions.inc()
        current = L.firing(
            alert,
            labels,
            L.build_annotations(alert, decision),
            starts_at=starts_at,
            now=now,
            lifetime=self.config.alertmanager.alert_lifetime,
        )
        send.append(current)
        if escalated:
            self.metrics.escalations.inc()
        self.metrics.alerts_by_severity.labels(severity.value).inc()
        return self._outcome(
            inbox_id,
            alert,
            "forwarded",
            decision,
            severity,
            label_hash,
            send,
            {alert.identity: current},
            escalated=escalated,
        )

    def _resolve(self, inbox_id: int, alert: SentryAlert, now: datetime) -> Processed:
        self.repeats.forget(alert.identity)
        previous = self.outbox.active(alert.identity)
        if previous is not None:
            send = [L.resolved(previous, now)]
            decision = Decision(rule=None, severity=None, labels={}, annotations={})
        else:
            # Nothing known to be firing (e.g. fired before the bridge existed):
            # resolve what this payload classifies as, which is the best guess.
            decision = classify(alert, self.config.classification)
            if decision.dropped or decision.severity is None:
                return self._outcome(inbox_id, alert, "dropped", decision)
            labels = L.build_labels(
                alert,
                decision,
                decision.severity,
                escalated=False,
                severity_labels=self.config.classification.severity_labels,
            )
            annotations = L.build_annotations(alert, decision)
            send = [
                PostableAlert(labels=labels, annotations=annotations, starts_at=now, ends_at=now)
            ]
        self.metrics.resolutions.inc()
        return self._outcome(
            inbox_id,
            alert,
            "forwarded",
            decision,
            None,
            fingerprint(send[0].labels),
            send,
            {alert.identity: None},
        )

    def _outcome(
        self,
        inbox_id: int,
        alert: SentryAlert,
        outcome: str,
        decision: Decision,
        severity: Severity | None = None,
        label_hash: str | None = None,
        send: Sequence[PostableAlert] = (),
        active: dict[str, PostableAlert | None] | None = None,
        *,
        escalated: bool = False,
    ) -> Processed:
        self.metrics.alerts.labels(outcome).inc()
        # "decided", not "sent": delivery says when each Alertmanager has it.
        log.info(
            "alert decided",
            extra={
                "request_id": alert.request_id,
                "resource": alert.resource,
                "action": alert.action,
                "outcome": outcome,
                "state": alert.state.value,
                "severity": severity.value if severity else None,
                "escalated": escalated,
                "rule": decision.rule,
                "identity": alert.identity,
                "project": alert.project,
                "environment": alert.environment,
                "fingerprint": label_hash,
                "alerts_queued": len(send) or None,
            },
        )
        return Processed(inbox_id=inbox_id, send=tuple(send), active=active or {})

    def _update_gauges(self) -> None:
        for cache, size in self.repeats.sizes().items():
            self.metrics.cache_entries.labels(cache).set(size)

"""The stages a webhook goes through, composed in one place.

Request path (``accept``): the normalised alert is stored durably in the
outbox's inbox and the webhook is answered; nothing slow happens there.

Background (``run``), per batch of accepted alerts, in arrival order:

1. enrich   - affected users and events from Sentry's API (cached, strict timeout)
2. classify - first matching rule: a severity with labels, or drop
3. step     - the identity's state machine (``bridge.state``, docs/state-machine.md):
              escalation, dedup, "only gets worse until resolved", one label set per
              identity, stale retries; it returns the new state and the posts
4. commit   - posts queued for every Alertmanager, active alerts and states updated,
              in one transaction; ``delivery.Delivery`` sends them.

Each decision sees every earlier one for its identity: the batch's own results first
(``seen``), then what the outbox holds.
"""

from __future__ import annotations

import asyncio
import dataclasses
import logging
from collections.abc import Callable, Sequence
from datetime import UTC, datetime

from bridge.classify import Decision, classify
from bridge.config import Config
from bridge.dedup import fingerprint
from bridge.enrich import Enricher
from bridge.metrics import Metrics
from bridge.model import Outcome, SentryAlert, Severity, State
from bridge.outbox import Outbox, Processed
from bridge.state import IdentityState, Policy, Step, step

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
        metrics: Metrics,
        clock: Callable[[], datetime] = utcnow,
    ) -> None:
        self.config = config
        self.outbox = outbox
        self.enricher = enricher
        self.policy = Policy.from_config(config)
        self.metrics = metrics
        self.clock = clock
        # Batches handled (committed, or given back after their retries): the watchdog of
        # bridge.compose reads it to tell a stuck pipeline from a busy one.
        self.batches = 0

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
            self.batches += 1

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
            # The store itself failing: everything left goes round again.
            if not await self._quarantine(failed, batch[n:]):
                return

    async def _try(
        self, batch: Sequence[tuple[int, SentryAlert]], *, reraise: bool = False
    ) -> bool:
        """Process ``batch``; a failure commits nothing (the states are written with the
        results), so a retry decides the same."""
        try:
            await self.process(batch)
            return True
        except Exception:
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
        seen: dict[str, IdentityState] = {}  # this batch's decisions so far, per identity
        results: list[Processed] = []
        failed: list[tuple[int, SentryAlert, str]] = []
        for n, ((inbox_id, _), alert) in enumerate(zip(batch, alerts, strict=True), 1):
            try:
                results.append(self.decide(inbox_id, alert, seen))
            except Exception as exc:
                # One bad alert is quarantined alone; its batch goes on.
                log.exception("pipeline failed on one alert", extra={"inbox_id": inbox_id})
                failed.append((inbox_id, alert, f"{type(exc).__name__}: {exc}"))
            if n % YIELD_EVERY == 0:
                # Let the intake's group commits (the edge waits on them for its 202)
                # run between decisions, rather than after a whole batch of them.
                await asyncio.sleep(0)
        await self.outbox.complete(results)
        if failed:
            # The rest of the batch is committed: only the failed go round again.
            await self._quarantine(failed, [(inbox_id, alert) for inbox_id, alert, _ in failed])

    async def _quarantine(
        self,
        failed: Sequence[tuple[int, SentryAlert, str]],
        otherwise: Sequence[tuple[int, SentryAlert]],
    ) -> bool:
        """Quarantine ``failed`` (inbox id, alert, reason); if the store cannot take them,
        hand ``otherwise`` out again after a pause (they stay in the inbox, and the next
        start reads them in any case) and return False."""
        try:
            await self.outbox.quarantine_taken(failed)
            return True
        except Exception:
            log.exception("cannot quarantine; retrying later", extra={"alerts": len(failed)})
            self.outbox.requeue(otherwise)
            await asyncio.sleep(RETRY_DELAY)
            return False

    def decide(
        self, inbox_id: int, alert: SentryAlert, seen: dict[str, IdentityState] | None = None
    ) -> Processed:
        """One webhook through classification and its identity's state machine; ``seen``
        holds the states this batch's earlier decisions left, and gets this one's."""
        now = self.clock()
        identity = alert.identity
        if alert.state is State.RESOLVED and alert.occurred_at is None:
            # A resolve without a time of its own happened by the time it was accepted: a
            # backlog (a restart) must not make the events that came after it look stale.
            accepted = self.outbox.accepted_at(inbox_id) or now
            alert = dataclasses.replace(alert, occurred_at=accepted)
        previous = seen.get(identity) if seen and identity in seen else self.previous(identity)
        decision = classify(alert, self.config.classification)
        result = step(previous, alert, decision, now, self.policy)
        if seen is not None:
            seen[identity] = result.state
        self._count(alert, decision, result, now)
        if result.state is previous:
            return Processed(inbox_id=inbox_id, send=(), active={})
        active = {}
        if result.state.alert is not (previous.alert if previous else None):
            active[identity] = result.state.alert
        kept = (result.state, result.state.kept_until(self.policy))
        return Processed(
            inbox_id=inbox_id, send=result.posts, active=active, states={identity: kept}
        )

    def previous(self, identity: str) -> IdentityState | None:
        """What the outbox holds for ``identity``. An alert active from before the state
        table existed (an upgrade) stands in for a state, so it is replaced, not doubled."""
        known = self.outbox.state(identity)
        if known is not None:
            return known
        active = self.outbox.active(identity)
        if active is None:
            return None
        severity = active.labels.get("severity")
        return IdentityState(
            alert=active,
            severity=Severity(severity) if severity in set(Severity) else None,
            posted=fingerprint(active.labels),
            posted_at=active.starts_at,
        )

    def _count(self, alert: SentryAlert, decision: Decision, result: Step, now: datetime) -> None:
        self.metrics.alerts.labels(result.outcome.value).inc()
        resolves = sum(1 for p in result.posts if p.ends_at is not None and p.ends_at <= now)
        if resolves:
            self.metrics.resolutions.inc(resolves)
        if result.outcome is Outcome.FORWARDED:
            assert result.severity is not None
            self.metrics.alerts_by_severity.labels(result.severity.value).inc()
            if result.escalated:
                self.metrics.escalations.inc()
        # The state keeps the fingerprint of what it fired; only a resolve needs hashing.
        label_hash = result.state.posted if result.outcome is Outcome.FORWARDED else None
        if label_hash is None and result.posts:
            label_hash = fingerprint(result.posts[-1].labels)
        # "decided", not "sent": delivery says when each Alertmanager has it.
        log.info(
            "alert decided",
            extra={
                "request_id": alert.request_id,
                "resource": alert.resource,
                "action": alert.action,
                "outcome": result.outcome.value,
                "state": alert.state.value,
                "severity": result.severity.value if result.severity else None,
                "escalated": result.escalated,
                "rule": decision.rule,
                "identity": alert.identity,
                "project": alert.project,
                "environment": alert.environment,
                "fingerprint": label_hash,
                "alerts_queued": len(result.posts) or None,
            },
        )

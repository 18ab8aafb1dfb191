"""The stages a webhook goes through, composed in one place.

Request path (``bridge.compose.Bridge.accept``, from the edge): the normalised alert
is committed to the store's inbox and the webhook is answered; nothing slow happens there.

Background (``run``), per batch of accepted alerts, in arrival order:

1. enrich   - affected users and events from Sentry's API (cached, strict timeout)
2. classify - first matching rule: a severity with labels, or drop
3. step     - the identity's state machine (``bridge.state``, docs/state-machine.md):
              escalation, dedup, "only gets worse until resolved", one label set per
              identity, stale retries; it returns the new state and the posts
4. complete - posts queued for every Alertmanager, states written (the active alert is the
              state's), failed alerts quarantined, in one transaction
              (``Store.complete``); ``delivery.Delivery`` sends them.

Escalation ticks (``bridge.escalation``: ``resource="bridge"``, ``action="tick"``) come
through the inbox like webhooks: which of the batch's alerts are silenced in Alertmanager is
asked once per batch before the decisions (I/O, like enrichment), and ``state.tick`` takes
the place of classify and step.

Only the store contract (``bridge.store.contract``) is used, so either engine can run
behind it. ``take`` hands out the batch with the stored state of each identity and the
store's clock; each decision sees every earlier one for its identity: the batch's own
results first, then what the store held.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable
from dataclasses import replace
from datetime import datetime
from functools import partial
from typing import Any

from bridge.classify import Decision, classify
from bridge.config import Config
from bridge.context import missing
from bridge.dedup import fingerprint
from bridge.enrich import Enricher
from bridge.escalation import Silences, is_tick
from bridge.metrics import Metrics
from bridge.model import Outcome, SentryAlert, evolve
from bridge.reconcile import RESOURCE as SENTRY_API
from bridge.state import IdentityState, Policy, Step, reconcile, step, tick
from bridge.store.contract import Entry, Failed, Processed, Store, Taken

log = logging.getLogger("bridge.pipeline")

BATCH = 256
YIELD_EVERY = 16  # decisions between yields to the event loop, a few ms at most
# A batch that raises (the store, enrichment) is tried again this many times, RETRY_DELAY
# apart, then alert by alert: an alert that still fails alone is quarantined alone.
RETRIES = 3
RETRY_DELAY = 1.0


class Pipeline:
    def __init__(
        self,
        config: Config,
        *,
        store: Store,
        enricher: Enricher,
        metrics: Metrics,
        silences: Silences | None = None,
    ) -> None:
        self.config = config
        self.store = store
        self.enricher = enricher
        self.silences = silences  # None: nothing is ever silenced (tests, no Alertmanager)
        self.policy = Policy.from_config(config)
        self.metrics = metrics
        # Batches handled (committed, or failed and handed back): bridge.compose's watchdog
        # reads it to tell a stuck pipeline (a hung look-up) from a busy or failing one.
        self.batches = 0
        # finish(): no batch after the current one; finished once the loop got there.
        self.finishing = False
        self.finished = False

    def finish(self) -> None:
        """Take no batch after the current one (bridge.compose's stop, on a store other
        replicas share: what is left in the inbox is theirs, and stays there for them)."""
        self.finishing = True

    async def run(self) -> None:
        """Process accepted alerts until cancelled. A batch that raises (the store,
        enrichment) is handed back and taken again after RETRY_DELAY (``_Retries`` keeps
        count, and says when to take one at a time and what to quarantine)."""
        retries = _Retries()
        while True:
            if self.finishing:
                self.finished = True
                await asyncio.Event().wait()  # until the stop cancels the task
            try:
                taken = await self.store.take(retries.limit())
            except Exception:
                # Reading the store failed; take() kept the entries, in order. The loop is
                # alive (the watchdog counts it): a failing store shows in /-/ready and
                # sentry_bridge_store_up, and restarting the pod would not mend it.
                log.exception("cannot read the inbox; retrying")
                self.batches += 1
                await asyncio.sleep(RETRY_DELAY)
                continue
            doomed = retries.doomed(taken)
            try:
                if doomed:
                    await self.store.complete(taken, (), doomed)
                else:
                    await self.process(taken)
            except Exception as exc:
                log.exception("pipeline batch failed", extra={"alerts": len(taken.entries)})
                await self._abandon(taken)
                retries.failed(taken, exc, quarantining=bool(doomed))
                self.batches += 1
                await asyncio.sleep(RETRY_DELAY)
                continue
            retries.done(taken)
            self.batches += 1

    async def _abandon(self, taken: Taken) -> None:
        try:
            await self.store.abandon(taken)
        except Exception:  # the entries stay in the inbox; the next start reads them
            log.exception("cannot hand a batch back", extra={"alerts": len(taken.entries)})

    async def process(self, taken: Taken) -> list[Processed]:
        """One batch: enrich, decide in order, commit; returns what was committed. A
        decision that raises quarantines its alert alone and the batch goes on; anything
        else that raises commits nothing (the states are written with the results, so a
        retry decides the same)."""
        entries = list(taken.entries)
        if self.enricher.enabled:
            # Enrichment is I/O: run the batch's look-ups concurrently (the enricher
            # collapses look-ups of one issue); the decisions then run in order.
            enriched = await asyncio.gather(*(self._enrich(e.alert) for e in entries))
            entries = [replace(e, alert=a) for e, a in zip(entries, enriched, strict=True)]
        silenced = await self._silenced(entries, taken)
        # Each decision sees the state the batch's earlier ones left, else the stored one.
        states: dict[str, IdentityState] = dict(taken.states)
        results: list[Processed] = []
        failed: list[Failed] = []
        # Metrics and the "alert decided" line once committed: a batch rolled back and
        # taken again (the store failing) is counted once, when it is decided for good.
        tally: list[Callable[[], None]] = []
        for n, entry in enumerate(entries, 1):
            if n % YIELD_EVERY == 0:
                # Let the intake's group commits (the edge waits on them for its 202)
                # run between decisions, rather than after a whole batch of them.
                await asyncio.sleep(0)
            identity = entry.alert.identity
            try:
                result = self.decide(
                    entry,
                    states.get(identity),
                    taken.now,
                    tally,
                    silenced=entry.inbox_id in silenced,
                )
            except Exception as exc:
                # One bad alert is quarantined alone; its batch goes on.
                log.exception("pipeline failed on one alert", extra={"inbox_id": entry.inbox_id})
                failed.append(Failed(entry.inbox_id, entry.alert, _reason(exc)))
                continue
            if identity in result.states:
                states[identity] = result.states[identity][0]
            results.append(result)
        await self.store.complete(taken, results, failed)
        for count in tally:
            count()
        return results

    async def _silenced(self, entries: list[Entry], taken: Taken) -> set[int]:
        """The ticks (inbox ids) whose alert a silence holds, asked only for a step due: one
        question per Alertmanager for the whole batch (``Silences.held``)."""
        if self.silences is None:
            return set()
        asked: list[tuple[int, dict[str, str]]] = []
        for entry in entries:
            state = taken.states.get(entry.alert.identity)
            if not is_tick(entry.alert) or state is None or state.firing(taken.now) is None:
                continue
            if state.due_at is not None and state.due_at <= taken.now and state.alert:
                asked.append((entry.inbox_id, state.alert.labels))
        if not asked:  # the webhook path: no I/O, no task
            return set()
        found = await self.silences.held([labels for _, labels in asked])
        return {inbox_id for (inbox_id, _), held in zip(asked, found, strict=True) if held}

    async def _enrich(self, alert: SentryAlert) -> SentryAlert:
        if alert.resource == SENTRY_API or is_tick(alert):
            return alert  # the reconciler's answer, the escalation timer: nothing to classify
        return await self.enricher.enrich(alert)

    def decide(
        self,
        entry: Entry,
        previous: IdentityState | None,
        now: datetime,
        tally: list[Callable[[], None]] | None = None,
        *,
        silenced: bool = False,
    ) -> Processed:
        """One webhook through classification and its identity's state machine, from the
        state its identity was in; the new state is in the result's ``states`` (absent
        when nothing changed). Counted and logged at once, or, with ``tally``, by the
        caller once the result is committed. An escalation tick goes to ``state.tick``
        (``silenced``: a silence in Alertmanager holds its step), the reconciler's answer to
        ``state.reconcile``."""
        alert = entry.alert
        filled: tuple[str, ...] = ()
        if is_tick(alert):
            decision = _TICK
            result = tick(previous, now, self.policy, silenced=silenced)
        elif alert.resource == SENTRY_API:
            # The reconciler's answer from Sentry's API (bridge.reconcile), not a webhook.
            observed = alert.occurred_at or entry.accepted_at
            result = reconcile(previous, alert.action, observed, now, self.policy)
            decision = Decision(SENTRY_API, result.severity, {}, {})
        else:
            alert, filled = read_in_context(entry, previous, now)
            decision = classify(alert, self.config.classification)
            result = step(previous, alert, decision, now, self.policy)
        if tally is None:
            self._count(alert, decision, result, now, filled)
        else:
            tally.append(partial(self._count, alert, decision, result, now, filled))
        if result.state is previous:
            return Processed(inbox_id=entry.inbox_id, send=())
        kept = (result.state, result.state.kept_until(self.policy))
        return Processed(inbox_id=entry.inbox_id, send=result.posts, states={alert.identity: kept})

    def _count(
        self,
        alert: SentryAlert,
        decision: Decision,
        result: Step,
        now: datetime,
        filled: tuple[str, ...] = (),
    ) -> None:
        self.metrics.decided(result.outcome.value).inc()
        resolves = sum(1 for p in result.posts if p.ends_at is not None and p.ends_at <= now)
        if resolves:
            self.metrics.resolutions.inc(resolves)
        if result.outcome is Outcome.FORWARDED:
            assert result.severity is not None
            self.metrics.decided_severity(result.severity.value).inc()
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
                "from_context": ",".join(filled) or None,
            },
        )


# What a tick is "classified" as, for the count and the log line: no rule decides it.
_TICK = Decision("escalation", None, {}, {})


def read_in_context(
    entry: Entry, previous: IdentityState | None, now: datetime
) -> tuple[SentryAlert, tuple[str, ...]]:
    """The entry's alert as it is classified (issue 16): with the time the bridge answered
    it (when the edge did not stamp it, the store's acceptance is that moment) and, for
    what it does not say, the issue's context (``bridge.context.fill``); with the names
    of the fields the context filled."""
    alert = entry.alert
    changes: dict[str, Any] = {}
    if previous is not None:
        firing = previous.firing(now)
        env = firing.labels.get("environment") if firing else None
        changes = missing(alert, previous.context, env)
    if alert.answered_at is None:
        # A resolve (or an issue webhook) without a Sentry time of its own happened by the
        # time it was answered: a backlog (a restart) must not make later events look stale.
        changes["answered_at"] = entry.accepted_at
    if not changes:
        return alert, ()
    return evolve(alert, **changes), changes.get("from_context", ())


def _reason(exc: Exception) -> str:
    return f"{type(exc).__name__}: {exc}"


class _Retries:
    """What ``Pipeline.run`` remembers between tries. Once the same entries failed
    RETRIES times in a row they are taken one at a time; one that fails alone too is
    quarantined, alone, the next time it is taken (the others go through). If even the
    quarantine cannot be written, the store itself is failing: everything goes round
    again, afresh."""

    def __init__(self) -> None:
        self.reset()

    def reset(self) -> None:
        self.failing: set[int] = set()  # the entries of the batch that failed last...
        self.failures = 0  # ...and how many times in a row
        self.alone: set[int] = set()  # taken one at a time until each is through
        self.reasons: dict[int, str] = {}  # failed alone: why, for the quarantine

    def limit(self) -> int:
        return 1 if self.alone else BATCH

    def doomed(self, taken: Taken) -> list[Failed]:
        """The entries of ``taken`` to quarantine, if every one of them failed alone."""
        ids = {e.inbox_id for e in taken.entries}
        # Entries handed out again come first: older ones not among these went to
        # another replica.
        self.alone = {i for i in self.alone if i >= min(ids)}
        if not ids <= self.reasons.keys():
            return []
        return [Failed(e.inbox_id, e.alert, self.reasons[e.inbox_id]) for e in taken.entries]

    def failed(self, taken: Taken, exc: Exception, *, quarantining: bool) -> None:
        ids = {e.inbox_id for e in taken.entries}
        if quarantining:
            self.reset()
            return
        self.failures = self.failures + 1 if ids & self.failing else 1
        self.failing = ids
        if ids & self.alone:
            self.reasons.update(dict.fromkeys(ids, _reason(exc)))
        elif self.failures >= RETRIES:
            self.alone = set(ids)

    def done(self, taken: Taken) -> None:
        self.failing, self.failures = set(), 0
        for entry in taken.entries:
            self.alone.discard(entry.inbox_id)
            self.reasons.pop(entry.inbox_id, None)

"""The store contract: what the pipeline, delivery and the edge need from a store.

Two engines keep it: ``sqlite`` (``bridge.store.sqlite.SqliteStore``: embedded, one process,
one replica) and ``postgres`` (``bridge.store.pg.PostgresStore``: shared by every
replica). Nothing outside ``bridge/store`` knows which one runs.

A webhook's way through a store (docs/scaling.md has the picture):

1. ``accept`` (the edge): the normalised alert is committed to the inbox, durably (fsynced
   in both engines), before the 202. The same body (by SHA-256 digest) within the body
   retention is a duplicate: False, nothing stored, across every replica.
2. ``take`` (the pipeline): the next inbox entries in arrival order, with the state of
   every identity they name. One decision per identity at a time across replicas: until
   ``complete`` or ``abandon``, no other taker gets an entry of those identities (on
   PostgreSQL the taker holds a transaction with an advisory lock per identity), and an
   identity's entries are handed out in the order they were accepted.
3. ``complete``: in one transaction, the taken entries leave the inbox, the posts are
   queued for every Alertmanager, the identities' states are written (the active alert is
   the state's ``alert``: one copy), and the failed entries go to quarantine.
4. ``lane(target)`` (delivery): the one right to post to one Alertmanager, across
   replicas, so what reaches an Alertmanager keeps the order it was decided in; held for
   one batch or one page, so a fresh alert never waits behind a whole re-send round. What
   an Alertmanager refuses is its dead letter (``Lane``) and nobody else's business.
5. ``periodic()``: whether this replica runs the periodic jobs (re-sends, expiry, the
   reconciler's rounds, which page through ``issues``) now; one
   replica at a time (a lease on PostgreSQL), taken over within the lease's time.

What a store holds is one read, ``sizes()`` (``Sizes``), cached briefly
(``bridge.store.sizes``); nothing counts it by hand but the accepts since the last read,
which ``full()`` needs to bound ``store.max_queued`` without a read per webhook.

Times are the store's: ``Taken.now`` is the database's clock on PostgreSQL, so replicas
with skewed clocks decide the same windows.
"""

from __future__ import annotations

import asyncio
from collections.abc import Mapping, Sequence
from contextlib import AbstractAsyncContextManager
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any, Protocol

from bridge.alertmanager import PostableAlert
from bridge.model import SentryAlert
from bridge.state import IdentityState


@dataclass(frozen=True, slots=True)
class Entry:
    """One accepted webhook, as ``take`` hands it out."""

    inbox_id: int
    accepted_at: datetime
    alert: SentryAlert


@dataclass(frozen=True, slots=True)
class Taken:
    """What ``take`` handed out; give it back with ``complete`` or ``abandon``."""

    entries: Sequence[Entry]
    # The stored state of every identity of ``entries`` that has one.
    states: Mapping[str, IdentityState]
    now: datetime  # the store's clock when taken
    handle: Any = None  # the engine's (a PostgreSQL transaction)


@dataclass(frozen=True, slots=True)
class Processed:
    """What the pipeline made of one inbox entry; ``complete`` commits it."""

    inbox_id: int
    send: Sequence[PostableAlert]  # to every Alertmanager, in order
    # identity -> its new state and until when to keep it (None: forget it). The active
    # alert of the identity is ``state.alert`` (None: nothing active).
    states: Mapping[str, tuple[IdentityState, datetime | None]] = field(default_factory=dict)


@dataclass(frozen=True, slots=True)
class Failed:
    """An entry the pipeline failed on: quarantined by ``complete``, with the reason."""

    inbox_id: int
    alert: SentryAlert
    reason: str


@dataclass(frozen=True, slots=True)
class Queued:
    """One queued alert as a sender reads it."""

    id: int
    queued_at: float  # epoch seconds the webhook was accepted
    body: str  # the alert's wire JSON, posted as is


@dataclass(frozen=True, slots=True)
class Quarantined:
    """One quarantined webhook, as ``sentry-bridge quarantine list`` shows it."""

    id: int
    at: float  # epoch seconds it was quarantined
    reason: str  # one of bridge.metrics.QUARANTINE_REASONS
    detail: str
    headers: dict[str, str]
    body: bytes  # the raw body (empty when ``alert`` is set)
    alert: dict[str, Any] | None  # the normalised alert, when the pipeline failed on it


@dataclass(frozen=True, slots=True)
class Page:
    """One page of what an Alertmanager should hold (``Lane.resend_page``)."""

    bodies: Sequence[str]  # wire JSON, as stored (original times)
    after: Any  # pass to the next call; None when this was the last page
    # The Sentry identities of the bodies (None for one the bridge did not build), so a
    # sender can tell whether a fresh alert is of an identity on the page without parsing
    # the page again on the event loop (bridge.resends).
    identities: frozenset[str | None] = frozenset()


@dataclass(frozen=True, slots=True)
class Sizes:
    """What a store holds, as one read (``Store.sizes``)."""

    at: float  # epoch seconds of the read, on the store's clock
    inbox: int  # accepted webhooks the pipeline has not completed
    queued: Mapping[str, int]  # per Alertmanager: the alerts it has not settled yet
    active: int  # identities whose alert fires
    resolved: int  # resolved label sets still re-sent
    quarantined: int
    oldest_at: float | None  # epoch seconds the oldest webhook or alert held was accepted
    spooled: int = 0  # in the local spool, waiting for PostgreSQL (bridge.store.spool)

    @property
    def behind(self) -> int:
        """The queue of the Alertmanager furthest behind."""
        return max(self.queued.values(), default=0)

    @property
    def length(self) -> int:
        """Everything accepted and not yet delivered everywhere (``store.max_queued``)."""
        return self.inbox + self.spooled + self.behind

    @property
    def resendable(self) -> int:
        """What a re-send round posts: the active alerts and the recently resolved ones."""
        return self.active + self.resolved

    @property
    def oldest_age(self) -> float:
        """Seconds the oldest held webhook or alert had waited at the read (0: none)."""
        return 0.0 if self.oldest_at is None else max(0.0, self.at - self.oldest_at)


class Lane(Protocol):
    """The right to post to one Alertmanager, held by one sender at a time."""

    async def pending(self, limit: int) -> list[Queued]:
        """The next alerts this Alertmanager still needs, oldest first."""

    async def advance(self, done: int, dead: Sequence[tuple[Queued, str]] = ()) -> None:
        """Settled: every queued id up to ``done`` (as returned by ``pending``); ``dead``
        are the ones this Alertmanager refused, with the reason: its dead letters."""

    async def resend_page(self, after: Any, limit: int) -> Page:
        """Recently resolved alerts, then the active ones, up to ``limit`` at a time;
        start with ``after=None``. Read inside the lane: a resolve decided after the read
        is queued, and so posted after this page. Without the alerts this Alertmanager
        refused (its dead letters, ``bridge.store.refusals``)."""

    async def refuse(self, refused: Sequence[tuple[str, str]]) -> int:
        """This Alertmanager refused these re-sent alerts (wire JSON, reason) for their
        content: each becomes its dead letter, once (one it refused before is not kept
        again), so its re-sends skip it. What the identity holds and what the other
        Alertmanagers get does not change. Returns how many are new dead letters."""


class Store(Protocol):
    """One engine of the store (the module docstring says how the parts fit)."""

    targets: tuple[str, ...]  # the Alertmanagers, by target name
    # Set whenever a sender finishes a batch (``Delivery.drain`` waits on it).
    progress: asyncio.Event

    async def open(self) -> None:
        """Create or migrate the schema, read what is left from before; raises on failure."""

    async def close(self) -> None: ...

    # --- the edge ---------------------------------------------------------------------

    async def accept(self, alert: SentryAlert, digest: bytes | None = None) -> bool:
        """Committed and on disk before it returns; False (nothing stored) when the body
        of ``digest`` was accepted before. Raises ``StoreFull`` when it cannot be
        stored (full, or the store failing): the edge answers 503, Sentry retries."""

    async def quarantine(
        self, reason: str, detail: str, headers: Mapping[str, str], body: bytes, digest: bytes
    ) -> bool:
        """Keep an authenticated webhook the bridge cannot process, durably; False when
        the same body was seen before."""

    # --- the pipeline -----------------------------------------------------------------

    async def take(self, limit: int) -> Taken:
        """Up to ``limit`` entries in arrival order; waits for at least one."""

    def idle(self) -> bool:
        """True while ``take`` waits, having found nothing this taker may claim (the inbox
        is empty, or every identity waiting in it is another replica's now) and with no
        wake-up pending: this replica's own progress, whatever the others hold
        (bridge.compose's watchdog and its stop read it)."""

    async def complete(
        self, taken: Taken, results: Sequence[Processed], failed: Sequence[Failed] = ()
    ) -> None:
        """Commit the results and quarantine ``failed`` in one transaction. Every entry of
        ``taken`` must be in one or the other. On failure nothing is committed, and
        ``taken`` must still be abandoned."""

    async def abandon(self, taken: Taken) -> None:
        """Nothing of ``taken`` is committed: its entries are handed out again, first."""

    # --- delivery ---------------------------------------------------------------------

    def lane(self, target: str) -> AbstractAsyncContextManager[Lane | None]:
        """Hold the right to post to ``target``; None (at once) while another replica holds
        it. What is written inside commits when the block ends without an exception."""

    def wakeup(self, target: str) -> asyncio.Event:
        """Set when alerts were queued (by this process); each sender clears its own."""

    async def periodic(self) -> bool:
        """True while this replica should run the re-sends and expiry."""

    async def due(self, limit: int) -> list[tuple[str, datetime]]:
        """(identity, when) of the identities whose next escalation step
        (``IdentityState.due_at``) is due by the store's clock, the most overdue first, at
        most ``limit`` (``bridge.escalation``)."""

    async def issues(self, after: str | None, limit: int) -> list[tuple[str, IdentityState]]:
        """Up to ``limit`` issue identities (``issue:<id>``) that have a state, with it, in
        the order of their names (plain byte order), the first after ``after``: the issues
        behind firing alerts and those resolved within the day a state is kept, for the
        reconciler (bridge/reconcile.py). Page on with the last identity."""

    async def expire(self, *, resolved_for: float) -> None:
        """Forget active alerts whose endsAt passed and resolved ones re-sent for
        ``resolved_for`` seconds."""

    # --- operators --------------------------------------------------------------------

    def store_ok(self) -> bool:
        """False while writes keep failing (/-/ready red)."""

    async def probe(self) -> bool:
        """One tiny write, so a failing store is noticed to recover; returns ``store_ok``."""

    async def requeue_dead_letters(self) -> dict[str, int]:
        """Queue the dead letters again: a resolve as it was, a firing alert only if it is
        still its identity's active alert (then as it is now); counts by outcome."""

    async def quarantined(
        self, entry_id: int | None = None, *, after: int = 0, limit: int = 100
    ) -> list[Quarantined]:
        """Quarantined entries, oldest first: the one of ``entry_id`` (or none), else up to
        ``limit`` with an id above ``after`` (page on with the last id)."""

    async def release(self, entry_id: int, alert: SentryAlert | None) -> bool:
        """Remove a quarantined entry; with ``alert``, accept that in the same transaction.
        False (and nothing accepted) when the entry is not there (any more)."""

    async def discard_quarantined(self, ids: Sequence[int] | None) -> list[int]:
        """Remove these quarantined entries (None: every one) for good; the ids removed."""

    async def snapshot(self, limit: int) -> dict[str, Any]:
        """For ``/-/status``: counts, the first ``limit`` active alerts, newest dead letters,
        and the quarantine: ``quarantine_reasons`` (count per reason) and
        ``quarantine_oldest_at`` (epoch seconds; None when empty)."""

    # --- sizes ------------------------------------------------------------------------

    async def sizes(self, max_age: float = 1.0) -> Sizes:
        """What the store holds, read from the database at most ``max_age`` seconds ago
        (concurrent callers share one read; 0: read now). PostgreSQL's count every
        replica's work."""

    async def full(self) -> bool:
        """Whether ``accept`` refuses for ``store.max_queued``: the last read's ``length``
        plus this replica's accepts since, read again first when this replica has settled
        or completed anything since (the spool asks before it hands a webhook over)."""

"""``SqliteStore``: the store contract (``bridge.store.contract``) on one SQLite file, for one
process (the package docstring has the tables, durability and memory).

The parts: ``schema``, ``inbox`` (accepts, takes, executing what a batch of decisions
writes: ``bridge.store.writes``), ``identity`` (states), ``queue`` (the queue, lanes,
re-send pages, dead letters), ``operators`` (requeue, quarantine, snapshot, expiry), and
``bridge.store.sqlite_file`` (the file on its one thread, and the group commit, shared
with the spool). This module composes them and keeps what the process keeps in memory:
the ids and times of what is in the inbox and each Alertmanager's queue, the first
``kept_in_memory`` accepted alerts, and the sizes.
"""

from __future__ import annotations

import asyncio
import collections
import contextlib
import json
import logging
import sqlite3
from collections.abc import AsyncIterator, Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, TypeVar

from bridge.errors import ConfigError, StoreFull
from bridge.metrics import Metrics
from bridge.model import SentryAlert
from bridge.state import IdentityState
from bridge.store import writes
from bridge.store.contract import Entry, Failed, Lane, Processed, Quarantined, Taken
from bridge.store.group_commit import GroupCommit
from bridge.store.health import WriteHealth
from bridge.store.shield import Shield
from bridge.store.sqlite import identity, inbox, operators, queue
from bridge.store.sqlite.schema import FILENAME, SCHEMA, check_version
from bridge.store.sqlite_file import SqliteFile

log = logging.getLogger("bridge.store")

T = TypeVar("T")


@dataclass(frozen=True, slots=True)
class _Loaded:
    inbox: list[tuple[int, float]]
    queue: list[tuple[str, int, float]]  # target, id, queued_at
    active: int
    resolved: int
    quarantined: int


def utcnow() -> datetime:
    return datetime.now(UTC)


class SqliteStore:
    # How long open() waits for another process to let go of the file (a bridge that
    # is still draining during a rolling restart).
    lock_timeout_ms = 5000
    # The dead-letter table is for a human to look at, not an archive: the newest are kept.
    dead_letters_kept = 10_000
    # Accepted alerts kept as objects for take(); a longer backlog is read back from disk.
    kept_in_memory = 1024
    # Quarantine is for a human to replay; the newest are kept (the alert fires long before).
    quarantine_kept = 100_000
    # Consecutive failed write transactions after which the store counts as failing
    # (/-/ready red) until one succeeds.
    failing_after = 3

    def __init__(
        self,
        data_dir: Path,
        targets: Sequence[str],
        *,
        max_queued: int,
        metrics: Metrics,
        clock: Callable[[], datetime] = utcnow,
        body_retention: float = 86400.0,
        max_bodies: int = 100_000,
    ) -> None:
        if not targets:
            raise ConfigError("the store needs at least one Alertmanager")
        if len(set(targets)) != len(targets):
            raise ConfigError(f"two Alertmanager URLs name the same target: {list(targets)}")
        self.path = Path(data_dir) / FILENAME
        self.targets = tuple(targets)
        self.max_queued = max_queued
        self.clock = clock
        self.metrics = metrics
        self.body_retention = body_retention
        self.max_bodies = max_bodies
        self._health = WriteHealth(metrics, self.failing_after)
        self._quarantine_count = 0
        self._file = SqliteFile(self.path, name="store")
        # Request path: waiting for the next group commit, then handed to take().
        self._accepts = GroupCommit(self._write_accepts, name="store-flush")
        self._ready: collections.deque[tuple[int, SentryAlert | None]] = collections.deque()
        self._ready_event = asyncio.Event()
        self._idle = False  # take() is waiting with nothing to claim
        self._inbox_times: dict[int, float] = {}  # committed, not completed; insertion order
        self._active_count = 0
        self._resolved_count = 0
        # Delivery side.
        # Per Alertmanager: the ids and times of its queue rows, oldest first.
        self._queued = {target: collections.deque[tuple[int, float]]() for target in self.targets}
        self._wakeups = {target: asyncio.Event() for target in self.targets}
        self._lanes = {target: asyncio.Lock() for target in self.targets}
        self.progress = asyncio.Event()  # set whenever a sender finishes a batch
        self._shield = Shield()  # writes that finish even if their caller is cancelled
        metrics.watch_store(self)

    # --- lifecycle ----------------------------------------------------------------------

    async def open(self) -> None:
        self._file.lock_timeout_ms = self.lock_timeout_ms
        await self._file.open(SCHEMA)
        try:
            loaded = await self._file.call(self._load)
        except BaseException:
            await self._file.close()
            raise
        self._inbox_times.update(loaded.inbox)
        self._ready.extend((inbox_id, None) for inbox_id, _ in loaded.inbox)
        for target, queue_id, queued_at in loaded.queue:
            self._queued[target].append((queue_id, queued_at))
        self._active_count, self._resolved_count = loaded.active, loaded.resolved
        self._quarantine_count = loaded.quarantined
        if self._ready:
            self._ready_event.set()
        self._wake_senders()
        counts = {"inbox": len(self._ready), "queued": self.queued_count()}
        log.info("store opened", extra={**counts, "active": loaded.active})

    async def close(self) -> None:
        if not self._file.is_open:
            return
        while self._accepts.busy or self._shield.busy:
            await asyncio.gather(self._accepts.idle(), self._shield.idle())
        await self._file.close()

    # --- the request path ---------------------------------------------------------------

    async def accept(self, alert: SentryAlert, digest: bytes | None = None) -> bool:
        """Durably store a normalised alert; returns once its group commit is done. With
        the ``digest`` (SHA-256) of its body: False, and nothing stored, when that body
        was already accepted within ``body_retention``."""
        if self.length() >= self.max_queued:
            raise StoreFull()
        return await self._accepts.submit((alert, digest))

    async def _write_accepts(self, batch: Sequence[tuple[SentryAlert, bytes | None]]) -> list[bool]:
        """One group commit (``GroupCommit``): whether each alert was stored."""
        now = self._now()
        try:
            ids = await self._write(inbox.insert, batch, now, self.body_retention, self.max_bodies)
        except Exception as exc:
            if not isinstance(exc, sqlite3.Error):  # the file's are WriteHealth's, said once
                log.exception("cannot write the store", extra={"alerts": len(batch)})
            raise StoreFull("the store cannot be written") from exc
        stored: list[bool] = []
        for (alert, _), inbox_id in zip(batch, ids, strict=True):
            if inbox_id is None:  # the same body within body_retention
                self.metrics.duplicate_bodies.inc()
                stored.append(False)
                continue
            self._inbox_times[inbox_id] = now
            keep = len(self._ready) < self.kept_in_memory
            self._ready.append((inbox_id, alert if keep else None))
            stored.append(True)
        self._ready_event.set()
        return stored

    # --- the pipeline -------------------------------------------------------------------

    async def take(self, limit: int) -> Taken:
        """The next accepted entries in arrival order; waits for at least one. Reads the
        states of their identities along (one query), so deciding needs no disk."""
        while True:
            self._idle = True  # nothing to take (contract.idle) until woken
            try:
                while not self._ready:
                    self._ready_event.clear()
                    await self._ready_event.wait()
            finally:
                self._idle = False
            entries = [self._ready.popleft() for _ in range(min(limit, len(self._ready)))]
            try:
                taken, dropped, states = await self._file.call(self._read_taken, entries)
            except BaseException:
                self._ready.extendleft(reversed(entries))  # not handed out: keep the order
                raise
            for inbox_id in dropped:
                self._inbox_times.pop(inbox_id, None)
            if taken:
                return Taken(
                    entries=[
                        Entry(i, datetime.fromtimestamp(self._inbox_times[i], UTC), alert)
                        for i, alert in taken
                    ],
                    states=states,
                    now=self.clock(),
                )

    def idle(self) -> bool:
        return self._idle and not self._ready

    async def complete(
        self, taken: Taken, results: Sequence[Processed], failed: Sequence[Failed] = ()
    ) -> None:
        """In one transaction, what ``writes.plan`` says the batch writes. Shielded, so a
        cancelled caller cannot leave memory behind the file."""
        planned = writes.plan(taken, results, failed, self.clock())
        await self._shield(self._complete(planned))

    async def _complete(self, planned: writes.Writes) -> None:
        written: inbox.Completed = await self._write(
            inbox.complete, planned, self.targets, self._resolved_count > 0, self.quarantine_kept
        )
        for inbox_id in planned.done:
            self._inbox_times.pop(inbox_id, None)
        self._track(written.ids, [post.queued_at.timestamp() for post in planned.posts])
        self._active_count += written.active
        self._resolved_count += written.resolved
        self._quarantine_count += written.quarantined
        if planned.quarantined:
            self.metrics.quarantined.labels("pipeline_error").inc(len(planned.quarantined))
        if written.ids:
            self._wake_senders()

    async def abandon(self, taken: Taken) -> None:
        """Hand the entries of ``taken`` out again, first and in order (a failed batch)."""
        self._ready.extendleft(reversed([(e.inbox_id, e.alert) for e in taken.entries]))
        self._ready_event.set()

    def active_count(self) -> int:
        return self._active_count

    def resendable_count(self) -> int:
        """Active and recently resolved alerts: what a re-send round posts."""
        return self._active_count + self._resolved_count

    # --- the senders --------------------------------------------------------------------

    def wakeup(self, target: str) -> asyncio.Event:
        """Set whenever alerts are queued; each sender clears its own before reading."""
        return self._wakeups[target]

    @contextlib.asynccontextmanager
    async def lane(self, target: str) -> AsyncIterator[Lane | None]:
        """The right to post to ``target``: one process, so a lock per Alertmanager, and
        never None. Its advance commits when the block ends without an exception."""
        async with self._lanes[target]:
            lane = queue.Lane(self, target)
            yield lane
            await lane.commit()

    async def periodic(self) -> bool:
        """One replica: it always runs the re-sends and expiry."""
        return True

    async def _advance(
        self, target: str, done: int | None, dead: Sequence[tuple[str, str]]
    ) -> None:
        await self._write(queue.advance, target, done, dead, self._now(), self.dead_letters_kept)
        rows = self._queued[target]
        while rows and done is not None and rows[0][0] <= done:
            rows.popleft()
        self.progress.set()

    def _track(self, ids: Sequence[int], times: Sequence[float]) -> None:
        """Keeps the ids and times (one per post) of newly queued rows, in
        ``queue.enqueue``'s order: per post, one row per target."""
        stamps = [stamp for stamp in times for _ in self.targets]
        for n, (queue_id, stamp) in enumerate(zip(ids, stamps, strict=True)):
            self._queued[self.targets[n % len(self.targets)]].append((queue_id, stamp))

    async def issues(self, after: str | None, limit: int) -> list[tuple[str, IdentityState]]:
        return await self._read(identity.issues, after, limit)

    async def expire(self, *, resolved_for: float) -> None:
        """Forget active alerts whose endsAt passed (Alertmanager has expired them too) and
        resolved ones re-sent for ``resolved_for`` seconds."""
        await self._shield(self._expire(resolved_for))

    async def _expire(self, resolved_for: float) -> None:
        now = self._now()
        active, resolved = await self._write(operators.expire, now, now - resolved_for)
        self._active_count -= active
        self._resolved_count -= resolved

    async def dead_letters(self) -> list[tuple[str, str, dict[str, Any]]]:
        """(target, reason, alert) of every dead letter, oldest first."""
        return await self._read(operators.read_dead_letters)

    # --- store health, quarantine -------------------------------------------------------

    def store_ok(self) -> bool:
        """False after ``failing_after`` write transactions failed in a row."""
        return self._health.ok

    async def probe(self) -> bool:
        """One tiny write transaction, so a failing store is noticed to recover even when
        nothing else writes; returns :meth:`store_ok`."""
        with contextlib.suppress(sqlite3.Error):
            await self._write(_probe, self._now())
        return self.store_ok()

    async def quarantine(
        self, reason: str, detail: str, headers: Mapping[str, str], body: bytes, digest: bytes
    ) -> bool:
        """Keep an authenticated webhook the bridge cannot process, durably; False (nothing
        kept) when the same body was already seen within ``body_retention``."""
        row: writes.QuarantineRow = (
            reason,
            detail[:1000],
            json.dumps(dict(headers)),
            body,
            None,
        )
        added = await self._shield(self._write(self._quarantine, row, digest, self._now()))
        if added is None:
            self.metrics.duplicate_bodies.inc()
            return False
        self._quarantine_count += added
        self.metrics.quarantined.labels(reason).inc()
        return True

    async def quarantined(
        self, entry_id: int | None = None, *, after: int = 0, limit: int = 100
    ) -> list[Quarantined]:
        return await self._read(operators.read_quarantine, entry_id, after, limit)

    async def release(self, entry_id: int, alert: SentryAlert | None) -> bool:
        """Remove a quarantined entry; with ``alert`` (replayed), accept that into the inbox
        in the same transaction, so it is never in neither."""
        now = self._now()
        found, inbox_id = await self._shield(self._write(operators.release, entry_id, alert, now))
        self._quarantine_count -= found
        if inbox_id is not None and alert is not None:
            self._inbox_times[inbox_id] = now
            self._ready.append((inbox_id, alert))
            self._ready_event.set()
        return bool(found)

    async def discard_quarantined(self, ids: Sequence[int] | None) -> list[int]:
        removed = await self._shield(self._write(operators.discard_quarantine, ids))
        self._quarantine_count -= len(removed)
        return list(removed)

    def quarantine_count(self) -> int:
        return self._quarantine_count

    # --- sizes --------------------------------------------------------------------------

    def inbox_count(self) -> int:
        """Accepted webhooks the pipeline has not completed (including uncommitted)."""
        return len(self._inbox_times) + len(self._accepts)

    def queued_count(self) -> int:
        """Alerts the Alertmanager furthest behind still needs."""
        return max(map(len, self._queued.values()))

    def length(self) -> int:
        return self.inbox_count() + self.queued_count()

    def oldest_age(self) -> float:
        """Seconds since the oldest alert still in the store was accepted."""
        heads = [next(iter(self._inbox_times.values()))] if self._inbox_times else []
        heads += [rows[0][1] for rows in self._queued.values() if rows]
        return max(0.0, self._now() - min(heads)) if heads else 0.0

    # --- plumbing -----------------------------------------------------------------------

    def _now(self) -> float:
        return self.clock().timestamp()

    def _wake_senders(self) -> None:
        for event in self._wakeups.values():
            event.set()

    async def _read(self, fn: Callable[..., T], *args: Any) -> T:
        """``fn(db, *args)`` on the file's thread."""
        return await self._file.call(self._on_db, fn, args)

    async def _write(self, fn: Callable[..., T], *args: Any) -> T:
        """``fn(db, *args)`` on the file's thread, in one write transaction."""
        return await self._file.call(self._in_transaction, fn, args)

    # --- on the SQLite thread -----------------------------------------------------------

    def _on_db(self, fn: Callable[..., T], args: Sequence[Any]) -> T:
        return fn(self._file.db, *args)

    def _in_transaction(self, fn: Callable[..., T], args: Sequence[Any]) -> T:
        with self._transaction() as db:
            return fn(db, *args)

    @contextlib.contextmanager
    def _transaction(self) -> Iterator[sqlite3.Connection]:
        """``SqliteFile.transaction``, reported to the write health: the failures in a row
        make ``store_ok`` False."""
        try:
            with self._file.transaction() as db:
                yield db
        except sqlite3.Error as exc:
            self._health.failed(exc)
            raise
        self._health.succeeded()

    def _load(self) -> _Loaded:
        check_version(self._file.db, self.path)
        with self._transaction() as db:
            queue.keep_only(db, self.targets)
        return _Loaded(
            inbox=db.execute("SELECT id, accepted_at FROM inbox ORDER BY id").fetchall(),
            queue=db.execute("SELECT target, id, queued_at FROM queue ORDER BY id").fetchall(),
            active=identity.count_active(db),
            resolved=db.execute("SELECT count(*) FROM resolved").fetchone()[0],
            quarantined=operators.count_quarantine(db),
        )

    def _read_taken(
        self, entries: Sequence[tuple[int, SentryAlert | None]]
    ) -> tuple[list[tuple[int, SentryAlert]], list[int], dict[str, IdentityState]]:
        """The entries' alerts (read back where only the id was kept), the ids of
        unreadable ones (deleted), and the state of every identity taken that has one."""
        taken, dropped = inbox.read(self._file.db, entries)
        if dropped:
            with self._transaction() as db:
                inbox.delete(db, dropped)
        states = identity.read(self._file.db, {alert.identity for _, alert in taken})
        return taken, dropped, states

    def _quarantine(
        self, db: sqlite3.Connection, row: writes.QuarantineRow, digest: bytes, now: float
    ) -> int | None:
        """How many more entries the quarantine holds; None, and nothing written, when
        ``digest`` was seen within body_retention."""
        if not inbox.first_sight(db, digest, now, self.body_retention):
            return None
        inbox.forget_bodies(db, now, self.body_retention, self.max_bodies)
        return operators.insert_quarantine(db, [row], now, self.quarantine_kept)

    # --- the operator's view (bridge/status.py) ------------------------------------------

    def queue_depths(self) -> dict[str, int]:
        """Per Alertmanager: the queued alerts it has not settled yet."""
        return {target: len(rows) for target, rows in self._queued.items()}

    async def snapshot(self, limit: int) -> dict[str, Any]:
        """Counts, and the first ``limit`` active alerts and newest dead letters."""
        return await self._read(operators.read_snapshot, limit)

    async def requeue_dead_letters(self) -> dict[str, int]:
        """Queue the dead letters again (for every Alertmanager) after a fix, and empty
        the table. A resolve is queued as it was; a firing alert only if it is still the
        active alert of its identity, and then as it is now (current endsAt), so a late
        re-send can never re-fire what was resolved or replaced since."""
        now = self.clock()
        written: tuple[list[int], dict[str, int]] = await self._shield(
            self._write(operators.requeue, self.targets, now)
        )
        ids, counts = written
        self._track(ids, [now.timestamp()] * (len(ids) // len(self.targets)))
        if ids:
            self._wake_senders()
        return counts


def _probe(db: sqlite3.Connection, now: float) -> None:
    db.execute("INSERT OR REPLACE INTO probe (id, at) VALUES (1, ?)", (now,))

"""``Outbox``: the store contract (``bridge.store.contract``) on one SQLite file, for one
process (the package docstring has the tables, durability and memory)."""

from __future__ import annotations

import asyncio
import collections
import contextlib
import json
import logging
import sqlite3
from collections.abc import AsyncIterator, Callable, Collection, Iterator, Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, replace
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, TypeVar

from bridge.alertmanager import PostableAlert, wire_json
from bridge.dedup import fingerprint
from bridge.errors import ConfigError, OutboxFull
from bridge.metrics import Metrics
from bridge.model import SentryAlert, Severity
from bridge.state import IdentityState
from bridge.store.contract import (
    Entry,
    Failed,
    Lane,
    Page,
    Processed,
    Quarantined,
    Queued,
    Taken,
)

log = logging.getLogger("bridge.outbox")

FILENAME = "outbox.sqlite3"

# AUTOINCREMENT: ids are never reused, or an emptied queue would restart below the cursors.
# The time indexes let expire() find what is due without scanning every active alert.
_SCHEMA = """
CREATE TABLE IF NOT EXISTS inbox (
    id INTEGER PRIMARY KEY AUTOINCREMENT, accepted_at REAL NOT NULL, alert TEXT NOT NULL);
CREATE TABLE IF NOT EXISTS queue (
    id INTEGER PRIMARY KEY AUTOINCREMENT, queued_at REAL NOT NULL, alert TEXT NOT NULL);
CREATE TABLE IF NOT EXISTS cursor (target TEXT PRIMARY KEY, done INTEGER NOT NULL);
CREATE TABLE IF NOT EXISTS active (
    identity TEXT PRIMARY KEY, ends_at REAL, alert TEXT NOT NULL);
CREATE INDEX IF NOT EXISTS active_ends_at ON active (ends_at);
CREATE TABLE IF NOT EXISTS resolved (
    labels TEXT PRIMARY KEY, resolved_at REAL NOT NULL, alert TEXT NOT NULL);
CREATE INDEX IF NOT EXISTS resolved_resolved_at ON resolved (resolved_at);
CREATE TABLE IF NOT EXISTS state (
    identity TEXT PRIMARY KEY, kept_until REAL NOT NULL, state TEXT NOT NULL);
CREATE INDEX IF NOT EXISTS state_kept_until ON state (kept_until);
CREATE TABLE IF NOT EXISTS dead_letter (
    id INTEGER PRIMARY KEY AUTOINCREMENT, at REAL NOT NULL, target TEXT NOT NULL,
    reason TEXT NOT NULL, alert TEXT NOT NULL);
CREATE TABLE IF NOT EXISTS quarantine (
    id INTEGER PRIMARY KEY AUTOINCREMENT, at REAL NOT NULL, reason TEXT NOT NULL,
    detail TEXT NOT NULL, headers TEXT NOT NULL, body BLOB NOT NULL, alert TEXT);
CREATE TABLE IF NOT EXISTS seen_body (
    id INTEGER PRIMARY KEY AUTOINCREMENT, digest BLOB NOT NULL UNIQUE, at REAL NOT NULL);
CREATE INDEX IF NOT EXISTS seen_body_at ON seen_body (at);
CREATE TABLE IF NOT EXISTS probe (id INTEGER PRIMARY KEY CHECK (id = 1), at REAL NOT NULL);
"""

# Re-sends: the resolved alerts first, then the active ones, each table in rowid pages.
_PAGES = (
    "SELECT rowid, alert FROM resolved WHERE rowid > ? ORDER BY rowid LIMIT ?",
    "SELECT rowid, alert FROM active WHERE rowid > ? ORDER BY rowid LIMIT ?",
)

T = TypeVar("T")


@dataclass(frozen=True, slots=True)
class _Loaded:
    inbox: list[tuple[int, float]]
    queue: list[tuple[int, float]]
    cursor: dict[str, int]
    active: int
    resolved: int


@dataclass(frozen=True, slots=True)
class _Completed:
    ids: list[int]  # the queue ids of the sends, in order
    active: int  # how many more alerts are active, resolved, quarantined
    resolved: int
    quarantined: int


def utcnow() -> datetime:
    return datetime.now(UTC)


def label_key(labels: Mapping[str, str]) -> str:
    """A label set as a stable string: the identity Alertmanager gives an alert."""
    return json.dumps(sorted(labels.items()), separators=(",", ":"))


def _legacy_state(active: PostableAlert) -> IdentityState:
    """The state an alert active from before the state table stands for."""
    severity = active.labels.get("severity")
    return IdentityState(
        alert=active,
        severity=Severity(severity) if severity in set(Severity) else None,
        posted=fingerprint(active.labels),
        posted_at=active.starts_at,
    )


class _Lane:
    """One Alertmanager's lane (``Outbox.lane``): its place in the queue, its re-sends.
    ``advance`` is kept until the block ends and committed only if it ends without an
    exception, as the contract says (PostgreSQL's lane is one transaction)."""

    def __init__(self, outbox: Outbox, target: str) -> None:
        self._outbox, self._target = outbox, target
        self._done: int | None = None
        self._dead: list[tuple[Queued, str]] = []

    async def pending(self, limit: int) -> list[Queued]:
        box = self._outbox
        after = max(box._cursor[self._target], self._done or 0)
        return await box._call(box._read_queue, after, limit)

    async def advance(self, done: int, dead: Sequence[tuple[Queued, str]] = ()) -> None:
        self._done = max(done, self._done or 0)
        self._dead.extend(dead)

    async def resend_page(self, after: Any, limit: int) -> Page:
        """Recently resolved alerts, then the active ones, in rowid (keyset) pages; a row
        replaced since the last page (fired again) comes again, later, as it is now."""
        return await self._outbox._call(self._outbox._read_page, after, limit)

    async def _commit(self) -> None:
        if self._done is not None:
            box = self._outbox
            await box._shield(box._advance(self._target, self._done, self._dead))


class Outbox:
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
            raise ConfigError("the outbox needs at least one Alertmanager")
        if len(set(targets)) != len(targets):
            raise ConfigError(f"two Alertmanager URLs name the same target: {list(targets)}")
        self.path = Path(data_dir) / FILENAME
        self.targets = tuple(targets)
        self.max_queued = max_queued
        self.clock = clock
        self.commits = 0  # write transactions so far; tests check group commit with it
        self.metrics = metrics
        self.body_retention = body_retention
        self.max_bodies = max_bodies
        self._write_failures = 0  # consecutive; reset by the next commit
        self._quarantine_count = 0
        self._db: sqlite3.Connection | None = None
        self._thread: ThreadPoolExecutor | None = None
        # Request path: waiting for the next group commit, then handed to take().
        self._pending: list[tuple[SentryAlert, bytes | None, asyncio.Future[bool]]] = []
        self._flusher: asyncio.Task[None] | None = None
        self._ready: collections.deque[tuple[int, SentryAlert | None]] = collections.deque()
        self._ready_event = asyncio.Event()
        self._inbox_times: dict[int, float] = {}  # committed, not completed; insertion order
        self._active_count = 0
        self._resolved_count = 0
        # Delivery side.
        self._queue_times: collections.deque[tuple[int, float]] = collections.deque()
        self._cursor: dict[str, int] = {}
        self._wakeups = {target: asyncio.Event() for target in self.targets}
        self._lanes = {target: asyncio.Lock() for target in self.targets}
        self.progress = asyncio.Event()  # set whenever a sender finishes a batch
        self._shielded: set[asyncio.Task[Any]] = set()
        metrics.outbox_length.set_function(self.length)
        metrics.outbox_oldest_age.set_function(self.oldest_age)
        metrics.active_alerts.set_function(self.active_count)
        metrics.quarantine_held.set_function(self.quarantine_count)

    # --- lifecycle ----------------------------------------------------------------------

    async def open(self) -> None:
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self._thread = ThreadPoolExecutor(1, thread_name_prefix="outbox")
        try:
            loaded = await self._call(self._load)
        except BaseException:
            self._thread.shutdown(wait=False)
            self._thread = None
            raise
        self._inbox_times.update(loaded.inbox)
        self._ready.extend((inbox_id, None) for inbox_id, _ in loaded.inbox)
        self._queue_times.extend(loaded.queue)
        self._cursor = loaded.cursor
        self._active_count, self._resolved_count = loaded.active, loaded.resolved
        self._quarantine_count = await self._call(self._count_quarantine)
        if self._ready:
            self._ready_event.set()
        self._wake_senders()
        counts = {"inbox": len(self._ready), "queued": self.queued_count()}
        log.info("outbox opened", extra={**counts, "active": loaded.active})

    async def close(self) -> None:
        if self._thread is None:
            return
        while self._flusher is not None or self._shielded:
            await asyncio.gather(
                *([self._flusher] if self._flusher else []),
                *self._shielded,
                return_exceptions=True,
            )
        await self._call(self._close_db)
        self._thread.shutdown(wait=True)
        self._thread = None

    # --- the request path ---------------------------------------------------------------

    async def accept(self, alert: SentryAlert, digest: bytes | None = None) -> bool:
        """Durably store a normalised alert; returns once its group commit is done. With
        the ``digest`` (SHA-256) of its body: False, and nothing stored, when that body
        was already accepted within ``body_retention``."""
        if self.length() >= self.max_queued:
            raise OutboxFull()
        future: asyncio.Future[bool] = asyncio.get_running_loop().create_future()
        self._pending.append((alert, digest, future))
        if self._flusher is None:
            self._flusher = asyncio.create_task(self._flush(), name="outbox-flush")
        return await future

    async def _flush(self) -> None:
        try:
            while self._pending:
                batch, self._pending = self._pending, []
                now = self._now()
                try:
                    entries = [(a, d) for a, d, _ in batch]
                    ids = await self._call(self._insert_inbox, entries, now)
                except Exception:
                    log.exception("cannot write the outbox", extra={"alerts": len(batch)})
                    for _, _, future in batch:
                        if not future.done():
                            future.set_exception(OutboxFull("the outbox cannot be written"))
                    continue
                for (alert, _, future), inbox_id in zip(batch, ids, strict=True):
                    if inbox_id is None:  # the same body within body_retention
                        self.metrics.duplicate_bodies.inc()
                        if not future.done():
                            future.set_result(False)
                        continue
                    self._inbox_times[inbox_id] = now
                    keep = len(self._ready) < self.kept_in_memory
                    self._ready.append((inbox_id, alert if keep else None))
                    if not future.done():
                        future.set_result(True)
                self._ready_event.set()
        finally:
            self._flusher = None

    # --- the pipeline -------------------------------------------------------------------

    async def take(self, limit: int) -> Taken:
        """The next accepted entries in arrival order; waits for at least one. Reads the
        states of their identities along (one query), so deciding needs no disk."""
        while True:
            while not self._ready:
                self._ready_event.clear()
                await self._ready_event.wait()
            entries = [self._ready.popleft() for _ in range(min(limit, len(self._ready)))]
            try:
                taken, dropped, states = await self._call(self._read_taken, entries)
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

    async def complete(
        self, taken: Taken, results: Sequence[Processed], failed: Sequence[Failed] = ()
    ) -> None:
        """In one transaction: the entries leave the inbox, the posts are queued, the states
        (and from them the active table) are written, ``failed`` goes to quarantine.
        Shielded, so a cancelled caller cannot leave memory behind the file."""
        handed = sorted(e.inbox_id for e in taken.entries)
        if sorted([*(r.inbox_id for r in results), *(f.inbox_id for f in failed)]) != handed:
            raise ValueError("complete() needs every taken entry in results or failed, once")
        await self._shield(self._complete(taken, results, failed))

    async def _complete(
        self, taken: Taken, results: Sequence[Processed], failed: Sequence[Failed]
    ) -> None:
        now = self.clock()
        # Ages count from acceptance, so max_age covers the time spent in the pipeline too.
        accepted = {e.inbox_id: e.accepted_at.timestamp() for e in taken.entries}
        sends = [(accepted[r.inbox_id], a) for r in results for a in r.send]
        held = {identity: state.alert for identity, state in taken.states.items()}
        quarantined = [
            ("pipeline_error", f.reason[:1000], "{}", b"", json.dumps(f.alert.to_json()))
            for f in failed
        ]
        written: _Completed = await self._call(
            self._write_complete,
            held,
            results,
            sends,
            [f.inbox_id for f in failed],
            quarantined,
            now,
            self._resolved_count > 0,
        )
        for inbox_id in accepted:
            self._inbox_times.pop(inbox_id, None)
        self._queue_times.extend(
            (i, queued_at) for i, (queued_at, _) in zip(written.ids, sends, strict=True)
        )
        self._active_count += written.active
        self._resolved_count += written.resolved
        self._quarantine_count += written.quarantined
        if failed:
            self.metrics.quarantined.labels("pipeline_error").inc(len(failed))
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
            lane = _Lane(self, target)
            yield lane
            await lane._commit()

    async def periodic(self) -> bool:
        """One replica: it always runs the re-sends and expiry."""
        return True

    async def _advance(self, target: str, done: int, dead: Sequence[tuple[Queued, str]]) -> None:
        done = max(done, self._cursor[target])
        # Senders advance concurrently: a low mark that is stale by the time the write
        # runs only deletes less; the next advance (or open) deletes the rest.
        low = min([done, *(v for t, v in self._cursor.items() if t != target)])
        await self._call(self._write_advance, target, done, low, dead, self._now())
        self._cursor[target] = max(done, self._cursor[target])
        low = min(self._cursor.values())
        while self._queue_times and self._queue_times[0][0] <= low:
            self._queue_times.popleft()
        self.progress.set()

    async def forget_refused(
        self, target: str, refused: Sequence[tuple[str, str]], *, dead_letter: bool
    ) -> int:
        """Alertmanager ``target`` refused these stored alerts (wire JSON, reason) for their
        content: they leave the active and resolved tables, so re-sends stop posting what
        can never be accepted (and stop taking the rest of their page down with it). With
        ``dead_letter``, each one that was still there is dead-lettered, once, with its
        reason. Returns how many left the tables."""
        gone: int = await self._shield(self._forget_refused(target, refused, dead_letter))
        return gone

    async def _forget_refused(
        self, target: str, refused: Sequence[tuple[str, str]], dead_letter: bool
    ) -> int:
        active, resolved = await self._call(
            self._write_forget, target, refused, dead_letter, self._now()
        )
        self._active_count -= active
        self._resolved_count -= resolved
        return active + resolved

    async def expire(self, *, resolved_for: float) -> None:
        """Forget active alerts whose endsAt passed (Alertmanager has expired them too) and
        resolved ones re-sent for ``resolved_for`` seconds."""
        await self._shield(self._expire(resolved_for))

    async def _expire(self, resolved_for: float) -> None:
        now = self._now()
        active, resolved = await self._call(self._write_expire, now, now - resolved_for)
        self._active_count -= active
        self._resolved_count -= resolved

    async def dead_letters(self) -> list[tuple[str, str, dict[str, Any]]]:
        """(target, reason, alert) of every dead letter, oldest first."""
        return await self._call(self._read_dead_letters)

    # --- store health, quarantine -------------------------------------------------------

    def store_ok(self) -> bool:
        """False after ``failing_after`` write transactions failed in a row."""
        return self._write_failures < self.failing_after

    async def probe(self) -> bool:
        """One tiny write transaction, so a failing store is noticed to recover even when
        nothing else writes; returns :meth:`store_ok`."""
        with contextlib.suppress(sqlite3.Error):
            await self._call(self._write_probe, self._now())
        return self.store_ok()

    async def quarantine(
        self, reason: str, detail: str, headers: Mapping[str, str], body: bytes, digest: bytes
    ) -> bool:
        """Keep an authenticated webhook the bridge cannot process, durably; False (nothing
        kept) when the same body was already seen within ``body_retention``."""
        row = (reason, detail[:1000], json.dumps(dict(headers)), body, None)
        added = await self._shield(self._call(self._write_quarantine, row, digest, self._now()))
        if added is None:
            self.metrics.duplicate_bodies.inc()
            return False
        self._quarantine_count += added
        self.metrics.quarantined.labels(reason).inc()
        return True

    async def quarantined(self) -> list[Quarantined]:
        return await self._call(self._read_quarantine)

    async def release(self, entry_id: int, alert: SentryAlert | None) -> None:
        """Remove a quarantined entry; with ``alert`` (replayed), accept that into the inbox
        in the same transaction, so it is never in neither."""
        now = self._now()
        inbox_id = await self._shield(self._call(self._write_release, entry_id, alert, now))
        self._quarantine_count -= 1
        if inbox_id is not None and alert is not None:
            self._inbox_times[inbox_id] = now
            self._ready.append((inbox_id, alert))
            self._ready_event.set()

    def quarantine_count(self) -> int:
        return self._quarantine_count

    # --- sizes --------------------------------------------------------------------------

    def inbox_count(self) -> int:
        """Accepted webhooks the pipeline has not completed (including uncommitted)."""
        return len(self._inbox_times) + len(self._pending)

    def queued_count(self) -> int:
        """Queued alerts at least one Alertmanager still needs."""
        return len(self._queue_times)

    def length(self) -> int:
        return self.inbox_count() + self.queued_count()

    def oldest_age(self) -> float:
        """Seconds since the oldest alert still in the outbox was accepted."""
        heads = [next(iter(self._inbox_times.values()))] if self._inbox_times else []
        if self._queue_times:
            heads.append(self._queue_times[0][1])
        return max(0.0, self._now() - min(heads)) if heads else 0.0

    # --- plumbing -----------------------------------------------------------------------

    def _now(self) -> float:
        return self.clock().timestamp()

    def _wake_senders(self) -> None:
        for event in self._wakeups.values():
            event.set()

    @property
    def _executor(self) -> ThreadPoolExecutor:
        if self._thread is None:
            raise RuntimeError("the outbox is not open")
        return self._thread

    async def _call(self, fn: Callable[..., T], *args: Any) -> T:
        return await asyncio.get_running_loop().run_in_executor(self._executor, fn, *args)

    async def _shield(self, coro: Any) -> Any:
        task = asyncio.ensure_future(coro)
        self._shielded.add(task)
        task.add_done_callback(self._shielded.discard)
        return await asyncio.shield(task)

    # --- on the SQLite thread -----------------------------------------------------------

    @property
    def _conn(self) -> sqlite3.Connection:
        assert self._db is not None
        return self._db

    @contextlib.contextmanager
    def _transaction(self) -> Iterator[sqlite3.Connection]:
        db = self._conn
        try:
            db.execute("BEGIN IMMEDIATE")
            yield db
            db.execute("COMMIT")
        except BaseException as exc:
            # Whatever failed, the COMMIT included (a full disk, an I/O error), nothing of
            # it stays: a transaction left open would make every later BEGIN fail.
            if db.in_transaction:
                with contextlib.suppress(sqlite3.Error):
                    db.execute("ROLLBACK")
            if isinstance(exc, sqlite3.Error):
                self._write_failures += 1
                self.metrics.store_errors.inc()
            raise
        self.commits += 1
        self._write_failures = 0

    def _load(self) -> _Loaded:
        db = sqlite3.connect(self.path, isolation_level=None)
        try:
            db.execute("PRAGMA locking_mode = EXCLUSIVE")
            db.execute(f"PRAGMA busy_timeout = {int(self.lock_timeout_ms)}")
            db.execute("PRAGMA journal_mode = WAL")
            # FULL: every commit is fsynced before accept() returns, so a 202 survives a
            # power loss too (https://www.sqlite.org/pragma.html#pragma_synchronous).
            db.execute("PRAGMA synchronous = FULL")
            db.executescript(_SCHEMA)  # takes the exclusive lock: one bridge per data dir
        except sqlite3.OperationalError as exc:
            db.close()
            hint = " (is another bridge using it?)" if "locked" in str(exc) else ""
            raise ConfigError(f"cannot open the outbox {self.path}: {exc}{hint}") from exc
        self._db = db
        with self._transaction():
            known = dict(db.execute("SELECT target, done FROM cursor").fetchall())
            for target in set(known) - set(self.targets):
                db.execute("DELETE FROM cursor WHERE target = ?", (target,))
            # A new Alertmanager gets everything still queued.
            cursor = {target: known.get(target, 0) for target in self.targets}
            db.executemany(
                "INSERT OR IGNORE INTO cursor (target, done) VALUES (?, 0)",
                [(target,) for target in self.targets],
            )
            db.execute("DELETE FROM queue WHERE id <= ?", (min(cursor.values()),))
        return _Loaded(
            inbox=db.execute("SELECT id, accepted_at FROM inbox ORDER BY id").fetchall(),
            queue=db.execute("SELECT id, queued_at FROM queue ORDER BY id").fetchall(),
            cursor=cursor,
            active=db.execute("SELECT count(*) FROM active").fetchone()[0],
            resolved=db.execute("SELECT count(*) FROM resolved").fetchone()[0],
        )

    def _close_db(self) -> None:
        if self._db is not None:
            self._db.execute("PRAGMA wal_checkpoint(TRUNCATE)")
            self._db.close()
            self._db = None

    def _insert_inbox(
        self, alerts: Sequence[tuple[SentryAlert, bytes | None]], now: float
    ) -> list[int | None]:
        """The inbox ids, None for a body already seen (in this batch too)."""
        sql = "INSERT INTO inbox (accepted_at, alert) VALUES (?, ?)"
        with self._transaction() as db:
            ids: list[int | None] = []
            for alert, digest in alerts:
                if digest is not None and not self._first_sight(db, digest, now):
                    ids.append(None)
                    continue
                text = json.dumps(alert.to_json(), separators=(",", ":"))
                ids.append(_rowid(db.execute(sql, (now, text))))
            if any(digest is not None for _, digest in alerts):
                self._forget_bodies(db, now)
            return ids

    def _read_taken(
        self, entries: Sequence[tuple[int, SentryAlert | None]]
    ) -> tuple[list[tuple[int, SentryAlert]], list[int], dict[str, IdentityState]]:
        """The entries' alerts (read back where only the id was kept), the ids of
        unreadable ones (deleted), and the state of every identity taken that has one."""
        missing = [inbox_id for inbox_id, alert in entries if alert is None]
        texts: dict[int, str] = dict(
            self._conn.execute(
                "SELECT id, alert FROM inbox WHERE id IN (SELECT value FROM json_each(?))",
                (json.dumps(missing),),
            ).fetchall()
        )
        taken: list[tuple[int, SentryAlert]] = []
        dropped: list[int] = []
        for inbox_id, alert in entries:
            if alert is None:
                try:
                    alert = SentryAlert.from_json(json.loads(texts[inbox_id]))
                except (ValueError, TypeError, KeyError):
                    log.error("unreadable inbox entry dropped", extra={"inbox_id": inbox_id})
                    dropped.append(inbox_id)
                    continue
            taken.append((inbox_id, alert))
        if dropped:
            with self._transaction() as db:
                db.executemany("DELETE FROM inbox WHERE id = ?", [(i,) for i in dropped])
        identities = {alert.identity for _, alert in taken}
        states = self._read_states(identities)
        # An alert active from before the state table existed (an upgrade) stands in for a
        # state, so the next decision replaces it rather than firing a second one.
        legacy = self._read_active(identities - states.keys())
        return taken, dropped, states | {i: _legacy_state(a) for i, a in legacy.items()}

    def _read_states(self, identities: Collection[str]) -> dict[str, IdentityState]:
        rows = self._conn.execute(
            "SELECT identity, state FROM state WHERE identity IN (SELECT value FROM json_each(?))",
            (json.dumps(list(identities)),),
        ).fetchall()
        return {identity: IdentityState.from_json(json.loads(text)) for identity, text in rows}

    def _read_active(self, identities: Collection[str]) -> dict[str, PostableAlert]:
        if not identities:
            return {}
        rows = self._conn.execute(
            "SELECT identity, alert FROM active WHERE identity IN (SELECT value FROM json_each(?))",
            (json.dumps(list(identities)),),
        ).fetchall()
        return {identity: PostableAlert.model_validate_json(text) for identity, text in rows}

    def _write_complete(
        self,
        held: Mapping[str, PostableAlert | None],
        results: Sequence[Processed],
        sends: Sequence[tuple[float, PostableAlert]],
        failed: Sequence[int],
        quarantined: Sequence[tuple[str, str, str, bytes, str | None]],
        now: datetime,
        any_resolved: bool,
    ) -> _Completed:
        """``held``: the active alert of each identity as taken, so an unchanged one is not
        rewritten. ``any_resolved``: whether the resolved table has rows (when it has none,
        as between incidents, a firing alert has no re-sends to end)."""
        stamp = now.timestamp()
        bodies: dict[int, str] = {}  # by id(): the current alert is usually sent too

        def body(alert: PostableAlert) -> str:
            if id(alert) not in bodies:
                bodies[id(alert)] = wire_json(alert)
            return bodies[id(alert)]

        with self._transaction() as db:
            done = [(r.inbox_id,) for r in results] + [(i,) for i in failed]
            db.executemany("DELETE FROM inbox WHERE id = ?", done)
            ids, active, resolved = [], 0, 0
            for queued_at, alert in sends:
                sql = "INSERT INTO queue (queued_at, alert) VALUES (?, ?)"
                ids.append(_rowid(db.execute(sql, (queued_at, body(alert)))))
                ending = alert.ends_at is not None and alert.ends_at <= now
                if not (ending or any_resolved):
                    continue
                # Firing again ends the re-sends of the resolved label set.
                key = label_key(alert.labels)
                resolved -= db.execute("DELETE FROM resolved WHERE labels = ?", (key,)).rowcount
                if ending:
                    sql = "INSERT INTO resolved (labels, resolved_at, alert) VALUES (?, ?, ?)"
                    db.execute(sql, (key, stamp, body(alert)))
                    resolved += 1
                    any_resolved = True
            # The active table is derived from the states: the last state written for an
            # identity holds its active alert (a forgotten state holds none).
            current: dict[str, PostableAlert | None] = {}
            for result in results:
                for identity, (state, until) in result.states.items():
                    current[identity] = state.alert if until is not None else None
                    if until is None:
                        db.execute("DELETE FROM state WHERE identity = ?", (identity,))
                        continue
                    text = json.dumps(state.to_json(), separators=(",", ":"))
                    db.execute(
                        "INSERT OR REPLACE INTO state (identity, kept_until, state) "
                        "VALUES (?, ?, ?)",
                        (identity, until.timestamp(), text),
                    )
            for identity, firing in current.items():
                if identity in held and (firing is held[identity] or firing == held[identity]):
                    continue  # unchanged: keep its row (and its place in the re-send pages)
                active -= db.execute("DELETE FROM active WHERE identity = ?", (identity,)).rowcount
                if firing is not None:
                    ends_at = firing.ends_at.timestamp() if firing.ends_at else None
                    sql = "INSERT INTO active (identity, ends_at, alert) VALUES (?, ?, ?)"
                    db.execute(sql, (identity, ends_at, body(firing)))
                    active += 1
            added = self._insert_quarantine(db, quarantined, stamp) if quarantined else 0
            return _Completed(ids, active, resolved, added)

    def _read_queue(self, after: int, limit: int) -> list[Queued]:
        rows = self._conn.execute(
            "SELECT id, queued_at, alert FROM queue WHERE id > ? ORDER BY id LIMIT ?",
            (after, limit),
        ).fetchall()
        return [Queued(*row) for row in rows]

    def _write_advance(
        self, target: str, done: int, low: int, dead: Sequence[tuple[Queued, str]], now: float
    ) -> None:
        with self._transaction() as db:
            db.execute("UPDATE cursor SET done = ? WHERE target = ?", (done, target))
            if dead:
                db.executemany(
                    "INSERT INTO dead_letter (at, target, reason, alert) VALUES (?, ?, ?, ?)",
                    [(now, target, reason, item.body) for item, reason in dead],
                )
                db.execute(
                    "DELETE FROM dead_letter WHERE id <= (SELECT max(id) FROM dead_letter) - ?",
                    (self.dead_letters_kept,),
                )
            db.execute("DELETE FROM queue WHERE id <= ?", (low,))

    def _read_page(self, after: tuple[int, int] | None, limit: int) -> Page:
        """Up to ``limit`` bodies from ``after`` (table, rowid) on, across _PAGES in order;
        one row more is read to know whether there is a next page."""
        table, rowid = after or (0, 0)
        bodies: list[str] = []
        while table < len(_PAGES):
            room = limit - len(bodies)
            rows = self._conn.execute(_PAGES[table], (rowid, room + 1)).fetchall()
            if len(rows) > room:  # more in this table than fits
                if room:
                    bodies += [text for _, text in rows[:room]]
                    rowid = rows[room - 1][0]
                return Page(bodies, (table, rowid))
            bodies += [text for _, text in rows]
            table, rowid = table + 1, 0
        return Page(bodies, None)

    def _write_forget(
        self, target: str, refused: Sequence[tuple[str, str]], dead_letter: bool, now: float
    ) -> tuple[int, int]:
        """Returns how many active and resolved alerts were removed."""
        active = resolved = 0
        with self._transaction() as db:
            for body, reason in refused:
                # The rows hold the very body that was sent. Refusals are rare, so matching
                # on the text (no index) costs nothing the rest of the time.
                identities = [
                    row[0]
                    for row in db.execute(
                        "DELETE FROM active WHERE alert = ? RETURNING identity", (body,)
                    )
                ]
                gone_active = len(identities)
                for identity in identities:
                    self._unhold(db, identity, body)
                gone_resolved = db.execute("DELETE FROM resolved WHERE alert = ?", (body,)).rowcount
                active, resolved = active + gone_active, resolved + gone_resolved
                if dead_letter and (gone_active or gone_resolved):
                    sql = "INSERT INTO dead_letter (at, target, reason, alert) VALUES (?, ?, ?, ?)"
                    db.execute(sql, (now, target, reason, body))
        return active, resolved

    def _unhold(self, db: sqlite3.Connection, identity: str, body: str) -> None:
        """The state machine no longer holds ``body`` as firing for ``identity``:
        Alertmanager never will, so the next firing webhook posts afresh (repeat counts
        and resolve times stay)."""
        row = db.execute("SELECT state FROM state WHERE identity = ?", (identity,)).fetchone()
        if row is None:
            return
        state = IdentityState.from_json(json.loads(row[0]))
        if state.alert is None or state.alert.labels != json.loads(body).get("labels"):
            return  # a newer label set already stands for it
        cleared = replace(state, alert=None, severity=None, posted=None, posted_at=None)
        text = json.dumps(cleared.to_json(), separators=(",", ":"))
        db.execute("UPDATE state SET state = ? WHERE identity = ?", (text, identity))

    def _write_expire(self, now: float, resolved_before: float) -> tuple[int, int]:
        """Returns how many active and resolved alerts were removed."""
        with self._transaction() as db:
            active = db.execute("DELETE FROM active WHERE ends_at <= ?", (now,))
            resolved = db.execute("DELETE FROM resolved WHERE resolved_at <= ?", (resolved_before,))
            db.execute("DELETE FROM state WHERE kept_until <= ?", (now,))
            return active.rowcount, resolved.rowcount

    def _read_dead_letters(self) -> list[tuple[str, str, dict[str, Any]]]:
        rows = self._conn.execute(
            "SELECT target, reason, alert FROM dead_letter ORDER BY id"
        ).fetchall()
        return [(target, reason, json.loads(body)) for target, reason, body in rows]

    # --- on the SQLite thread: store health, quarantine, seen bodies ----------------------

    def _write_probe(self, now: float) -> None:
        with self._transaction() as db:
            db.execute("INSERT OR REPLACE INTO probe (id, at) VALUES (1, ?)", (now,))

    def _count_quarantine(self) -> int:
        count: int = self._conn.execute("SELECT count(*) FROM quarantine").fetchone()[0]
        return count

    def _write_quarantine(
        self, row: tuple[str, str, str, bytes, str | None], digest: bytes, now: float
    ) -> int | None:
        """How many more entries the quarantine holds; None, and nothing written, when
        ``digest`` was seen within body_retention."""
        with self._transaction() as db:
            if not self._first_sight(db, digest, now):
                return None
            self._forget_bodies(db, now)
            return self._insert_quarantine(db, [row], now)

    def _insert_quarantine(
        self,
        db: sqlite3.Connection,
        rows: Sequence[tuple[str, str, str, bytes, str | None]],
        now: float,
    ) -> int:
        """Returns how many more entries the quarantine holds (the oldest beyond
        ``quarantine_kept`` go)."""
        db.executemany(
            "INSERT INTO quarantine (at, reason, detail, headers, body, alert)"
            " VALUES (?, ?, ?, ?, ?, ?)",
            [(now, *row) for row in rows],
        )
        dropped = db.execute(
            "DELETE FROM quarantine WHERE id <= (SELECT max(id) FROM quarantine) - ?",
            (self.quarantine_kept,),
        ).rowcount
        if dropped:
            log.error("quarantine full: oldest entries dropped", extra={"dropped": dropped})
        return len(rows) - dropped

    def _read_quarantine(self) -> list[Quarantined]:
        rows = self._conn.execute(
            "SELECT id, at, reason, detail, headers, body, alert FROM quarantine ORDER BY id"
        ).fetchall()
        return [
            Quarantined(i, at, reason, detail, json.loads(h), bytes(body), a and json.loads(a))
            for i, at, reason, detail, h, body, a in rows
        ]

    def _write_release(self, entry_id: int, alert: SentryAlert | None, now: float) -> int | None:
        with self._transaction() as db:
            db.execute("DELETE FROM quarantine WHERE id = ?", (entry_id,))
            if alert is None:
                return None
            text = json.dumps(alert.to_json(), separators=(",", ":"))
            sql = "INSERT INTO inbox (accepted_at, alert) VALUES (?, ?)"
            return _rowid(db.execute(sql, (now, text)))

    def _first_sight(self, db: sqlite3.Connection, digest: bytes, now: float) -> bool:
        """Records ``digest``; False if it was already recorded within body_retention."""
        row = db.execute("SELECT at FROM seen_body WHERE digest = ?", (digest,)).fetchone()
        if row is not None and row[0] > now - self.body_retention:
            return False
        db.execute("INSERT OR REPLACE INTO seen_body (digest, at) VALUES (?, ?)", (digest, now))
        return True

    def _forget_bodies(self, db: sqlite3.Connection, now: float) -> None:
        """Bounded by time and count (the newest max_bodies are kept)."""
        db.execute("DELETE FROM seen_body WHERE at <= ?", (now - self.body_retention,))
        db.execute(
            "DELETE FROM seen_body WHERE id <= (SELECT max(id) FROM seen_body) - ?",
            (self.max_bodies,),
        )

    # --- the operator's view (bridge/status.py) ------------------------------------------

    def queue_depths(self) -> dict[str, int]:
        """Per Alertmanager: the queued alerts it has not settled yet."""
        return {
            target: sum(1 for queue_id, _ in self._queue_times if queue_id > done)
            for target, done in self._cursor.items()
        }

    async def snapshot(self, limit: int) -> dict[str, Any]:
        """Counts, and the first ``limit`` active alerts and newest dead letters."""
        return await self._call(self._read_snapshot, limit)

    async def requeue_dead_letters(self) -> dict[str, int]:
        """Queue the dead letters again (for every Alertmanager) after a fix, and empty
        the table. A resolve is queued as it was; a firing alert only if it is still the
        active alert of its identity, and then as it is now (current endsAt), so a late
        re-send can never re-fire what was resolved or replaced since."""
        written: tuple[list[tuple[int, float]], dict[str, int]] = await self._shield(
            self._call(self._write_requeue, self._now())
        )
        ids, counts = written
        self._queue_times.extend(ids)
        if ids:
            self._wake_senders()
        return counts

    def _read_snapshot(self, limit: int) -> dict[str, Any]:
        db = self._conn
        active = db.execute(
            "SELECT identity, ends_at, alert FROM active ORDER BY identity LIMIT ?", (limit,)
        ).fetchall()
        dead = db.execute(
            "SELECT at, target, reason, alert FROM dead_letter ORDER BY id DESC LIMIT ?", (limit,)
        ).fetchall()
        return {
            "active": [
                {"identity": identity, "ends_at": ends_at, "labels": json.loads(body)["labels"]}
                for identity, ends_at, body in active
            ],
            "dead_letters": [
                {
                    "at": at,
                    "alertmanager": target,
                    "reason": reason,
                    "labels": json.loads(body)["labels"],
                }
                for at, target, reason, body in dead
            ],
            "dead_letter_count": db.execute("SELECT count(*) FROM dead_letter").fetchone()[0],
            "quarantined": self._count_quarantine(),
        }

    def _write_requeue(self, now: float) -> tuple[list[tuple[int, float]], dict[str, int]]:
        from bridge.labels import identity_from_labels  # labels imports nothing of ours

        counts = {"requeued": 0, "superseded": 0}
        ids: list[tuple[int, float]] = []
        with self._transaction() as db:
            rows = db.execute("SELECT id, alert FROM dead_letter ORDER BY id").fetchall()
            seen: set[str] = set()
            for _, body in rows:
                alert = PostableAlert.model_validate_json(body)
                resolved = alert.ends_at is not None and alert.ends_at.timestamp() <= now
                if not resolved:
                    identity = identity_from_labels(alert.labels) or ""
                    row = db.execute(
                        "SELECT alert FROM active WHERE identity = ?", (identity,)
                    ).fetchone()
                    current = PostableAlert.model_validate_json(row[0]) if row else None
                    if current is None or current.labels != alert.labels:
                        counts["superseded"] += 1
                        continue
                    body = row[0]
                if body in seen:  # the same alert dead-lettered by several Alertmanagers
                    continue
                seen.add(body)
                cursor = db.execute(
                    "INSERT INTO queue (queued_at, alert) VALUES (?, ?)", (now, body)
                )
                ids.append((_rowid(cursor), now))
                counts["requeued"] += 1
            db.execute("DELETE FROM dead_letter")
        return ids, counts


def _rowid(cursor: sqlite3.Cursor) -> int:
    assert cursor.lastrowid is not None
    return cursor.lastrowid

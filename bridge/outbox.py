"""The durable outbox: one SQLite file between the 202 and Alertmanager.

Tables (``outbox.sqlite3`` under ``outbox.data_dir``)::

    inbox        accepted webhooks (SentryAlert JSON) the pipeline has not finished
    queue        postable alerts (wire JSON) some Alertmanager still needs, in order
    cursor       per Alertmanager: the last queue id it is done with (accepted,
                 dead-lettered or given up); a queue row goes when every cursor passed it
    active       per Sentry identity: the firing alert Alertmanager holds, so a resolve
                 after a restart resolves that very label set, and for re-sends
    resolved     recently resolved alerts, re-sent for a while as Prometheus does
    dead_letter  alerts an Alertmanager rejected, with its reason, for a human
                 (the newest ``dead_letters_kept``)

Durability: WAL with ``synchronous=NORMAL``. ``accept`` returns once its
transaction is committed to the WAL, which then survives a crash or SIGKILL of
the process (the OS holds the written pages). Only a power loss or kernel crash
can lose the commits since the WAL was last synced (at checkpoints); ``FULL``
would fsync every commit, an order of magnitude slower on most disks, to close
a window Sentry's own retries mostly cover.

Group commit: concurrent ``accept`` calls queue up while one write is running
and are committed together by the next, so a storm costs one transaction per
round trip to the writer, not one per webhook, and a lone webhook waits for no
timer. Every SQLite call runs on one dedicated thread, which also serialises
them; the event loop never blocks on the disk.

The file is opened with ``locking_mode=EXCLUSIVE``: a second bridge on the same
data directory fails at start instead of delivering the same alerts twice.
"""

from __future__ import annotations

import asyncio
import collections
import contextlib
import json
import logging
import sqlite3
from collections.abc import Callable, Iterator, Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, TypeVar

from bridge.alertmanager import PostableAlert, wire_json
from bridge.errors import ConfigError, WebhookError
from bridge.metrics import Metrics
from bridge.model import SentryAlert

log = logging.getLogger("bridge.outbox")

FILENAME = "outbox.sqlite3"

# AUTOINCREMENT: ids are never reused, or an emptied queue would restart below the cursors.
_SCHEMA = """
CREATE TABLE IF NOT EXISTS inbox (
    id INTEGER PRIMARY KEY AUTOINCREMENT, accepted_at REAL NOT NULL, alert TEXT NOT NULL);
CREATE TABLE IF NOT EXISTS queue (
    id INTEGER PRIMARY KEY AUTOINCREMENT, queued_at REAL NOT NULL, alert TEXT NOT NULL);
CREATE TABLE IF NOT EXISTS cursor (target TEXT PRIMARY KEY, done INTEGER NOT NULL);
CREATE TABLE IF NOT EXISTS active (identity TEXT PRIMARY KEY, alert TEXT NOT NULL);
CREATE TABLE IF NOT EXISTS resolved (
    labels TEXT PRIMARY KEY, resolved_at REAL NOT NULL, alert TEXT NOT NULL);
CREATE TABLE IF NOT EXISTS dead_letter (
    id INTEGER PRIMARY KEY AUTOINCREMENT, at REAL NOT NULL, target TEXT NOT NULL,
    reason TEXT NOT NULL, alert TEXT NOT NULL);
"""

T = TypeVar("T")


class OutboxFull(WebhookError):
    """503: the outbox holds ``max_queued`` alerts (or cannot be written); Sentry retries."""

    status_code = 503

    def __init__(self, detail: str = "the outbox is full; retry later") -> None:
        super().__init__("outbox_full", detail)


@dataclass(frozen=True, slots=True)
class Processed:
    """What the pipeline made of one inbox entry; ``Outbox.complete`` commits it."""

    inbox_id: int
    send: Sequence[PostableAlert]  # to every Alertmanager, in order
    active: Mapping[str, PostableAlert | None]  # identity -> firing alert now, None to clear


@dataclass(frozen=True, slots=True)
class Queued:
    """One queued alert as a sender reads it."""

    id: int
    queued_at: float  # epoch seconds the webhook was accepted
    body: str  # the alert's wire JSON, posted as is


@dataclass(frozen=True, slots=True)
class _Send:
    queued_at: float
    alert: PostableAlert
    resolved: bool


@dataclass(slots=True)
class _Loaded:
    inbox: list[tuple[int, float, SentryAlert]] = field(default_factory=list)
    queue: list[tuple[int, float]] = field(default_factory=list)
    cursor: dict[str, int] = field(default_factory=dict)
    active: dict[str, PostableAlert] = field(default_factory=dict)
    resolved: dict[str, tuple[float, PostableAlert]] = field(default_factory=dict)


def utcnow() -> datetime:
    return datetime.now(UTC)


def label_key(labels: Mapping[str, str]) -> str:
    """A label set as a stable string: the identity Alertmanager gives an alert."""
    return json.dumps(sorted(labels.items()), separators=(",", ":"))


class Outbox:
    # How long open() waits for another process to let go of the file (a bridge that
    # is still draining during a rolling restart).
    lock_timeout_ms = 5000
    # The dead-letter table is for a human to look at, not an archive: the newest are kept.
    dead_letters_kept = 10_000

    def __init__(
        self,
        data_dir: Path,
        targets: Sequence[str],
        *,
        max_queued: int,
        metrics: Metrics,
        clock: Callable[[], datetime] = utcnow,
    ) -> None:
        if not targets:
            raise ConfigError("the outbox needs at least one Alertmanager")
        if len(set(targets)) != len(targets):
            raise ConfigError(f"two Alertmanager URLs name the same target: {list(targets)}")
        self.path = Path(data_dir) / FILENAME
        self.targets = tuple(targets)
        self.max_queued = max_queued
        self.metrics = metrics
        self.clock = clock
        self.commits = 0  # write transactions so far; tests check group commit with it
        self._db: sqlite3.Connection | None = None
        self._thread: ThreadPoolExecutor | None = None
        # Request path: waiting for the next group commit, then handed to take().
        self._pending: list[tuple[SentryAlert, asyncio.Future[None]]] = []
        self._flusher: asyncio.Task[None] | None = None
        self._ready: collections.deque[tuple[int, SentryAlert]] = collections.deque()
        self._ready_event = asyncio.Event()
        self._inbox_times: dict[int, float] = {}  # committed, not completed; insertion order
        # Delivery side.
        self._queue_times: collections.deque[tuple[int, float]] = collections.deque()
        self._cursor: dict[str, int] = {}
        self._wakeups = {target: asyncio.Event() for target in self.targets}
        self.progress = asyncio.Event()  # set whenever a sender finishes a batch
        self._active: dict[str, PostableAlert] = {}
        self._resolved: dict[str, tuple[float, PostableAlert]] = {}
        self._shielded: set[asyncio.Task[Any]] = set()
        metrics.outbox_length.set_function(self.length)
        metrics.outbox_oldest_age.set_function(self.oldest_age)
        metrics.active_alerts.set_function(self.active_count)

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
        for inbox_id, accepted_at, alert in loaded.inbox:
            self._inbox_times[inbox_id] = accepted_at
            self._ready.append((inbox_id, alert))
        self._queue_times.extend(loaded.queue)
        self._cursor = loaded.cursor
        self._active = loaded.active
        self._resolved = loaded.resolved
        if self._ready:
            self._ready_event.set()
        for event in self._wakeups.values():
            event.set()
        log.info(
            "outbox opened",
            extra={
                "inbox": len(self._ready),
                "queued": self.queued_count(),
                "active": len(self._active),
            },
        )

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

    async def accept(self, alert: SentryAlert) -> None:
        """Durably store a normalised alert; returns once its group commit is done."""
        if self.length() >= self.max_queued:
            raise OutboxFull()
        future: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        self._pending.append((alert, future))
        if self._flusher is None:
            self._flusher = asyncio.create_task(self._flush(), name="outbox-flush")
        await future

    async def _flush(self) -> None:
        try:
            while self._pending:
                batch, self._pending = self._pending, []
                now = self._now()
                try:
                    ids = await self._call(self._insert_inbox, [a for a, _ in batch], now)
                except Exception:
                    log.exception("cannot write the outbox", extra={"alerts": len(batch)})
                    for _, future in batch:
                        if not future.done():
                            future.set_exception(OutboxFull("the outbox cannot be written"))
                    continue
                for (alert, future), inbox_id in zip(batch, ids, strict=True):
                    self._inbox_times[inbox_id] = now
                    self._ready.append((inbox_id, alert))
                    if not future.done():
                        future.set_result(None)
                self._ready_event.set()
        finally:
            self._flusher = None

    # --- the pipeline -------------------------------------------------------------------

    async def take(self, limit: int) -> list[tuple[int, SentryAlert]]:
        """The next accepted entries in arrival order; waits for at least one."""
        while not self._ready:
            self._ready_event.clear()
            await self._ready_event.wait()
        return [self._ready.popleft() for _ in range(min(limit, len(self._ready)))]

    async def complete(self, results: Sequence[Processed]) -> None:
        """In one transaction: inbox entries done, alerts queued, active table updated.
        Shielded, so a cancelled caller cannot leave memory behind the file."""
        await self._shield(self._complete(results))

    async def _complete(self, results: Sequence[Processed]) -> None:
        moment = self.clock()
        now = moment.timestamp()
        # Ages count from acceptance, so max_age covers the time spent in the pipeline too.
        sends = [
            _Send(self._inbox_times.get(r.inbox_id, now), alert, _is_resolved(alert, moment))
            for r in results
            for alert in r.send
        ]
        ids = await self._call(self._write_complete, results, sends, now)
        for result in results:
            self._inbox_times.pop(result.inbox_id, None)
        for queue_id, send in zip(ids, sends, strict=True):
            self._queue_times.append((queue_id, send.queued_at))
            key = label_key(send.alert.labels)
            if send.resolved:
                self._resolved[key] = (now, send.alert)
            else:
                self._resolved.pop(key, None)
        for result in results:
            for identity, current in result.active.items():
                if current is None:
                    self._active.pop(identity, None)
                else:
                    self._active[identity] = current
        if ids:
            for event in self._wakeups.values():
                event.set()

    def active(self, identity: str) -> PostableAlert | None:
        """The firing alert Alertmanager holds for ``identity``; None once its endsAt passed."""
        alert = self._active.get(identity)
        if alert is None or (alert.ends_at is not None and alert.ends_at <= self.clock()):
            return None
        return alert

    def active_count(self) -> int:
        return len(self._active)

    # --- the senders --------------------------------------------------------------------

    def wakeup(self, target: str) -> asyncio.Event:
        """Set whenever alerts are queued; each sender clears its own before reading."""
        return self._wakeups[target]

    async def pending(self, target: str, limit: int) -> list[Queued]:
        """The next alerts ``target`` still needs, oldest first."""
        return await self._call(self._read_queue, self._cursor[target], limit)

    async def advance(
        self, target: str, done: int, dead: Sequence[tuple[Queued, str]] = ()
    ) -> None:
        """``target`` is done with every queued id up to ``done``; ``dead`` are the ones it
        rejected (with the reason), kept in the dead-letter table."""
        await self._shield(self._advance(target, done, dead))

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

    def resend_snapshot(self) -> list[PostableAlert]:
        """What Alertmanager should hold: recently resolved alerts, then the active ones."""
        return [alert for _, alert in self._resolved.values()] + list(self._active.values())

    async def expire(self, *, resolved_for: float) -> None:
        """Forget active alerts whose endsAt passed (Alertmanager has expired them too) and
        resolved ones re-sent for ``resolved_for`` seconds."""
        now = self.clock()
        stamp = now.timestamp()
        identities = [
            identity
            for identity, alert in self._active.items()
            if alert.ends_at is not None and alert.ends_at <= now
        ]
        keys = [key for key, (at, _) in self._resolved.items() if stamp - at >= resolved_for]
        if not identities and not keys:
            return
        await self._shield(self._call(self._write_expire, identities, keys))
        for identity in identities:
            self._active.pop(identity, None)
        for key in keys:
            self._resolved.pop(key, None)

    async def dead_letters(self) -> list[tuple[str, str, dict[str, Any]]]:
        """(target, reason, alert) of every dead letter, oldest first."""
        return await self._call(self._read_dead_letters)

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

    async def _call(self, fn: Callable[..., T], *args: Any) -> T:
        if self._thread is None:
            raise RuntimeError("the outbox is not open")
        return await asyncio.get_running_loop().run_in_executor(self._thread, fn, *args)

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
        db.execute("BEGIN IMMEDIATE")
        try:
            yield db
        except BaseException:
            db.execute("ROLLBACK")
            raise
        db.execute("COMMIT")
        self.commits += 1

    def _load(self) -> _Loaded:
        db = sqlite3.connect(self.path, isolation_level=None)
        try:
            db.execute("PRAGMA locking_mode = EXCLUSIVE")
            db.execute(f"PRAGMA busy_timeout = {int(self.lock_timeout_ms)}")
            db.execute("PRAGMA journal_mode = WAL")
            db.execute("PRAGMA synchronous = NORMAL")
            db.executescript(_SCHEMA)  # takes the exclusive lock: one bridge per data dir
        except sqlite3.OperationalError as exc:
            db.close()
            raise ConfigError(
                f"cannot open the outbox {self.path}: {exc} (is another bridge using it?)"
            ) from exc
        self._db = db
        loaded = _Loaded()
        with self._transaction():
            known = dict(db.execute("SELECT target, done FROM cursor").fetchall())
            for target in set(known) - set(self.targets):
                db.execute("DELETE FROM cursor WHERE target = ?", (target,))
            for target in self.targets:
                # A new Alertmanager gets everything still queued.
                loaded.cursor[target] = known.get(target, 0)
                db.execute("INSERT OR IGNORE INTO cursor (target, done) VALUES (?, 0)", (target,))
            db.execute("DELETE FROM queue WHERE id <= ?", (min(loaded.cursor.values()),))
            for inbox_id, accepted_at, text in db.execute(
                "SELECT id, accepted_at, alert FROM inbox ORDER BY id"
            ).fetchall():
                try:
                    alert = SentryAlert.from_json(json.loads(text))
                except (ValueError, TypeError, KeyError):
                    log.error("unreadable inbox entry dropped", extra={"inbox_id": inbox_id})
                    db.execute("DELETE FROM inbox WHERE id = ?", (inbox_id,))
                    continue
                loaded.inbox.append((inbox_id, accepted_at, alert))
            loaded.queue = db.execute("SELECT id, queued_at FROM queue ORDER BY id").fetchall()
            for identity, text in db.execute("SELECT identity, alert FROM active").fetchall():
                loaded.active[identity] = PostableAlert.model_validate_json(text)
            for key, at, text in db.execute(
                "SELECT labels, resolved_at, alert FROM resolved ORDER BY resolved_at"
            ).fetchall():
                loaded.resolved[key] = (at, PostableAlert.model_validate_json(text))
        return loaded

    def _close_db(self) -> None:
        if self._db is not None:
            self._db.execute("PRAGMA wal_checkpoint(TRUNCATE)")
            self._db.close()
            self._db = None

    def _insert_inbox(self, alerts: Sequence[SentryAlert], now: float) -> list[int]:
        with self._transaction() as db:
            return [
                _rowid(
                    db.execute(
                        "INSERT INTO inbox (accepted_at, alert) VALUES (?, ?)",
                        (now, json.dumps(alert.to_json(), separators=(",", ":"))),
                    )
                )
                for alert in alerts
            ]

    def _write_complete(
        self,
        results: Sequence[Processed],
        sends: Sequence[_Send],
        now: float,
    ) -> list[int]:
        with self._transaction() as db:
            db.executemany("DELETE FROM inbox WHERE id = ?", [(r.inbox_id,) for r in results])
            ids = []
            for send in sends:
                body = wire_json(send.alert)
                ids.append(
                    _rowid(
                        db.execute(
                            "INSERT INTO queue (queued_at, alert) VALUES (?, ?)",
                            (send.queued_at, body),
                        )
                    )
                )
                key = label_key(send.alert.labels)
                if send.resolved:
                    db.execute(
                        "INSERT OR REPLACE INTO resolved (labels, resolved_at, alert)"
                        " VALUES (?, ?, ?)",
                        (key, now, body),
                    )
                else:
                    db.execute("DELETE FROM resolved WHERE labels = ?", (key,))
            for result in results:
                for identity, current in result.active.items():
                    if current is None:
                        db.execute("DELETE FROM active WHERE identity = ?", (identity,))
                    else:
                        db.execute(
                            "INSERT OR REPLACE INTO active (identity, alert) VALUES (?, ?)",
                            (identity, wire_json(current)),
                        )
            return ids

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

    def _write_expire(self, identities: Sequence[str], keys: Sequence[str]) -> None:
        with self._transaction() as db:
            db.executemany("DELETE FROM active WHERE identity = ?", [(i,) for i in identities])
            db.executemany("DELETE FROM resolved WHERE labels = ?", [(k,) for k in keys])

    def _read_dead_letters(self) -> list[tuple[str, str, dict[str, Any]]]:
        rows = self._conn.execute(
            "SELECT target, reason, alert FROM dead_letter ORDER BY id"
        ).fetchall()
        return [(target, reason, json.loads(body)) for target, reason, body in rows]


def _is_resolved(alert: PostableAlert, now: datetime) -> bool:
    return alert.ends_at is not None and alert.ends_at <= now


def _rowid(cursor: sqlite3.Cursor) -> int:
    assert cursor.lastrowid is not None
    return cursor.lastrowid

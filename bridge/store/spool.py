"""The spool: Sentry still gets its answer within a second while PostgreSQL is away.

``Spooled`` keeps the store contract around a primary store (PostgreSQL) and changes
only the edge's part of it, ``accept`` and ``quarantine``:

- the primary gets ``store.spool.accept_timeout`` (0.3 s) to commit the webhook. When it
  does not (a timeout, an ``OutboxFull`` from a failing store, a connection or driver
  error), the webhook is committed to the spool instead, a SQLite file of its own under
  the data directory (``bridge.store.sqlite_file``: WAL, ``synchronous=FULL``, group
  commit; on disk before the answer), and the answer is still 202. The primary's try and
  the spool's commit together stay well inside Sentry's one-second timeout;
- while the spool holds anything, new webhooks go to the spool too, behind it, so the
  primary receives them in the order they were answered;
- the spool is bounded (``store.spool.max_webhooks`` and ``max_bytes``); full, it raises
  ``OutboxFull``: the edge answers 503 and Sentry retries. A primary holding
  ``outbox.max_queued`` is full, not failing (its Alertmanagers are behind): 503 as
  without a spool, nothing spooled;
- a drainer task (started by ``open``, stopped by ``close``) moves the spooled webhooks
  into the primary, oldest first, a bounded batch per round, through the primary's own
  ``accept`` and ``quarantine``, so they take the normal path from there; while the
  primary is down it probes it between back-offs;
- the same body (by digest) twice in the spool is one entry (the second is a duplicate,
  answered as the primary would). A body the primary already has is dropped by the
  primary's own digest dedup when the spool drains; it was answered 202 rather than 200.

A pod may also start while PostgreSQL is unreachable (a rollout or a node drain during
an outage): ``open`` tries the primary once, within ``open_timeout``, and when it cannot
connect (connection-level failures only: refused, timed out, lost, the server starting or
shutting down; a ``ConfigError``, a wrong password or a schema newer than this bridge
still fail the start) keeps opening it in the background, with the drainer's back-off.
Until then every webhook is spooled (202), ``take`` waits, ``lane`` yields None (delivery
looks again after its ``LANE_BUSY_WAIT``), ``periodic`` is False, the primary's sizes are
0, and the operators' calls raise ``StoreError``; once it is open the drainer drains.

Everything else (the pipeline's ``take``/``complete``, delivery's lanes, the operators'
views) is the primary's, unchanged. ``sentry_bridge_store_up`` says whether the last write
to the primary (a webhook, a drained one, or the drainer's probe) succeeded. ``spooled``
puts the spool in front of the PostgreSQL engine only: the SQLite engine is local already.
"""

from __future__ import annotations

import asyncio
import collections
import contextlib
import json
import logging
import time
from collections.abc import AsyncIterator, Callable, Mapping, Sequence
from contextlib import AbstractAsyncContextManager
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TypeVar

import asyncpg

from bridge.config import Config
from bridge.errors import ConfigError, OutboxFull, StoreError
from bridge.metrics import Metrics
from bridge.model import SentryAlert
from bridge.store.contract import Failed, Lane, Processed, Quarantined, Store, Taken
from bridge.store.group_commit import GroupCommit
from bridge.store.health import WriteHealth
from bridge.store.sqlite_file import SqliteFile

log = logging.getLogger("bridge.store.spool")

FILENAME = "spool.sqlite3"

T = TypeVar("T")

# What a database that cannot be reached raises while connecting: the network's errors and
# timeouts, SQLSTATE class 08 (connection exception) and 57 (operator intervention: the
# server starting up or shutting down). Anything else (a wrong password, a missing
# database, a newer schema) is not an outage, and fails the start.
_UNREACHABLE = (
    OSError,
    TimeoutError,
    asyncpg.PostgresConnectionError,
    asyncpg.OperatorInterventionError,
)


def unreachable(exc: BaseException) -> bool:
    """Whether ``exc`` (or what it was raised from: the engine wraps its driver's errors in
    ``StoreError``) says the database cannot be reached, rather than that it is wrong."""
    seen: BaseException | None = exc
    while seen is not None:
        if isinstance(seen, ConfigError):
            return False
        if isinstance(seen, _UNREACHABLE):
            return True
        seen = seen.__cause__
    return False


# One row per spooled webhook, in the order answered (AUTOINCREMENT: ids never reused, so
# the order survives a spool that emptied). ``alert`` is set for an accepted webhook; the
# quarantine columns for a quarantined one. ``digest`` is UNIQUE: one entry per body (NULLs
# are distinct in SQLite, so webhooks accepted without a digest are all kept).
_SCHEMA = """
CREATE TABLE IF NOT EXISTS spool (
    id INTEGER PRIMARY KEY AUTOINCREMENT, at REAL NOT NULL, size INTEGER NOT NULL,
    digest BLOB UNIQUE, alert TEXT,
    reason TEXT, detail TEXT, headers TEXT, body BLOB);
"""


@dataclass(frozen=True, slots=True)
class _Webhook:
    """One webhook for the spool: an accepted alert, or a body to quarantine."""

    digest: bytes | None
    alert: SentryAlert | None = None
    reason: str = ""
    detail: str = ""
    headers: Mapping[str, str] | None = None
    body: bytes = b""

    @property
    def row(self) -> tuple[Any, ...]:
        alert = None if self.alert is None else json.dumps(self.alert.to_json())
        headers = None if self.headers is None else json.dumps(dict(self.headers))
        size = len(alert or "") + len(headers or "") + len(self.detail) + len(self.body)
        return (size, self.digest, alert, self.reason, self.detail, headers, self.body)


class Spooled:
    """A primary store with a local spool in front of its ``accept`` and ``quarantine``."""

    # Spooled webhooks moved to the primary per round (then deleted here in one commit).
    batch = 100
    # The drainer's back-off while the primary keeps failing, doubling up to the maximum.
    retry_initial = 0.1
    retry_max = 5.0
    # How long the drainer gives the primary for one spooled webhook, and how often it
    # probes an idle primary (so ``store_up`` follows PostgreSQL with no traffic).
    drain_timeout = 10.0
    probe_interval = 10.0
    # Consecutive failed spool commits after which the spool counts as failing.
    failing_after = 3

    def __init__(
        self,
        primary: Store,
        path: Path,
        *,
        metrics: Metrics,
        accept_timeout: float = 0.3,
        max_webhooks: int = 100_000,
        max_bytes: int = 256 * 1024 * 1024,
        max_queued: int | None = None,
        clock: Callable[[], float] = time.time,
        drainer: bool = True,
        open_timeout: float = 10.0,
    ) -> None:
        self.primary = primary
        self.targets = primary.targets
        self.progress = primary.progress
        self.accept_timeout = accept_timeout
        self.max_webhooks = max_webhooks
        self.max_bytes = max_bytes
        # outbox.max_queued: a primary that holds that much is full, not failing (its
        # Alertmanagers are behind): 503 as without a spool, and store_up stays 1.
        self.max_queued = max_queued
        self.metrics = metrics
        self.clock = clock
        self._file = SqliteFile(path, name="spool")
        self._writes = GroupCommit(self._write, name="spool-commit")
        # False: the caller drains with drain_once and opens with open_primary (tests).
        self._run_drainer = drainer
        self._drainer: asyncio.Task[None] | None = None
        self._deleting: asyncio.Task[None] | None = None  # outlives a cancelled drainer
        self._work = asyncio.Event()  # set when something was spooled
        # Committed to the spool, not yet in the primary: (id, at, size), oldest first.
        self._entries: collections.deque[tuple[int, float, int]] = collections.deque()
        self._bytes = 0
        # Handed to the group commit, not yet written: counted against the bounds.
        self._reserved = 0
        self._reserved_bytes = 0
        self._health = WriteHealth(metrics, self.failing_after)
        self._full = False  # the last webhook was refused for want of room, none since
        self._primary_up = True
        # How long open() gives the primary before the start goes on without it.
        self.open_timeout = open_timeout
        self._opened = asyncio.Event()  # set once the primary is open
        self._opener: asyncio.Task[None] | None = None  # opens it in the background
        metrics.spool_webhooks.set_function(self.depth)
        metrics.spool_oldest_age.set_function(self.spool_age)

    # --- lifecycle ----------------------------------------------------------------------

    async def open(self) -> None:
        """Open the spool (what a previous run left is drained first), then the primary:
        one try within ``open_timeout``; an unreachable primary is opened in the background
        while the spool takes the webhooks. Anything else it raises fails the start."""
        await self._file.open(_SCHEMA)
        try:
            rows = await self._file.call(self._read_index)
        except BaseException:
            await self._file.close()
            raise
        try:
            async with asyncio.timeout(self.open_timeout):
                await self.primary.open()
        except Exception as exc:
            if not unreachable(exc):
                await self._file.close()
                raise
            log.warning(
                "cannot reach the store at start; webhooks go to the local spool until it "
                "can be opened",
                extra={"error": _why(exc), "spooled": len(rows)},
            )
            if self._run_drainer:
                self._opener = asyncio.create_task(self._open_forever(), name="spool-opener")
        except BaseException:
            await self._file.close()
            raise
        else:
            self._opened.set()
        self._entries.extend(rows)
        self._bytes = sum(size for _, _, size in rows)
        self._set_up(self._opened.is_set())
        if rows:
            log.warning("spool holds webhooks from before; draining", extra={"spooled": len(rows)})
            self._work.set()
        if self._run_drainer:
            self._drainer = asyncio.create_task(self._drain_forever(), name="spool-drainer")

    def opened(self) -> bool:
        """Whether the primary is open (False while a start rides out its outage)."""
        return self._opened.is_set()

    async def open_primary(self) -> None:
        """One try at opening the primary, within ``open_timeout`` (the background
        opener's step; with ``drainer=False``, the caller's). Raises what it raised."""
        if self._opened.is_set():
            return
        async with asyncio.timeout(self.open_timeout):
            await self.primary.open()
        self._opened.set()
        self._primary_up = True  # said once, here, not also as "the store is back"
        self._set_up(True)
        log.info("the store is open", extra={"spooled": self.depth()})
        self._work.set()

    async def _open_forever(self) -> None:
        """Open the primary, with back-off, until it opens (the start could not)."""
        delay = self.retry_initial
        while not self._opened.is_set():
            await asyncio.sleep(delay)
            delay = min(delay * 2, self.retry_max)
            try:
                await self.open_primary()
            except Exception as exc:
                # Not an outage (a password changed meanwhile...): said loudly, every try;
                # the pod stays up on its spool, store_up 0, until someone fixes it.
                level = logging.DEBUG if unreachable(exc) else logging.ERROR
                log.log(level, "cannot open the store yet", extra={"error": _why(exc)})

    async def close(self) -> None:
        """Stops the opener and the drainer, then closes the spool and (if open) the primary."""
        for task in (self._opener, self._drainer):
            if task is not None:
                task.cancel()
                with contextlib.suppress(asyncio.CancelledError):
                    await task
        self._opener = self._drainer = None
        if self._deleting is not None:
            await asyncio.gather(self._deleting, return_exceptions=True)
        await self._writes.idle()
        await self._file.close()
        if self._opened.is_set():
            await self.primary.close()

    # --- the edge -----------------------------------------------------------------------

    async def accept(self, alert: SentryAlert, digest: bytes | None = None) -> bool:
        if self._opened.is_set() and not self.spooling():
            if self._primary_full():
                raise OutboxFull()
            try:
                async with asyncio.timeout(self.accept_timeout):
                    stored = await self.primary.accept(alert, digest)
            except Exception as exc:  # TimeoutError, OutboxFull, OSError, the driver's
                self._primary_failed(exc)
            else:
                self._set_up(True)
                return stored
        return await self._spool(_Webhook(digest, alert))

    async def quarantine(
        self, reason: str, detail: str, headers: Mapping[str, str], body: bytes, digest: bytes
    ) -> bool:
        if self._opened.is_set() and not self.spooling():
            try:
                async with asyncio.timeout(self.accept_timeout):
                    kept = await self.primary.quarantine(reason, detail, headers, body, digest)
            except Exception as exc:
                self._primary_failed(exc)
            else:
                self._set_up(True)
                return kept
        return await self._spool(_Webhook(digest, None, reason, detail[:1000], headers, body))

    def _primary_full(self) -> bool:
        return self.max_queued is not None and self.primary.length() >= self.max_queued

    def spooling(self) -> bool:
        """The spool holds (or is committing) something: new webhooks queue behind it."""
        return bool(self._entries) or self._reserved > 0

    async def _spool(self, webhook: _Webhook) -> bool:
        row = webhook.row
        if (
            self.depth() >= self.max_webhooks
            or self._bytes + self._reserved_bytes + row[0] > self.max_bytes
        ):
            self._full = True
            raise OutboxFull("the store is unavailable and the local spool is full; retry later")
        self._reserved += 1
        self._reserved_bytes += row[0]
        # Written by the group commit whatever happens to this caller (a cancelled request
        # is still spooled and drained; a retry of the same body is then a duplicate).
        return await self._writes.submit(row)

    async def _write(self, rows: Sequence[tuple[Any, ...]]) -> list[bool]:
        """The group commit's write: one transaction (fsynced) for ``rows``."""
        now = self.clock()
        try:
            ids = await self._file.call(self._insert, rows, now)
        except Exception as exc:
            self._health.failed()
            log.exception("cannot write the spool", extra={"webhooks": len(rows)})
            raise OutboxFull("the store is unavailable and the spool cannot be written") from exc
        finally:
            self._reserved -= len(rows)
            self._reserved_bytes -= sum(row[0] for row in rows)
        self._health.succeeded()
        self._full = False
        results = []
        for row, spool_id in zip(rows, ids, strict=True):
            if spool_id is None:  # the same body is already spooled
                self.metrics.duplicate_bodies.inc()
                results.append(False)
                continue
            self._entries.append((spool_id, now, row[0]))
            self._bytes += row[0]
            self.metrics.spooled.inc()
            results.append(True)
        self._work.set()
        return results

    # --- the drainer --------------------------------------------------------------------

    async def drain_once(self) -> int:
        """Move up to ``batch`` spooled webhooks into the primary, oldest first; returns how
        many. Raises what the primary raised; those moved before it stay moved."""
        self._require_open("drain the spool")
        if not self._entries:
            return 0
        if self._primary_full():
            raise OutboxFull()  # not a failure of the primary: store_up stays as it is
        rows = await self._file.call(self._read_batch, self._entries[0][0], self.batch)
        moved: list[int] = []
        try:
            for spool_id, digest, alert, reason, detail, headers, body in rows:
                # Into the primary first, then out of the spool: a crash (or a timeout
                # whose commit went through) between the two leaves the entry here, and
                # the next round hands it to the primary again. That is at most a
                # duplicate, which the primary's digest dedup absorbs (the same body
                # within its body retention: False, nothing stored).
                async with asyncio.timeout(self.drain_timeout):
                    if alert is not None:
                        await self.primary.accept(SentryAlert.from_json(json.loads(alert)), digest)
                    else:
                        await self.primary.quarantine(
                            reason, detail, json.loads(headers), bytes(body), digest
                        )
                moved.append(spool_id)
        except Exception as exc:
            self._primary_failed(exc)
            raise
        finally:
            if moved:
                await self._forget(moved)
        self._set_up(True)
        return len(moved)

    async def _forget(self, moved: list[int]) -> None:
        """Delete what the primary now has; shielded so a close does not interrupt it."""
        self._deleting = asyncio.ensure_future(self._file.call(self._delete, moved[-1]))
        await asyncio.shield(self._deleting)
        while self._entries and self._entries[0][0] <= moved[-1]:
            _, _, size = self._entries.popleft()
            self._bytes -= size
        self._full = False
        self.metrics.spool_drained.inc(len(moved))
        if not self._entries and not self._reserved:
            log.info("spool drained: webhooks go to the store again")

    async def _drain_forever(self) -> None:
        await self._opened.wait()  # the opener's back-off until then
        delay = self.retry_initial
        while True:
            if not self._entries:
                self._work.clear()
                with contextlib.suppress(TimeoutError):
                    async with asyncio.timeout(self.probe_interval):
                        await self._work.wait()
                if not self._entries:
                    await self._probe_primary()
                    continue
            # While the primary is down, its probe (one tiny, quiet write) says when to try
            # again, rather than the oldest webhook failing (and logged) round after round.
            if not self._primary_up and not await self._primary_answers():
                await asyncio.sleep(delay)
                delay = min(delay * 2, self.retry_max)
                continue
            try:
                await self.drain_once()
            except Exception:  # the primary is still failing (_primary_failed said so) or full
                await asyncio.sleep(delay)
                delay = min(delay * 2, self.retry_max)
            else:
                delay = self.retry_initial

    async def _primary_answers(self) -> bool:
        """The primary's ``probe``: whether it says it takes writes (an engine's own
        ``store_ok``, which may lag behind its first failures)."""
        try:
            async with asyncio.timeout(self.drain_timeout):
                return await self.primary.probe()
        except Exception:
            return False

    async def _probe_primary(self) -> None:
        """With nothing to drain: ``store_up`` as the probe says."""
        if await self._primary_answers():
            self._set_up(True)
        else:
            self._primary_failed(None)

    def _primary_failed(self, exc: BaseException | None) -> None:
        if self._primary_up:
            log.error(
                "the store fails; webhooks go to the local spool until it is back",
                extra={
                    "error": "its probe failed" if exc is None else _why(exc),
                    "spooled": self.depth(),
                },
            )
        self._set_up(False)

    def _set_up(self, up: bool) -> None:
        if up and not self._primary_up:
            log.info("the store is back", extra={"spooled": self.depth()})
        self._primary_up = up
        self.metrics.store_up.set(1 if up else 0)

    # --- sizes --------------------------------------------------------------------------

    def depth(self) -> int:
        """Webhooks in the spool, committed or being committed."""
        return len(self._entries) + self._reserved

    def spool_age(self) -> float:
        """Seconds since the oldest spooled webhook was answered (0 when empty)."""
        return max(0.0, self.clock() - self._entries[0][1]) if self._entries else 0.0

    def inbox_count(self) -> int:
        """Accepted, not yet processed, as far as the pipeline goes: the primary's inbox,
        and the spool while the primary is up (the drainer moves it there). While the
        primary is away the spool waits for it, not for the pipeline: bridge.compose's
        watchdog does not call a pod stuck for an outage, nor does a stop wait for it (the
        spool is on disk)."""
        spooled = self.depth() if self._primary_up else 0
        return self._known(self.primary.inbox_count, 0) + spooled

    def length(self) -> int:
        return self._known(self.primary.length, 0) + self.depth()

    def oldest_age(self) -> float:
        return max(self._known(self.primary.oldest_age, 0.0), self.spool_age())

    def store_ok(self) -> bool:
        """Ready while webhooks can be kept: the primary takes them, or the spool does."""
        if self._opened.is_set() and self.primary.store_ok():
            return True
        return self._health.ok and not self._full

    async def probe(self) -> bool:
        if self._opened.is_set():
            await self._probe_primary()
        return self.store_ok()

    def _known(self, size: Callable[[], T], unknown: T) -> T:
        """One of the primary's sizes; ``unknown`` (nothing known) until it is open."""
        return size() if self._opened.is_set() else unknown

    def _require_open(self, what: str) -> None:
        if not self._opened.is_set():
            raise StoreError(
                f"cannot {what}: the store (PostgreSQL) has not been reachable since this "
                "bridge started; webhooks are kept in the local spool meanwhile"
            )

    # --- the rest is the primary's ------------------------------------------------------

    async def take(self, limit: int) -> Taken:
        await self._opened.wait()  # nothing to take before; the spool drains into it then
        return await self.primary.take(limit)

    async def complete(
        self, taken: Taken, results: Sequence[Processed], failed: Sequence[Failed] = ()
    ) -> None:
        await self.primary.complete(taken, results, failed)

    async def abandon(self, taken: Taken) -> None:
        await self.primary.abandon(taken)

    def lane(self, target: str) -> AbstractAsyncContextManager[Lane | None]:
        if not self._opened.is_set():
            # As if another replica held it: delivery looks again after LANE_BUSY_WAIT.
            return _no_lane()
        return self.primary.lane(target)

    def wakeup(self, target: str) -> asyncio.Event:
        return self.primary.wakeup(target)

    async def periodic(self) -> bool:
        return self._opened.is_set() and await self.primary.periodic()

    async def expire(self, *, resolved_for: float) -> None:
        self._require_open("expire alerts")
        await self.primary.expire(resolved_for=resolved_for)

    async def dead_letters(self) -> list[tuple[str, str, dict[str, Any]]]:
        self._require_open("list the dead letters")
        return await self.primary.dead_letters()

    async def requeue_dead_letters(self) -> dict[str, int]:
        self._require_open("requeue the dead letters")
        return await self.primary.requeue_dead_letters()

    async def quarantined(
        self, entry_id: int | None = None, *, after: int = 0, limit: int = 100
    ) -> list[Quarantined]:
        self._require_open("list the quarantine")
        return await self.primary.quarantined(entry_id, after=after, limit=limit)

    async def release(self, entry_id: int, alert: SentryAlert | None) -> bool:
        self._require_open("release from quarantine")
        return await self.primary.release(entry_id, alert)

    async def discard_quarantined(self, ids: Sequence[int] | None) -> list[int]:
        self._require_open("discard from quarantine")
        return await self.primary.discard_quarantined(ids)

    async def snapshot(self, limit: int) -> dict[str, Any]:
        self._require_open("take a snapshot")
        return await self.primary.snapshot(limit)

    def queued_count(self) -> int:
        return self._known(self.primary.queued_count, 0)

    def queue_depths(self) -> dict[str, int]:
        return self._known(self.primary.queue_depths, dict.fromkeys(self.targets, 0))

    def active_count(self) -> int:
        return self._known(self.primary.active_count, 0)

    def resendable_count(self) -> int:
        return self._known(self.primary.resendable_count, 0)

    def quarantine_count(self) -> int:
        return self._known(self.primary.quarantine_count, 0)

    # --- on the spool's thread ----------------------------------------------------------

    def _read_index(self) -> list[tuple[int, float, int]]:
        rows: list[tuple[int, float, int]] = self._file.db.execute(
            "SELECT id, at, size FROM spool ORDER BY id"
        ).fetchall()
        return rows

    def _insert(self, rows: Sequence[tuple[Any, ...]], now: float) -> list[int | None]:
        """The new ids, None for a body (digest) already spooled (in this batch too)."""
        sql = (
            "INSERT OR IGNORE INTO spool (at, size, digest, alert, reason, detail, headers,"
            " body) VALUES (?, ?, ?, ?, ?, ?, ?, ?)"
        )
        with self._file.transaction() as db:
            return [
                cursor.lastrowid if (cursor := db.execute(sql, (now, *row))).rowcount else None
                for row in rows
            ]

    def _read_batch(self, first: int, limit: int) -> list[tuple[Any, ...]]:
        rows: list[tuple[Any, ...]] = self._file.db.execute(
            "SELECT id, digest, alert, reason, detail, headers, body FROM spool"
            " WHERE id >= ? ORDER BY id LIMIT ?",
            (first, limit),
        ).fetchall()
        return rows

    def _delete(self, last: int) -> None:
        with self._file.transaction() as db:
            db.execute("DELETE FROM spool WHERE id <= ?", (last,))


def _why(exc: BaseException) -> str:
    return "no answer in time" if isinstance(exc, TimeoutError) else repr(exc)


@contextlib.asynccontextmanager
async def _no_lane() -> AsyncIterator[Lane | None]:
    yield None


def spooled(primary: Store, config: Config, metrics: Metrics) -> Store:
    """``primary`` behind the spool of ``config.store.spool``, with ``store.backend:
    postgres``; the embedded engine needs none (it is already local)."""
    if config.store.backend != "postgres":
        return primary
    spool = config.store.spool
    return Spooled(
        primary,
        config.outbox.data_dir / FILENAME,
        metrics=metrics,
        accept_timeout=spool.accept_timeout,
        max_webhooks=spool.max_webhooks,
        max_bytes=spool.max_bytes,
        max_queued=config.outbox.max_queued,
        # Connecting, then the migration's statements (bridge.store.pg.connection).
        open_timeout=config.store.postgres.connect_timeout
        + 2 * config.store.postgres.statement_timeout,
    )

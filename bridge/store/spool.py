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
from collections.abc import Callable, Mapping, Sequence
from contextlib import AbstractAsyncContextManager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from bridge.config import Config
from bridge.errors import OutboxFull
from bridge.metrics import Metrics
from bridge.model import SentryAlert
from bridge.store.contract import Failed, Lane, Processed, Quarantined, Store, Taken
from bridge.store.sqlite_file import GroupCommit, SqliteFile

log = logging.getLogger("bridge.store.spool")

FILENAME = "spool.sqlite3"

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
        self._run_drainer = drainer  # False: the caller drains with drain_once (tests)
        self._drainer: asyncio.Task[None] | None = None
        self._deleting: asyncio.Task[None] | None = None  # outlives a cancelled drainer
        self._work = asyncio.Event()  # set when something was spooled
        # Committed to the spool, not yet in the primary: (id, at, size), oldest first.
        self._entries: collections.deque[tuple[int, float, int]] = collections.deque()
        self._bytes = 0
        # Handed to the group commit, not yet written: counted against the bounds.
        self._reserved = 0
        self._reserved_bytes = 0
        self._write_failures = 0
        self._full = False  # the last webhook was refused for want of room, none since
        self._primary_up = True
        metrics.spool_webhooks.set_function(self.depth)
        metrics.spool_oldest_age.set_function(self.spool_age)

    # --- lifecycle ----------------------------------------------------------------------

    async def open(self) -> None:
        """Open the spool (what a previous run left is drained first), then the primary."""
        await self._file.open(_SCHEMA)
        try:
            rows = await self._file.call(self._read_index)
            await self.primary.open()
        except BaseException:
            await self._file.close()
            raise
        self._entries.extend(rows)
        self._bytes = sum(size for _, _, size in rows)
        self._set_up(True)
        if rows:
            log.warning("spool holds webhooks from before; draining", extra={"spooled": len(rows)})
            self._work.set()
        if self._run_drainer:
            self._drainer = asyncio.create_task(self._drain_forever(), name="spool-drainer")

    async def close(self) -> None:
        if self._drainer is not None:
            self._drainer.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._drainer
            self._drainer = None
        if self._deleting is not None:
            await asyncio.gather(self._deleting, return_exceptions=True)
        await self._writes.idle()
        await self._file.close()
        await self.primary.close()

    # --- the edge -----------------------------------------------------------------------

    async def accept(self, alert: SentryAlert, digest: bytes | None = None) -> bool:
        if not self.spooling():
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
        if not self.spooling():
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
            self._write_failures += 1
            self.metrics.store_errors.inc()
            log.exception("cannot write the spool", extra={"webhooks": len(rows)})
            raise OutboxFull("the store is unavailable and the spool cannot be written") from exc
        finally:
            self._reserved -= len(rows)
            self._reserved_bytes -= sum(row[0] for row in rows)
        self._write_failures = 0
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
            if exc is None:
                why = "its probe failed"
            elif isinstance(exc, TimeoutError):
                why = "no answer in time"
            else:
                why = repr(exc)
            log.error(
                "the store fails; webhooks go to the local spool until it is back",
                extra={"error": why, "spooled": self.depth()},
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
        """Accepted, not yet processed: the primary's inbox and the spool."""
        return self.primary.inbox_count() + self.depth()

    def length(self) -> int:
        return self.primary.length() + self.depth()

    def oldest_age(self) -> float:
        return max(self.primary.oldest_age(), self.spool_age())

    def store_ok(self) -> bool:
        """Ready while webhooks can be kept: the primary takes them, or the spool does."""
        if self.primary.store_ok():
            return True
        return self._write_failures < self.failing_after and not self._full

    async def probe(self) -> bool:
        await self._probe_primary()
        return self.store_ok()

    # --- the rest is the primary's ------------------------------------------------------

    async def take(self, limit: int) -> Taken:
        return await self.primary.take(limit)

    async def complete(
        self, taken: Taken, results: Sequence[Processed], failed: Sequence[Failed] = ()
    ) -> None:
        await self.primary.complete(taken, results, failed)

    async def abandon(self, taken: Taken) -> None:
        await self.primary.abandon(taken)

    def lane(self, target: str) -> AbstractAsyncContextManager[Lane | None]:
        return self.primary.lane(target)

    def wakeup(self, target: str) -> asyncio.Event:
        return self.primary.wakeup(target)

    async def periodic(self) -> bool:
        return await self.primary.periodic()

    async def forget_refused(
        self, target: str, refused: Sequence[tuple[str, str]], *, dead_letter: bool
    ) -> int:
        return await self.primary.forget_refused(target, refused, dead_letter=dead_letter)

    async def expire(self, *, resolved_for: float) -> None:
        await self.primary.expire(resolved_for=resolved_for)

    async def dead_letters(self) -> list[tuple[str, str, dict[str, Any]]]:
        return await self.primary.dead_letters()

    async def requeue_dead_letters(self) -> dict[str, int]:
        return await self.primary.requeue_dead_letters()

    async def quarantined(self) -> list[Quarantined]:
        return await self.primary.quarantined()

    async def release(self, entry_id: int, alert: SentryAlert | None) -> None:
        await self.primary.release(entry_id, alert)

    async def snapshot(self, limit: int) -> dict[str, Any]:
        return await self.primary.snapshot(limit)

    def queued_count(self) -> int:
        return self.primary.queued_count()

    def queue_depths(self) -> dict[str, int]:
        return self.primary.queue_depths()

    def active_count(self) -> int:
        return self.primary.active_count()

    def resendable_count(self) -> int:
        return self.primary.resendable_count()

    def quarantine_count(self) -> int:
        return self.primary.quarantine_count()

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
    )

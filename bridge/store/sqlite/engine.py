"""``SqliteStore``: the store contract (``bridge.store.contract``) on one SQLite file, for one
process (the package docstring has the parts, the tables and memory), on
``bridge.store.engine.Engine``. It keeps in memory the ids and times of what waits to be
taken, with the first ``kept_in_memory`` accepted alerts.
"""

from __future__ import annotations

import asyncio
import collections
import contextlib
import json
import logging
import sqlite3
from collections.abc import AsyncIterator, Callable, Iterator, Sequence
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, TypeVar, Unpack

from bridge.errors import StoreFull
from bridge.model import SentryAlert
from bridge.state import IdentityState
from bridge.store import bodies, identity, operators, writes
from bridge.store.contract import Entry, Failed, Lane, Processed, Taken
from bridge.store.engine import Accept, Engine, Limits
from bridge.store.sqlite import inbox, queue, sql
from bridge.store.sqlite.dialect import dialect, run
from bridge.store.sqlite.schema import FILENAME, SCHEMA, check_version
from bridge.store.sqlite_file import SqliteFile
from bridge.store.steps import Step

log = logging.getLogger("bridge.store")

T = TypeVar("T")
_Ready = tuple[int, float, SentryAlert | None]  # id, accepted_at, the alert if kept


def utcnow() -> datetime:
    return datetime.now(UTC)


class SqliteStore(Engine):
    lock_timeout_ms = SqliteFile.lock_timeout_ms  # the file's, tunable per engine
    # Accepted alerts kept as objects for take(); a longer backlog is read back from disk.
    kept_in_memory = 1024

    def __init__(
        self,
        data_dir: Path,
        targets: Sequence[str],
        *,
        clock: Callable[[], datetime] = utcnow,
        **limits: Unpack[Limits],
    ) -> None:
        super().__init__(targets, **limits)
        self.path = Path(data_dir) / FILENAME
        self.clock = clock
        self.dialect = dialect(lambda: self.clock())  # the shared steps' (bridge.store.steps)
        self._file = SqliteFile(self.path, name="store")
        # Committed, not yet taken: (id, accepted_at, the alert while kept in memory).
        self._ready: collections.deque[_Ready] = collections.deque()
        self._ready_event = asyncio.Event()
        self._lanes = {target: asyncio.Lock() for target in self.targets}

    # --- lifecycle ----------------------------------------------------------------------

    async def open(self) -> None:
        self._file.lock_timeout_ms = self.lock_timeout_ms
        await self._file.open(SCHEMA)
        try:
            left = await self._file.call(self._load)
            sizes = await self.sizes(0)
        except BaseException:
            await self._file.close()
            raise
        self._ready.extend((inbox_id, at, None) for inbox_id, at in left)
        if self._ready:
            self._ready_event.set()
        self._wake_senders()
        counts = {"inbox": sizes.inbox, "queued": sizes.behind, "active": sizes.active}
        log.info("store opened", extra=counts)

    async def close(self) -> None:
        if self._file.is_open:
            await self._settle()
            await self._file.close()

    # --- the request path ---------------------------------------------------------------

    async def _write_accepts(self, batch: Sequence[Accept]) -> list[bool]:
        now = self._now()
        try:
            ids = await self._write(
                inbox.insert, self.dialect, batch, now, self.body_retention, self.max_bodies
            )
        except Exception as exc:
            if not isinstance(exc, sqlite3.Error):  # the file's are WriteHealth's, said once
                log.exception("cannot write the store", extra={"alerts": len(batch)})
            raise StoreFull("the store cannot be written") from exc
        for (alert, _), inbox_id in zip(batch, ids, strict=True):
            if inbox_id is not None:  # None: the same body within body_retention
                keep = len(self._ready) < self.kept_in_memory
                self._ready.append((inbox_id, now, alert if keep else None))
        stored = [inbox_id is not None for inbox_id in ids]
        self._accepted(stored)
        self._ready_event.set()
        return stored

    # --- the pipeline -------------------------------------------------------------------

    async def take(self, limit: int) -> Taken:
        """Reads the states of the identities along (one query): deciding needs no disk."""
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
                taken, states, now = await self._file.call(self._read_taken, entries)
            except BaseException:
                self._ready.extendleft(reversed(entries))  # not handed out: keep the order
                raise
            if taken:
                return Taken(entries=taken, states=states, now=now)

    def idle(self) -> bool:
        return self._idle and not self._ready

    async def complete(
        self, taken: Taken, results: Sequence[Processed], failed: Sequence[Failed] = ()
    ) -> None:
        planned = writes.plan(taken, results, failed, self.clock())
        await self._shield(self._complete(planned))

    async def _complete(self, planned: writes.Writes) -> None:
        await self._write(self._execute, planned, durable=False)
        self._completed(planned)

    def _execute(self, db: sqlite3.Connection, planned: writes.Writes) -> None:
        inbox.delete(db, planned.done)
        d = self.dialect
        run(db, d, operators.complete(d, planned, self.targets, self.quarantine_kept))

    async def abandon(self, taken: Taken) -> None:
        entries = [(e.inbox_id, e.accepted_at.timestamp(), e.alert) for e in taken.entries]
        self._ready.extendleft(reversed(entries))
        self._ready_event.set()

    # --- the senders --------------------------------------------------------------------

    @contextlib.asynccontextmanager
    async def lane(self, target: str) -> AsyncIterator[Lane | None]:
        """The right to post to ``target``: one process, so a lock per Alertmanager, and
        never None. Its advance commits when the block ends without an exception."""
        async with self._lanes[target]:
            lane = queue.Lane(self, target)
            yield lane
            await lane.commit()

    async def periodic(self) -> bool:
        return True  # one replica

    async def _advance(
        self, target: str, done: int | None, dead: Sequence[tuple[str, str]]
    ) -> None:
        await self._write(
            queue.advance, self.dialect, target, done, dead, self.dead_letters_kept, durable=False
        )
        self._sizes.changed()
        self.progress.set()

    # --- store health, quarantine -------------------------------------------------------

    async def probe(self) -> bool:
        with contextlib.suppress(sqlite3.Error):
            await self._write(_probe, self._now())
        return self.store_ok()

    async def _keep_quarantined(self, row: writes.QuarantineRow, digest: bytes) -> bool:
        return await self._write(self._quarantine, row, digest, self.clock())

    async def release(self, entry_id: int, alert: SentryAlert | None) -> bool:
        now = self._now()
        found, inbox_id = await self._shield(self._write(self._release, entry_id, alert, now))
        if inbox_id is not None and alert is not None:
            self._ready.append((inbox_id, now, alert))
            self._ready_event.set()
        return bool(found)

    # --- plumbing -----------------------------------------------------------------------

    def _now(self) -> float:
        return self.clock().timestamp()

    async def _read(self, fn: Callable[..., T], *args: Any) -> T:
        """``fn(db, *args)`` on the file's thread."""
        return await self._file.call(lambda: fn(self._file.db, *args))

    async def _write(self, fn: Callable[..., T], *args: Any, durable: bool = True) -> T:
        """``fn(db, *args)`` on the file's thread, in one write transaction. ``durable=False``
        for what the inbox and the states can give again (a batch's decisions, delivery's
        progress, expiry): not fsynced on its own (``SqliteFile.transaction``), so the
        accepts' group commits do not queue behind an fsync per batch and per Alertmanager."""

        def write() -> T:
            with self._transaction(durable=durable) as db:
                return fn(db, *args)

        return await self._file.call(write)

    # --- on the SQLite thread -----------------------------------------------------------

    async def _step(self, step: Step[T]) -> T:
        return await self._read(run, self.dialect, step)

    async def _write_step(self, step: Step[T], *, durable: bool = True) -> T:
        return await self._write(run, self.dialect, step, durable=durable)

    @contextlib.contextmanager
    def _transaction(self, *, durable: bool = True) -> Iterator[sqlite3.Connection]:
        """``SqliteFile.transaction``, reported to the write health (``store_ok``)."""
        with self._health.watch(sqlite3.Error), self._file.transaction(durable=durable) as db:
            yield db

    def _load(self) -> list[tuple[int, float]]:
        """The inbox left from before: (id, accepted_at), in order."""
        check_version(self._file.db, self.path)
        with self._transaction() as db:  # a new Alertmanager gets what is decided from now
            db.execute(sql.KEEP_ONLY_TARGETS, (json.dumps(self.targets),))
        return db.execute(sql.INBOX_LEFT).fetchall()

    def _read_taken(
        self, entries: Sequence[_Ready]
    ) -> tuple[list[Entry], dict[str, IdentityState], datetime]:
        """The entries (alerts read back where only the id was kept; unreadable ones
        deleted), then ``identity.of_taken``."""
        taken, dropped = inbox.read(self._file.db, [(i, alert) for i, _, alert in entries])
        if dropped:
            with self._transaction() as db:
                inbox.delete(db, dropped)
        at = {inbox_id: accepted_at for inbox_id, accepted_at, _ in entries}
        d = self.dialect
        states, now = run(self._file.db, d, identity.of_taken(d, {a.identity for _, a in taken}))
        return [Entry(i, datetime.fromtimestamp(at[i], UTC), a) for i, a in taken], states, now

    def _quarantine(
        self, db: sqlite3.Connection, row: writes.QuarantineRow, digest: bytes, at: datetime
    ) -> bool:
        """Kept; False, and nothing written, when ``digest`` was seen within
        body_retention."""
        d = self.dialect
        if not run(db, d, bodies.first_sight(d, [digest], self.body_retention, at))[0]:
            return False
        inbox.forget_bodies(db, at.timestamp(), self.body_retention, self.max_bodies)
        run(db, d, operators.quarantine(d, [row], self.quarantine_kept, at))
        return True

    def _release(
        self, db: sqlite3.Connection, entry_id: int, alert: SentryAlert | None, now: float
    ) -> tuple[bool, int | None]:
        """Whether the entry was there, and the inbox id of ``alert`` accepted with it."""
        if not run(db, self.dialect, operators.release(entry_id)):
            return False, None
        return True, None if alert is None else inbox.add(db, alert, now)


def _probe(db: sqlite3.Connection, now: float) -> None:
    db.execute(sql.PROBE, (now,))

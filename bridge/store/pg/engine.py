"""``PostgresStore``: the store contract (``bridge.store.contract``) on PostgreSQL, shared
by every replica. It composes the parts (the package docstring lists them) on
``bridge.store.engine.Engine`` and keeps in memory the open transactions of what ``take``
handed out (``Taken.handle``) and of lanes.

``take`` waits without polling hard: ``LISTEN`` on the inbox's channel (every accept
notifies at commit, PostgreSQL docs "NOTIFY"), with a poll every ``poll_interval`` in case
a notification was lost with a connection. Senders are woken the same way on queue inserts.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import secrets
import socket
from collections.abc import AsyncIterator, Callable, Sequence
from dataclasses import dataclass
from datetime import timedelta
from typing import Any, TypeVar, Unpack

import asyncpg

from bridge.config import Postgres, postgres_connections
from bridge.errors import ConfigError, StoreError, StoreFull
from bridge.model import SentryAlert
from bridge.store import bodies, identity, operators, writes
from bridge.store.contract import Entry, Failed, Lane, Processed, Taken
from bridge.store.engine import Accept, Engine, Limits
from bridge.store.pg import connection, inbox, queue, sql
from bridge.store.pg.dialect import dialect, run
from bridge.store.pg.lease import Periodic
from bridge.store.steps import Step

log = logging.getLogger("bridge.store.pg")

T = TypeVar("T")

# What a failing database raises: its errors, a lost connection, a timeout.
DB_ERRORS = (asyncpg.PostgresError, asyncpg.InterfaceError, OSError, TimeoutError)


@dataclass(eq=False)  # hashed by identity: kept in a set while open
class _Handle:
    """A ``take``'s open transaction: its connection holds the identities' locks."""

    conn: Any
    transaction: Any
    done: bool = False


class PostgresStore(Engine):
    relisten_interval = 2.0  # seconds between looks at the LISTEN connection
    poll_interval = 1.0  # take() looks at the inbox at least this often while waiting

    def __init__(
        self,
        settings: Postgres,
        targets: Sequence[str],
        *,
        lease_ttl: timedelta = timedelta(seconds=15),
        holder: str | None = None,
        migrate: bool = True,
        **limits: Unpack[Limits],
    ) -> None:
        # Other replicas accept too: the bound reads again in the background this often.
        super().__init__(targets, stale_after=2.0, **limits)
        needed = postgres_connections(len(targets))  # config refuses less; a caller may not
        if settings.pool_size < needed:
            raise ConfigError(
                f"store.postgres.pool_size: {settings.pool_size} is too small for "
                f"{len(targets)} Alertmanager(s); at least {needed}"
            )
        self.settings = settings
        self.migrate = migrate  # False: an operator's command (``connection.check_version``)
        self.lease_ttl = lease_ttl
        self.holder = holder or f"{socket.gethostname()}:{os.getpid()}:{secrets.token_hex(4)}"
        schema = settings.schema_
        self.lock_key = connection.lock_key(schema)  # identities' advisory locks
        self.sweep_key = connection.lock_key(f"{schema}:seen_body")
        self.inbox_channel = f"{schema}_inbox"
        self.queue_channel = f"{schema}_queued"
        self.dialect = dialect(self.lock_key, self.queue_channel)  # bridge.store.steps
        self._pool: Any = None
        self._listener: Any = None
        self._lease: Periodic | None = None
        self._inbox_event = asyncio.Event()
        self._handles: set[_Handle] = set()
        self._relistener: asyncio.Task[None] | None = None

    # --- lifecycle ----------------------------------------------------------------------

    async def open(self) -> None:
        try:
            self._pool = await connection.connect(self.settings)
        except DB_ERRORS as exc:
            raise StoreError(f"cannot connect to PostgreSQL: {type(exc).__name__}: {exc}") from exc
        try:
            async with self._pool.acquire() as conn:
                if self.migrate:
                    await connection.migrate(conn, self.settings.schema_)
                else:
                    await connection.check_version(conn, self.settings.schema_)
                await conn.execute(sql.ADD_LANES, list(self.targets))
            await self._listen()
            opened = await self.sizes(0)
        except BaseException:
            await self._pool.close()
            self._pool = None
            raise
        self._lease = Periodic(self._pool, self.holder, self.lease_ttl)
        self._relistener = asyncio.create_task(self._relisten_loop(), name="store-listen")
        self._inbox_event.set()
        self._wake_senders()
        log.info(
            "store opened",
            extra={"backend": "postgres", "inbox": opened.inbox, "queued": opened.behind},
        )

    async def close(self) -> None:
        if self._pool is None:
            return
        if self._relistener is not None:
            self._relistener.cancel()
            await asyncio.gather(self._relistener, return_exceptions=True)
        await self._settle()
        for handle in list(self._handles):  # a take whose pipeline was cancelled
            await self._end(handle)
        if self._lease is not None:
            with contextlib.suppress(*DB_ERRORS):
                await self._lease.release()
        await self._unlisten()
        pool, self._pool = self._pool, None
        await _close(pool, grace=5)

    # --- the edge -----------------------------------------------------------------------

    async def _write_accepts(self, batch: Sequence[Accept]) -> list[bool]:
        try:
            kept: list[bool] = await self._write(self._insert, batch)
        except Exception as exc:
            if not isinstance(exc, DB_ERRORS):  # the database's: the spool says, once
                log.exception("cannot write the inbox", extra={"alerts": len(batch)})
            raise StoreFull("the store cannot be written") from exc
        self._accepted(kept)
        if any(kept):
            self._inbox_event.set()
        return kept

    async def _insert(self, conn: Any, batch: Sequence[Accept]) -> list[bool]:
        d = self.dialect
        digests = [digest for _, digest in batch]
        kept = await run(conn, d, bodies.first_sight(d, digests, self.body_retention))
        alerts = [alert for (alert, _), keep in zip(batch, kept, strict=True) if keep]
        await inbox.insert(conn, alerts, self.inbox_channel)
        if any(digest is not None for digest in digests):
            # Bodies past the retention or the count go in the same commit (SWEEP_BODIES
            # waits on nothing): no transaction, commit and fsync of its own per group.
            await conn.execute(
                sql.SWEEP_BODIES, self.body_retention, self.max_bodies, self.sweep_key
            )
        return kept

    async def _keep_quarantined(self, row: writes.QuarantineRow, digest: bytes) -> bool:
        async def write(conn: Any) -> bool:
            d = self.dialect
            if not (await run(conn, d, bodies.first_sight(d, [digest], self.body_retention)))[0]:
                return False
            await run(conn, d, operators.quarantine(d, [row], self.quarantine_kept))
            return True

        kept: bool = await self._write(write)
        return kept

    # --- the pipeline -------------------------------------------------------------------

    async def take(self, limit: int) -> Taken:
        while True:
            self._inbox_event.clear()
            taken = await self._claim(limit)
            if taken is not None:
                return taken
            self._idle = True  # looked: nothing this replica may claim (contract.idle)
            try:
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(self._inbox_event.wait(), self.poll_interval)
            finally:
                self._idle = False

    def idle(self) -> bool:
        return self._idle and not self._inbox_event.is_set()

    async def _claim(self, limit: int) -> Taken | None:
        conn = await self._pool.acquire()
        handle = _Handle(conn, conn.transaction())
        self._handles.add(handle)
        try:
            await handle.transaction.start()
            rows = await inbox.claim(conn, self.lock_key, limit)
            unreadable = [inbox_id for inbox_id, _, alert in rows if alert is None]
            if unreadable:
                log.error("unreadable inbox entries dropped", extra={"inbox_ids": unreadable})
                await conn.execute(sql.DELETE_INBOX, unreadable)
            entries = [Entry(i, at, alert) for i, at, alert in rows if alert is not None]
            if not entries:
                if unreadable:
                    await self._commit(handle)
                    self._health.succeeded()
                    self._inbox_event.set()  # look again at once
                else:
                    await self._end(handle)
                return None
            d, taken = self.dialect, {e.alert.identity for e in entries}
            states, now = await run(conn, d, identity.of_taken(d, taken))
        except BaseException:
            await self._end(handle)
            raise
        return Taken(entries, states, now, handle)

    async def complete(
        self, taken: Taken, results: Sequence[Processed], failed: Sequence[Failed] = ()
    ) -> None:
        handle: _Handle = taken.handle
        if handle.done:
            raise StoreError("complete: this take was already completed or abandoned")
        await self._shield(self._complete(taken, results, failed))

    async def _complete(
        self, taken: Taken, results: Sequence[Processed], failed: Sequence[Failed]
    ) -> None:
        """Executes what ``writes.plan`` says the batch writes, in the transaction its
        ``take`` opened (so still holding the identities' locks)."""
        conn = taken.handle.conn
        with self._health.watch(DB_ERRORS):
            # The resolves' endsAt is the decision's time (Taken.now) or earlier: this clock,
            # read now, tells a resolve from a firing alert as the database sees it.
            planned = writes.plan(taken, results, failed, await conn.fetchval(sql.NOW))
            # Takers of other replicas that found these identities held look again at the
            # commit.
            await conn.execute(sql.INBOX_DONE, list(planned.done), self.inbox_channel)
            d = self.dialect
            await run(conn, d, operators.complete(d, planned, self.targets, self.quarantine_kept))
            await self._commit(taken.handle)
        self._completed(planned)

    async def abandon(self, taken: Taken) -> None:
        handle: _Handle = taken.handle
        if handle.done:
            return
        await self._end(handle, notify=True)

    # --- delivery -----------------------------------------------------------------------

    @contextlib.asynccontextmanager
    async def lane(self, target: str) -> AsyncIterator[Lane | None]:
        if target not in self._wakeups:
            raise ConfigError(f"unknown Alertmanager {target!r}")
        conn = await self._pool.acquire()
        try:
            transaction = conn.transaction()
            await transaction.start()
            held = False
            try:
                if held := await queue.try_lane(conn, target):
                    yield queue.Lane(conn, self.dialect, target, self.dead_letters_kept)
            except BaseException:  # the lane's block failed: nothing of it stays
                with contextlib.suppress(*DB_ERRORS):
                    await transaction.rollback()
                raise
            if not held:
                await transaction.rollback()
                yield None
                return
            with self._health.watch(DB_ERRORS):
                await transaction.commit()
            self._sizes.changed()
            self.progress.set()
        finally:
            await self._pool.release(conn)

    async def periodic(self) -> bool:
        if self._lease is None:
            return False
        try:
            return await self._lease.held()
        except DB_ERRORS:
            log.warning("cannot renew the periodic lease", exc_info=True)
            return False

    # --- operators ----------------------------------------------------------------------

    async def probe(self) -> bool:
        async def write(conn: Any) -> None:
            await conn.execute(sql.PROBE, self.holder)

        with contextlib.suppress(Exception):
            await self._write(write)
        return self.store_ok()

    async def release(self, entry_id: int, alert: SentryAlert | None) -> bool:
        async def write(conn: Any) -> bool:
            found = await run(conn, self.dialect, operators.release(entry_id))
            if found and alert is not None:
                await inbox.insert(conn, [alert], self.inbox_channel)
            return found

        found: bool = await self._shield(self._write(write))
        if found and alert is not None:
            self._inbox_event.set()
        return found

    async def _relisten_loop(self) -> None:
        """LISTEN again when its connection was lost (the poll covers the meantime)."""
        while True:
            await asyncio.sleep(self.relisten_interval)
            try:
                if self._listener is None or self._listener.is_closed():
                    await self._listen()
            except DB_ERRORS:
                log.debug("cannot LISTEN yet", exc_info=True)

    # --- plumbing -----------------------------------------------------------------------

    async def _listen(self) -> None:
        """A connection of its own for LISTEN (notifications go to the session that
        listens, so it cannot be the pool's), opened again when it was lost."""
        await self._unlisten()
        conn = await connection.connect_one(self.settings)
        try:
            await conn.add_listener(self.inbox_channel, lambda *_: self._inbox_event.set())
            await conn.add_listener(self.queue_channel, lambda *_: self._wake_senders())
        except BaseException:
            conn.terminate()
            raise
        self._listener = conn

    async def _unlisten(self) -> None:
        conn, self._listener = self._listener, None
        if conn is not None:
            await _close(conn, grace=2)

    async def _step(self, step: Step[T]) -> T:
        """``step`` on a connection of the pool."""
        async with self._pool.acquire() as conn:
            return await run(conn, self.dialect, step)

    async def _write_step(self, step: Step[T], *, durable: bool = True) -> T:
        result: T = await self._write(_run_step, self.dialect, step, durable)
        return result

    async def _write(self, fn: Callable[..., Any], *args: Any) -> Any:
        """``fn(conn, *args)`` in one transaction, counted toward ``store_ok``."""
        with self._health.watch(DB_ERRORS):
            async with self._pool.acquire() as conn, conn.transaction():
                return await fn(conn, *args)

    async def _commit(self, handle: _Handle) -> None:
        handle.done = True
        self._handles.discard(handle)
        try:
            await handle.transaction.commit()
        finally:
            await self._release(handle.conn)

    async def _end(self, handle: _Handle, *, notify: bool = False) -> None:
        """Roll back a take's transaction (nothing of it stays) and free its connection;
        with ``notify``, tell the takers of every replica its entries are free again."""
        if handle.done:
            return
        handle.done = True
        self._handles.discard(handle)
        with contextlib.suppress(*DB_ERRORS):
            await handle.transaction.rollback()
            if notify:
                await handle.conn.execute(sql.NOTIFY, self.inbox_channel)
        await self._release(handle.conn)
        if notify:
            self._inbox_event.set()

    async def _release(self, conn: Any) -> None:
        if self._pool is not None:
            with contextlib.suppress(*DB_ERRORS):
                await self._pool.release(conn)


async def _run_step(conn: Any, d: Any, step: Step[T], durable: bool) -> T:
    """``step`` in the caller's transaction; committed without waiting for its flush unless
    ``durable`` (``sql.NOT_DURABLE``)."""
    if not durable:
        await conn.execute(sql.NOT_DURABLE)
    return await run(conn, d, step)


async def _close(closing: Any, grace: float) -> None:
    """Close a pool or a connection gracefully, else (timed out, failing) at once."""
    try:
        await asyncio.wait_for(closing.close(), timeout=grace)
    except (TimeoutError, *DB_ERRORS):
        closing.terminate()

"""The spool: Sentry still gets its answer within a second while PostgreSQL is away.

``Spooled`` keeps the store contract around a primary store (PostgreSQL) and defines only
what it changes: ``accept`` and ``quarantine`` (the fallback below), its drainer, its own
file's health (``store_ok``, ``probe``) and what it adds to the primary's ``sizes`` and
``idle``. Every other member of the contract is the primary's, reached through
``__getattr__``:

- the primary gets ``store.spool.accept_timeout`` (0.3 s) to commit the webhook. When it
  does not (a timeout, a ``StoreFull`` from a failing store, a connection or driver
  error), the webhook is committed to the spool instead, a SQLite file of its own under
  the data directory (``bridge.store.sqlite_file``: WAL, ``synchronous=FULL``, group
  commit; on disk before the answer), and the answer is still 202. The primary's try and
  the spool's commit together stay well inside Sentry's one-second timeout;
- while the spool holds anything, new webhooks go to the spool too, behind it, so the
  primary receives them in the order they were answered;
- the spool is bounded (``store.spool.max_webhooks`` and ``max_bytes``); full, it raises
  ``StoreFull``: the edge answers 503 and Sentry retries. A primary holding
  ``store.max_queued`` is full, not failing (its Alertmanagers are behind): 503 as
  without a spool, nothing spooled;
- a drainer task (started by ``open``, stopped by ``close``) moves the spooled webhooks
  into the primary, oldest first, a bounded batch per round, through the primary's own
  ``accept`` and ``quarantine``, so they take the normal path from there. A round's
  webhooks are handed over at once: one of the primary's group commits, so the drainer
  outruns the arrivals; while it moves the last round, new webhooks wait for it (ms) and
  then go to the primary, so a slow moment does not leave a spool that never empties
  under load (issue 15). While the primary is down it probes it between back-offs;
- the same body (by digest) twice in the spool is one entry (the second is a duplicate,
  answered as the primary would). A body the primary already has is dropped by the
  primary's own digest dedup when the spool drains; it was answered 202 rather than 200.

A pod may also start while PostgreSQL is unreachable (a rollout or a node drain during
an outage): ``open`` tries the primary once, within ``open_timeout``, and when it cannot
connect (connection-level failures only: refused, timed out, lost, the server starting or
shutting down; a ``ConfigError``, a wrong password or a schema newer than this bridge
still fail the start) keeps opening it in the background, with the drainer's back-off.
Until then every webhook is spooled (202), and the primary's part of the contract is a
stand-in's (bridge/store/unopened.py: ``take`` waits, no lanes, sizes 0, the operators'
calls raise ``StoreError``); once it is open the drainer drains.

``sentry_bridge_store_up`` says whether the last write to the primary (a webhook, a drained
round, or the drainer's probe) succeeded.
"""

from __future__ import annotations

import asyncio
import collections
import contextlib
import json
import logging
import time
from collections.abc import Awaitable, Callable, Mapping, Sequence
from dataclasses import replace
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, cast

import asyncpg

from bridge import config
from bridge.config import Config
from bridge.errors import ConfigError, StoreError, StoreFull
from bridge.metrics import Metrics
from bridge.model import SentryAlert
from bridge.store import spool_file
from bridge.store.contract import Sizes, Store
from bridge.store.group_commit import GroupCommit
from bridge.store.health import WriteHealth
from bridge.store.spool_file import Webhook
from bridge.store.sqlite_file import SqliteFile
from bridge.store.unopened import Unopened
from bridge.store.writes import DETAIL_KEPT

log = logging.getLogger("bridge.store.spool")

FILENAME = "spool.sqlite3"
# A spool built without them (tests, tools) keeps the config's defaults: one place.
_SPOOL_DEFAULTS = config.Spool.model_fields

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


class Spooled:
    """A primary store with a local spool in front of its ``accept`` and ``quarantine``."""

    # Spooled webhooks moved to the primary per round, in one of its group commits (then
    # deleted here in one commit).
    batch = 500
    # The drainer's back-off while the primary keeps failing, doubling up to the maximum.
    retry_initial = 0.1
    retry_max = 5.0
    # How long the drainer gives the primary for one round, and how often it
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
        accept_timeout: float = _SPOOL_DEFAULTS["accept_timeout"].default,
        max_webhooks: int = _SPOOL_DEFAULTS["max_webhooks"].default,
        max_bytes: int = _SPOOL_DEFAULTS["max_bytes"].default,
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
        # store.max_queued: a primary that holds that much is full, not failing (its
        # Alertmanagers are behind): 503 as without a spool, and store_up stays 1.
        self.max_queued = max_queued
        self.metrics = metrics
        self.clock = clock
        self._file = SqliteFile(path, name="spool")
        self._writes = GroupCommit(self._write, name="spool-commit", withdrawn=self._unreserve)
        # False: the caller drains with drain_once and opens with open_primary (tests).
        self._run_drainer = drainer
        self._drainer: asyncio.Task[None] | None = None
        self._deleting: asyncio.Task[None] | None = None  # outlives a cancelled drainer
        self._work = asyncio.Event()  # set when something was spooled
        # Set while the drainer moves what it expects to be the spool's last webhooks: new
        # webhooks wait for that round, then go to the primary (``_keep``).
        self._handover: asyncio.Event | None = None
        # Webhooks are placed (handed to the primary's group commit, or to the spool's) in
        # the order they arrived, also when some of them wait for a handover and others
        # arrive as it ends: a ticket each, placed in ticket order (``_keep``).
        self._tickets = 0  # the next arrival's
        self._placed = 0  # every ticket below this one is placed, or its caller gone
        self._out_of_turn: set[int] = set()  # placed (or gone) while an earlier one waits
        self._turn = asyncio.Event()  # set, and replaced, when _placed moves on
        self._waiting_turn = 0
        # Committed to the spool, not yet in the primary: (id, at, size), oldest first.
        self._entries: collections.deque[tuple[int, float, int]] = collections.deque()
        self._bytes = 0
        # Handed to the group commit, not yet written: counted against the bounds.
        self._reserved = 0
        self._reserved_bytes = 0
        self._health = WriteHealth(metrics, self.failing_after, what="the spool")
        self._full = False  # the last webhook was refused for want of room, none since
        self._primary_up = True
        # How long open() gives the primary before the start goes on without it.
        self.open_timeout = open_timeout
        self._opened = asyncio.Event()  # set once the primary is open
        self._unopened = cast(Store, Unopened(primary, self._opened))  # stands in until then
        self._opener: asyncio.Task[None] | None = None  # opens it in the background
        metrics.spool_webhooks.set_function(self.depth)
        metrics.spool_oldest_age.set_function(self.spool_age)

    # --- lifecycle ----------------------------------------------------------------------

    async def open(self) -> None:
        """Open the spool (what a previous run left is drained first), then the primary:
        one try within ``open_timeout``; an unreachable primary is opened in the background
        while the spool takes the webhooks. Anything else it raises fails the start."""
        await self._file.open(spool_file.SCHEMA)
        try:
            rows = await self._file.call(spool_file.read_index, self._file)
            try:
                async with asyncio.timeout(self.open_timeout):
                    await self.primary.open()
            except Exception as exc:
                if not unreachable(exc):
                    raise
                log.warning(
                    "cannot reach the store at start; webhooks go to the local spool until "
                    "it can be opened",
                    extra={"error": _why(exc), "spooled": len(rows)},
                )
                if self._run_drainer:
                    self._opener = asyncio.create_task(self._open_forever(), name="spool-opener")
            else:
                self._opened.set()
        except BaseException:
            await self._file.close()
            raise
        self._entries.extend(rows)
        self._bytes = sum(size for _, _, size in rows)
        self._set_up(self._opened.is_set())
        if rows:
            log.warning("spool holds webhooks from before; draining", extra={"spooled": len(rows)})
            self._work.set()
        if self._run_drainer:
            self._drainer = asyncio.create_task(self._drain_forever(), name="spool-drainer")

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
        return await self._keep(
            Webhook(digest, alert), lambda: self.primary.accept(alert, digest), bounded=True
        )

    async def quarantine(
        self, reason: str, detail: str, headers: Mapping[str, str], body: bytes, digest: bytes
    ) -> bool:
        return await self._keep(
            Webhook(digest, None, reason, detail[:DETAIL_KEPT], headers, body),
            lambda: self.primary.quarantine(reason, detail, headers, body, digest),
            bounded=False,
        )

    async def _keep(
        self, webhook: Webhook, write: Callable[[], Awaitable[bool]], *, bounded: bool
    ) -> bool:
        """Into the primary within ``accept_timeout``, else into the spool. ``bounded``:
        a primary holding ``max_queued`` is full (503), not failing."""
        deadline = asyncio.get_running_loop().time() + self.accept_timeout
        full = bounded and await self._primary_full(deadline)
        ticket = self._tickets
        self._tickets += 1
        try:
            if self._handover is not None or ticket != self._placed:
                await self._wait_turn(ticket, deadline)
        finally:
            # From here to the group commit's submit nothing yields, so the next ticket,
            # woken now, runs only once this webhook is in its queue.
            self._place(ticket)
        if self._opened.is_set() and not self.spooling():
            if full:
                raise StoreFull()
            try:
                async with asyncio.timeout_at(deadline):
                    stored = await write()
            except Exception as exc:  # TimeoutError, StoreFull, OSError, the driver's
                self._primary_failed(exc)
            else:
                self._set_up(True)
                return stored
        return await self._spool(webhook)

    async def _wait_turn(self, ticket: int, deadline: float) -> None:
        """The drainer is moving the last spooled webhooks: wait for it (a round, a few
        ms, at most until ``deadline``, then into the spool behind them) and go to the
        primary behind them, rather than into the spool and keep it from ever emptying
        while webhooks arrive faster than a round takes. Either way only once every
        webhook that arrived before is placed: one arriving just as the handover ends
        must not overtake those that waited for it (the stall test caught it)."""
        with contextlib.suppress(TimeoutError):
            async with asyncio.timeout_at(deadline):
                while self._handover is not None:
                    await self._handover.wait()
        self._waiting_turn += 1
        try:
            while ticket != self._placed:  # earlier ones have earlier deadlines: bounded
                await self._turn.wait()
        finally:
            self._waiting_turn -= 1

    def _place(self, ticket: int) -> None:
        """``ticket`` is placed, or its caller gone: the next one in order may go."""
        if ticket != self._placed:
            self._out_of_turn.add(ticket)  # a caller cancelled while it waited its turn
            return
        self._placed += 1
        while self._placed in self._out_of_turn:
            self._out_of_turn.discard(self._placed)
            self._placed += 1
        if self._waiting_turn:
            turn, self._turn = self._turn, asyncio.Event()
            turn.set()

    async def _primary_full(self, deadline: float | None = None) -> bool:
        """Whether the primary holds ``max_queued`` (``Store.full``); False when it cannot
        tell by ``deadline`` (the write that follows finds out)."""
        if self.max_queued is None or not self._opened.is_set():
            return False
        try:
            async with asyncio.timeout_at(deadline):
                return await self.primary.full()
        except Exception:
            return False

    def spooling(self) -> bool:
        """The spool holds (or is committing) something: new webhooks queue behind it."""
        return bool(self._entries) or self._reserved > 0

    async def _spool(self, webhook: Webhook) -> bool:
        alert = webhook.alert
        if alert is not None and alert.answered_at is None:
            # Spooled, it reaches the primary later than it is answered (now): it carries
            # that time, which orders it (bridge.state.sentry_time), not the primary's
            # acceptance once the spool drains (issue 16).
            answered = datetime.fromtimestamp(self.clock(), UTC)
            webhook = replace(webhook, alert=replace(alert, answered_at=answered))
        row = webhook.row
        if (
            self.depth() >= self.max_webhooks
            or self._bytes + self._reserved_bytes + row[0] > self.max_bytes
        ):
            self._full = True
            raise StoreFull("the store is unavailable and the local spool is full")
        self._reserved += 1
        self._reserved_bytes += row[0]
        # Written by the group commit whatever happens to this caller (a cancelled request
        # is still spooled and drained; a retry of the same body is then a duplicate),
        # unless the edge's commit_deadline passed before its commit started (then taken
        # back: the 503 is true).
        return await self._writes.submit(row)

    def _unreserve(self, row: tuple[Any, ...]) -> None:
        """Written (or failed), or taken back before its commit: no longer counted."""
        self._reserved -= 1
        self._reserved_bytes -= row[0]

    async def _write(self, rows: Sequence[tuple[Any, ...]]) -> list[bool]:
        """The group commit's write: one transaction (fsynced) for ``rows``."""
        now = self.clock()
        try:
            ids = await self._file.call(spool_file.insert, self._file, rows, now)
        except Exception as exc:
            self._health.failed(exc)  # logged once per run of failures, not per commit
            raise StoreFull("the store is unavailable and the spool cannot be written") from exc
        finally:
            for row in rows:
                self._unreserve(row)
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
        if not self._opened.is_set():
            raise StoreError("cannot drain the spool: the store has not been opened yet")
        if not self._entries:
            return 0
        if await self._primary_full():
            raise StoreFull()  # not a failure of the primary: store_up stays as it is
        if self._handover is None and len(self._entries) <= self.batch:
            self._handover = asyncio.Event()  # this round takes all: new webhooks wait
        try:
            moved = await self._drain_round()
        except BaseException:
            self._end_handover()
            raise
        if not self.spooling():
            self._end_handover()
        return moved

    def _end_handover(self) -> None:
        if self._handover is not None:
            self._handover.set()
            self._handover = None

    async def _drain_round(self) -> int:
        rows = await self._file.call(
            spool_file.read_batch, self._file, self._entries[0][0], self.batch
        )
        # The whole batch at once, one of the primary's group commits (issue 15: one
        # commit each drained 30-65/s, below 100-150/s arriving). In spool order: each call
        # submits before its first wait, and tasks start in the order created. Into the
        # primary first, then out of the spool: a crash (or a timeout whose commit went
        # through) between the two is at most a duplicate, which the primary's digest
        # dedup absorbs.
        moves = [asyncio.ensure_future(self._move(row)) for row in rows]
        try:
            await asyncio.wait(moves, timeout=self.drain_timeout)
        finally:
            for move in moves:
                move.cancel()  # those not done in time (or all, when the drainer stops)
        # What the primary took, up to the first it did not: the spool is deleted by id
        # prefix, so a webhook after a failed one stays (a duplicate next round at most).
        moved: list[int] = []
        failure: BaseException | None = None
        for row, move in zip(rows, moves, strict=True):
            if not move.done():  # cancelled above: no answer within drain_timeout
                failure = TimeoutError()
            elif (failure := move.exception()) is None:
                moved.append(row[0])
                continue
            break
        for move in moves:  # retrieved, so none is logged as never retrieved
            if move.done():
                move.exception()
        if moved:
            self._forget(moved)
        if failure is not None:
            self._primary_failed(failure)
            raise failure
        self._set_up(True)
        return len(moved)

    async def _move(self, row: tuple[Any, ...]) -> bool:
        """One spooled webhook into the primary (``drain_once``'s step)."""
        _, digest, alert, reason, detail, headers, body = row
        if alert is not None:
            return await self.primary.accept(SentryAlert.from_json(json.loads(alert)), digest)
        return await self.primary.quarantine(
            reason, detail, json.loads(headers), bytes(body), digest
        )

    def _forget(self, moved: list[int]) -> None:
        """What the primary now has leaves the spool: at once as far as new webhooks go
        (the last round's waiters go to the primary without waiting for the spool's
        fsync), then from the file, in the background and in order, shielded from a
        close (which waits for it). Until then, or if it fails, a restart hands those
        webhooks to the primary again, which its digest dedup absorbs; the next round's
        delete (every id up to its last) covers a failed one."""
        last = moved[-1]
        while self._entries and self._entries[0][0] <= last:
            _, _, size = self._entries.popleft()
            self._bytes -= size
        self._full = False
        self.metrics.spool_drained.inc(len(moved))
        if not self._entries and not self._reserved:
            log.info("spool drained: webhooks go to the store again")
        self._deleting = asyncio.ensure_future(self._delete(self._deleting, last))

    async def _delete(self, previous: asyncio.Future[None] | None, last: int) -> None:
        if previous is not None:
            await asyncio.gather(previous, return_exceptions=True)
        try:
            await self._file.call(spool_file.delete, self._file, last)
        except Exception as exc:
            self._health.failed(exc)
        else:
            self._health.succeeded()

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

    async def sizes(self, max_age: float = 1.0) -> Sizes:
        """The primary's, with the spool: in ``inbox`` while the primary is up (the drainer
        moves it there, for the pipeline), else ``spooled`` (waiting for the primary, not
        for the pipeline: a stop does not wait for it, the spool is on disk)."""
        held = await self._behind.sizes(max_age)
        if not self.depth():
            return held
        oldest = self._entries[0][1] if self._entries else None
        if held.oldest_at is not None:
            oldest = held.oldest_at if oldest is None else min(oldest, held.oldest_at)
        if self._primary_up:
            return replace(held, inbox=held.inbox + self.depth(), oldest_at=oldest)
        return replace(held, spooled=self.depth(), oldest_at=oldest)

    def store_ok(self) -> bool:
        """Ready while webhooks can be kept: the primary takes them, or the spool does."""
        if self._opened.is_set() and self.primary.store_ok():
            return True
        return self._health.ok and not self._full

    async def probe(self) -> bool:
        if self._opened.is_set():
            await self._probe_primary()
        return self.store_ok()

    # --- the rest is the primary's ------------------------------------------------------

    def __getattr__(self, name: str) -> Any:
        """The rest of the contract: the primary's, or its stand-in's until it opens."""
        if name.startswith("_"):  # not the contract's (and not set yet, in __init__)
            raise AttributeError(name)
        return getattr(self._behind, name)

    def idle(self) -> bool:
        """The primary's, and nothing spooled while it is up (the drainer still has work
        for the pipeline). Waiting for the primary to come back is an outage, not a stuck
        pipeline, and a stop does not wait for it (as ``sizes``)."""
        if not self._opened.is_set() or not self._primary_up:
            return True
        return self.primary.idle() and not self.depth()

    @property
    def _behind(self) -> Store:
        """The primary once it is open; before, what stands in for it."""
        return self.primary if self._opened.is_set() else self._unopened


def _why(exc: BaseException) -> str:
    return "no answer in time" if isinstance(exc, TimeoutError) else repr(exc)


def spooled(primary: Store, config: Config, metrics: Metrics) -> Store:
    """``primary`` behind the spool of ``config.store.spool``, with ``store.backend:
    postgres``; the embedded engine needs none (it is already local)."""
    if config.store.backend != "postgres":
        return primary
    spool = config.store.spool
    return Spooled(
        primary,
        config.store.data_dir / FILENAME,
        metrics=metrics,
        accept_timeout=spool.accept_timeout,
        max_webhooks=spool.max_webhooks,
        max_bytes=spool.max_bytes,
        max_queued=config.store.max_queued,
        # Connecting, then the migration's statements (bridge.store.pg.connection).
        open_timeout=config.store.postgres.connect_timeout
        + 2 * config.store.postgres.statement_timeout,
    )

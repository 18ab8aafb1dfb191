"""What every engine of the store keeps alike in memory, written once: ``Engine``, the base
of ``SqliteStore`` and ``PostgresStore``.

An engine subclasses it and gives what is its own: ``_write_accepts`` (one group commit of
accepts, into its inbox), its ``dialect`` and how it runs a shared step, reading
(``_step``) or in one write transaction (``_write_step``; ``bridge.store.steps``). The rest
is here: the Alertmanagers it serves and their wake-ups, the bound on ``accept``
(``store.max_queued``, ``bridge.store.sizes``), the write health behind ``store_ok``, the
shield that lets a write outlive its cancelled caller, what a completed batch, a
quarantined webhook and a requeue tell the metrics and the senders, and the operators'
and periodic jobs' calls, which are shared steps (``bridge.store.operators``).
"""

from __future__ import annotations

import asyncio
import math
from collections.abc import Awaitable, Mapping, Sequence
from datetime import datetime
from typing import Any, Required, TypedDict, TypeVar

from bridge import config
from bridge.errors import ConfigError, StoreFull
from bridge.metrics import Metrics
from bridge.model import SentryAlert
from bridge.state import IdentityState
from bridge.store import identity, operators, writes
from bridge.store.contract import Quarantined, Sizes
from bridge.store.group_commit import GroupCommit, deadline_passed
from bridge.store.health import WriteHealth
from bridge.store.sizes import SizeCache
from bridge.store.steps import Dialect, Step

Accept = tuple[SentryAlert, bytes | None]  # an alert and its body's digest
T = TypeVar("T")
# An engine built without them (tests, tools) keeps the config's defaults: one place.
_STORE_DEFAULTS = config.Store.model_fields


class Shield:
    """Writes that run to their end even when their caller is cancelled: an engine keeps in
    memory what it committed (sizes, ids handed out), and a write whose caller is cancelled
    half-way (a request timing out, a task stopped at shutdown) would otherwise leave
    memory behind the file. ``close`` waits for them with ``idle``. A caller whose
    ``commit_deadline`` passed waits for the write and gets its outcome."""

    def __init__(self) -> None:
        self._tasks: set[asyncio.Future[Any]] = set()

    @property
    def busy(self) -> bool:
        return bool(self._tasks)

    async def __call__(self, write: Awaitable[Any]) -> Any:
        task = asyncio.ensure_future(write)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)
        try:
            return await asyncio.shield(task)
        except asyncio.CancelledError:
            if not deadline_passed():
                raise
            # The caller's commit_deadline passed with the write running: its outcome is
            # the answer (a committed webhook is not answered 503), as in GroupCommit.
            return await asyncio.shield(task)

    async def idle(self) -> None:
        """Wait until every shielded write has ended (failed ones included)."""
        while self._tasks:
            await asyncio.gather(*self._tasks, return_exceptions=True)


class Limits(TypedDict, total=False):
    """What every engine is given beside its own settings (``bridge.store.open_store``)."""

    max_queued: Required[int]  # store.max_queued
    metrics: Required[Metrics]
    body_retention: float  # store.body_retention
    max_bodies: int  # store.max_bodies


class Engine:
    dialect: Dialect  # what its shared steps run with
    # Consecutive failed write transactions after which the store counts as failing
    # (/-/ready red) until one succeeds.
    failing_after = 3
    # The dead-letter table is for a human to look at, not an archive: the newest are kept.
    dead_letters_kept = 10_000
    # Quarantine is for a human to replay; the newest are kept (the alert fires long before).
    quarantine_kept = 100_000

    def __init__(
        self,
        targets: Sequence[str],
        *,
        max_queued: int,
        metrics: Metrics,
        body_retention: float = _STORE_DEFAULTS["body_retention"].default,
        max_bodies: int = _STORE_DEFAULTS["max_bodies"].default,
        stale_after: float = math.inf,
    ) -> None:
        if not targets:
            raise ConfigError("the store needs at least one Alertmanager")
        if len(set(targets)) != len(targets):
            raise ConfigError(f"two Alertmanager URLs name the same target: {list(targets)}")
        self.targets = tuple(targets)
        self.max_queued = max_queued
        self.metrics = metrics
        self.body_retention = body_retention
        self.max_bodies = max_bodies
        self.progress = asyncio.Event()  # set whenever a sender finishes a batch
        self._health = WriteHealth(metrics, self.failing_after)
        # Request path: concurrent accepts share one transaction (a lone one waits for no
        # timer).
        self._accepts = GroupCommit(self._write_accepts, name="store-flush")
        self._idle = False  # take() is waiting with nothing to claim
        self._wakeups = {target: asyncio.Event() for target in self.targets}
        self._sizes = SizeCache(self._read_sizes, max_queued, stale_after)
        self._shield = Shield()  # writes that finish even if their caller is cancelled

    async def _settle(self) -> None:
        """``close``'s first step: every accept and shielded write has ended."""
        while self._accepts.busy or self._shield.busy:
            await asyncio.gather(self._accepts.idle(), self._shield.idle())

    async def _write_accepts(self, batch: Sequence[Accept]) -> list[bool]:
        """One group commit: whether each alert was stored (False: its body was seen)."""
        raise NotImplementedError

    async def _step(self, step: Step[T]) -> T:
        raise NotImplementedError

    async def _write_step(self, step: Step[T], *, durable: bool = True) -> T:
        """``step`` in one write transaction; ``durable=False`` for what the inbox and the
        states can give again (SQLite: not fsynced on its own)."""
        raise NotImplementedError

    async def _read_sizes(self) -> Sizes:
        return await self._step(operators.sizes(self.dialect, self.targets))

    async def accept(self, alert: SentryAlert, digest: bytes | None = None) -> bool:
        if self._sizes.full() and await self._sizes.refuses():
            raise StoreFull()
        return await self._accepts.submit((alert, digest))

    def _accepted(self, stored: Sequence[bool]) -> None:
        """A group commit's outcome: the duplicates counted, the new entries sized."""
        duplicates = stored.count(False)
        if duplicates:
            self.metrics.duplicate_bodies.inc(duplicates)
        self._sizes.accepted(len(stored) - duplicates)

    async def quarantine(
        self, reason: str, detail: str, headers: Mapping[str, str], body: bytes, digest: bytes
    ) -> bool:
        row = writes.webhook_row(reason, detail, headers, body)
        if not await self._shield(self._keep_quarantined(row, digest)):
            self.metrics.duplicate_bodies.inc()
            return False
        self.metrics.quarantined.labels(reason).inc()
        return True

    async def _keep_quarantined(self, row: writes.QuarantineRow, digest: bytes) -> bool:
        """Keep ``row`` in one write transaction; False (nothing kept) when ``digest`` was
        seen within ``body_retention``."""
        raise NotImplementedError

    def _completed(self, planned: writes.Writes) -> None:
        """A batch committed: the sizes are out of date, the senders have posts."""
        self._sizes.changed()
        if planned.quarantined:
            self.metrics.quarantined.labels("pipeline_error").inc(len(planned.quarantined))
        if planned.posts:
            self._wake_senders()

    def wakeup(self, target: str) -> asyncio.Event:
        return self._wakeups[target]

    def _wake_senders(self) -> None:
        for event in self._wakeups.values():
            event.set()

    def store_ok(self) -> bool:
        return self._health.ok

    async def sizes(self, max_age: float = 1.0) -> Sizes:
        return await self._sizes.get(max_age)

    async def full(self) -> bool:
        return self._sizes.full() and await self._sizes.refuses()

    # --- the periodic jobs, the operators ----------------------------------------------

    async def due(self, limit: int) -> list[tuple[str, datetime]]:
        return await self._step(identity.due(self.dialect, limit))

    async def issues(self, after: str | None, limit: int) -> list[tuple[str, IdentityState]]:
        return await self._step(identity.issues(self.dialect, after, limit))

    async def expire(self, *, resolved_for: float) -> None:
        step = operators.expire(self.dialect, resolved_for)
        await self._shield(self._write_step(step, durable=False))

    async def requeue_dead_letters(self) -> dict[str, int]:
        step = operators.requeue(self.dialect, self.targets)
        queued, counts = await self._shield(self._write_step(step))
        if queued:
            self._wake_senders()
        return dict(counts)

    async def quarantined(
        self, entry_id: int | None = None, *, after: int = 0, limit: int = 100
    ) -> list[Quarantined]:
        return await self._step(operators.quarantined(self.dialect, entry_id, after, limit))

    async def discard_quarantined(self, ids: Sequence[int] | None) -> list[int]:
        removed: list[int] = await self._shield(
            self._write_step(operators.discard(self.dialect, ids))
        )
        return removed

    async def snapshot(self, limit: int) -> dict[str, Any]:
        return await self._step(operators.snapshot(self.dialect, limit))

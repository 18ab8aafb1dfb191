"""A fake primary store for the spool's tests and benchmark (bridge/store/spool.py): the
edge half of the contract kept in lists, switched by the caller between up, down (a
refused connection), failing (the store's StoreFull), slow (no answer at all) and late
(commits, then its answer is lost)."""

from __future__ import annotations

import asyncio
import errno
import inspect
from collections.abc import Callable, Mapping
from typing import Any, Literal

from bridge.errors import StoreFull
from bridge.model import SentryAlert
from bridge.store.contract import Sizes, Store

Mode = Literal["up", "down", "failing", "slow", "late"]
MODES: tuple[Mode, ...] = ("up", "down", "failing", "slow", "late")


class FakePrimary:
    """The primary store's edge half, kept in lists like a database would across a
    restart of the bridge; the body dedup is forever. ``records`` is what the pipeline
    would take, in order: ("accept", issue id) or ("quarantine", detail)."""

    def __init__(self) -> None:
        self.mode: Mode = "up"
        self.records: list[tuple[str, str]] = []
        self.quarantines: list[tuple[str, str, dict[str, str], bytes]] = []
        self.digests: set[bytes] = set()
        self.targets = ("am",)
        self.progress = asyncio.Event()
        self.opened = self.closed = 0
        self.delegated: list[tuple[str, tuple[Any, ...], dict[str, Any]]] = []
        # Called after each commit (tests use it to act while the spool drains).
        self.on_commit: Callable[[], None] | None = None
        self.attempts = self.probes = 0  # calls of accept or quarantine, and of probe
        self.backlog = 1000  # queued for Alertmanager, on top of the records (sizes())
        self.max_queued: int | None = None  # full() at records + backlog (the spool's)
        self.commit_time = 0.0  # seconds each commit takes while up (the benchmark's)
        # open(): refused this many more times (then as the mode says), or raises this.
        self.open_failures = 0
        self.open_error: Exception | None = None
        self.open_hangs = False  # open() never answers (a server that drops packets)
        self.open_tries = 0

    async def _commit(self, digest: bytes | None, record: tuple[str, str]) -> bool:
        self.attempts += 1
        if self.mode == "down":
            raise OSError(errno.ECONNREFUSED, "connection refused")
        if self.mode == "failing":
            raise StoreFull("the store cannot be written")
        if self.mode == "slow":
            await asyncio.Event().wait()  # no answer, ever: only the caller's deadline ends it
        if self.commit_time:
            await asyncio.sleep(self.commit_time)
        new = digest is None or digest not in self.digests
        if new:
            if digest is not None:
                self.digests.add(digest)
            self.records.append(record)
            if self.on_commit is not None:
                self.on_commit()
        if self.mode == "late":  # decided (committed, or a duplicate), but never answered
            await asyncio.Event().wait()
        return new

    async def accept(self, alert: SentryAlert, digest: bytes | None = None) -> bool:
        return await self._commit(digest, ("accept", alert.issue_id or ""))

    async def quarantine(
        self, reason: str, detail: str, headers: Mapping[str, str], body: bytes, digest: bytes
    ) -> bool:
        kept = await self._commit(digest, ("quarantine", detail))
        if kept:
            self.quarantines.append((reason, detail, dict(headers), body))
        return kept

    async def open(self) -> None:
        self.open_tries += 1
        if self.open_error is not None:
            raise self.open_error
        if self.open_hangs:
            await asyncio.Event().wait()
        if self.open_failures > 0:
            self.open_failures -= 1
            raise OSError(errno.ECONNREFUSED, "connection refused")
        if self.mode == "down":
            raise OSError(errno.ECONNREFUSED, "connection refused")
        self.opened += 1

    async def close(self) -> None:
        self.closed += 1

    async def probe(self) -> bool:
        self.probes += 1
        if self.mode == "down":
            raise OSError(errno.ECONNREFUSED, "connection refused")
        if self.mode in {"slow", "late"}:
            await asyncio.Event().wait()
        return self.mode == "up"

    def store_ok(self) -> bool:
        return self.mode == "up"

    async def sizes(self, max_age: float = 1.0) -> Sizes:
        """The records in the inbox, the backlog queued, the oldest accepted 5 s ago."""
        return Sizes(100.0, len(self.records), {"am": self.backlog}, 0, 0, 0, 95.0)

    async def full(self) -> bool:
        held = len(self.records) + self.backlog
        return self.max_queued is not None and held >= self.max_queued

    def __getattr__(self, name: str) -> Any:
        """Every other member of the contract: recorded, answered with its name."""
        member = getattr(Store, name)
        if inspect.iscoroutinefunction(member):

            async def call_async(*args: Any, **kwargs: Any) -> Any:
                self.delegated.append((name, args, kwargs))
                return f"primary.{name}"

            return call_async

        def call(*args: Any, **kwargs: Any) -> Any:
            self.delegated.append((name, args, kwargs))
            return f"primary.{name}"

        return call

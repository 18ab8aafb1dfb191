"""One SQLite file on one thread, written with group commit: the embedded engines' plumbing.

``SqliteFile`` opens the file the way a 202 needs it: WAL with ``synchronous=FULL``
(SQLite docs, "PRAGMA synchronous": in WAL mode FULL syncs the WAL on every commit, so a
commit survives a power loss or an OS crash, not only a crash of the process) and
``locking_mode=EXCLUSIVE`` (a second process on the same file fails at open instead of
sharing it). Every call runs on one dedicated thread, which serialises them; the event
loop never waits on the disk.

``GroupCommit`` batches concurrent writers: callers that arrive while one write runs are
written together by the next one, so a storm costs one transaction (one fsync) per round
trip to the thread, not one per caller, and a lone caller waits for no timer. A caller
that is cancelled (its request timed out) does not take its item back: it may still be
committed with its batch, which the digest dedup of a retried body absorbs.
"""

from __future__ import annotations

import asyncio
import contextlib
import sqlite3
from collections.abc import Awaitable, Callable, Iterator, Sequence
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any, Generic, TypeVar

from bridge.errors import ConfigError

T = TypeVar("T")
I = TypeVar("I")  # noqa: E741 (an item written)
R = TypeVar("R")  # its result


class SqliteFile:
    # How long open() waits for another process to let go of the file (a bridge that is
    # still draining during a rolling restart).
    lock_timeout_ms = 5000

    def __init__(self, path: Path, *, name: str) -> None:
        self.path = path
        self.name = name  # the thread's name, and what error messages call the file
        self._db: sqlite3.Connection | None = None
        self._thread: ThreadPoolExecutor | None = None

    async def open(self, schema: str) -> None:
        """Create the directory and the tables; raises ``ConfigError`` naming the file
        when it cannot be opened (held by another process, unwritable)."""
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self._thread = ThreadPoolExecutor(1, thread_name_prefix=self.name)
        try:
            self._db = await self.call(self._connect, schema)
        except BaseException:
            self._thread.shutdown(wait=False)
            self._thread = None
            raise

    async def close(self) -> None:
        if self._thread is None:
            return
        await self.call(self._close)
        self._thread.shutdown(wait=True)
        self._thread = None

    @property
    def is_open(self) -> bool:
        return self._thread is not None

    async def call(self, fn: Callable[..., T], *args: Any) -> T:
        """``fn(*args)`` on the file's thread."""
        if self._thread is None:
            raise RuntimeError(f"the {self.name} is not open")
        return await asyncio.get_running_loop().run_in_executor(self._thread, fn, *args)

    # --- on the thread ------------------------------------------------------------------

    @property
    def db(self) -> sqlite3.Connection:
        assert self._db is not None, "on the file's thread, once open"
        return self._db

    @contextlib.contextmanager
    def transaction(self) -> Iterator[sqlite3.Connection]:
        """``BEGIN IMMEDIATE`` ... ``COMMIT``; whatever fails (the COMMIT included: a full
        disk, an I/O error), nothing of it stays, since a transaction left open would make
        every later BEGIN fail."""
        db = self.db
        try:
            db.execute("BEGIN IMMEDIATE")
            yield db
            db.execute("COMMIT")
        except BaseException:
            if db.in_transaction:
                with contextlib.suppress(sqlite3.Error):
                    db.execute("ROLLBACK")
            raise

    def _connect(self, schema: str) -> sqlite3.Connection:
        db = sqlite3.connect(self.path, isolation_level=None)  # on the thread it serves
        try:
            db.execute("PRAGMA locking_mode = EXCLUSIVE")
            db.execute(f"PRAGMA busy_timeout = {int(self.lock_timeout_ms)}")
            db.execute("PRAGMA journal_mode = WAL")
            db.execute("PRAGMA synchronous = FULL")
            db.executescript(schema)  # takes the exclusive lock: one process per file
        except sqlite3.Error as exc:
            db.close()
            hint = " (is another bridge using it?)" if "locked" in str(exc) else ""
            raise ConfigError(f"cannot open the {self.name} {self.path}: {exc}{hint}") from exc
        return db

    def _close(self) -> None:
        if self._db is not None:
            with contextlib.suppress(sqlite3.Error):
                self._db.execute("PRAGMA wal_checkpoint(TRUNCATE)")
            self._db.close()
            self._db = None


class GroupCommit(Generic[I, R]):
    """Writes items in batches with ``write`` (one call per batch, results in item order),
    one batch at a time; ``submit`` returns the item's result once its batch is written,
    or raises what ``write`` raised."""

    def __init__(self, write: Callable[[Sequence[I]], Awaitable[Sequence[R]]], name: str) -> None:
        self._write = write
        self._name = name
        self._pending: list[tuple[I, asyncio.Future[R]]] = []
        self._flusher: asyncio.Task[None] | None = None
        self.batches = 0  # writes so far; tests check that callers share them

    def __len__(self) -> int:
        """Items submitted and not yet written (the running batch is not counted)."""
        return len(self._pending)

    @property
    def busy(self) -> bool:
        """Something is submitted or being written."""
        return self._flusher is not None

    async def submit(self, item: I) -> R:
        future: asyncio.Future[R] = asyncio.get_running_loop().create_future()
        self._pending.append((item, future))
        if self._flusher is None:
            self._flusher = asyncio.create_task(self._flush(), name=self._name)
        return await future

    async def idle(self) -> None:
        """Wait until everything submitted is written (close waits on it)."""
        while self._flusher is not None:
            await asyncio.gather(self._flusher, return_exceptions=True)

    async def _flush(self) -> None:
        try:
            while self._pending:
                batch, self._pending = self._pending, []
                self.batches += 1
                try:
                    results = await self._write([item for item, _ in batch])
                except Exception as exc:
                    for _, future in batch:
                        if not future.done():
                            future.set_exception(exc)
                    continue
                for (_, future), result in zip(batch, results, strict=True):
                    if not future.done():  # the caller may have been cancelled meanwhile
                        future.set_result(result)
        finally:
            self._flusher = None

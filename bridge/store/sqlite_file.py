"""One SQLite file on one thread: the embedded engines' plumbing.

``SqliteFile`` opens the file the way a 202 needs it: WAL with ``synchronous=FULL``
(SQLite docs, "PRAGMA synchronous": in WAL mode FULL syncs the WAL on every commit, so a
commit survives a power loss or an OS crash, not only a crash of the process) and
``locking_mode=EXCLUSIVE`` (a second process on the same file fails at open instead of
sharing it). A transaction that only writes what can be computed again from durable rows
(``transaction(durable=False)``: a batch's decisions, delivery's progress, expiry) runs
with ``synchronous=NORMAL``: it is in the WAL before it returns, so a crash of the process
keeps it, and the next durable commit's fsync (the WAL is one file) covers it; a power
loss can only take the newest such transactions, and WAL recovery keeps a prefix of the
commits, so what is lost is done again from the inbox that every 202 synced (issue 15:
one fsync per accept round instead of one per transaction on the file's one thread).
Every call runs on one dedicated thread, which serialises them; the event loop never
waits on the disk.

Its writers batch with ``bridge.store.group_commit.GroupCommit``.
"""

from __future__ import annotations

import asyncio
import contextlib
import sqlite3
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any, TypeVar

from bridge.errors import ConfigError

T = TypeVar("T")


class SqliteFile:
    # How long open() waits for another process to let go of the file (a bridge that is
    # still draining during a rolling restart).
    lock_timeout_ms = 5000
    # Prepared statements the connection keeps (Python's default is 128). A query run
    # ``each`` (the seen bodies) is a text per size of its VALUES list, 1 to 256 rows
    # (sqlite/dialect.py): with the ~50 the engine names beside them, groups of many sizes
    # would push statements out of a 128 cache, and each then compiles again, about 3 us per
    # VALUES row (measured, issue 15). Keeping them all costs about 2 MiB at most.
    cached_statements = 512

    def __init__(self, path: Path, *, name: str) -> None:
        self.path = path
        self.name = name  # the thread's name, and what error messages call the file
        self._db: sqlite3.Connection | None = None
        self._thread: ThreadPoolExecutor | None = None
        self._synchronous = "FULL"  # the connection's level, as _connect sets it

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
    def transaction(self, *, durable: bool = True) -> Iterator[sqlite3.Connection]:
        """``BEGIN IMMEDIATE`` ... ``COMMIT``; whatever fails (the COMMIT included: a full
        disk, an I/O error), nothing of it stays, since a transaction left open would make
        every later BEGIN fail. ``durable=False``: committed without an fsync of its own
        (the module docstring says when that is right)."""
        db = self.db
        # Set before each BEGIN that needs another level (SQLite refuses to change it
        # inside a transaction): a durable commit can never run at NORMAL.
        level = "FULL" if durable else "NORMAL"
        if level != self._synchronous:
            db.execute(f"PRAGMA synchronous = {level}")
            self._synchronous = level
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
        db = sqlite3.connect(  # on the thread it serves
            self.path, isolation_level=None, cached_statements=self.cached_statements
        )
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

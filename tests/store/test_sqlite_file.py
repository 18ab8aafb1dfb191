"""The embedded engines' plumbing (bridge/store/sqlite_file.py) on a real file: fsync on
every commit, one process per file, and group commit's batching, errors and cancellation."""

from __future__ import annotations

import asyncio
from collections.abc import Sequence
from pathlib import Path

import pytest

from bridge.errors import ConfigError
from bridge.store.group_commit import GroupCommit
from bridge.store.sqlite_file import SqliteFile

pytestmark = pytest.mark.anyio

SCHEMA = "CREATE TABLE IF NOT EXISTS t (id INTEGER PRIMARY KEY, v TEXT NOT NULL);"


async def test_every_commit_is_synced_and_the_file_is_one_processes(tmp_path: Path) -> None:
    path = tmp_path / "sub" / "x.sqlite3"
    first = SqliteFile(path, name="test file")
    await first.open(SCHEMA)
    assert await first.call(lambda: first.db.execute("PRAGMA synchronous").fetchone()[0]) == 2
    assert await first.call(lambda: first.db.execute("PRAGMA journal_mode").fetchone()[0]) == "wal"
    second = SqliteFile(path, name="test file")
    second.lock_timeout_ms = 50
    with pytest.raises(ConfigError, match=r"cannot open the test file .*another bridge"):
        await second.open(SCHEMA)
    assert not second.is_open
    await first.close()
    await second.open(SCHEMA)  # let go at close
    await second.close()
    with pytest.raises(RuntimeError, match="not open"):
        await second.call(int)


async def test_a_failed_transaction_leaves_nothing(tmp_path: Path) -> None:
    file = SqliteFile(tmp_path / "x.sqlite3", name="file")
    await file.open(SCHEMA)

    def write(fail: bool) -> None:
        with file.transaction() as db:
            db.execute("INSERT INTO t (v) VALUES ('a')")
            if fail:
                db.execute("INSERT INTO t (id, v) VALUES (1, 'duplicate key')")

    with pytest.raises(Exception, match="UNIQUE"):
        await file.call(write, True)
    await file.call(write, False)  # no transaction was left open
    assert await file.call(lambda: file.db.execute("SELECT count(*) FROM t").fetchone()[0]) == 1
    await file.close()


async def test_a_durable_commit_is_full_whatever_ran_before(tmp_path: Path) -> None:
    """``durable=False`` commits at NORMAL; the next durable one at FULL again, also after
    a derived transaction that failed (issue 15: a 202 stays fsynced)."""
    file = SqliteFile(tmp_path / "x.sqlite3", name="file")
    await file.open(SCHEMA)

    def write(durable: bool, fail: bool = False) -> int:
        with file.transaction(durable=durable) as db:
            level: int = db.execute("PRAGMA synchronous").fetchone()[0]
            db.execute("INSERT INTO t (v) VALUES ('a')")
            if fail:
                db.execute("INSERT INTO t (id, v) VALUES (1, 'duplicate key')")
        return level

    assert await file.call(write, False) == 1
    assert await file.call(write, True) == 2
    with pytest.raises(Exception, match="UNIQUE"):
        await file.call(write, False, True)
    assert await file.call(write, True) == 2
    assert await file.call(write, True) == 2
    await file.close()


class Writer:
    def __init__(self) -> None:
        self.batches: list[list[int]] = []
        self.fail = False
        self.gate = asyncio.Event()
        self.gate.set()

    async def __call__(self, items: Sequence[int]) -> list[int]:
        await self.gate.wait()
        self.batches.append(list(items))
        if self.fail:
            raise OSError("disk I/O error")
        return [item * 10 for item in items]


async def test_callers_arriving_during_a_write_share_the_next() -> None:
    writer = Writer()
    group = GroupCommit(writer, name="test")
    writer.gate.clear()
    first = asyncio.create_task(group.submit(1))
    await asyncio.sleep(0)  # the first write has started and waits on the gate
    rest = [asyncio.create_task(group.submit(n)) for n in range(2, 7)]
    await asyncio.sleep(0)
    assert len(group) == 5
    assert group.busy
    writer.gate.set()
    assert await asyncio.gather(first, *rest) == [10, 20, 30, 40, 50, 60]
    assert writer.batches == [[1], [2, 3, 4, 5, 6]]
    assert group.batches == 2
    assert not group.busy


async def test_a_failed_write_fails_its_batch_only() -> None:
    writer = Writer()
    group = GroupCommit(writer, name="test")
    writer.fail = True
    results = await asyncio.gather(group.submit(1), group.submit(2), return_exceptions=True)
    assert [type(r) for r in results] == [OSError, OSError]
    writer.fail = False
    assert await group.submit(3) == 30


async def test_a_cancelled_caller_is_still_written() -> None:
    """Its request timed out; its item cannot be taken back from the batch."""
    writer = Writer()
    group = GroupCommit(writer, name="test")
    writer.gate.clear()
    caller = asyncio.create_task(group.submit(1))
    await asyncio.sleep(0)
    caller.cancel()
    writer.gate.set()
    await group.idle()
    assert caller.cancelled()
    assert writer.batches == [[1]]

"""What tests read from a store, or do to it, that the bridge itself never needs: its write
transactions (counted, or refused as on a full disk), the lease's holder and its renewal,
the database's clock, the whole dead-letter table, whether a spool's primary opened. Kept
here, not in ``bridge/``."""

from __future__ import annotations

import json
import sqlite3
from datetime import datetime, timedelta
from typing import Any, cast

from bridge.store.pg import PostgresStore, codec
from bridge.store.pg.connection import Connection
from bridge.store.spool import Spooled
from bridge.store.sqlite import SqliteStore


class Commits:
    """Counts the successful write transactions of an open engine (SQLite or PostgreSQL):
    each one reports to the engine's write health, so the count is taken there."""

    def __init__(self, store: Any) -> None:
        self.count = 0
        health = store._health
        report = health.succeeded

        def counted() -> None:
            self.count += 1
            report()

        health.succeeded = counted


class FailingCommits:
    """Refuses the next ``failing`` COMMITs on the store's connection."""

    def __init__(self) -> None:
        self.failing = 0

    def __call__(self, action: int, arg1: str | None, *_: object) -> int:
        if action == sqlite3.SQLITE_TRANSACTION and arg1 == "COMMIT" and self.failing:
            self.failing -= 1
            return sqlite3.SQLITE_DENY
        return sqlite3.SQLITE_OK


class Statements:
    """The SQL statements an open SQLite engine runs, in order, once ``watch``ed (SQLite's
    trace callback, set on the file's thread that owns the connection)."""

    def __init__(self, store: SqliteStore) -> None:
        self.store = store
        self.seen: list[str] = []

    async def watch(self) -> None:
        db = self.store._file.db
        await self.store._file.call(lambda: db.set_trace_callback(self.seen.append))

    def count(self, part: str) -> int:
        """How many ran with ``part`` in their text."""
        return sum(part in text for text in self.seen)


async def fail_commits(store: SqliteStore, commits: FailingCommits) -> None:
    # The connection belongs to the store's thread: set the authorizer there.
    await store._file.call(lambda: store._file.db.set_authorizer(commits))


async def dead_letters(store: Any) -> list[tuple[str, str, dict[str, Any]]]:
    """(Alertmanager, reason, alert) of every dead letter of an open engine (or the one a
    spool fronts), oldest first: the whole table, where an operator sees the newest
    (``Store.snapshot``)."""
    engine = getattr(store, "_behind", store)
    if isinstance(engine, PostgresStore):
        async with engine._pool.acquire() as conn:
            rows = await conn.fetch("SELECT target, reason, body FROM dead_letter ORDER BY id")
        rows = [(target, codec.untext(why), body) for target, why, body in rows]
    else:
        query = "SELECT target, reason, alert FROM dead_letter ORDER BY id"
        rows = await engine._read(lambda db: db.execute(query).fetchall())
    return [(target, why, json.loads(body)) for target, why, body in rows]


# Extends our lease only while it is ours and unexpired (an expired one is not revived: the
# holder must acquire again). The bridge renews by acquiring; the lease model tests this rule.
_RENEW = """
WITH t AS (SELECT coalesce($4::timestamptz, clock_timestamp()) AS now)
UPDATE lease AS l SET expires_at = t.now + $3::interval
FROM t
WHERE l.name = $1 AND l.holder = $2 AND l.expires_at > t.now
RETURNING l.expires_at
"""

_HOLDER = """
WITH t AS (SELECT coalesce($2::timestamptz, clock_timestamp()) AS now)
SELECT l.holder FROM lease AS l, t WHERE l.name = $1 AND l.expires_at > t.now
"""


async def renew(
    conn: Connection, name: str, holder: str, ttl: timedelta, *, at: datetime | None = None
) -> datetime | None:
    """Extend our unexpired lease; its new expiry, or ``None`` if it is no longer ours."""
    return cast(datetime | None, await conn.fetchval(_RENEW, name, holder, ttl, at))


async def holder(conn: Connection, name: str, *, at: datetime | None = None) -> str | None:
    """Who holds the lease now, if anyone."""
    found: Any = await conn.fetchval(_HOLDER, name, at)
    return cast(str | None, found)


async def database_now(conn: Connection) -> datetime:
    """The database's clock (clock_timestamp(): the real time, not the transaction's start)."""
    return cast(datetime, await conn.fetchval("SELECT clock_timestamp()"))


def opened(spool: Spooled) -> bool:
    """Whether the spool's primary is open (False while a start rides out its outage)."""
    return spool._opened.is_set()


class SyncLevels:
    """The ``PRAGMA synchronous`` each successful write transaction of an open SQLite engine
    committed at (2 FULL: the WAL fsynced at the commit; 1 NORMAL: not), read on the
    file's thread right after the commit, where the engine reports it to its write health."""

    def __init__(self, store: Any) -> None:
        self.seen: list[int] = []
        health = store._health
        report = health.succeeded

        def read() -> None:
            self.seen.append(store._file.db.execute("PRAGMA synchronous").fetchone()[0])
            report()

        health.succeeded = read

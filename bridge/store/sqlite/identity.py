"""Per Sentry identity on SQLite: the state machine's state rows, with the active alert's
flag and endsAt beside it (the state's ``alert`` is the one copy). Functions on the file's
thread, given the connection (inside a transaction where they write)."""

from __future__ import annotations

import json
import sqlite3
from collections.abc import Collection

from bridge.state import IdentityState
from bridge.store.writes import Writes

_UPSERT = (
    "INSERT OR REPLACE INTO state (identity, kept_until, active, ends_at, state)"
    " VALUES (?, ?, ?, ?, ?)"
)


def read(db: sqlite3.Connection, identities: Collection[str]) -> dict[str, IdentityState]:
    """The state of every identity in ``identities`` that has one."""
    rows = db.execute(
        "SELECT identity, state FROM state WHERE identity IN (SELECT value FROM json_each(?))",
        (json.dumps(list(identities)),),
    ).fetchall()
    return {identity: IdentityState.from_json(json.loads(text)) for identity, text in rows}


def write(db: sqlite3.Connection, writes: Writes) -> int:
    """Writes the states of ``writes`` and forgets the forgotten ones; returns how many
    more alerts are active."""
    names = [*(row.identity for row in writes.states), *writes.forgotten]
    before: int = db.execute(
        "SELECT count(*) FROM state WHERE active AND identity IN (SELECT value FROM json_each(?))",
        (json.dumps(names),),
    ).fetchone()[0]
    db.executemany(
        _UPSERT,
        [
            (
                row.identity,
                row.kept_until.timestamp(),
                row.alert is not None,
                row.ends_at.timestamp() if row.ends_at else None,
                json.dumps(row.state.to_json(), separators=(",", ":")),
            )
            for row in writes.states
        ],
    )
    db.executemany("DELETE FROM state WHERE identity = ?", [(n,) for n in writes.forgotten])
    return sum(1 for row in writes.states if row.alert is not None) - before


def issues(
    db: sqlite3.Connection, after: str | None, limit: int
) -> list[tuple[str, IdentityState]]:
    """``Store.issues``: a range of the primary key (``issue;`` is the name after every
    ``issue:<id>`` in byte order)."""
    rows = db.execute(
        "SELECT identity, state FROM state WHERE identity > ? AND identity < 'issue;'"
        " ORDER BY identity LIMIT ?",
        (max(after or "", "issue:"), limit),
    ).fetchall()
    return [(name, IdentityState.from_json(json.loads(text))) for name, text in rows]


def active_alert(db: sqlite3.Connection, identity: str) -> str | None:
    """The identity's active alert (wire JSON), if it has one."""
    sql = "SELECT json_extract(state, '$.alert') FROM state WHERE identity = ? AND active"
    row = db.execute(sql, (identity,)).fetchone()
    return None if row is None else str(row[0])


def expire(db: sqlite3.Connection, now: float) -> int:
    """Ends the active alerts whose endsAt passed (Alertmanager has expired them too) and
    forgets the states kept until ``now``; returns how many active alerts ended."""
    ended: int = db.execute(
        "UPDATE state SET active = 0 WHERE active AND ends_at <= ?", (now,)
    ).rowcount
    db.execute("DELETE FROM state WHERE kept_until <= ?", (now,))
    return ended


def count_active(db: sqlite3.Connection) -> int:
    count: int = db.execute("SELECT count(*) FROM state WHERE active").fetchone()[0]
    return count

"""Per Sentry identity on SQLite: the state machine's state rows, with the active alert's
flag and endsAt beside it (the state's ``alert`` is the one copy). Functions on the file's
thread, given the connection (inside a transaction where they write)."""

from __future__ import annotations

import json
import sqlite3
from collections.abc import Collection
from datetime import UTC, datetime

from bridge.state import IdentityState
from bridge.store import jsontext
from bridge.store.sqlite import sql
from bridge.store.views import Expiry
from bridge.store.writes import Writes


def read(db: sqlite3.Connection, identities: Collection[str]) -> dict[str, IdentityState]:
    """The state of every identity in ``identities`` that has one."""
    rows = db.execute(sql.STATES, (json.dumps(list(identities)),)).fetchall()
    return {identity: IdentityState.from_json(json.loads(text)) for identity, text in rows}


def write(db: sqlite3.Connection, writes: Writes) -> None:
    """Writes the states of ``writes`` and forgets the forgotten ones."""
    db.executemany(
        sql.UPSERT_STATE,
        [
            (
                row.identity,
                row.kept_until.timestamp(),
                row.alert is not None,
                row.ends_at.timestamp() if row.ends_at else None,
                jsontext.dumps(row.state.to_json()),
                row.due_at.timestamp() if row.due_at else None,
            )
            for row in writes.states
        ],
    )
    db.executemany(sql.FORGET_STATE, [(n,) for n in writes.forgotten])


def issues(
    db: sqlite3.Connection, after: str | None, limit: int
) -> list[tuple[str, IdentityState]]:
    """``Store.issues``: a range of the primary key (``issue;`` is the name after every
    ``issue:<id>`` in byte order)."""
    rows = db.execute(sql.ISSUES, (max(after or "", "issue:"), limit)).fetchall()
    return [(name, IdentityState.from_json(json.loads(text))) for name, text in rows]


def active_alert(db: sqlite3.Connection, identity: str) -> str | None:
    """The identity's active alert (wire JSON), if it has one."""
    row = db.execute(sql.ACTIVE_ALERT, (identity,)).fetchone()
    return None if row is None else str(row[0])


def due(db: sqlite3.Connection, now: float, limit: int) -> list[tuple[str, datetime]]:
    """Identities whose next escalation step is due by ``now``, the most overdue first."""
    rows = db.execute(sql.DUE, (now, limit))
    return [(str(name), datetime.fromtimestamp(at, UTC)) for name, at in rows]


def expire(db: sqlite3.Connection, expiry: Expiry) -> None:
    now = expiry.now.timestamp()
    db.execute(sql.END_EXPIRED, (now,))
    db.execute(sql.FORGET_STATES, (now,))

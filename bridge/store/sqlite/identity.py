"""Per Sentry identity on SQLite: the state machine's state rows, and the active table
derived from them (the package docstring says why that index stays). Functions on the
file's thread, given the connection (inside a transaction where they write)."""

from __future__ import annotations

import json
import sqlite3
from collections.abc import Collection

from bridge.alertmanager import PostableAlert
from bridge.dedup import fingerprint
from bridge.model import Severity
from bridge.state import IdentityState
from bridge.store.writes import Writes


def read(db: sqlite3.Connection, identities: Collection[str]) -> dict[str, IdentityState]:
    """The state of every identity in ``identities`` that has one. An alert active from
    before the state table existed (an upgrade) stands in for a state, so the next
    decision replaces it rather than firing a second one."""
    states = _read_states(db, identities)
    legacy = _read_active(db, set(identities) - states.keys())
    return states | {identity: _legacy_state(a) for identity, a in legacy.items()}


def write(db: sqlite3.Connection, writes: Writes) -> int:
    """Writes the states of ``writes`` and, from them, the active table: a changed active
    alert replaces the identity's row (an unchanged one keeps its place in the re-send
    pages), a forgotten state's row goes. Returns how many more alerts are active."""
    db.executemany(
        "INSERT OR REPLACE INTO state (identity, kept_until, state) VALUES (?, ?, ?)",
        [
            (row.identity, row.kept_until.timestamp(), _json(row.state.to_json()))
            for row in writes.states
        ],
    )
    db.executemany("DELETE FROM state WHERE identity = ?", [(n,) for n in writes.forgotten])
    active = 0
    moved = [(row.identity, row.alert, row.ends_at) for row in writes.states if row.changed]
    for identity, body, ends_at in [*moved, *((n, None, None) for n in writes.forgotten)]:
        active -= db.execute("DELETE FROM active WHERE identity = ?", (identity,)).rowcount
        if body is not None:
            stamp = ends_at.timestamp() if ends_at else None
            sql = "INSERT INTO active (identity, ends_at, alert) VALUES (?, ?, ?)"
            db.execute(sql, (identity, stamp, body))
            active += 1
    return active


def _json(value: object) -> str:
    return json.dumps(value, separators=(",", ":"))


def expire(db: sqlite3.Connection, now: float) -> int:
    """Forgets the states kept until ``now``, and the active alerts whose endsAt passed
    (Alertmanager has expired them too); returns how many active alerts went."""
    active = db.execute("DELETE FROM active WHERE ends_at <= ?", (now,)).rowcount
    db.execute("DELETE FROM state WHERE kept_until <= ?", (now,))
    return active


def _read_states(db: sqlite3.Connection, identities: Collection[str]) -> dict[str, IdentityState]:
    rows = db.execute(
        "SELECT identity, state FROM state WHERE identity IN (SELECT value FROM json_each(?))",
        (json.dumps(list(identities)),),
    ).fetchall()
    return {identity: IdentityState.from_json(json.loads(text)) for identity, text in rows}


def _read_active(db: sqlite3.Connection, identities: Collection[str]) -> dict[str, PostableAlert]:
    if not identities:
        return {}
    rows = db.execute(
        "SELECT identity, alert FROM active WHERE identity IN (SELECT value FROM json_each(?))",
        (json.dumps(list(identities)),),
    ).fetchall()
    return {identity: PostableAlert.model_validate_json(text) for identity, text in rows}


def _legacy_state(active: PostableAlert) -> IdentityState:
    """The state an alert active from before the state table stands for."""
    severity = active.labels.get("severity")
    return IdentityState(
        alert=active,
        severity=Severity(severity) if severity in set(Severity) else None,
        posted=fingerprint(active.labels),
        posted_at=active.starts_at,
    )

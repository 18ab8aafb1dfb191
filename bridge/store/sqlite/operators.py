"""What the SQLite engine keeps for a human and for the periodic jobs: dead letters and
their requeue, quarantine, the status snapshot, expiry of resolved
alerts. Functions on the file's thread, given the connection (inside a transaction where
they write)."""

from __future__ import annotations

import json
import logging
import sqlite3
from collections.abc import Sequence
from datetime import datetime
from typing import Any

from bridge.model import SentryAlert
from bridge.store import refusals
from bridge.store.contract import Quarantined
from bridge.store.sqlite import identity, queue
from bridge.store.sqlite.schema import rowid
from bridge.store.writes import Post, QuarantineRow

log = logging.getLogger("bridge.store")


def expire(db: sqlite3.Connection, now: float, resolved_before: float) -> tuple[int, int]:
    """Returns how many active and resolved alerts were removed."""
    active = identity.expire(db, now)
    resolved = db.execute("DELETE FROM resolved WHERE resolved_at <= ?", (resolved_before,))
    return active, resolved.rowcount


def read_dead_letters(db: sqlite3.Connection) -> list[tuple[str, str, dict[str, Any]]]:
    rows = db.execute("SELECT target, reason, alert FROM dead_letter ORDER BY id").fetchall()
    return [(target, reason, json.loads(body)) for target, reason, body in rows]


def count_quarantine(db: sqlite3.Connection) -> int:
    count: int = db.execute("SELECT count(*) FROM quarantine").fetchone()[0]
    return count


def insert_quarantine(
    db: sqlite3.Connection, rows: Sequence[QuarantineRow], now: float, kept: int
) -> int:
    """Returns how many more entries the quarantine holds (the oldest beyond ``kept``
    go)."""
    db.executemany(
        "INSERT INTO quarantine (at, reason, detail, headers, body, alert)"
        " VALUES (?, ?, ?, ?, ?, ?)",
        [(now, *row) for row in rows],
    )
    dropped = db.execute(
        "DELETE FROM quarantine WHERE id <= (SELECT max(id) FROM quarantine) - ?",
        (kept,),
    ).rowcount
    if dropped:
        log.error("quarantine full: oldest entries dropped", extra={"dropped": dropped})
    return len(rows) - dropped


_QUARANTINE_COLUMNS = "SELECT id, at, reason, detail, headers, body, alert FROM quarantine"


def read_quarantine(
    db: sqlite3.Connection, entry_id: int | None, after: int, limit: int
) -> list[Quarantined]:
    if entry_id is not None:
        rows = db.execute(f"{_QUARANTINE_COLUMNS} WHERE id = ?", (entry_id,)).fetchall()
    else:
        sql = f"{_QUARANTINE_COLUMNS} WHERE id > ? ORDER BY id LIMIT ?"
        rows = db.execute(sql, (after, limit)).fetchall()
    return [
        Quarantined(i, at, reason, detail, json.loads(h), bytes(body), a and json.loads(a))
        for i, at, reason, detail, h, body, a in rows
    ]


def release(
    db: sqlite3.Connection, entry_id: int, alert: SentryAlert | None, now: float
) -> tuple[bool, int | None]:
    """Removes a quarantined entry; with ``alert``, accepts that into the inbox. Whether the
    entry was there, and the inbox id (None when nothing was accepted)."""
    if not db.execute("DELETE FROM quarantine WHERE id = ?", (entry_id,)).rowcount:
        return False, None
    if alert is None:
        return True, None
    text = json.dumps(alert.to_json(), separators=(",", ":"))
    sql = "INSERT INTO inbox (accepted_at, alert) VALUES (?, ?)"
    return True, rowid(db.execute(sql, (now, text)))


def discard_quarantine(db: sqlite3.Connection, ids: Sequence[int] | None) -> list[int]:
    if ids is None:
        return [r[0] for r in db.execute("DELETE FROM quarantine RETURNING id")]
    removed = []
    for entry_id in dict.fromkeys(ids):
        if db.execute("DELETE FROM quarantine WHERE id = ?", (entry_id,)).rowcount:
            removed.append(entry_id)
    return removed


def quarantine_summary(db: sqlite3.Connection) -> dict[str, Any]:
    """``quarantine_reasons`` and ``quarantine_oldest_at`` of the status snapshot."""
    reasons = db.execute("SELECT reason, count(*) FROM quarantine GROUP BY reason ORDER BY reason")
    oldest = db.execute("SELECT min(at) FROM quarantine").fetchone()[0]
    return {"quarantine_reasons": dict(reasons.fetchall()), "quarantine_oldest_at": oldest}


def read_snapshot(db: sqlite3.Connection, limit: int) -> dict[str, Any]:
    active = db.execute(
        "SELECT identity, ends_at, json_extract(state, '$.alert'), due_at,"
        " json_array_length(state, '$.tiers') FROM state WHERE active"
        " ORDER BY identity LIMIT ?",
        (limit,),
    ).fetchall()
    dead = db.execute(
        "SELECT at, target, reason, alert FROM dead_letter ORDER BY id DESC LIMIT ?", (limit,)
    ).fetchall()
    return {
        "active": [
            {
                "identity": name,
                "ends_at": ends_at,
                "labels": json.loads(body)["labels"],
                "tiers": tiers or 0,  # escalation tiers firing beside it
                "next_step_at": due_at,  # when the next escalation step is due
            }
            for name, ends_at, body, due_at, tiers in active
        ],
        "dead_letters": [
            {
                "at": at,
                "alertmanager": target,
                "reason": reason,
                "labels": json.loads(body)["labels"],
            }
            for at, target, reason, body in dead
        ],
        "dead_letter_count": db.execute("SELECT count(*) FROM dead_letter").fetchone()[0],
        "quarantined": count_quarantine(db),
        **quarantine_summary(db),
    }


def requeue(
    db: sqlite3.Connection, targets: Sequence[str], now: datetime
) -> tuple[list[int], dict[str, int]]:
    """Queues the dead letters again for every Alertmanager (``refusals.requeue`` says
    which) and empties the table: the queue ids, and the counts."""
    rows = db.execute("SELECT alert FROM dead_letter ORDER BY id").fetchall()
    bodies, counts = refusals.requeue(
        [body for (body,) in rows], lambda name: identity.active_alert(db, name), now
    )
    ids = queue.enqueue(db, targets, [Post(now, body) for body in bodies])
    db.execute("DELETE FROM dead_letter")
    return ids, counts

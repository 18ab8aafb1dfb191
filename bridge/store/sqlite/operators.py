"""What the SQLite engine keeps for a human and for the periodic jobs: dead letters and
their requeue, quarantine, the status snapshot, the sizes, expiry (``bridge.store.views``
says what they mean). Functions on the file's thread, given the connection (inside a
transaction where they write)."""

from __future__ import annotations

import json
import logging
import sqlite3
from collections.abc import Sequence
from datetime import datetime
from typing import Any

from bridge.model import SentryAlert
from bridge.store import refusals, views
from bridge.store.contract import Quarantined, Sizes
from bridge.store.sqlite import identity, queue, sql
from bridge.store.writes import Post, QuarantineRow

log = logging.getLogger("bridge.store")


def expire(db: sqlite3.Connection, expiry: views.Expiry) -> None:
    identity.expire(db, expiry)
    db.execute(sql.EXPIRE_RESOLVED, (expiry.resolved_before.timestamp(),))


def read_sizes(db: sqlite3.Connection, targets: Sequence[str], now: float) -> Sizes:
    inbox, active, resolved, quarantined, oldest = db.execute(sql.SIZES).fetchone()
    queued = dict.fromkeys(targets, 0) | dict(db.execute(sql.QUEUED).fetchall())
    return Sizes(now, inbox, queued, active, resolved, quarantined, oldest)


def read_dead_letters(db: sqlite3.Connection) -> list[tuple[str, str, dict[str, Any]]]:
    rows = db.execute(sql.DEAD_LETTERS).fetchall()
    return [(target, reason, json.loads(body)) for target, reason, body in rows]


def insert_quarantine(
    db: sqlite3.Connection, rows: Sequence[QuarantineRow], now: float, kept: int
) -> None:
    """The oldest beyond ``kept`` go."""
    db.executemany(sql.QUARANTINE, [(now, *row) for row in rows])
    dropped = db.execute(sql.TRIM_QUARANTINE, (kept,)).rowcount
    if dropped:
        log.error("quarantine full: oldest entries dropped", extra={"dropped": dropped})


def read_quarantine(
    db: sqlite3.Connection, entry_id: int | None, after: int, limit: int
) -> list[Quarantined]:
    if entry_id is not None:
        return views.quarantined(db.execute(sql.QUARANTINED_ONE, (entry_id,)))
    return views.quarantined(db.execute(sql.QUARANTINED_PAGE, (after, limit)))


def release(
    db: sqlite3.Connection, entry_id: int, alert: SentryAlert | None, now: float
) -> tuple[bool, int | None]:
    """Removes a quarantined entry; with ``alert``, accepts that into the inbox. Whether the
    entry was there, and the inbox id (None when nothing was accepted)."""
    if not db.execute(sql.RELEASE, (entry_id,)).rowcount:
        return False, None
    if alert is None:
        return True, None
    text = json.dumps(alert.to_json(), separators=(",", ":"))
    return True, db.execute(sql.INSERT_INBOX, (now, text)).lastrowid


def discard_quarantine(db: sqlite3.Connection, ids: Sequence[int] | None) -> list[int]:
    if ids is None:
        return [r[0] for r in db.execute(sql.DISCARD_ALL)]
    return [i for i in dict.fromkeys(ids) if db.execute(sql.RELEASE, (i,)).rowcount]


def read_snapshot(db: sqlite3.Connection, limit: int) -> dict[str, Any]:
    active = [
        (name, ends_at, json.loads(body)["labels"], due_at, tiers or 0, bool(escalating))
        for name, ends_at, body, due_at, tiers, escalating in db.execute(
            sql.ACTIVE_ALERTS, (limit,)
        )
    ]
    return views.snapshot(
        active,
        db.execute(sql.NEWEST_DEAD_LETTERS, (limit,)).fetchall(),
        db.execute(sql.COUNT_DEAD_LETTERS).fetchone()[0],
        dict(db.execute(sql.QUARANTINE_REASONS).fetchall()),
        db.execute(sql.QUARANTINE_OLDEST).fetchone()[0],
    )


def requeue(
    db: sqlite3.Connection, targets: Sequence[str], now: datetime
) -> tuple[int, dict[str, int]]:
    """Queues the dead letters again for every Alertmanager (``refusals.requeue`` says
    which) and empties the table: how many were queued, and the counts."""
    rows = db.execute(sql.DEAD_LETTER_ALERTS).fetchall()
    bodies, counts = refusals.requeue(
        [body for (body,) in rows], lambda name: identity.active_alert(db, name), now
    )
    queue.enqueue(db, targets, [Post(now, body) for body in bodies])
    db.execute(sql.EMPTY_DEAD_LETTERS)
    return len(bodies), counts

"""The inbox on SQLite: accepted webhooks until the pipeline completes them, and the seen
bodies that make a repeated body a duplicate. Functions on the file's thread, given the
connection (inside a transaction where they write); the group commit and what ``take``
hands out are the engine's (``engine.SqliteStore``)."""

from __future__ import annotations

import json
import logging
import sqlite3
from collections.abc import Sequence
from dataclasses import dataclass

from bridge.model import SentryAlert
from bridge.store.sqlite import identity, operators, queue
from bridge.store.sqlite.schema import rowid
from bridge.store.writes import Writes

log = logging.getLogger("bridge.store")


@dataclass(frozen=True, slots=True)
class Completed:
    ids: list[int]  # the queue ids of the posts, in order, one per target each
    active: int  # how many more alerts are active, resolved, quarantined
    resolved: int
    quarantined: int


def insert(
    db: sqlite3.Connection,
    alerts: Sequence[tuple[SentryAlert, bytes | None]],
    now: float,
    retention: float,
    max_bodies: int,
) -> list[int | None]:
    """One group commit's alerts (with their bodies' digests): the inbox ids, None for a
    body already seen within ``retention`` (in this batch too)."""
    sql = "INSERT INTO inbox (accepted_at, alert) VALUES (?, ?)"
    ids: list[int | None] = []
    for alert, digest in alerts:
        if digest is not None and not first_sight(db, digest, now, retention):
            ids.append(None)
            continue
        text = json.dumps(alert.to_json(), separators=(",", ":"))
        ids.append(rowid(db.execute(sql, (now, text))))
    if any(digest is not None for _, digest in alerts):
        forget_bodies(db, now, retention, max_bodies)
    return ids


def read(
    db: sqlite3.Connection, entries: Sequence[tuple[int, SentryAlert | None]]
) -> tuple[list[tuple[int, SentryAlert]], list[int]]:
    """The entries' alerts (read back where only the id was kept), and the ids of
    unreadable ones (for the caller to delete)."""
    missing = [inbox_id for inbox_id, alert in entries if alert is None]
    texts: dict[int, str] = dict(
        db.execute(
            "SELECT id, alert FROM inbox WHERE id IN (SELECT value FROM json_each(?))",
            (json.dumps(missing),),
        ).fetchall()
    )
    taken: list[tuple[int, SentryAlert]] = []
    dropped: list[int] = []
    for inbox_id, alert in entries:
        if alert is None:
            try:
                alert = SentryAlert.from_json(json.loads(texts[inbox_id]))
            except (ValueError, TypeError, KeyError):
                log.error("unreadable inbox entry dropped", extra={"inbox_id": inbox_id})
                dropped.append(inbox_id)
                continue
        taken.append((inbox_id, alert))
    return taken, dropped


def delete(db: sqlite3.Connection, ids: Sequence[int]) -> None:
    db.executemany("DELETE FROM inbox WHERE id = ?", [(i,) for i in ids])


def complete(
    db: sqlite3.Connection,
    writes: Writes,
    targets: Sequence[str],
    any_resolved: bool,
    quarantine_kept: int,
) -> Completed:
    """Executes what a batch of decisions writes (``bridge.store.writes.plan``), in the
    caller's one transaction. ``any_resolved``: see ``queue.resend``."""
    delete(db, writes.done)
    ids = queue.enqueue(db, targets, writes.posts)
    resolved = queue.resend(db, writes, any_resolved)
    active = identity.write(db, writes)
    stamp = writes.resolved_at.timestamp()
    rows = writes.quarantined
    added = operators.insert_quarantine(db, rows, stamp, quarantine_kept) if rows else 0
    return Completed(ids, active, resolved, added)


def first_sight(db: sqlite3.Connection, digest: bytes, now: float, retention: float) -> bool:
    """Records ``digest``; False if it was already recorded within ``retention``."""
    row = db.execute("SELECT at FROM seen_body WHERE digest = ?", (digest,)).fetchone()
    if row is not None and row[0] > now - retention:
        return False
    db.execute("INSERT OR REPLACE INTO seen_body (digest, at) VALUES (?, ?)", (digest, now))
    return True


def forget_bodies(db: sqlite3.Connection, now: float, retention: float, kept: int) -> None:
    """Bounded by time and count (the newest ``kept`` are kept)."""
    db.execute("DELETE FROM seen_body WHERE at <= ?", (now - retention,))
    db.execute(
        "DELETE FROM seen_body WHERE id <= (SELECT max(id) FROM seen_body) - ?",
        (kept,),
    )

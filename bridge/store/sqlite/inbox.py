"""The inbox on SQLite: accepted webhooks until the pipeline completes them, less the
bodies already seen (``bridge.store.bodies``), whose table it bounds. Functions on the
file's thread, given the connection (inside a transaction where they write); the group
commit and what ``take`` hands out are the engine's (``engine.SqliteStore``)."""

from __future__ import annotations

import json
import logging
import sqlite3
from collections.abc import Sequence

from bridge.model import SentryAlert
from bridge.store import bodies, jsontext
from bridge.store.sqlite import sql
from bridge.store.sqlite.dialect import run
from bridge.store.steps import Dialect

log = logging.getLogger("bridge.store")


def insert(
    db: sqlite3.Connection,
    d: Dialect,
    alerts: Sequence[tuple[SentryAlert, bytes | None]],
    now: float,
    retention: float,
    max_bodies: int,
) -> list[int | None]:
    """One group commit's alerts (with their bodies' digests): the inbox ids, None for a
    body already seen (``bridge.store.bodies``)."""
    digests = [digest for _, digest in alerts]
    fresh = run(db, d, bodies.first_sight(d, digests, retention, d.when(now)))
    ids = [
        add(db, alert, now) if new else None for (alert, _), new in zip(alerts, fresh, strict=True)
    ]
    if any(digest is not None for _, digest in alerts):
        forget_bodies(db, now, retention, max_bodies)
    return ids


def add(db: sqlite3.Connection, alert: SentryAlert, now: float) -> int:
    """One alert into the inbox; its id."""
    text = jsontext.dumps(alert.to_json())
    inbox_id = db.execute(sql.INSERT_INBOX, (now, text)).lastrowid
    assert inbox_id is not None
    return inbox_id


def read(
    db: sqlite3.Connection, entries: Sequence[tuple[int, SentryAlert | None]]
) -> tuple[list[tuple[int, SentryAlert]], list[int]]:
    """The entries' alerts (read back where only the id was kept), and the ids of
    unreadable ones (for the caller to delete)."""
    missing = [inbox_id for inbox_id, alert in entries if alert is None]
    texts: dict[int, str] = {}
    if missing:  # under a short backlog every alert is kept in memory: no statement
        texts = dict(db.execute(sql.INBOX_ALERTS, (json.dumps(missing),)).fetchall())
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
    db.executemany(sql.DELETE_INBOX, [(i,) for i in ids])


def forget_bodies(db: sqlite3.Connection, now: float, retention: float, kept: int) -> None:
    """Bounded by time and count (the newest ``kept`` are kept)."""
    db.execute(sql.FORGET_OLD_BODIES, (now - retention,))
    db.execute(sql.FORGET_MANY_BODIES, (kept,))

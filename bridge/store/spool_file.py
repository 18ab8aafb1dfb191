"""The spool's file (bridge/store/spool.py keeps its rules): one SQLite table of webhooks
in the order they were answered, and the statements run on the file's thread."""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from bridge.model import SentryAlert
from bridge.store.sqlite_file import SqliteFile

# One row per spooled webhook, in the order answered (AUTOINCREMENT: ids never reused, so
# the order survives a spool that emptied). ``alert`` is set for an accepted webhook; the
# quarantine columns for a quarantined one. ``digest`` is UNIQUE: one entry per body (NULLs
# are distinct in SQLite, so webhooks accepted without a digest are all kept).
SCHEMA = """
CREATE TABLE IF NOT EXISTS spool (
    id INTEGER PRIMARY KEY AUTOINCREMENT, at REAL NOT NULL, size INTEGER NOT NULL,
    digest BLOB UNIQUE, alert TEXT,
    reason TEXT, detail TEXT, headers TEXT, body BLOB);
"""


@dataclass(frozen=True, slots=True)
class Webhook:
    """One webhook for the spool: an accepted alert, or a body to quarantine."""

    digest: bytes | None
    alert: SentryAlert | None = None
    reason: str = ""
    detail: str = ""
    headers: Mapping[str, str] | None = None
    body: bytes = b""

    @property
    def row(self) -> tuple[Any, ...]:
        alert = None if self.alert is None else json.dumps(self.alert.to_json())
        headers = None if self.headers is None else json.dumps(dict(self.headers))
        size = len(alert or "") + len(headers or "") + len(self.detail) + len(self.body)
        return (size, self.digest, alert, self.reason, self.detail, headers, self.body)


def read_index(file: SqliteFile) -> list[tuple[int, float, int]]:
    rows: list[tuple[int, float, int]] = file.db.execute(
        "SELECT id, at, size FROM spool ORDER BY id"
    ).fetchall()
    return rows


def insert(file: SqliteFile, rows: Sequence[tuple[Any, ...]], now: float) -> list[int | None]:
    """The new ids, None for a body (digest) already spooled (in this batch too)."""
    sql = (
        "INSERT OR IGNORE INTO spool (at, size, digest, alert, reason, detail, headers,"
        " body) VALUES (?, ?, ?, ?, ?, ?, ?, ?)"
    )
    with file.transaction() as db:
        return [
            cursor.lastrowid if (cursor := db.execute(sql, (now, *row))).rowcount else None
            for row in rows
        ]


def read_batch(file: SqliteFile, first: int, limit: int) -> list[tuple[Any, ...]]:
    rows: list[tuple[Any, ...]] = file.db.execute(
        "SELECT id, digest, alert, reason, detail, headers, body FROM spool"
        " WHERE id >= ? ORDER BY id LIMIT ?",
        (first, limit),
    ).fetchall()
    return rows


def delete(file: SqliteFile, last: int) -> None:
    with file.transaction() as db:
        db.execute("DELETE FROM spool WHERE id <= ?", (last,))

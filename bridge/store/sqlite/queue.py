"""The queue on SQLite: one row per post, one cursor per Alertmanager, the lanes, and the
re-send pages (recently resolved alerts, then the active ones). Functions on the file's
thread, given the connection (inside a transaction where they write); ``Lane`` runs on the
event loop."""

from __future__ import annotations

import json
import sqlite3
from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

from bridge.store import refusals
from bridge.store.contract import Page, Queued
from bridge.store.sqlite.schema import rowid
from bridge.store.writes import Post, Writes

if TYPE_CHECKING:
    from bridge.store.sqlite.engine import Outbox

# Re-sends: the resolved alerts first, then the active ones, each table in rowid pages.
_PAGES = (
    "SELECT rowid, alert FROM resolved WHERE rowid > ? ORDER BY rowid LIMIT ?",
    "SELECT rowid, alert FROM active WHERE rowid > ? ORDER BY rowid LIMIT ?",
)


class Lane:
    """One Alertmanager's lane (``Outbox.lane``): its place in the queue, its re-sends.
    ``advance`` is kept until the block ends and committed only if it ends without an
    exception, as the contract says (PostgreSQL's lane is one transaction)."""

    def __init__(self, outbox: Outbox, target: str) -> None:
        self._outbox, self._target = outbox, target
        self._done: int | None = None
        self._dead: list[tuple[Queued, str]] = []

    async def pending(self, limit: int) -> list[Queued]:
        box = self._outbox
        after = max(box._cursor[self._target], self._done or 0)
        return await box._read(read, after, limit)

    async def advance(self, done: int, dead: Sequence[tuple[Queued, str]] = ()) -> None:
        self._done = max(done, self._done or 0)
        self._dead.extend(dead)

    async def resend_page(self, after: Any, limit: int) -> Page:
        """Recently resolved alerts, then the active ones, in rowid (keyset) pages; a row
        replaced since the last page (fired again) comes again, later, as it is now.
        Without what this Alertmanager refused."""
        return await self._outbox._read(resend_page, self._target, after, limit)

    async def refuse(self, refused: Sequence[tuple[str, str]]) -> int:
        box = self._outbox
        new: int = await box._shield(
            box._write(refuse, self._target, refused, box._now(), box.dead_letters_kept)
        )
        return new

    async def commit(self) -> None:
        if self._done is not None:
            box = self._outbox
            await box._shield(box._advance(self._target, self._done, self._dead))


def set_cursors(db: sqlite3.Connection, targets: Sequence[str]) -> dict[str, int]:
    """Every cursor, at start: one per Alertmanager configured (a new Alertmanager gets
    everything still queued, a removed one's goes), and the rows all of them passed go."""
    known = dict(db.execute("SELECT target, done FROM cursor").fetchall())
    for target in set(known) - set(targets):
        db.execute("DELETE FROM cursor WHERE target = ?", (target,))
    cursor = {target: known.get(target, 0) for target in targets}
    db.executemany(
        "INSERT OR IGNORE INTO cursor (target, done) VALUES (?, 0)",
        [(target,) for target in targets],
    )
    db.execute("DELETE FROM queue WHERE id <= ?", (min(cursor.values()),))
    return cursor


def enqueue(db: sqlite3.Connection, posts: Sequence[Post]) -> list[int]:
    """Queues the posts in order; returns their queue ids."""
    sql = "INSERT INTO queue (queued_at, alert) VALUES (?, ?)"
    return [rowid(db.execute(sql, (p.queued_at.timestamp(), p.body))) for p in posts]


def resend(db: sqlite3.Connection, writes: Writes, any_resolved: bool) -> int:
    """Starts and ends re-sends of resolved label sets as ``writes`` says; ``any_resolved``:
    whether the table has rows (between incidents it has none, and nothing can end).
    Returns how many more label sets are resolved."""
    more = 0
    ending = writes.resends_ended if any_resolved else ()
    for key in (*ending, *(key for key, _ in writes.resends_started)):
        more -= db.execute("DELETE FROM resolved WHERE labels = ?", (key,)).rowcount
    stamp = writes.resolved_at.timestamp()
    sql = "INSERT INTO resolved (labels, resolved_at, alert) VALUES (?, ?, ?)"
    for key, body in writes.resends_started:
        db.execute(sql, (key, stamp, body))
        more += 1
    return more


def read(db: sqlite3.Connection, after: int, limit: int) -> list[Queued]:
    rows = db.execute(
        "SELECT id, queued_at, alert FROM queue WHERE id > ? ORDER BY id LIMIT ?",
        (after, limit),
    ).fetchall()
    return [Queued(*row) for row in rows]


def advance(
    db: sqlite3.Connection,
    target: str,
    done: int,
    low: int,
    dead: Sequence[tuple[Queued, str]],
    now: float,
    dead_letters_kept: int,
) -> None:
    """Moves ``target``'s cursor to ``done``, dead-letters ``dead`` (the newest
    ``dead_letters_kept`` stay) and deletes the rows every cursor passed (``low``)."""
    db.execute("UPDATE cursor SET done = ? WHERE target = ?", (done, target))
    dead_letter(db, target, [(item.body, reason) for item, reason in dead], now, dead_letters_kept)
    db.execute("DELETE FROM queue WHERE id <= ?", (low,))


def dead_letter(
    db: sqlite3.Connection, target: str, dead: Sequence[tuple[str, str]], now: float, kept: int
) -> None:
    """Keeps (wire JSON, reason) pairs as ``target``'s dead letters, a refusal for the
    content with the identity of its alert (``bridge.store.refusals``); the newest ``kept``
    stay."""
    if not dead:
        return
    db.executemany(
        "INSERT INTO dead_letter (at, target, reason, alert, identity) VALUES (?, ?, ?, ?, ?)",
        [(now, target, why, body, _owner(body, why)) for body, why in dead],
    )
    db.execute("DELETE FROM dead_letter WHERE id <= (SELECT max(id) FROM dead_letter) - ?", (kept,))


def refused(db: sqlite3.Connection, target: str, identities: Sequence[str]) -> list[str]:
    """The bodies ``target`` refused (its dead letters) of these identities."""
    if not identities:
        return []
    rows = db.execute(
        "SELECT alert FROM dead_letter WHERE target = ?"
        " AND identity IN (SELECT value FROM json_each(?))",
        (target, json.dumps(list(identities))),
    )
    return [body for (body,) in rows]


def refuse(
    db: sqlite3.Connection, target: str, dead: Sequence[tuple[str, str]], now: float, kept: int
) -> int:
    """Dead-letters the re-sent bodies ``target`` refused, once each (one it refused before
    is not kept again); returns how many are new."""
    before = refused(db, target, refusals.owners(body for body, _ in dead))
    new = [(b, r) for b, r in dead if refusals.not_refused([b], before)]
    new = list({body: (body, reason) for body, reason in new}.values())
    dead_letter(db, target, new, now, kept)
    return len(new)


def resend_page(
    db: sqlite3.Connection, target: str, after: tuple[int, int] | None, limit: int
) -> Page:
    """``read_page``, without what ``target`` refused (``bridge.store.refusals``)."""
    page = read_page(db, after, limit)
    gone = refused(db, target, refusals.owners(page.bodies)) if _any_dead(db, target) else []
    return Page(refusals.not_refused(page.bodies, gone), page.after) if gone else page


def _owner(body: str, why: str) -> str | None:
    """The identity a dead letter is kept under: only a refusal for the content counts."""
    return refusals.owner(body) if refusals.for_content(why) else None


def _any_dead(db: sqlite3.Connection, target: str) -> bool:
    sql = "SELECT 1 FROM dead_letter WHERE target = ? AND identity IS NOT NULL LIMIT 1"
    return db.execute(sql, (target,)).fetchone() is not None


def read_page(db: sqlite3.Connection, after: tuple[int, int] | None, limit: int) -> Page:
    """Up to ``limit`` bodies from ``after`` (table, rowid) on, across _PAGES in order;
    one row more is read to know whether there is a next page."""
    table, last = after or (0, 0)
    bodies: list[str] = []
    while table < len(_PAGES):
        room = limit - len(bodies)
        rows = db.execute(_PAGES[table], (last, room + 1)).fetchall()
        if len(rows) > room:  # more in this table than fits
            if room:
                bodies += [text for _, text in rows[:room]]
                last = rows[room - 1][0]
            return Page(bodies, (table, last))
        bodies += [text for _, text in rows]
        table, last = table + 1, 0
    return Page(bodies, None)

"""The queue on SQLite: a row per post and Alertmanager, deleted once that one settled it,
the lanes, and the re-send pages (recently resolved alerts, then the active ones).
Functions on the file's thread, given the connection (inside a transaction where they
write); ``Lane`` runs on the event loop."""

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
    from bridge.store.sqlite.engine import SqliteStore

# Re-sends: the resolved alerts first (rowid pages), then the active ones (identity pages),
# each with its escalation tiers' alerts (bridge.state: they fire and end with it).
_PAGES = (
    "SELECT rowid, alert, NULL FROM resolved WHERE rowid > ? ORDER BY rowid LIMIT ?",
    "SELECT identity, json_extract(state, '$.alert'), json_extract(state, '$.tiers')"
    " FROM state WHERE active AND identity > ? ORDER BY identity LIMIT ?",
)
_FIRST: tuple[int | str, ...] = (0, "")  # the key before each table's first row


class Lane:
    """One Alertmanager's lane (``SqliteStore.lane``): its queue, its re-sends. ``advance`` is
    kept until the block ends and committed only if it ends without an exception, as the
    contract says (PostgreSQL's lane is one transaction)."""

    def __init__(self, store: SqliteStore, target: str) -> None:
        self._store, self._target = store, target
        self._done: int | None = None
        self._dead: list[tuple[str, str]] = []  # (wire JSON, reason), kept at commit

    async def pending(self, limit: int) -> list[Queued]:
        return await self._store._read(read, self._target, self._done or 0, limit)

    async def advance(self, done: int, dead: Sequence[tuple[Queued, str]] = ()) -> None:
        self._done = max(done, self._done or 0)
        self._dead.extend((item.body, reason) for item, reason in dead)

    async def resend_page(self, after: Any, limit: int) -> Page:
        """Recently resolved alerts, then the active ones, in keyset pages (as they are
        when each page is read), without what this Alertmanager refused."""
        return await self._store._read(resend_page, self._target, after, limit)

    async def refuse(self, refused: Sequence[tuple[str, str]]) -> int:
        new = await self._store._read(unrefused, self._target, self._dead, refused)
        self._dead.extend(new)
        return len(new)

    async def commit(self) -> None:
        if self._done is not None or self._dead:
            box = self._store
            await box._shield(box._advance(self._target, self._done, self._dead))


def keep_only(db: sqlite3.Connection, targets: Sequence[str]) -> None:
    """At start: the queue of an Alertmanager no longer configured goes (a new one gets
    what is decided from now on, and the re-sends)."""
    db.execute(
        "DELETE FROM queue WHERE target NOT IN (SELECT value FROM json_each(?))",
        (json.dumps(list(targets)),),
    )


def enqueue(db: sqlite3.Connection, targets: Sequence[str], posts: Sequence[Post]) -> list[int]:
    """Queues the posts in order for every Alertmanager; returns the queue ids, per post
    one per target in the order of ``targets``."""
    sql = "INSERT INTO queue (target, queued_at, alert) VALUES (?, ?, ?)"
    return [
        rowid(db.execute(sql, (target, post.queued_at.timestamp(), post.body)))
        for post in posts
        for target in targets
    ]


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


def read(db: sqlite3.Connection, target: str, after: int, limit: int) -> list[Queued]:
    rows = db.execute(
        "SELECT id, queued_at, alert FROM queue WHERE target = ? AND id > ? ORDER BY id LIMIT ?",
        (target, after, limit),
    ).fetchall()
    return [Queued(*row) for row in rows]


def advance(
    db: sqlite3.Connection,
    target: str,
    done: int | None,
    dead: Sequence[tuple[str, str]],
    now: float,
    dead_letters_kept: int,
) -> None:
    """Settles ``target``'s rows up to ``done`` (one writer: ids are in commit order) and
    dead-letters ``dead`` (the newest ``dead_letters_kept`` stay)."""
    dead_letter(db, target, dead, now, dead_letters_kept)
    if done is not None:
        db.execute("DELETE FROM queue WHERE target = ? AND id <= ?", (target, done))


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


def unrefused(
    db: sqlite3.Connection,
    target: str,
    pending: Sequence[tuple[str, str]],
    dead: Sequence[tuple[str, str]],
) -> list[tuple[str, str]]:
    """What of ``dead`` (wire JSON, reason) a refusal newly dead-letters: not refused by
    ``target`` before, nor already ``pending`` in this lane, once each, in order."""
    before = refused(db, target, refusals.owners(body for body, _ in dead))
    before += [body for body, _ in pending]
    new: dict[str, tuple[str, str]] = {}
    for body, why in dead:
        if body not in new and refusals.not_refused([body], before):
            new[body] = (body, why)
    return list(new.values())


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


def _bodies(rows: Sequence[tuple[Any, str, str | None]]) -> list[str]:
    """Each row's alert, then its tiers' (wire JSON)."""
    out: list[str] = []
    for _, text, tiers in rows:
        out.append(text)
        if tiers and tiers != "[]":
            out += [json.dumps(t, separators=(",", ":")) for t in json.loads(tiers)]
    return out


def read_page(db: sqlite3.Connection, after: tuple[int, Any] | None, limit: int) -> Page:
    """Up to ``limit`` rows from ``after`` (table, key) on, across _PAGES in order (an
    active alert's tiers come with it, beyond the limit); one row more is read to know
    whether there is a next page."""
    table, last = after or (0, _FIRST[0])
    bodies: list[str] = []
    while table < len(_PAGES):
        room = limit - len(bodies)
        rows = db.execute(_PAGES[table], (last, room + 1)).fetchall()
        if len(rows) > room:  # more in this table than fits
            if room:
                bodies += _bodies(rows[:room])
                last = rows[room - 1][0]
            return Page(bodies, (table, last))
        bodies += _bodies(rows)
        table += 1
        last = _FIRST[table] if table < len(_PAGES) else None
    return Page(bodies, None)

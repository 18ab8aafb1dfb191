"""The queue on SQLite: a row per post and Alertmanager, deleted once that one settled it,
the lanes, and the re-send pages (recently resolved alerts, then the active ones).
Functions on the file's thread, given the connection (inside a transaction where they
write); ``Lane`` runs on the event loop."""

from __future__ import annotations

import json
import sqlite3
from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

from bridge.store import refusals, views
from bridge.store.contract import Page, Queued
from bridge.store.sqlite import sql
from bridge.store.writes import Post, Writes

if TYPE_CHECKING:
    from bridge.store.sqlite.engine import SqliteStore


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
    db.execute(sql.KEEP_ONLY_TARGETS, (json.dumps(list(targets)),))


def enqueue(db: sqlite3.Connection, targets: Sequence[str], posts: Sequence[Post]) -> None:
    """Queues the posts in order for every Alertmanager."""
    db.executemany(
        sql.ENQUEUE,
        [(target, post.queued_at.timestamp(), post.body) for post in posts for target in targets],
    )


def resend(db: sqlite3.Connection, writes: Writes) -> None:
    """Starts and ends re-sends of resolved label sets as ``writes`` says."""
    ending = [*writes.resends_ended, *(key for key, _ in writes.resends_started)]
    if ending:
        db.execute(sql.UNRESOLVE, (json.dumps(ending),))
    stamp = writes.resolved_at.timestamp()
    db.executemany(
        sql.RESOLVE,
        [(key, stamp, body) for key, body in writes.resends_started],
    )


def read(db: sqlite3.Connection, target: str, after: int, limit: int) -> list[Queued]:
    rows = db.execute(sql.PENDING, (target, after, limit)).fetchall()
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
        db.execute(sql.SETTLE, (target, done))


def dead_letter(
    db: sqlite3.Connection, target: str, dead: Sequence[tuple[str, str]], now: float, kept: int
) -> None:
    """Keeps (wire JSON, reason) pairs as ``target``'s dead letters, a refusal for the
    content with the identity of its alert (``bridge.store.refusals``); the newest ``kept``
    stay."""
    if not dead:
        return
    db.executemany(
        sql.DEAD_LETTER,
        [(now, target, why, body, refusals.kept_under(body, why)) for body, why in dead],
    )
    db.execute(sql.TRIM_DEAD_LETTERS, (kept,))


def refused(db: sqlite3.Connection, target: str, identities: Sequence[str]) -> list[str]:
    """The bodies ``target`` refused (its dead letters) of these identities."""
    if not identities:
        return []
    rows = db.execute(sql.REFUSED, (target, json.dumps(list(identities))))
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
    return refusals.new_dead(dead, [*before, *(body for body, _ in pending)])


def resend_page(
    db: sqlite3.Connection, target: str, after: tuple[int, Any] | None, limit: int
) -> Page:
    """``views.ResendPager``'s page, without what ``target`` refused
    (``bridge.store.refusals``)."""
    pager, page = views.ResendPager(after, limit), None
    while page is None:
        table, key, count = pager.read()
        page = pager.got(db.execute(sql.RESEND_PAGES[table], (key, count)).fetchall())
    gone = refused(db, target, refusals.owners(page.bodies)) if _any_dead(db, target) else []
    return Page(refusals.not_refused(page.bodies, gone), page.after) if gone else page


def _any_dead(db: sqlite3.Connection, target: str) -> bool:
    return db.execute(sql.ANY_REFUSED, (target,)).fetchone() is not None

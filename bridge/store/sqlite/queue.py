"""SQLite's lanes (``SqliteStore.lane``) and what only they need: one process posts, so the
queue's ids are in commit order and a lane settles everything up to an id. The queue's
rules, re-sends and dead letters are ``bridge.store.queue``'s."""

from __future__ import annotations

import sqlite3
from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

from bridge.store import queue
from bridge.store.contract import Page, Queued
from bridge.store.sqlite import sql
from bridge.store.sqlite.dialect import run
from bridge.store.steps import Dialect

if TYPE_CHECKING:
    from bridge.store.sqlite.engine import SqliteStore


class Lane:
    """One Alertmanager's lane: its queue, its re-sends. ``advance`` is kept until the block
    ends and committed only if it ends without an exception, as the contract says
    (PostgreSQL's lane is one transaction)."""

    def __init__(self, store: SqliteStore, target: str) -> None:
        self._store, self._target = store, target
        self._done: int | None = None
        self._dead: list[tuple[str, str]] = []  # (wire JSON, reason), kept at commit

    async def pending(self, limit: int) -> list[Queued]:
        query = (self._target, self._done or 0, limit)
        rows = await self._store._read(lambda db: db.execute(sql.PENDING, query).fetchall())
        return [Queued(*row) for row in rows]

    async def advance(self, done: int, dead: Sequence[tuple[Queued, str]] = ()) -> None:
        self._done = max(done, self._done or 0)
        self._dead.extend((item.body, reason) for item, reason in dead)

    async def resend_page(self, after: Any, limit: int) -> Page:
        d = self._store.dialect
        return await self._store._step(queue.resend_page(d, self._target, after, limit))

    async def refuse(self, refused: Sequence[tuple[str, str]]) -> int:
        d = self._store.dialect
        new = await self._store._step(queue.unrefused(d, self._target, refused, self._dead))
        self._dead.extend(new)
        return len(new)

    async def commit(self) -> None:
        if self._done is not None or self._dead:
            box = self._store
            await box._shield(box._advance(self._target, self._done, self._dead))


def advance(
    db: sqlite3.Connection,
    d: Dialect,
    target: str,
    done: int | None,
    dead: Sequence[tuple[str, str]],
    dead_letters_kept: int,
) -> None:
    """Settles ``target``'s rows up to ``done`` (one writer: ids are in commit order) and
    dead-letters ``dead`` (the newest ``dead_letters_kept`` stay)."""
    run(db, d, queue.dead_letter(d, target, dead, dead_letters_kept))
    if done is not None:
        db.execute(sql.SETTLE, (target, done))

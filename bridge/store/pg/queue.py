"""PostgreSQL's lanes and what only they need. The queue's rules, re-sends and dead letters
are ``bridge.store.queue``'s.

Each post is queued once per Alertmanager (``queue.target``) and that row is deleted when
that Alertmanager has settled it: ids are not in commit order across replicas (a row with
a lower id may commit after a higher one was posted), so there is no cursor to move, and
``advance`` deletes exactly the rows ``pending`` handed out. Per identity the order holds:
its decisions are serialised by its advisory lock, so its rows commit in id order.

A lane is the lock on the Alertmanager's ``progress`` row, ``FOR UPDATE SKIP LOCKED`` in a
transaction held for one batch or one page: another replica's sender gets None at once
instead of posting the same alerts (PostgreSQL docs, SELECT, "The Locking Clause").
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

from bridge.store import queue
from bridge.store.contract import Page, Queued
from bridge.store.pg import sql
from bridge.store.pg.dialect import run
from bridge.store.steps import Dialect


async def try_lane(conn: Any, target: str) -> bool:
    """In the caller's transaction: whether this one now holds ``target``'s lane."""
    return await conn.fetchval(sql.TRY_LANE, target) is not None


@dataclass
class Lane:
    """One held lane (``bridge.store.contract.Lane``), on its transaction's connection."""

    conn: Any
    d: Dialect
    target: str
    dead_letters_kept: int
    handed: list[int] = field(default_factory=list)  # ids pending returned, not settled

    async def pending(self, limit: int) -> list[Queued]:
        rows = await self.conn.fetch(sql.PENDING, self.target, limit)
        items = [Queued(int(r[0]), float(r[1]), r[2]) for r in rows]
        self.handed = sorted({*self.handed, *(item.id for item in items)})
        return items

    async def advance(self, done: int, dead: Sequence[tuple[Queued, str]] = ()) -> None:
        ids = [i for i in self.handed if i <= done]
        self.handed = [i for i in self.handed if i > done]
        await self._dead_letter([(q.body, r) for q, r in dead])
        if ids:
            await self.conn.execute(sql.SETTLE, self.target, ids)

    async def resend_page(self, after: Any, limit: int) -> Page:
        return await run(self.conn, self.d, queue.resend_page(self.d, self.target, after, limit))

    async def refuse(self, dead: Sequence[tuple[str, str]]) -> int:
        new = await run(self.conn, self.d, queue.unrefused(self.d, self.target, dead))
        await self._dead_letter(new)
        return len(new)

    async def _dead_letter(self, dead: Sequence[tuple[str, str]]) -> None:
        step = queue.dead_letter(self.d, self.target, dead, self.dead_letters_kept)
        await run(self.conn, self.d, step)

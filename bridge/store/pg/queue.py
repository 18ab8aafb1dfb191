"""The per-Alertmanager queue on PostgreSQL, its lanes, re-send pages and dead letters.

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

from bridge.store import refusals, views
from bridge.store.contract import Page, Queued
from bridge.store.pg import codec, sql
from bridge.store.writes import Post, Writes


async def enqueue(conn: Any, targets: Sequence[str], posts: Sequence[Post], channel: str) -> None:
    """Queue the posts in order for every Alertmanager; the senders of every replica are
    told at commit."""
    if not posts:
        return
    stamps = [post.queued_at for post in posts]
    await conn.execute(sql.ENQUEUE, list(targets), stamps, [post.body for post in posts])
    await conn.execute(sql.NOTIFY, channel)


async def resend(conn: Any, writes: Writes) -> None:
    """Starts and ends re-sends of resolved label sets as ``writes`` says."""
    if writes.resends_ended:
        await conn.execute(sql.UNRESOLVE, list(writes.resends_ended))
    if started := writes.resends_started:
        stamps = [writes.resolved_at] * len(started)
        await conn.execute(sql.RESOLVE, [k for k, _ in started], stamps, [b for _, b in started])


async def dead_letter(conn: Any, target: str, dead: Sequence[tuple[str, str]], kept: int) -> None:
    """Keep (wire JSON, reason) pairs for ``target``; the newest ``kept`` stay."""
    if not dead:
        return
    reasons = [codec.text(reason) for _, reason in dead]
    owners = [_text(refusals.kept_under(body, why)) for body, why in dead]
    await conn.execute(sql.DEAD_LETTER, target, reasons, [body for body, _ in dead], owners)
    await conn.execute(sql.TRIM_DEAD_LETTERS, kept)


async def refused(conn: Any, target: str, bodies: Sequence[str]) -> list[str]:
    """What ``target`` refused (its dead letters) of the identities of ``bodies``."""
    # Asked first: reading the identities parses every body, on the event loop, and a
    # re-send page usually meets no refusal at all (SQLite asks first too).
    if not bodies or not await conn.fetchval(sql.ANY_REFUSED, target):
        return []
    owners = [codec.text(o) for o in refusals.owners(bodies)]
    if not owners:
        return []
    return [row[0] for row in await conn.fetch(sql.REFUSED, target, owners)]


def _text(identity: str | None) -> str | None:
    return None if identity is None else codec.text(identity)


async def try_lane(conn: Any, target: str) -> bool:
    """In the caller's transaction: whether this one now holds ``target``'s lane."""
    return await conn.fetchval(sql.TRY_LANE, target) is not None


@dataclass
class Lane:
    """One held lane (``bridge.store.contract.Lane``), on its transaction's connection."""

    conn: Any
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
        await dead_letter(
            self.conn, self.target, [(q.body, r) for q, r in dead], self.dead_letters_kept
        )
        if ids:
            await self.conn.execute(sql.SETTLE, self.target, ids)

    async def resend_page(self, after: Any, limit: int) -> Page:
        pager, page = views.ResendPager(after, limit), None
        while page is None:
            table, key, count = pager.read()
            rows = await self.conn.fetch(sql.RESEND_PAGES[table], key, count)
            page = pager.got(rows if table == 0 else [(r[0], *map(_wire, r[1:])) for r in rows])
        gone = await refused(self.conn, self.target, page.bodies)
        return Page(refusals.not_refused(page.bodies, gone), page.after) if gone else page

    async def refuse(self, dead: Sequence[tuple[str, str]]) -> int:
        before = await refused(self.conn, self.target, [body for body, _ in dead])
        new = refusals.new_dead(dead, before)
        await dead_letter(self.conn, self.target, new, self.dead_letters_kept)
        return len(new)


def _wire(jsonb: str | None) -> str | None:
    """Alerts read from jsonb (an active one, its tiers), as wire JSON to post; the resolved
    ones are kept as text, posted as read."""
    return None if jsonb is None else codec.wire_from_jsonb(jsonb)

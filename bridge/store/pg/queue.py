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

import json
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from bridge.store import refusals
from bridge.store.contract import Page, Queued
from bridge.store.pg import codec

_ENQUEUE = """
INSERT INTO queue (target, queued_at, body)
SELECT t, q, b
FROM unnest($2::timestamptz[], $3::text[]) WITH ORDINALITY AS s (q, b, n),
     unnest($1::text[]) AS t
ORDER BY n, t
"""

_NOTIFY = "SELECT pg_notify($1, '')"

# One row per Alertmanager, made at start by every replica (the lane is its lock).
PROGRESS = "INSERT INTO progress (target) SELECT unnest($1::text[]) ON CONFLICT DO NOTHING"

_LANE = "SELECT target FROM progress WHERE target = $1 FOR UPDATE SKIP LOCKED"

_PENDING = """
SELECT id, extract(epoch FROM queued_at)::float8, body FROM queue
WHERE target = $1 ORDER BY id LIMIT $2
"""

_SETTLE = "DELETE FROM queue WHERE target = $1 AND id = ANY($2::bigint[])"

_DEAD = """
INSERT INTO dead_letter (target, reason, body, identity)
SELECT $1, r, b, i FROM unnest($2::text[], $3::text[], $4::text[]) WITH ORDINALITY AS u (r, b, i, n)
ORDER BY n
"""
_REFUSED = "SELECT body FROM dead_letter WHERE target = $1 AND identity = ANY($2::text[])"
_ANY_REFUSED = (
    "SELECT EXISTS (SELECT 1 FROM dead_letter WHERE target = $1 AND identity IS NOT NULL)"
)

# The dead-letter table is for a human, not an archive: the newest are kept. Rows another
# transaction is trimming already are skipped: two lanes may trim at once.
_TRIM_DEAD = """
DELETE FROM dead_letter WHERE id IN (
    SELECT id FROM dead_letter WHERE id <= (SELECT max(id) FROM dead_letter) - $1
    FOR UPDATE SKIP LOCKED
)
"""

# Re-sends: the resolved alerts first, then the active ones, each in key order pages.
_RESOLVED_PAGE = "SELECT id, body FROM resolved WHERE id > $1 ORDER BY id LIMIT $2"
# Each active alert with its escalation tiers' alerts (bridge.state: they end with it).
_ACTIVE_PAGE = """
SELECT identity, (state->'alert')::text, (state->'tiers')::text FROM identity_state
WHERE active AND identity > $1 ORDER BY identity LIMIT $2
"""

_RESOLVE = """
INSERT INTO resolved AS r (labels, resolved_at, body)
SELECT * FROM unnest($1::text[], $2::timestamptz[], $3::text[])
ON CONFLICT (labels) DO UPDATE SET resolved_at = excluded.resolved_at, body = excluded.body
RETURNING xmax = 0  -- inserted, not updated
"""
_UNRESOLVE = "DELETE FROM resolved WHERE labels = ANY($1::text[])"
_EXPIRE_RESOLVED = (
    "DELETE FROM resolved WHERE resolved_at <= clock_timestamp() - make_interval(secs => $1)"
)


async def enqueue(
    conn: Any, targets: Sequence[str], sends: Sequence[tuple[datetime, str]], channel: str
) -> None:
    """Queue each (accepted_at, wire JSON) for every Alertmanager, in order; the senders
    of every replica are told at commit."""
    if not sends:
        return
    await conn.execute(_ENQUEUE, list(targets), [q for q, _ in sends], [body for _, body in sends])
    await conn.execute(_NOTIFY, channel)


async def resolve(conn: Any, changes: Mapping[str, tuple[datetime, str] | None]) -> int:
    """Per label key, in the order decided: a resolve starts its re-sends (time, body), a
    firing alert (None) ends them. Returns how many more resolves are recorded."""
    ended = [key for key, change in changes.items() if change is None]
    started = [(key, change) for key, change in changes.items() if change is not None]
    more = 0
    if ended:
        more -= int((await conn.execute(_UNRESOLVE, ended)).split()[-1])
    if started:
        rows = await conn.fetch(
            _RESOLVE,
            [key for key, _ in started],
            [at for _, (at, _) in started],
            [body for _, (_, body) in started],
        )
        more += sum(1 for row in rows if row[0])
    return more


async def expire_resolved(conn: Any, resolved_for: float) -> None:
    await conn.execute(_EXPIRE_RESOLVED, resolved_for)


async def dead_letter(conn: Any, target: str, dead: Sequence[tuple[str, str]], kept: int) -> None:
    """Keep (wire JSON, reason) pairs for ``target``; the newest ``kept`` stay."""
    if not dead:
        return
    reasons = [codec.text(reason) for _, reason in dead]
    owners = [_owner(body, why) for body, why in dead]
    await conn.execute(_DEAD, target, reasons, [body for body, _ in dead], owners)
    await conn.execute(_TRIM_DEAD, kept)


async def refused(conn: Any, target: str, bodies: Sequence[str]) -> list[str]:
    """What ``target`` refused (its dead letters) of the identities of ``bodies``."""
    owners = [codec.text(o) for o in refusals.owners(bodies)]
    if not owners or not await conn.fetchval(_ANY_REFUSED, target):
        return []
    return [row[0] for row in await conn.fetch(_REFUSED, target, owners)]


def _owner(body: str, why: str) -> str | None:
    """The identity a dead letter is kept under: only a refusal for the content counts."""
    found = refusals.owner(body) if refusals.for_content(why) else None
    return None if found is None else codec.text(found)


async def try_lane(conn: Any, target: str) -> bool:
    """In the caller's transaction: whether this one now holds ``target``'s lane."""
    return await conn.fetchval(_LANE, target) is not None


@dataclass
class Lane:
    """One held lane (``bridge.store.contract.Lane``), on its transaction's connection."""

    conn: Any
    target: str
    dead_letters_kept: int
    handed: list[int] = field(default_factory=list)  # ids pending returned, not settled
    settled: int = 0  # rows deleted, for the engine's counts once committed

    async def pending(self, limit: int) -> list[Queued]:
        rows = await self.conn.fetch(_PENDING, self.target, limit)
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
            status = await self.conn.execute(_SETTLE, self.target, ids)
            self.settled += int(status.split()[-1])

    async def resend_page(self, after: Any, limit: int) -> Page:
        page = await self._page(after, limit)
        gone = await refused(self.conn, self.target, page.bodies)
        return Page(refusals.not_refused(page.bodies, gone), page.after) if gone else page

    async def refuse(self, dead: Sequence[tuple[str, str]]) -> int:
        before = await refused(self.conn, self.target, [body for body, _ in dead])
        new = {b: (b, r) for b, r in dead if refusals.not_refused([b], before)}
        await dead_letter(self.conn, self.target, list(new.values()), self.dead_letters_kept)
        return len(new)

    async def _page(self, after: Any, limit: int) -> Page:
        table, key = after if after is not None else ("resolved", 0)
        if table == "resolved":
            rows = await self.conn.fetch(_RESOLVED_PAGE, key, limit)
            if len(rows) < limit:
                # This table is done: fill the page from the active alerts' first page.
                rest = await self._page(("active", ""), limit - len(rows))
                return Page([*(r[1] for r in rows), *rest.bodies], rest.after)
            return Page([r[1] for r in rows], ("resolved", int(rows[-1][0])))
        rows = await self.conn.fetch(_ACTIVE_PAGE, key, limit)
        bodies = [body for r in rows for body in _with_tiers(r[1], r[2])]
        return Page(bodies, ("active", rows[-1][0]) if rows and len(rows) == limit else None)


def _with_tiers(alert: str, tiers: str | None) -> list[str]:
    """An active alert's wire JSON, then its tiers' (an active page may exceed its limit)."""
    out = [codec.wire_from_jsonb(alert)]
    if tiers and tiers != "[]":
        out += [codec.wire_from_jsonb(codec.dumps(t)) for t in json.loads(tiers)]
    return out

"""What operators change and see on PostgreSQL: dead letters, their requeue, the
quarantine, the status page's snapshot, the sizes and expiry (``bridge.store.views`` says
what they mean).

Each function runs in the caller's transaction. The one that reads identities' alerts to
queue them (``requeue``) first waits for the identities' advisory locks
(``identity.lock``), so they never act on a state a decision in flight is replacing.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Sequence
from datetime import datetime
from typing import Any

from bridge.store import refusals, views
from bridge.store.contract import Quarantined, Sizes
from bridge.store.pg import codec, identity, queue, sql
from bridge.store.writes import Post, QuarantineRow

log = logging.getLogger("bridge.store.pg")


async def quarantine(conn: Any, rows: Sequence[QuarantineRow], kept: int) -> None:
    """Keep ``rows``; the newest ``kept`` stay."""
    reasons, details, headers, bodies, alerts = (list(c) for c in zip(*rows, strict=True))
    await conn.execute(
        sql.QUARANTINE,
        [codec.text(r) for r in reasons],
        [codec.text(d) for d in details],
        headers,
        bodies,
        alerts,
    )
    dropped = int((await conn.execute(sql.TRIM_QUARANTINE, kept)).split()[-1])
    if dropped:
        log.error("quarantine full: oldest entries dropped", extra={"dropped": dropped})


async def quarantined(conn: Any, entry_id: int | None, after: int, limit: int) -> list[Quarantined]:
    if entry_id is not None:
        rows = await conn.fetch(sql.QUARANTINED_ONE, entry_id)
    else:
        rows = await conn.fetch(sql.QUARANTINED_PAGE, after, limit)
    return views.quarantined(
        (r[0], r[1], codec.untext(r[2]), codec.untext(r[3]), r[4], r[5], r[6]) for r in rows
    )


async def release(conn: Any, entry_id: int) -> bool:
    return bool(await conn.fetchval(sql.RELEASE, entry_id))


async def discard_quarantined(conn: Any, ids: Sequence[int] | None) -> list[int]:
    if ids is None:
        rows = await conn.fetch(sql.DISCARD_ALL)
    else:
        rows = await conn.fetch(sql.DISCARD, list(ids))
    return sorted(int(r[0]) for r in rows)


async def dead_letters(conn: Any) -> list[tuple[str, str, dict[str, Any]]]:
    rows = await conn.fetch(sql.DEAD_LETTERS)
    return [(r[0], codec.untext(r[1]), json.loads(r[2])) for r in rows]


async def requeue(
    conn: Any, lock_key: int, targets: Sequence[str], channel: str
) -> tuple[int, dict[str, int]]:
    """Queue the dead letters again (``refusals.requeue`` says which) and empty the table,
    holding the identities' locks. Returns (alerts queued, counts by outcome)."""
    rows = await conn.fetch(sql.LOCK_DEAD_LETTERS)
    owners = {o for r in rows if (o := refusals.owner(r[1])) is not None}
    await identity.lock(conn, lock_key, [codec.text(o) for o in owners])
    now: datetime = await conn.fetchval(sql.NOW)
    active = await identity.active_alerts(conn, [codec.text(o) for o in owners])
    bodies, counts = refusals.requeue(
        [r[1] for r in rows], lambda name: active.get(codec.text(name)), now
    )
    await queue.enqueue(conn, targets, [Post(now, body) for body in bodies], channel)
    await conn.execute(sql.DELETE_DEAD_LETTERS, [r[0] for r in rows])
    return len(bodies), counts


async def snapshot(conn: Any, limit: int) -> dict[str, Any]:
    active = await conn.fetch(sql.ACTIVE_ALERTS, limit)
    dead = await conn.fetch(sql.NEWEST_DEAD_LETTERS, limit)
    reasons = await conn.fetch(sql.QUARANTINE_REASONS)
    return views.snapshot(
        [
            (codec.untext(i), e, codec.from_jsonb(labels), due, tiers, escalating)
            for i, e, labels, due, tiers, escalating in active
        ],
        [(at, target, codec.untext(reason), body) for at, target, reason, body in dead],
        int(await conn.fetchval(sql.COUNT_DEAD_LETTERS)),
        {codec.untext(r[0]): int(r[1]) for r in reasons},
        await conn.fetchval(sql.QUARANTINE_OLDEST),
    )


async def sizes(conn: Any, targets: Sequence[str]) -> Sizes:
    """What the store holds: every replica's work."""
    at, inbox, active, resolved, quarantined, oldest = await conn.fetchrow(sql.SIZES)
    queued = dict.fromkeys(targets, 0)
    for target, count in await conn.fetch(sql.QUEUED):
        if target in queued:  # not an Alertmanager this replica was configured with
            queued[target] = int(count)
    return Sizes(at, int(inbox), queued, int(active), int(resolved), int(quarantined), oldest)


async def expire(conn: Any, resolved_for: float) -> None:
    expiry = views.expiry(await conn.fetchval(sql.NOW), resolved_for)
    await identity.expire(conn, expiry)
    await conn.execute(sql.EXPIRE_RESOLVED, expiry.resolved_before)

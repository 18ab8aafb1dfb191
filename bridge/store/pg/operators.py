"""What operators change on PostgreSQL: dead letters, their requeue, the quarantine, the
status page's snapshot.

Each function runs in the caller's transaction. The one that reads identities' alerts to
queue them (``requeue``) first waits for the identities' advisory locks
(``identity.lock``), so they never act on a state a decision in flight is replacing.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from datetime import datetime
from typing import Any

from bridge.store import refusals
from bridge.store.contract import Quarantined
from bridge.store.pg import codec, identity, queue
from bridge.store.writes import QuarantineRow

_QUARANTINE = """
INSERT INTO quarantine (reason, detail, headers, body, alert)
SELECT * FROM unnest($1::text[], $2::text[], $3::text[], $4::bytea[], $5::text[])
"""
# The newest are kept; rows another transaction is trimming are left to it.
_TRIM_QUARANTINE = """
DELETE FROM quarantine WHERE id IN (
    SELECT id FROM quarantine WHERE id <= (SELECT max(id) FROM quarantine) - $1
    FOR UPDATE SKIP LOCKED
)
"""


async def quarantine(conn: Any, rows: Sequence[QuarantineRow], kept: int) -> int:
    """Keep ``rows``; the newest ``kept`` stay. Returns how many older ones were dropped."""
    reasons, details, headers, bodies, alerts = (list(c) for c in zip(*rows, strict=True))
    await conn.execute(
        _QUARANTINE,
        [codec.text(r) for r in reasons],
        [codec.text(d) for d in details],
        headers,
        bodies,
        alerts,
    )
    return int((await conn.execute(_TRIM_QUARANTINE, kept)).split()[-1])


_QUARANTINED = (
    "SELECT id, extract(epoch FROM at)::float8, reason, detail, headers, body, alert "
    "FROM quarantine"
)


async def quarantined(conn: Any, entry_id: int | None, after: int, limit: int) -> list[Quarantined]:
    if entry_id is not None:
        rows = await conn.fetch(f"{_QUARANTINED} WHERE id = $1", entry_id)
    else:
        rows = await conn.fetch(f"{_QUARANTINED} WHERE id > $1 ORDER BY id LIMIT $2", after, limit)
    return [
        Quarantined(
            int(r[0]),
            float(r[1]),
            codec.untext(r[2]),
            codec.untext(r[3]),
            json.loads(r[4]),
            bytes(r[5]),
            json.loads(r[6]) if r[6] is not None else None,
        )
        for r in rows
    ]


async def discard_quarantined(conn: Any, ids: Sequence[int] | None) -> list[int]:
    if ids is None:
        rows = await conn.fetch("DELETE FROM quarantine RETURNING id")
    else:
        sql = "DELETE FROM quarantine WHERE id = ANY($1::bigint[]) RETURNING id"
        rows = await conn.fetch(sql, list(ids))
    return sorted(int(r[0]) for r in rows)


async def quarantine_summary(conn: Any) -> dict[str, Any]:
    """``quarantine_reasons`` and ``quarantine_oldest_at`` of the status snapshot."""
    reasons = await conn.fetch(
        "SELECT reason, count(*) FROM quarantine GROUP BY reason ORDER BY reason"
    )
    oldest = await conn.fetchval("SELECT extract(epoch FROM min(at))::float8 FROM quarantine")
    return {
        "quarantine_reasons": {codec.untext(r[0]): int(r[1]) for r in reasons},
        "quarantine_oldest_at": oldest,
    }


async def dead_letters(conn: Any) -> list[tuple[str, str, dict[str, Any]]]:
    rows = await conn.fetch("SELECT target, reason, body FROM dead_letter ORDER BY id")
    return [(r[0], codec.untext(r[1]), json.loads(r[2])) for r in rows]


async def requeue(
    conn: Any, lock_key: int, targets: Sequence[str], channel: str
) -> tuple[int, dict[str, int]]:
    """Queue the dead letters again (``refusals.requeue`` says which) and empty the table,
    holding the identities' locks. Returns (alerts queued, counts by outcome)."""
    rows = await conn.fetch("SELECT id, body FROM dead_letter ORDER BY id FOR UPDATE")
    owners = {o for r in rows if (o := refusals.owner(r[1])) is not None}
    await identity.lock(conn, lock_key, [codec.text(o) for o in owners])
    now: datetime = await conn.fetchval("SELECT clock_timestamp()")
    active = await identity.active_alerts(conn, [codec.text(o) for o in owners])
    bodies, counts = refusals.requeue(
        [r[1] for r in rows], lambda name: active.get(codec.text(name)), now
    )
    await queue.enqueue(conn, targets, [(now, body) for body in bodies], channel)
    await conn.execute("DELETE FROM dead_letter WHERE id = ANY($1::bigint[])", [r[0] for r in rows])
    return len(bodies), counts


async def snapshot(conn: Any, limit: int) -> dict[str, Any]:
    active = await conn.fetch(
        "SELECT identity, extract(epoch FROM ends_at)::float8, "
        "(state->'alert'->'labels')::text, extract(epoch FROM due_at)::float8, "
        "coalesce(jsonb_array_length(state->'tiers'), 0) FROM identity_state WHERE active "
        "ORDER BY identity LIMIT $1",
        limit,
    )
    dead = await conn.fetch(
        "SELECT extract(epoch FROM at)::float8, target, reason, body FROM dead_letter "
        "ORDER BY id DESC LIMIT $1",
        limit,
    )
    return {
        "active": [
            {
                "identity": codec.untext(i),
                "ends_at": e,
                "labels": codec.from_jsonb(labels),
                "tiers": tiers,  # escalation tiers firing beside it
                "next_step_at": due,  # when the next escalation step is due
            }
            for i, e, labels, due, tiers in active
        ],
        "dead_letters": [
            {
                "at": at,
                "alertmanager": target,
                "reason": codec.untext(reason),
                "labels": json.loads(body)["labels"],
            }
            for at, target, reason, body in dead
        ],
        "dead_letter_count": int(await conn.fetchval("SELECT count(*) FROM dead_letter")),
        "quarantined": int(await conn.fetchval("SELECT count(*) FROM quarantine")),
        **await quarantine_summary(conn),
    }

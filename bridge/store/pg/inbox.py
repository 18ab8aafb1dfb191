"""The inbox on PostgreSQL: accepted webhooks, in arrival order, one taker per identity.

``insert`` commits one group of accepts (the engine batches concurrent ``accept`` calls
into one transaction): the bodies' digests go into ``seen_body`` first, ``ON CONFLICT``
keeping the row of a body seen within the retention, so the same webhook sent to two
replicas at once makes one entry (the second insert waits on the first's unique-index
entry, then finds it). Digests are inserted sorted, so two groups never deadlock.

``claim`` runs in the transaction a ``Taken`` holds until ``complete`` or ``abandon``:

1. the head of the inbox (the oldest entries), by identity;
2. ``pg_try_advisory_xact_lock`` on each of those identities: the ones another taker holds
   are skipped, not waited for (a try never waits, so takers cannot deadlock, and one slow
   batch does not stall the others);
3. every entry of the identities now held, in id order, ``FOR UPDATE``.

Rows of an identity are claimed only under its lock, so while we hold it no one else has
any of them, and every earlier entry is gone (completed) or still here (abandoned, so
taken again first): an identity's entries are handed out in order, one taker at a time.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from typing import Any

from bridge.model import SentryAlert
from bridge.store.pg import codec

# How far past ``limit`` the head is read for identities: a head held by other takers
# should not leave this one idle while later identities wait.
HEAD = 4

_SEEN = """
WITH t AS (SELECT clock_timestamp() AS now)
INSERT INTO seen_body AS s (digest, seen_at)
SELECT d, t.now FROM unnest($1::bytea[]) AS d, t ORDER BY d
ON CONFLICT (digest) DO UPDATE SET seen_at = excluded.seen_at
    WHERE s.seen_at <= excluded.seen_at - make_interval(secs => $2)
RETURNING digest
"""

_INSERT = """
WITH added AS (
    INSERT INTO inbox (identity, alert)
    SELECT i, a FROM unnest($1::text[], $2::text[]) WITH ORDINALITY AS u (i, a, n) ORDER BY n
    RETURNING 1
)
SELECT pg_notify($3, ''), (SELECT count(*) FROM added)
"""

# Bounded by time and count (the newest max_bodies stay); one sweeper at a time.
_SWEEP = """
WITH t AS (SELECT clock_timestamp() AS now)
DELETE FROM seen_body
WHERE (SELECT pg_try_advisory_xact_lock($3, 0))  -- once, not per row
  AND (seen_at <= (SELECT now FROM t) - make_interval(secs => $1)
       OR id <= (SELECT max(id) FROM seen_body) - $2)
"""

_HEAD = """
WITH head AS MATERIALIZED (
    SELECT identity, min(id) AS first
    FROM (SELECT id, identity FROM inbox ORDER BY id LIMIT $2) AS h
    GROUP BY identity
)
SELECT identity FROM head WHERE pg_try_advisory_xact_lock($1, hashtext(identity))
ORDER BY first
"""

_CLAIM = """
SELECT id, accepted_at, alert FROM inbox
WHERE identity = ANY($1::text[])
ORDER BY id LIMIT $2
FOR UPDATE
"""


async def new_bodies(conn: Any, digests: Sequence[bytes], retention: float) -> set[bytes]:
    """Record ``digests``; the ones not seen within ``retention`` seconds."""
    if not digests:
        return set()
    rows = await conn.fetch(_SEEN, sorted(set(digests)), retention)
    return {bytes(row[0]) for row in rows}


async def insert(conn: Any, alerts: Sequence[SentryAlert], channel: str) -> None:
    """Add ``alerts`` in this order; the ``channel`` is notified at commit."""
    if not alerts:
        return
    identities = [codec.text(alert.identity) for alert in alerts]
    bodies = [codec.dumps(alert.to_json()) for alert in alerts]
    await conn.execute(_INSERT, identities, bodies, channel)


async def sweep(conn: Any, retention: float, max_bodies: int, lock: int) -> None:
    await conn.execute(_SWEEP, retention, max_bodies, lock)


async def claim(conn: Any, lock: int, limit: int) -> list[tuple[int, Any, SentryAlert | None]]:
    """In the caller's transaction: up to ``limit`` entries of identities this transaction
    now holds, in id order: (id, accepted_at, alert or None when unreadable)."""
    held = [row[0] for row in await conn.fetch(_HEAD, lock, limit * HEAD)]
    if not held:
        return []
    taken: list[tuple[int, Any, SentryAlert | None]] = []
    for row in await conn.fetch(_CLAIM, held, limit):
        try:
            alert: SentryAlert | None = SentryAlert.from_json(json.loads(row[2]))
        except (ValueError, TypeError, KeyError):
            alert = None
        taken.append((int(row[0]), row[1], alert))
    return taken

"""The inbox on PostgreSQL: accepted webhooks, in arrival order, one taker per identity.

``insert`` commits one group of accepts (the engine batches concurrent ``accept`` calls
into one transaction): the bodies' digests go into ``seen_body`` first, ``ON CONFLICT``
keeping the row of a body seen within the retention, so the same webhook sent to two
replicas at once makes one entry (the second insert waits on the first's unique-index
entry, then finds it). Digests are inserted sorted, so two groups never deadlock.

``claim`` runs in the transaction a ``Taken`` holds until ``complete`` or ``abandon``:

1. the head of the inbox (the oldest entries), by identity, earliest first;
2. ``pg_try_advisory_xact_lock`` on those identities, as many as ``limit`` entries need:
   the ones another taker holds are skipped, not waited for (a try never waits, so takers
   cannot deadlock, and one slow batch does not stall the others); a head held entirely
   by others is read further back;
3. the entries of the identities now held, in id order, ``FOR UPDATE``.

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
SELECT identity, count(*) FROM (SELECT id, identity FROM inbox ORDER BY id LIMIT $1) AS h
GROUP BY identity ORDER BY min(id)
"""

# A try never waits: takers cannot deadlock, and one slow batch does not stall the others.
_TRY = "SELECT i FROM unnest($2::text[]) AS i WHERE pg_try_advisory_xact_lock($1, hashtext(i))"

_CLAIM = """
SELECT id, accepted_at, alert FROM inbox
WHERE identity = ANY($1::text[])
ORDER BY id LIMIT $2
FOR UPDATE
"""


async def _lock_head(
    conn: Any, lock: int, head: Sequence[tuple[str, int]], limit: int
) -> list[str]:
    """Try the head's identities, earliest first, until those held cover ``limit``
    entries. Only identities whose first entry falls within ``limit`` of the ones held
    are tried, so each one locked gets at least one entry (no lock is held for nothing:
    an xact lock cannot be given back before the transaction ends)."""
    held: list[str] = []
    covered = start = 0
    while start < len(head) and covered < limit:
        batch, reach = [], covered
        while start < len(head) and reach < limit:
            batch.append(head[start])
            reach += head[start][1]
            start += 1
        got = {row[0] for row in await conn.fetch(_TRY, lock, [i for i, _ in batch])}
        for identity, entries in batch:
            if identity in got:
                held.append(identity)
                covered += entries
    return held


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
    window = limit * HEAD
    while True:
        head = [(row[0], int(row[1])) for row in await conn.fetch(_HEAD, window)]
        held = await _lock_head(conn, lock, head, limit)
        if held or sum(n for _, n in head) < window:
            break
        window *= 4  # the head is all held by other takers: look further back
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

"""The inbox on PostgreSQL: accepted webhooks, in arrival order, one taker per identity.

``insert`` adds one group of accepts (the engine batches concurrent ``accept`` calls
into one transaction), once ``bridge.store.bodies`` has dropped the bodies already seen.

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
from bridge.store.pg import codec, sql

# How far past ``limit`` the head is read for identities: a head held by other takers
# should not leave this one idle while later identities wait.
HEAD = 4


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
        got = {row[0] for row in await conn.fetch(sql.TRY_IDENTITIES, lock, [i for i, _ in batch])}
        for identity, entries in batch:
            if identity in got:
                held.append(identity)
                covered += entries
    return held


async def insert(conn: Any, alerts: Sequence[SentryAlert], channel: str) -> None:
    """Add ``alerts`` in this order; the ``channel`` is notified at commit."""
    if not alerts:
        return
    identities = [codec.text(alert.identity) for alert in alerts]
    bodies = [codec.dumps(alert.to_json()) for alert in alerts]
    await conn.execute(sql.INSERT_INBOX, identities, bodies, channel)


async def claim(conn: Any, lock: int, limit: int) -> list[tuple[int, Any, SentryAlert | None]]:
    """In the caller's transaction: up to ``limit`` entries of identities this transaction
    now holds, in id order: (id, accepted_at, alert or None when unreadable)."""
    window = limit * HEAD
    while True:
        head = [(row[0], int(row[1])) for row in await conn.fetch(sql.INBOX_HEAD, window)]
        held = await _lock_head(conn, lock, head, limit)
        if held or sum(n for _, n in head) < window:
            break
        window *= 4  # the head is all held by other takers: look further back
    if not held:
        return []
    taken: list[tuple[int, Any, SentryAlert | None]] = []
    for row in await conn.fetch(sql.CLAIM_INBOX, held, limit):
        try:
            alert: SentryAlert | None = SentryAlert.from_json(json.loads(row[2]))
        except (ValueError, TypeError, KeyError):
            alert = None
        taken.append((int(row[0]), row[1], alert))
    return taken

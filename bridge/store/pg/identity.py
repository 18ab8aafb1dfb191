"""The identities' states on PostgreSQL: one ``identity_state`` row per Sentry identity.

The row holds ``IdentityState.to_json()`` as jsonb; its alert is the one Alertmanager
holds firing while ``active`` is true (one copy: re-sends and the status page read it
there). Every read-modify-write of a state runs under the identity's transaction-scoped
advisory lock (``pg_advisory_xact_lock(schema key, hashtext(identity))``): ``take`` tries
it, and the operators' paths (``lock``) wait for it, in the order of the keys, so two of
them never deadlock and none can overwrite a decision with a state read before it.

Identities are stored through ``codec.text`` (a NUL cannot be in PostgreSQL text); the
callers pass and get them stored that way.
"""

from __future__ import annotations

from collections.abc import Collection, Mapping
from datetime import datetime
from typing import Any

from bridge.state import IdentityState
from bridge.store.pg import codec

# Locks are taken in the order of their keys (the hashes), the same in every transaction;
# unnest keeps the array's order.
_KEYS = "SELECT DISTINCT hashtext(i) AS h FROM unnest($1::text[]) AS i ORDER BY h"
_LOCK = "SELECT pg_advisory_xact_lock($1, h) FROM unnest($2::int4[]) AS h"

_READ = "SELECT identity, state::text FROM identity_state WHERE identity = ANY($1::text[])"

_UPSERT = """
INSERT INTO identity_state AS s (identity, kept_until, active, ends_at, state)
SELECT * FROM unnest($1::text[], $2::timestamptz[], $3::boolean[], $4::timestamptz[],
                     $5::jsonb[])
ON CONFLICT (identity) DO UPDATE
    SET kept_until = excluded.kept_until, active = excluded.active,
        ends_at = excluded.ends_at, state = excluded.state
"""

_FORGET = "DELETE FROM identity_state WHERE identity = ANY($1::text[])"

_ACTIVE = """
SELECT identity, (state->'alert')::text FROM identity_state
WHERE identity = ANY($1::text[]) AND active
"""

# Store.issues: byte order (COLLATE "C"), whatever the database's collation.
_ISSUES = """
SELECT identity, state::text FROM identity_state
WHERE identity LIKE 'issue:%' AND identity COLLATE "C" > $1
ORDER BY identity COLLATE "C" LIMIT $2
"""

# An active alert whose endsAt passed has expired in Alertmanager too; a state is kept
# until its kept_until (IdentityState.kept_until).
_ENDED = "UPDATE identity_state SET active = false WHERE active AND ends_at <= $1"
_FORGOTTEN = "DELETE FROM identity_state WHERE kept_until <= $1"


async def lock(conn: Any, key: int, identities: Collection[str]) -> None:
    """Wait for every identity's lock, in sorted order (the caller's transaction)."""
    if identities:
        keys = [row[0] for row in await conn.fetch(_KEYS, list(identities))]
        await conn.execute(_LOCK, key, keys)


async def read(conn: Any, identities: Collection[str]) -> dict[str, IdentityState]:
    rows = await conn.fetch(_READ, list(identities))
    return {row[0]: IdentityState.from_json(codec.from_jsonb(row[1])) for row in rows}


async def write(
    conn: Any, states: Mapping[str, tuple[IdentityState, datetime | None]]
) -> tuple[int, int]:
    """Write (or, for ``None``, forget) each state; returns (identities now active, ones
    written inactive or forgotten), for the caller's counts."""
    forget = [identity for identity, (_, until) in states.items() if until is None]
    kept = [(identity, state, until) for identity, (state, until) in states.items() if until]
    if forget:
        await conn.execute(_FORGET, forget)
    if kept:
        await conn.execute(
            _UPSERT,
            [identity for identity, _, _ in kept],
            [until for _, _, until in kept],
            [state.alert is not None for _, state, _ in kept],
            [state.alert.ends_at if state.alert else None for _, state, _ in kept],
            [codec.to_jsonb(state.to_json()) for _, state, _ in kept],
        )
    active = sum(1 for _, state, _ in kept if state.alert is not None)
    return active, len(states) - active


async def issues(conn: Any, after: str | None, limit: int) -> list[tuple[str, IdentityState]]:
    rows = await conn.fetch(_ISSUES, after or "", limit)
    return [(row[0], IdentityState.from_json(codec.from_jsonb(row[1]))) for row in rows]


async def active_alerts(conn: Any, identities: Collection[str]) -> dict[str, str]:
    """The active alert (wire JSON) of each of these identities that has one."""
    rows = await conn.fetch(_ACTIVE, list(identities))
    return {row[0]: codec.wire_from_jsonb(row[1]) for row in rows}


async def expire(conn: Any, now: datetime) -> int:
    """Active alerts ended by ``now`` (the database's); forgets states kept until then."""
    ended = await conn.execute(_ENDED, now)
    await conn.execute(_FORGOTTEN, now)
    return int(ended.split()[-1])

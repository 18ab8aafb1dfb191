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

from collections.abc import Collection
from datetime import datetime
from typing import Any

from bridge.state import IdentityState
from bridge.store.pg import codec, sql
from bridge.store.views import Expiry
from bridge.store.writes import Writes


async def lock(conn: Any, key: int, identities: Collection[str]) -> None:
    """Wait for every identity's lock, in sorted order (the caller's transaction)."""
    if identities:
        keys = [row[0] for row in await conn.fetch(sql.LOCK_KEYS, list(identities))]
        await conn.execute(sql.LOCK_IDENTITIES, key, keys)


async def read(conn: Any, identities: Collection[str]) -> dict[str, IdentityState]:
    rows = await conn.fetch(sql.STATES, list(identities))
    return {row[0]: IdentityState.from_json(codec.from_jsonb(row[1])) for row in rows}


async def write(conn: Any, writes: Writes) -> None:
    """Writes the states of ``writes`` and forgets the forgotten ones."""
    if writes.forgotten:
        await conn.execute(sql.FORGET_STATES, [codec.text(name) for name in writes.forgotten])
    if rows := writes.states:
        await conn.execute(
            sql.UPSERT_STATES,
            [codec.text(row.identity) for row in rows],
            [row.kept_until for row in rows],
            [row.alert is not None for row in rows],
            [row.ends_at for row in rows],
            [codec.to_jsonb(row.state.to_json()) for row in rows],
            [row.due_at for row in rows],
        )


async def issues(conn: Any, after: str | None, limit: int) -> list[tuple[str, IdentityState]]:
    rows = await conn.fetch(sql.ISSUES, after or "", limit)
    return [(row[0], IdentityState.from_json(codec.from_jsonb(row[1]))) for row in rows]


async def active_alerts(conn: Any, identities: Collection[str]) -> dict[str, str]:
    """The active alert (wire JSON) of each of these identities that has one."""
    rows = await conn.fetch(sql.ACTIVE_ALERTS_OF, list(identities))
    return {row[0]: codec.wire_from_jsonb(row[1]) for row in rows}


async def due(conn: Any, limit: int) -> list[tuple[str, datetime]]:
    """Identities whose next escalation step is due by the database's clock."""
    return [(codec.untext(row[0]), row[1]) for row in await conn.fetch(sql.DUE, limit)]


async def expire(conn: Any, expiry: Expiry) -> None:
    await conn.execute(sql.END_EXPIRED, expiry.now)
    await conn.execute(sql.FORGET_KEPT_UNTIL, expiry.now)

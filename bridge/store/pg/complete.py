"""``complete`` on PostgreSQL: executes what one batch of decisions writes
(``bridge.store.writes.plan``), in the transaction its ``take`` opened (so still holding the
identities' locks)."""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime
from typing import Any

from bridge.store import writes
from bridge.store.contract import Failed, Processed, Taken
from bridge.store.pg import identity, operators, queue, sql


async def write(
    conn: Any,
    taken: Taken,
    results: Sequence[Processed],
    failed: Sequence[Failed],
    *,
    targets: Sequence[str],
    channel: str,
    inbox_channel: str,
    quarantine_kept: int,
) -> writes.Writes:
    """Executes the batch's plan; returns it."""
    # The resolves' endsAt is the decision's time (Taken.now) or earlier: this clock, read
    # now, tells a resolve from a firing alert as the database sees it.
    now: datetime = await conn.fetchval(sql.NOW)
    plan = writes.plan(taken, results, failed, now)
    # Takers of other replicas that found these identities held look again at the commit.
    await conn.execute(sql.INBOX_DONE, list(plan.done), inbox_channel)
    await queue.enqueue(conn, targets, plan.posts, channel)
    await queue.resend(conn, plan)
    await identity.write(conn, plan)
    if plan.quarantined:
        await operators.quarantine(conn, plan.quarantined, quarantine_kept)
    return plan

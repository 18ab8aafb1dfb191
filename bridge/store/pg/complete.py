"""``complete`` on PostgreSQL: what one batch of decisions writes, in the transaction its
``take`` opened (so still holding the identities' locks): the entries leave the inbox, the
posts are queued for every Alertmanager, the resolved label sets' re-sends start or end,
the identities' states are written, the failed entries go to quarantine."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from bridge.alertmanager import PostableAlert, wire_json
from bridge.state import IdentityState
from bridge.store.contract import Failed, Processed, Taken
from bridge.store.pg import codec, identity, operators, queue

_DONE = """
WITH gone AS (DELETE FROM inbox WHERE id = ANY($1::bigint[]) RETURNING 1)
SELECT pg_notify($2, '') FROM (SELECT count(*) FROM gone) AS g
"""


@dataclass(frozen=True, slots=True)
class Written:
    """What changed, for the engine's sizes."""

    done: int  # inbox entries gone
    queued: int  # posts queued, per Alertmanager
    active: int  # more active alerts (an estimate from the states taken)
    resolved: int  # more resolved label sets
    quarantined: int


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
) -> Written:
    done = [r.inbox_id for r in results] + [f.inbox_id for f in failed]
    # Takers of other replicas that found these identities held look again at the commit.
    await conn.execute(_DONE, done, inbox_channel)
    # The resolves' endsAt is the decision's time (Taken.now) or earlier: this clock, read
    # now, tells a resolve from a firing alert as the database sees it.
    now: datetime = await conn.fetchval("SELECT clock_timestamp()")
    bodies: dict[int, str] = {}  # by id(): an alert is often both sent and kept

    def body(alert: PostableAlert) -> str:
        if id(alert) not in bodies:
            bodies[id(alert)] = wire_json(alert)
        return bodies[id(alert)]

    # Ages count from acceptance, so max_age covers the time spent in the pipeline too.
    accepted = {entry.inbox_id: entry.accepted_at for entry in taken.entries}
    sends = [(accepted.get(r.inbox_id, now), body(a)) for r in results for a in r.send]
    await queue.enqueue(conn, targets, sends, channel)
    # Re-sends of resolved label sets: a resolve starts them, firing again ends them; the
    # last decision for a label set counts.
    changes: dict[str, tuple[datetime, str] | None] = {}
    for result in results:
        for alert in result.send:
            key = queue.label_key(alert.labels)
            changes.pop(key, None)
            ending = alert.ends_at is not None and alert.ends_at <= now
            changes[key] = (now, body(alert)) if ending else None
    resolved = await queue.resolve(conn, changes)
    states: dict[str, tuple[IdentityState, datetime | None]] = {}
    for result in results:
        for raw, kept in result.states.items():
            states[codec.text(raw)] = kept
    await identity.write(conn, states)
    if failed:
        rows = [
            ("pipeline_error", f.reason[:1000], "{}", b"", codec.dumps(f.alert.to_json()))
            for f in failed
        ]
        await operators.quarantine(conn, rows, quarantine_kept)
    before = sum(1 for s in taken.states.values() if s.alert is not None)
    after = sum(1 for s, until in states.values() if until and s.alert is not None)
    return Written(len(done), len(sends), after - before, resolved, len(failed))

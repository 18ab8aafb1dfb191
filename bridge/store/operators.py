"""What a batch writes besides its inbox entries (``complete``), and what operators change
and see: dead letters and their requeue, the quarantine, the status page's snapshot, the
sizes and expiry (``bridge.store.views`` says what it removes), on both engines. Steps
(``bridge.store.steps``), each in its caller's transaction where it writes. ``requeue``,
which reads identities' alerts to queue them, first waits for their locks
(``identity.lock``), so it never acts on a state a decision in flight is replacing.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Sequence
from datetime import datetime
from typing import Any

from bridge.store import identity, queue, refusals, views
from bridge.store.contract import Quarantined, Sizes
from bridge.store.steps import NOW, Dialect, Step, many, row, rows, run, value
from bridge.store.writes import Post, QuarantineRow, Writes

log = logging.getLogger("bridge.store")


def complete(d: Dialect, planned: Writes, targets: Sequence[str], kept: int) -> Step[None]:
    """Executes what a batch of decisions writes (``bridge.store.writes.plan``) but its
    inbox entries, which each engine deletes its own way."""
    yield from queue.enqueue(d, targets, planned.posts)
    yield from queue.resend(d, planned)
    yield from identity.write(d, planned)
    if planned.quarantined:
        yield from quarantine(d, planned.quarantined, kept, planned.resolved_at)


def expire(d: Dialect, resolved_for: float) -> Step[None]:
    """Forget active alerts whose endsAt passed (Alertmanager has expired them too) and
    resolved ones re-sent for ``resolved_for`` seconds."""
    expiry = views.expiry((yield NOW), resolved_for)
    yield from identity.expire(d, expiry)
    yield from queue.expire_resolved(d, expiry.resolved_before)


def sizes(d: Dialect, targets: Sequence[str]) -> Step[Sizes]:
    """What the store holds (on PostgreSQL: every replica's work)."""
    # PostgreSQL reads its clock in the same statement (one round trip: the bound on
    # accept reads this often); SQLite's is the engine's.
    at, inbox, active, resolved, quarantined, oldest = yield row("SIZES")
    at = at if at is not None else (yield NOW).timestamp()
    queued = dict.fromkeys(targets, 0)
    for target, count in (yield rows("QUEUED")):
        if target in queued:  # not an Alertmanager this replica was configured with
            queued[target] = int(count)
    return Sizes(
        float(at), int(inbox), queued, int(active), int(resolved), int(quarantined), oldest
    )


def quarantine(
    d: Dialect, entries: Sequence[QuarantineRow], kept: int, at: datetime | None = None
) -> Step[None]:
    """Keep ``entries``, at ``at`` (None: now); the newest ``kept`` stay."""
    stamp = d.time(at or (yield NOW))
    yield many(
        "QUARANTINE",
        [(stamp, d.text(why), d.text(detail), *rest) for why, detail, *rest in entries],
    )
    if dropped := (yield run("TRIM_QUARANTINE", kept)):
        log.error("quarantine full: oldest entries dropped", extra={"dropped": dropped})


def quarantined(
    d: Dialect, entry_id: int | None, after: int, limit: int
) -> Step[list[Quarantined]]:
    if entry_id is not None:
        got = yield rows("QUARANTINED_ONE", entry_id)
    else:
        got = yield rows("QUARANTINED_PAGE", after, limit)
    return [
        Quarantined(
            int(entry_id),
            float(at),
            d.untext(why),
            d.untext(detail),
            json.loads(headers),
            bytes(body),
            None if alert is None else json.loads(alert),
        )
        for entry_id, at, why, detail, headers, body, alert in got
    ]


def release(entry_id: int) -> Step[bool]:
    """Removes a quarantined entry: whether it was there."""
    return bool((yield run("RELEASE", entry_id)))


def discard(d: Dialect, ids: Sequence[int] | None) -> Step[list[int]]:
    """Removes these quarantined entries (None: all): the ids that were there, in order."""
    if ids is None:
        got = yield rows("DISCARD_ALL")
    else:
        got = yield rows("DISCARD", d.array(ids))
    return sorted(int(r[0]) for r in got)


def snapshot(d: Dialect, limit: int) -> Step[dict[str, Any]]:
    """``Store.snapshot``: the first ``limit`` active alerts (with when the next escalation
    step is due, how many escalation tiers fire beside it, whether Sentry's API last said
    the issue escalates: ``bridge.state.describe_reconciler``), the newest ``limit`` dead
    letters, how many there are, the quarantine's count per reason and its oldest entry's
    time (epoch seconds)."""
    active = yield rows("ACTIVE_ALERTS", limit)
    dead = yield rows("NEWEST_DEAD_LETTERS", limit)
    reasons = {d.untext(why): int(n) for why, n in (yield rows("QUARANTINE_REASONS"))}
    return {
        "active": [
            {
                "identity": d.untext(name),
                "ends_at": ends_at,
                "labels": dict(d.loads(labels)),
                "tiers": tiers or 0,
                "next_step_at": due_at,
                "sentry_escalating": bool(escalating),
            }
            for name, ends_at, labels, due_at, tiers, escalating in active
        ],
        "dead_letters": [
            {
                "at": at,
                "alertmanager": target,
                "reason": d.untext(why),
                "labels": json.loads(body)["labels"],
            }
            for at, target, why, body in dead
        ],
        "dead_letter_count": int((yield value("COUNT_DEAD_LETTERS"))),
        "quarantined": sum(reasons.values()),
        "quarantine_reasons": reasons,
        "quarantine_oldest_at": (yield value("QUARANTINE_OLDEST")),
    }


def requeue(d: Dialect, targets: Sequence[str]) -> Step[tuple[int, dict[str, int]]]:
    """Queue the dead letters again for every Alertmanager (``refusals.requeue`` says
    which) and empty the table, holding the identities' locks: how many were queued, and
    the counts by outcome."""
    dead = yield rows("LOCK_DEAD_LETTERS")
    owners = [d.text(o) for o in refusals.owners(body for _, body in dead)]
    yield from identity.lock(d, owners)
    now: datetime = yield NOW
    active = yield from identity.active_alerts(d, owners)
    bodies, counts = refusals.requeue(
        [body for _, body in dead], lambda name: active.get(d.text(name)), now
    )
    yield from queue.enqueue(d, targets, [Post(now, body) for body in bodies])
    yield run("DELETE_DEAD_LETTERS", d.array(r[0] for r in dead))
    return len(bodies), counts

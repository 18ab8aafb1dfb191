"""Per Sentry identity, on both engines: the state machine's state rows, with the active
alert's flag, endsAt and next escalation step beside the state, and its wire JSON and its
tiers' (what re-sends post, read as stored text, not out of the state's JSON: issue 15).
Steps (``bridge.store.steps``).

On PostgreSQL every read-modify-write of a state runs under the identity's
transaction-scoped advisory lock (``pg_advisory_xact_lock(schema key, hashtext(identity))``):
``take`` tries it, and the operators' paths (``lock``) wait for it, in the order of the
keys, so two of them never deadlock and none can overwrite a decision with a state read
before it. SQLite has one writer and no locks.
"""

from __future__ import annotations

from collections.abc import Collection
from datetime import datetime

from bridge.alertmanager import wire_json
from bridge.state import IdentityState
from bridge.store import writes
from bridge.store.steps import NOW, Dialect, Step, many, rows, run
from bridge.store.views import Expiry
from bridge.store.writes import Writes


def lock(d: Dialect, identities: Collection[str]) -> Step[None]:
    """Wait for every identity's lock (stored names), in sorted key order."""
    if d.lock_key is not None and identities:
        keys = [r[0] for r in (yield rows("LOCK_KEYS", d.array(identities)))]
        yield run("LOCK_IDENTITIES", d.lock_key, keys)


def read(d: Dialect, identities: Collection[str]) -> Step[dict[str, IdentityState]]:
    """The state of every identity (stored names) that has one, by stored name."""
    got = yield rows("STATES", d.array(identities))
    return {name: IdentityState.from_json(d.loads(state)) for name, state in got}


def of_taken(
    d: Dialect, identities: Collection[str]
) -> Step[tuple[dict[str, IdentityState], datetime]]:
    """What a take hands out beside its entries: the state of each identity taken that has
    one (by its name as taken), and the store's clock, which the batch decides by."""
    stored = {name: d.text(name) for name in identities}
    states = yield from read(d, set(stored.values()))
    now: datetime = yield NOW
    return {name: states[key] for name, key in stored.items() if key in states}, now


def write(d: Dialect, planned: Writes) -> Step[None]:
    """Writes the states of ``planned`` and forgets the forgotten ones."""
    if planned.forgotten:
        yield many("FORGET_STATE", [(d.text(name),) for name in planned.forgotten])
    yield many(
        "UPSERT_STATE",
        [
            (
                d.text(row.identity),
                d.time(row.kept_until),
                row.alert is not None,
                None if row.ends_at is None else d.time(row.ends_at),
                d.dumps(row.state.to_json()),
                None if row.due_at is None else d.time(row.due_at),
                row.alert,
                row.tiers,
            )
            for row in planned.states
        ],
    )


def issues(d: Dialect, after: str | None, limit: int) -> Step[list[tuple[str, IdentityState]]]:
    """``Store.issues``: the ``issue:<id>`` identities after ``after``, in byte order."""
    got = yield rows("ISSUES", after or "", limit)
    return [(d.untext(name), IdentityState.from_json(d.loads(state))) for name, state in got]


def active_alerts(d: Dialect, identities: Collection[str]) -> Step[dict[str, str]]:
    """The active alert (wire JSON) of each of these identities (stored names) that has
    one, by stored name."""
    got = yield rows("ACTIVE_ALERTS_OF", d.array(identities))
    return dict(got)


# Rows per statement of ``fill_alerts``.
FILL_PAGE = 1000


def fill_alerts(d: Dialect) -> Step[int]:
    """At open: the active states written before their alert had a column of its own
    (SQLite schema version 3, PostgreSQL migration 3) gain it, with their tiers', encoded
    from the state as a batch would have written them. How many; 0 once done."""
    filled, after = 0, ""
    while got := (yield rows("UNFILLED", after, FILL_PAGE)):
        fills = []
        for name, state in got:
            held = IdentityState.from_json(d.loads(state))
            alert = None if held.alert is None else wire_json(held.alert)
            tiers = writes.tier_lines(wire_json(t) for t in held.tiers) if alert else None
            fills.append((alert, tiers, name))
        yield many("FILL", fills)
        filled, after = filled + len(fills), got[-1][0]
    return filled


def due(d: Dialect, limit: int) -> Step[list[tuple[str, datetime]]]:
    """Identities whose next escalation step is due by the store's clock, the most
    overdue first."""
    now = yield NOW
    got = yield rows("DUE", d.time(now), limit)
    return [(d.untext(name), d.when(at)) for name, at in got]


def expire(d: Dialect, expiry: Expiry) -> Step[None]:
    """Active alerts whose endsAt passed end; states past ``kept_until`` go."""
    yield run("END_EXPIRED", d.time(expiry.now))
    yield run("FORGET_KEPT_UNTIL", d.time(expiry.now))

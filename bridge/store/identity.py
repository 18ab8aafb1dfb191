"""Per Sentry identity, on both engines: the state machine's state rows, with the active
alert's flag, endsAt and next escalation step beside the state (the state's ``alert`` is
the one copy: re-sends and the status page read it there). Steps (``bridge.store.steps``).

On PostgreSQL every read-modify-write of a state runs under the identity's
transaction-scoped advisory lock (``pg_advisory_xact_lock(schema key, hashtext(identity))``):
``take`` tries it, and the operators' paths (``lock``) wait for it, in the order of the
keys, so two of them never deadlock and none can overwrite a decision with a state read
before it. SQLite has one writer and no locks.
"""

from __future__ import annotations

from collections.abc import Collection
from datetime import datetime

from bridge.state import IdentityState
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


def write(d: Dialect, writes: Writes) -> Step[None]:
    """Writes the states of ``writes`` and forgets the forgotten ones."""
    if writes.forgotten:
        yield many("FORGET_STATE", [(d.text(name),) for name in writes.forgotten])
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
            )
            for row in writes.states
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
    return {name: d.wire(alert) for name, alert in got}


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

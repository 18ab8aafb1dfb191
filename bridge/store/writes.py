"""What one batch of decisions writes, as a plain value: the batch rules written once.

``plan(taken, results, failed, now)`` is pure: from what ``take`` handed out, the
pipeline's decisions (``Processed``, ``Failed``) and the store's clock, it says every write
``complete`` makes in its one transaction. Each engine only executes a ``Writes`` in its own
dialect (``operators.complete``), so the rules below cannot drift apart
between them (issue 15):

* the taken entries leave the inbox, decided or failed;
* every post is queued for every Alertmanager in the order decided, aged from the
  webhook's acceptance (so ``max_age`` covers the time spent in the pipeline too);
* a resolve starts its label set's re-sends, firing again ends them; the last decision
  for a label set counts;
* the last state written for an identity counts: kept until its ``kept_until``, or
  forgotten (``None``); its ``alert`` is the one Alertmanager holds firing (one copy);
* a failed entry goes to quarantine with the pipeline's reason and its normalised alert.
"""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime

from bridge.alertmanager import PostableAlert, wire_json
from bridge.state import IdentityState
from bridge.store.contract import Failed, Processed, Taken

# A quarantine row: reason, detail, headers (JSON), raw body, the alert (JSON) if any.
QuarantineRow = tuple[str, str, str, bytes, str | None]
DETAIL_KEPT = 1000  # characters of a reason kept


@dataclass(frozen=True, slots=True)
class Post:
    """One post queued for every Alertmanager."""

    queued_at: datetime  # when its webhook was accepted
    body: str  # wire JSON, posted as is


@dataclass(frozen=True, slots=True)
class StateRow:
    """One identity's state as written."""

    identity: str
    state: IdentityState
    kept_until: datetime
    alert: str | None  # the active alert's wire JSON (None: nothing fires)
    ends_at: datetime | None  # its endsAt
    due_at: datetime | None  # its next escalation step (``Store.due``), while it fires


@dataclass(frozen=True, slots=True)
class Writes:
    done: tuple[int, ...]  # inbox ids that leave the inbox
    posts: tuple[Post, ...]  # in order
    resends_started: tuple[tuple[str, str], ...]  # (label key, the resolve's wire JSON)
    resends_ended: tuple[str, ...]  # label keys fired again
    states: tuple[StateRow, ...]
    forgotten: tuple[str, ...]  # identities whose state goes
    quarantined: tuple[QuarantineRow, ...]
    resolved_at: datetime  # when the started re-sends count from (``now``)


def label_key(labels: Mapping[str, str]) -> str:
    """A label set as a stable string: the identity Alertmanager gives an alert."""
    return json.dumps(sorted(labels.items()), separators=(",", ":"))


def webhook_row(reason: str, detail: str, headers: Mapping[str, str], body: bytes) -> QuarantineRow:
    """A webhook quarantined at the edge as quarantine keeps it: its raw body, no alert."""
    return (reason, detail[:DETAIL_KEPT], json.dumps(dict(headers)), body, None)


def quarantine_row(failed: Failed) -> QuarantineRow:
    """A failed entry as quarantine keeps it: the normalised alert, no raw body."""
    alert = json.dumps(failed.alert.to_json(), separators=(",", ":"))
    return ("pipeline_error", failed.reason[:DETAIL_KEPT], "{}", b"", alert)


def plan(
    taken: Taken, results: Sequence[Processed], failed: Sequence[Failed], now: datetime
) -> Writes:
    """Every write of one batch (the module's rules). ``now`` tells a resolve (endsAt at
    or before it) from a firing alert."""
    handed = sorted(e.inbox_id for e in taken.entries)
    if sorted([*(r.inbox_id for r in results), *(f.inbox_id for f in failed)]) != handed:
        raise ValueError("complete() needs every taken entry in results or failed, once")
    bodies: dict[int, str] = {}  # by id(): the firing alert is usually both sent and kept

    def body(alert: PostableAlert) -> str:
        if id(alert) not in bodies:
            bodies[id(alert)] = wire_json(alert)
        return bodies[id(alert)]

    accepted = {e.inbox_id: e.accepted_at for e in taken.entries}
    posts = tuple(Post(accepted[r.inbox_id], body(a)) for r in results for a in r.send)
    resends: dict[str, str | None] = {}
    for result in results:
        for alert in result.send:
            key = label_key(alert.labels)
            resends.pop(key, None)  # the last decision's place
            resolve = alert.ends_at is not None and alert.ends_at <= now
            resends[key] = body(alert) if resolve else None
    decided: dict[str, tuple[IdentityState, datetime | None]] = {}
    for result in results:
        decided.update(result.states)
    rows: list[StateRow] = []
    for identity, (state, until) in decided.items():
        if until is None:
            continue
        firing = state.alert
        body_of = body(firing) if firing is not None else None
        ends_at = firing.ends_at if firing is not None else None
        due_at = state.due_at if firing is not None else None
        rows.append(StateRow(identity, state, until, body_of, ends_at, due_at))
    forgotten = tuple(identity for identity, (_, until) in decided.items() if until is None)
    return Writes(
        done=tuple(handed),
        posts=posts,
        resends_started=tuple((k, b) for k, b in resends.items() if b is not None),
        resends_ended=tuple(k for k, b in resends.items() if b is None),
        states=tuple(rows),
        forgotten=forgotten,
        quarantined=tuple(quarantine_row(f) for f in failed),
        resolved_at=now,
    )

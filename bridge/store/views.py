"""What operators and re-sends see of a store and what its expiry removes: rules both
engines share, as ``writes`` is for a batch. An engine reads the rows (its own queries,
``sqlite/sql.py``, ``pg/sql.py``) and these say what they mean, so ``sentry-bridge status``,
``quarantine list`` and a re-send round read the same whichever engine runs."""

from __future__ import annotations

import json
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

from bridge.store.contract import Page, Quarantined


@dataclass(frozen=True, slots=True)
class Expiry:
    """What ``Store.expire`` removes at ``now`` (the store's clock)."""

    # Active alerts whose endsAt is at or before it end (Alertmanager has expired them
    # too), and states kept until it are forgotten (``IdentityState.kept_until``).
    now: datetime
    resolved_before: datetime  # resolves re-sent since before it are re-sent no more


def expiry(now: datetime, resolved_for: float) -> Expiry:
    return Expiry(now, now - timedelta(seconds=resolved_for))


# A quarantine row as both engines read it: id, at (epoch seconds), reason, detail,
# headers (JSON), body, the normalised alert (JSON) or None.
QuarantineRead = tuple[int, float, str, str, str, bytes, str | None]


def quarantined(rows: Iterable[QuarantineRead]) -> list[Quarantined]:
    return [
        Quarantined(
            int(entry_id),
            float(at),
            reason,
            detail,
            json.loads(headers),
            bytes(body),
            json.loads(alert) if alert is not None else None,
        )
        for entry_id, at, reason, detail, headers, body, alert in rows
    ]


def snapshot(
    active: Sequence[tuple[str, float | None, Mapping[str, str], float | None, int, bool]],
    dead: Sequence[tuple[float, str, str, str]],
    dead_count: int,
    reasons: Mapping[str, int],
    oldest: float | None,
) -> dict[str, Any]:
    """``Store.snapshot``: ``active`` (identity, endsAt, labels, when its next escalation
    step is due, how many escalation tiers fire beside it, whether Sentry's API last said
    the issue escalates: ``bridge.state.describe_reconciler``), the newest ``dead`` letters
    (at, Alertmanager, reason, wire JSON), how many dead letters there are, the quarantine's
    count per reason and its oldest entry's time (epoch seconds)."""
    return {
        "active": [
            {
                "identity": identity,
                "ends_at": ends_at,
                "labels": dict(labels),
                "tiers": tiers,
                "next_step_at": due_at,
                "sentry_escalating": escalating,
            }
            for identity, ends_at, labels, due_at, tiers, escalating in active
        ],
        "dead_letters": [
            {
                "at": at,
                "alertmanager": target,
                "reason": reason,
                "labels": json.loads(body)["labels"],
            }
            for at, target, reason, body in dead
        ],
        "dead_letter_count": dead_count,
        "quarantined": sum(reasons.values()),
        "quarantine_reasons": dict(reasons),
        "quarantine_oldest_at": oldest,
    }


# Re-sends page through two tables, in this order: the recently resolved alerts (by their
# row's key), then the active ones (by identity); the key before each one's first row.
RESEND_FIRST: tuple[Any, ...] = (0, "")
# A row as an engine reads it: its key, the alert's wire JSON, and for an active one its
# escalation tiers' alerts (a JSON list; bridge.state: they end with it) or None.
ResendRow = tuple[Any, str, str | None]


class ResendPager:
    """One page of ``Lane.resend_page`` from ``after`` (None: the start), as a loop its
    engine drives: ``read()`` says what to read next (table, key after, at most how many
    rows) and ``got(rows)`` returns the page once done, else None. One row more than fits
    is read, to know whether there is a next page."""

    def __init__(self, after: Any, limit: int) -> None:
        start: tuple[int, Any] = after or (0, RESEND_FIRST[0])
        self.table, self.key = start
        self.limit = limit
        self.bodies: list[str] = []

    def read(self) -> tuple[int, Any, int]:
        return self.table, self.key, self.limit - len(self.bodies) + 1

    def got(self, rows: Sequence[ResendRow]) -> Page | None:
        room = self.limit - len(self.bodies)
        if len(rows) > room:  # more in this table than fits
            if room:
                self._add(rows[:room])
                self.key = rows[room - 1][0]
            return Page(self.bodies, (self.table, self.key))
        self._add(rows)
        self.table += 1
        if self.table == len(RESEND_FIRST):
            return Page(self.bodies, None)
        self.key = RESEND_FIRST[self.table]
        return None

    def _add(self, rows: Sequence[ResendRow]) -> None:
        """Each row's alert, then its tiers': a page may hold more bodies than its limit."""
        for _, alert, tiers in rows:
            self.bodies.append(alert)
            if tiers and tiers != "[]":
                self.bodies += [json.dumps(t, separators=(",", ":")) for t in json.loads(tiers)]

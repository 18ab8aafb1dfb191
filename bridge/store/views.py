"""What re-sends see of a store and what its expiry removes: pure rules the steps of both
engines share (``queue.resend_page``, ``operators.expire``), as ``writes`` is for a
batch."""

from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

from bridge.store import refusals
from bridge.store.contract import Page


@dataclass(frozen=True, slots=True)
class Expiry:
    """What ``Store.expire`` removes at ``now`` (the store's clock)."""

    # Active alerts whose endsAt is at or before it end (Alertmanager has expired them
    # too), and states kept until it are forgotten (``IdentityState.kept_until``).
    now: datetime
    resolved_before: datetime  # resolves re-sent since before it are re-sent no more


def expiry(now: datetime, resolved_for: float) -> Expiry:
    return Expiry(now, now - timedelta(seconds=resolved_for))


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
        self.identities: set[str | None] = set()

    def read(self) -> tuple[int, Any, int]:
        return self.table, self.key, self.limit - len(self.bodies) + 1

    def got(self, rows: Sequence[ResendRow]) -> Page | None:
        room = self.limit - len(self.bodies)
        if len(rows) > room:  # more in this table than fits
            if room:
                self._add(rows[:room])
                self.key = rows[room - 1][0]
            return self._page((self.table, self.key))
        self._add(rows)
        self.table += 1
        if self.table == len(RESEND_FIRST):
            return self._page(None)
        self.key = RESEND_FIRST[self.table]
        return None

    def _page(self, after: Any) -> Page:
        return Page(self.bodies, after, frozenset(self.identities))

    def _add(self, rows: Sequence[ResendRow]) -> None:
        """Each row's alert, then its tiers': a page may hold more bodies than its limit.
        An active row's key is its identity (its tiers are the identity's too); a resolve
        is kept by label set, so its identity is read from its labels."""
        for key, alert, tiers in rows:
            self.identities.add(key if self.table else refusals.owner(alert))
            self.bodies.append(alert)
            if tiers and tiers != "[]":
                self.bodies += [json.dumps(t, separators=(",", ":")) for t in json.loads(tiers)]

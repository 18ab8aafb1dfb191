"""What operators see of a store and what its expiry removes: rules both engines share,
as ``writes`` is for a batch. An engine reads the rows (its own queries, ``sqlite/sql.py``,
``pg/sql.py``) and these functions say what they mean, so ``sentry-bridge status`` and
``quarantine list`` read the same whichever engine runs."""

from __future__ import annotations

import json
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

from bridge.store.contract import Quarantined


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

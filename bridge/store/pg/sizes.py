"""The store's sizes on PostgreSQL, for gauges and the status page: one cheap query, run
every few seconds (other replicas change them too); the engine adjusts them by its own
commits in between."""

from __future__ import annotations

import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

_SIZES = """
SELECT (SELECT count(*) FROM inbox),
       (SELECT count(*) FROM identity_state WHERE active),
       (SELECT count(*) FROM resolved),
       (SELECT count(*) FROM quarantine),
       extract(epoch FROM clock_timestamp()
           - least((SELECT min(accepted_at) FROM inbox), (SELECT min(queued_at) FROM queue)))
"""
_DEPTHS = "SELECT target, count(*) FROM queue GROUP BY target"


@dataclass
class Sizes:
    inbox: int = 0
    active: int = 0
    resolved: int = 0
    quarantine: int = 0
    depths: dict[str, int] = field(default_factory=dict)
    oldest: float = 0.0  # seconds since the oldest held alert was accepted, as of ``at``
    at: float = field(default_factory=time.monotonic)

    def queued(self, target: str, more: int) -> None:
        self.depths[target] = max(0, self.depths.get(target, 0) + more)


async def read(conn: Any, targets: Sequence[str]) -> Sizes:
    row = await conn.fetchrow(_SIZES)
    depths = dict.fromkeys(targets, 0)
    for target, count in await conn.fetch(_DEPTHS):
        if target in depths:  # not an Alertmanager this replica was configured with
            depths[target] = int(count)
    return Sizes(
        inbox=int(row[0]),
        active=int(row[1]),
        resolved=int(row[2]),
        quarantine=int(row[3]),
        depths=depths,
        oldest=max(0.0, float(row[4] or 0.0)),
    )

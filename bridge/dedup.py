"""Repeats of one Sentry identity: suppress duplicates within a window, escalate what keeps firing.

In process, clock injected, bounded: each table is a ``TTLCache`` holding at most
``max_tracked`` identities (least recently used go first when full) whose entries
expire on the injected clock, so nothing sleeps and nothing grows without bound.

Memory per identity is mostly the caches' own bookkeeping (about 220 bytes a table);
the values are kept small: the fingerprint of the label set last forwarded, and at most
``escalate_after`` timestamps packed as raw doubles (57 bytes for three, a tuple of
floats takes 160). 100,000 identities take about 65 MB in both tables together.

Losing these tables on restart is safe: the first repeat after a restart is forwarded
(Alertmanager deduplicates identical label sets itself) and counting starts afresh.
"""

from __future__ import annotations

import hashlib
import json
import struct
from collections.abc import Callable, Iterable, Mapping

from cachetools import TTLCache

Clock = Callable[[], float]


def fingerprint(labels: Mapping[str, str]) -> str:
    """A stable, order-independent hash of a label set (16 hex digits).

    JSON of the sorted pairs keeps ``{"a": "b,c"}`` and ``{"a,b": "c"}`` apart; 64 bits
    are plenty to tell apart the label sets of one identity (Alertmanager's own
    fingerprints are 64-bit too)."""
    canonical = json.dumps(sorted(labels.items()), ensure_ascii=False, separators=(",", ":"))
    return hashlib.blake2b(canonical.encode(), digest_size=8).hexdigest()


class Repeats:
    def __init__(
        self,
        *,
        window: float,
        escalate_after: int,
        escalate_period: float,
        max_tracked: int,
        clock: Clock,
    ) -> None:
        if window <= 0 or escalate_period <= 0:
            raise ValueError("window and escalate_period must be positive")
        if escalate_after < 1 or max_tracked < 1:
            raise ValueError("escalate_after and max_tracked must be at least 1")
        self._clock = clock
        self._period = escalate_period
        self._after = escalate_after
        # identity -> fingerprint last forwarded; the TTL is the window, counted from the
        # forward (a suppressed duplicate does not extend it, so Sentry firing steadily
        # still refreshes the alert's endsAt in Alertmanager once per window).
        self._forwarded: TTLCache[str, str] = TTLCache(max_tracked, ttl=window, timer=clock)
        # identity -> the latest firings within the period, oldest first, at most
        # escalate_after of them, as packed doubles; the TTL drops an identity quiet for
        # a whole period.
        self._fired: TTLCache[str, bytes] = TTLCache(max_tracked, ttl=escalate_period, timer=clock)

    def record(self, identity: str) -> bool:
        """Count one firing webhook for ``identity`` now; True when it has fired
        ``escalate_after`` times or more within the trailing ``escalate_period``
        (so it must be escalated one step)."""
        now = self._clock()
        horizon = now - self._period
        packed = self._fired.get(identity, b"")
        recent = [t for t in struct.unpack(f"{len(packed) // 8}d", packed) if t > horizon]
        keep = self._after - 1  # the older firings still needed to decide next time
        times = [*(recent[-keep:] if keep else ()), now]
        self._fired[identity] = struct.pack(f"{len(times)}d", *times)
        return len(times) >= self._after

    def is_duplicate(self, identity: str, fingerprint: str) -> bool:
        """True when ``identity`` was forwarded with this same ``fingerprint`` within the
        window; otherwise remember it as forwarded now and return False. A different
        fingerprint (another severity, an escalation) is never a duplicate."""
        if self._forwarded.get(identity) == fingerprint:
            return True
        self._forwarded[identity] = fingerprint
        return False

    def forget(self, identity: str) -> None:
        """Sentry resolved ``identity``: its next firing is forwarded, not a duplicate.

        Its firings keep counting towards escalation: an alert that resolves and comes
        back again and again within the period is exactly what escalation is for."""
        self._forwarded.pop(identity, None)

    def checkpoint(self, identities: Iterable[str]) -> list[tuple[str, str | None, bytes | None]]:
        """What the tables hold for ``identities``, for :meth:`rollback`: decisions taken
        for a batch that then failed to commit must not count when it is retried."""
        return [(i, self._forwarded.get(i), self._fired.get(i)) for i in set(identities)]

    def rollback(self, saved: list[tuple[str, str | None, bytes | None]]) -> None:
        for identity, forwarded, fired in saved:
            self._forwarded.pop(identity, None)
            self._fired.pop(identity, None)
            if forwarded is not None:
                self._forwarded[identity] = forwarded
            if fired is not None:
                self._fired[identity] = fired

    def sizes(self) -> dict[str, int]:
        """Identities tracked per table (expired ones are purged first), for
        ``sentry_bridge_cache_entries``."""
        return {"dedup": len(self._forwarded), "repeats": len(self._fired)}

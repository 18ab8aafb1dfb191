"""Seen bodies on both engines: the same webhook body (its digest) seen again within
``store.body_retention`` is a duplicate, at accept and at quarantine alike; so is a second
copy within one group of accepts (the first counts). A step (``bridge.store.steps``) in
the caller's write transaction. Bounding the table by time and count stays each engine's:
both do it in the accept's transaction (PostgreSQL's ``SWEEP_BODIES`` skips rows other
transactions hold).
"""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime

from bridge.store.steps import NOW, Dialect, Step, each


def first_sight(
    d: Dialect, digests: Sequence[bytes | None], retention: float, at: datetime | None = None
) -> Step[list[bool]]:
    """Records ``digests``; for each, whether it is new: not seen within ``retention``
    seconds, nor earlier in ``digests``. None (an internal accept, no body) is always new.
    ``at``: the caller's time, where it has one (SQLite's accept stamps its inbox rows with
    it); else the dialect's clock, read here.

    One upsert that keeps a row seen within the retention and answers the rows it wrote:
    on PostgreSQL the same body accepted by two replicas at once makes one entry (the
    second waits on the first's unique-index entry, then finds it). Digests go in sorted,
    so two groups never deadlock."""
    wanted = sorted({digest for digest in digests if digest is not None})
    if not wanted:
        return [True] * len(digests)
    if at is None and d.clock is not None:  # no clock: the database's (PostgreSQL)
        at = yield NOW
    when = None if at is None else d.time(at)
    written = yield each("SEE_BODIES", [(digest,) for digest in wanted], when, retention)
    new = {bytes(got[0]) for got in written}
    fresh: list[bool] = []
    for digest in digests:
        if digest is None:
            fresh.append(True)
        else:
            fresh.append(digest in new)
            new.discard(digest)  # the same body twice in one group: the first counts
    return fresh

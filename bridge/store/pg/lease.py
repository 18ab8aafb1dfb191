"""A lease: one holder at a time across replicas, for a bounded time (PostgreSQL).

The periodic jobs (re-sends, expiry, sweeping) must run on one replica at a time, and be
taken over within a bounded time when that replica dies (issue 10). A lease is a row
``(name, holder, expires_at)``; each operation is one statement, so no transaction is held
between them, and every expiry is measured on the database's clock, so replicas with skewed
clocks agree on who holds it:

- ``acquire``: take the lease if nobody holds it, it has expired, or we hold it already
  (then it is extended: the holder renews by acquiring); a live lease of someone else is
  left alone.
- ``release``: give it up at shutdown, so the next holder need not wait for the expiry.

``at`` replaces the database clock in tests that drive time themselves; production passes
nothing. The lease is "expired" once ``expires_at <= now``.
"""

from __future__ import annotations

import time
from datetime import datetime, timedelta
from typing import Any, cast

from bridge.store.pg import sql
from bridge.store.pg.connection import Connection


async def acquire(
    conn: Connection, name: str, holder: str, ttl: timedelta, *, at: datetime | None = None
) -> datetime | None:
    """Take or extend the lease; its new expiry, or ``None`` if someone else holds it."""
    return cast(datetime | None, await conn.fetchval(sql.ACQUIRE_LEASE, name, holder, ttl, at))


async def release(conn: Connection, name: str, holder: str) -> bool:
    """Give up our lease (expired or not); whether we held it."""
    return await conn.fetchval(sql.RELEASE_LEASE, name, holder) is not None


class Periodic:
    """This replica's claim on the ``periodic`` lease (re-sends and expiry): ``held()`` is
    asked before each round, acquires or renews the lease when a third of its time has
    passed (so use renews it), and is False while another replica holds it. A holder that
    stops asking (a dead pod) loses it after ``ttl``; ``release`` hands it over at once."""

    name = "periodic"

    def __init__(self, pool: Any, holder: str, ttl: timedelta = timedelta(seconds=15)) -> None:
        self.pool = pool
        self.holder = holder
        self.ttl = ttl
        self._until: float | None = None  # monotonic time to renew by, while held

    async def held(self) -> bool:
        now = time.monotonic()
        if self._until is not None and now < self._until:
            return True
        async with self.pool.acquire() as conn:
            expires = await acquire(conn, self.name, self.holder, self.ttl)
        # Renew well before the expiry, measured locally from before the statement ran.
        self._until = now + self.ttl.total_seconds() / 3 if expires is not None else None
        return expires is not None

    async def release(self) -> None:
        if self._until is None:
            return
        self._until = None
        async with self.pool.acquire() as conn:
            await release(conn, self.name, self.holder)

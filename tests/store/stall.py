"""A steady load through the spool in front of a real PostgreSQL, with the inbox locked for
a moment by another connection (a slow commit): the spool's stall test
(tests/store/test_spool.py) asserts on it, ``python -m bench.spool`` prints it."""

from __future__ import annotations

import asyncio
import hashlib
import statistics
import time
from dataclasses import dataclass

import asyncpg

from bridge.store.spool import Spooled
from tests.factories import issue

SENTRY_TIMEOUT = 1.0  # Sentry gives a webhook one second (its integration platform's)


@dataclass(frozen=True)
class Stalled:
    answers: list[bool | BaseException]  # per webhook, in the order sent
    seconds: list[float]  # how long each answer took
    spooled: int  # webhooks the stall sent to the spool (sentry_bridge_spooled_total)
    drained_after: float  # seconds from the lock's release to an empty spool
    load_ran_on: bool  # the load was still running when the spool was empty
    inbox: list[str]  # the issue ids in PostgreSQL's inbox, in id order

    def summary(self) -> str:
        cuts = statistics.quantiles(self.seconds, n=100)
        return (
            f"{self.spooled} spooled, spool empty {self.drained_after * 1000:.0f} ms after "
            f"the stall; answers p50 {cuts[49] * 1000:.1f} ms, p99 {cuts[98] * 1000:.1f} ms, "
            f"max {max(self.seconds) * 1000:.0f} ms"
        )


async def stalled_load(
    store: Spooled,
    dsn: str,
    schema: str,
    *,
    rate: float,
    seconds: float,
    stall_at: float,
    stall: float,
) -> Stalled:
    """``rate`` distinct webhooks a second for ``seconds`` into ``store`` (open, its primary
    the PostgreSQL engine on ``schema``), each answered within Sentry's second or failed;
    ``stall_at`` seconds in, PostgreSQL's inbox is locked for ``stall`` seconds."""
    loop = asyncio.get_running_loop()
    sent: list[asyncio.Task[bool]] = []
    took: list[float] = []
    released: list[float] = []

    async def one(n: int) -> bool:
        start = time.perf_counter()
        async with asyncio.timeout(SENTRY_TIMEOUT):
            stored = await store.accept(issue(n), hashlib.sha256(b"stall %d" % n).digest())
        took.append(time.perf_counter() - start)
        return stored

    async def load() -> None:
        start = loop.time()
        for n in range(int(rate * seconds)):
            await asyncio.sleep(max(0.0, start + n / rate - loop.time()))  # the load's pace
            sent.append(asyncio.create_task(one(n)))

    async def lock_the_inbox() -> None:
        conn = await asyncpg.connect(dsn, server_settings={"search_path": schema})
        try:
            await asyncio.sleep(stall_at)
            async with conn.transaction():
                await conn.execute("LOCK TABLE inbox IN EXCLUSIVE MODE")
                await asyncio.sleep(stall)  # the injected fault's length
            released.append(loop.time())
        finally:
            await conn.close()

    spooled_before = _spooled(store)
    sending = asyncio.create_task(load())
    try:
        await lock_the_inbox()
        spooled = _spooled(store) - spooled_before
        async with asyncio.timeout(seconds + 30):
            while store.depth():  # the spool's size, as sentry_bridge_spool_webhooks says
                await asyncio.sleep(0.001)
        drained_after = loop.time() - released[0]
        load_ran_on = not sending.done()
        await sending
    finally:
        sending.cancel()
    answers = await asyncio.gather(*sent, return_exceptions=True)
    async with asyncio.timeout(30):
        while store.depth():  # what arrived after the stall's backlog, if spooled
            await asyncio.sleep(0.01)
    conn = await asyncpg.connect(dsn, server_settings={"search_path": schema})
    try:
        rows = await conn.fetch("SELECT alert::json->>'issue_id' AS issue FROM inbox ORDER BY id")
    finally:
        await conn.close()
    return Stalled(answers, took, spooled, drained_after, load_ran_on, [r["issue"] for r in rows])


def _spooled(store: Spooled) -> int:
    return int(store.metrics.registry.get_sample_value("sentry_bridge_spooled_total") or 0)

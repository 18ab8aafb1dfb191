"""``python -m bench.spool``: what the spool (bridge/store/spool.py) costs, printed.

The time to answer a webhook (``Spooled.accept``) at concurrency 1 and 50 while the
primary is up (the wrapper's overhead), refuses at once (the spool's fsynced group
commit), does not answer (``accept_timeout`` plus the commit), and while the spool is
already holding webhooks. The spool is a real file under a temporary directory (on the
disk of ``--dir``).

Then, with PostgreSQL installed: how fast a full spool drains into the PostgreSQL engine
(a round of webhooks is one transaction), and the spool in front of it under a steady
load, its inbox locked for 0.5 s by another connection (a slow commit): how many webhooks
the stall spooled, how soon after it the spool was empty, and how long the
answers took (tests/store/stall.py, which the spool's stall test asserts on).
"""

from __future__ import annotations

import argparse
import asyncio
import hashlib
import statistics
import tempfile
import time
from pathlib import Path
from typing import cast

from prometheus_client import CollectorRegistry

from bench import servers
from bridge.config import Postgres
from bridge.metrics import Metrics
from bridge.store.contract import Store
from bridge.store.pg import PostgresStore
from bridge.store.spool import FILENAME, Spooled
from tests.factories import issue
from tests.store.fakes import FakePrimary, Mode
from tests.store.stall import stalled_load


def _spool(directory: Path, primary: FakePrimary) -> Spooled:
    metrics = Metrics(CollectorRegistry())
    # No drainer: the spool stays as filled, and the drain is timed round by round.
    return Spooled(cast(Store, primary), directory / FILENAME, metrics=metrics, drainer=False)


async def _answers(store: Spooled, first: int, count: int, concurrency: int) -> list[float]:
    """Seconds to answer each of ``count`` distinct webhooks, ``concurrency`` at a time."""
    times: list[float] = []
    numbers = iter(range(first, first + count))

    async def sender() -> None:
        for n in numbers:
            start = time.perf_counter()
            await store.accept(issue(n), hashlib.sha256(b"%d" % n).digest())
            times.append(time.perf_counter() - start)

    await asyncio.gather(*(sender() for _ in range(concurrency)))
    return times


def _ms(times: list[float]) -> str:
    cuts = statistics.quantiles(times, n=100)
    p50, p99, top = (1000 * t for t in (cuts[49], cuts[98], max(times)))
    return f"p50 {p50:6.2f} ms  p99 {p99:6.2f} ms  max {top:6.2f} ms"


async def _run(directory: Path, count: int) -> None:
    primary = FakePrimary()
    store = _spool(directory, primary)
    await store.open()
    n = 0
    cases: list[tuple[str, Mode, int, int]] = [
        ("primary up", "up", 1, count),
        ("primary up", "up", 50, count),
        ("spooling", "down", 1, count),
        ("spooling", "up", 50, count),
        ("primary silent", "slow", 50, 50),
    ]
    for label, mode, concurrency, total in cases:
        if label == "primary silent":
            await store.close()
            primary.mode = "up"
            store = _spool(directory / "silent", primary)
            await store.open()
        primary.mode = mode
        times = await _answers(store, n, total, concurrency)
        n += total
        print(f"accept, {label:16} c={concurrency:<3} {_ms(times)}  ({total} webhooks)")
    await store.close()
    size = (directory / FILENAME).stat().st_size
    print(f"spool file: {size / max(1, 2 * count):.0f} bytes per spooled webhook (small alerts)")


async def _postgres(directory: Path, dsn: str, count: int) -> None:
    """The drain into a real PostgreSQL engine, then the stalls."""
    metrics = Metrics(CollectorRegistry())
    primary = FakePrimary()
    primary.mode = "down"
    store = _spool(directory / "drain", primary)
    await store.open()
    await _answers(store, 0, count, 50)  # spooled: the fake primary refuses
    await store.close()
    settings = Postgres.model_validate({"dsn": dsn, "schema": "bench_drain"})
    engine = PostgresStore(settings, ["am"], max_queued=10 * count, metrics=metrics)
    path = directory / "drain" / FILENAME
    store = Spooled(engine, path, metrics=metrics, max_queued=10 * count, drainer=False)
    await store.open()  # the same spool file, now in front of PostgreSQL
    try:
        start = time.perf_counter()
        while await store.drain_once():  # the drainer's rounds, without its waits
            pass
        seconds = time.perf_counter() - start
    finally:
        await store.close()
    print(f"drain into PostgreSQL: {count / seconds:7.0f} webhooks/s ({count} in {seconds:.2f} s)")
    for rate in (150, 300):
        schema = f"bench_stall_{rate}"
        metrics = Metrics(CollectorRegistry())
        settings = Postgres.model_validate({"dsn": dsn, "schema": schema})
        engine = PostgresStore(settings, ["am"], max_queued=100_000, metrics=metrics)
        store = Spooled(engine, directory / f"stall-{rate}.sqlite3", metrics=metrics)
        await store.open()
        try:
            run = await stalled_load(
                store, dsn, schema, rate=rate, seconds=6, stall_at=2, stall=0.5
            )
        finally:
            await store.close()
        print(f"PostgreSQL stalled 0.5 s at {rate} webhooks/s: {run.summary()}")


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--webhooks", type=int, default=2000)
    p.add_argument("--dir", type=Path, default=None, help="where the spool file goes")
    args = p.parse_args()
    with tempfile.TemporaryDirectory(dir=args.dir) as tmp:
        asyncio.run(_run(Path(tmp), args.webhooks))
        if not servers.postgres_available():
            print("PostgreSQL stall: skipped (apt-get install postgresql)")
            return
        with servers.postgres_server() as server:
            asyncio.run(_postgres(Path(tmp), server.dsn(), args.webhooks))


if __name__ == "__main__":
    main()

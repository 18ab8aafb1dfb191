"""``python -m bench.spool``: what the spool (bridge/store/spool.py) costs, printed.

The time to answer a webhook (``Spooled.accept``) at concurrency 1 and 50 while the
primary is up (the wrapper's overhead), refuses at once (the spool's fsynced group
commit), does not answer (``accept_timeout`` plus the commit), and while the spool is
already holding webhooks; then how fast a spool drains into a primary whose commit takes
4 ms (PostgreSQL's one-row commit on loopback, docs/scaling.md) and into an instant one.
The spool is a real file under a temporary directory (on the disk of ``--dir``).
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

from bridge.metrics import Metrics
from bridge.store.contract import Store
from bridge.store.spool import FILENAME, Spooled
from tests.factories import issue
from tests.store.fakes import FakePrimary, Mode


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

    for commit_ms in (4.0, 0.0):
        primary = FakePrimary()
        primary.commit_time = commit_ms / 1000
        store = _spool(directory / f"drain-{commit_ms}", primary)
        await store.open()
        primary.mode = "down"
        await _answers(store, 0, count, 50)
        primary.mode = "up"
        start = time.perf_counter()
        while await store.drain_once():  # the drainer's rounds, without its waits
            pass
        seconds = time.perf_counter() - start
        print(
            f"drain, primary commit {commit_ms:.0f} ms: {count / seconds:7.0f} webhooks/s "
            f"({count} in {seconds:.2f} s)"
        )
        await store.close()


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--webhooks", type=int, default=2000)
    p.add_argument("--dir", type=Path, default=None, help="where the spool file goes")
    args = p.parse_args()
    with tempfile.TemporaryDirectory(dir=args.dir) as tmp:
        asyncio.run(_run(Path(tmp), args.webhooks))


if __name__ == "__main__":
    main()

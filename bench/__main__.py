"""``python -m bench [ingest|delivery|memory|all]``: the bridge's figures, printed.

- ingest: wrk (concurrency 50, one thread) posts distinct signed webhooks to
  (a) a bare Starlette app that only parses JSON and (b) the bridge with its real
  pipeline, one Uvicorn worker each, alternating over rounds (bench/ingest.py).
- delivery: distinct alerts through the bridge into a real Alertmanager; alerts/s
  end to end and the time until Alertmanager's API shows all of them.
- memory: peak memory (PSS of the edge and the worker together) while distinct alerts
  pass through the dedup and escalation windows.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import re
import tempfile
import threading
import time
from pathlib import Path

import httpx

from bench import ingest, payloads


async def _post_all(url: str, count: int, concurrency: int) -> int:
    """Post ``count`` distinct issue alerts; returns how many were sent a second time.

    A request on a kept-alive connection the server has just closed fails before it
    is read (httpx ReadError / RemoteProtocolError); like Sentry, the client sends it
    again, once. Alertmanager's count is unaffected (the same labels)."""
    bodies = list(payloads.webhooks(count, metric_share=0))
    queue: asyncio.Queue[bytes] = asyncio.Queue()
    for _, body in bodies:
        queue.put_nowait(body)
    retried = 0
    limits = httpx.Limits(max_connections=concurrency, max_keepalive_connections=concurrency)
    async with httpx.AsyncClient(base_url=url, timeout=30, limits=limits) as client:

        async def post(body: bytes) -> httpx.Response:
            return await client.post(
                "/webhooks/sentry",
                content=body,
                headers={
                    "Sentry-Hook-Resource": "event_alert",
                    "Sentry-Hook-Signature": payloads.sign(body),
                    "Content-Type": "application/json",
                },
            )

        async def worker() -> None:
            nonlocal retried
            while not queue.empty():
                body = queue.get_nowait()
                try:
                    response = await post(body)
                except (httpx.ReadError, httpx.RemoteProtocolError):
                    retried += 1
                    response = await post(body)
                response.raise_for_status()

        await asyncio.gather(*(worker() for _ in range(concurrency)))
    return retried


def _am_count(am_url: str) -> int:
    alerts = httpx.get(f"{am_url}/api/v2/alerts", params={"active": "true"}, timeout=30).json()
    return len(alerts)


def delivery(count: int) -> None:
    with (
        tempfile.TemporaryDirectory() as tmpdir,
        ingest.bridge(Path(tmpdir), alertmanager=True) as (am_url, bridge),
    ):
        start = time.monotonic()
        retried = asyncio.run(_post_all(bridge.url, count, 50))
        posted = time.monotonic() - start
        seen = 0
        while time.monotonic() - start < 600:
            seen = _am_count(am_url)
            if seen >= count:
                break
            time.sleep(0.5)
        total = time.monotonic() - start
        print(
            f"delivery: {count} distinct alerts posted in {posted:.1f} s "
            f"({count / posted:.0f}/s accepted, {retried} sent twice)"
        )
        print(
            f"  Alertmanager shows {seen} after {total:.1f} s: {seen / total:.0f} alerts/s "
            "end to end"
        )


def _kib(path: Path, field: str) -> int:
    m = re.search(rf"^{field}:\s+(\d+) kB", path.read_text(), re.M)
    return int(m.group(1)) if m else 0


class _MemorySampler(threading.Thread):
    """Sums the PSS of the bridge's processes twice a second and keeps the highest sum.
    PSS splits the pages the edge and the worker share (the interpreter, extension
    modules) between them, so the sum is what the pair costs; adding RSS counts those
    pages twice."""

    def __init__(self, pid: int) -> None:
        super().__init__(daemon=True)
        self.pid = pid
        self.peak_pss_kib = 0
        self.done = threading.Event()

    def sample(self) -> None:
        total = sum(
            _kib(Path(f"/proc/{each}/smaps_rollup"), "Pss")
            for each in ingest.process_tree(self.pid)
        )
        self.peak_pss_kib = max(self.peak_pss_kib, total)

    def run(self) -> None:
        while not self.done.wait(0.5):
            with contextlib.suppress(OSError):
                self.sample()


def _peak_rss_mib(pid: int) -> list[float]:
    """Peak RSS of each of the bridge's processes (edge, worker)."""
    return [_kib(Path(f"/proc/{each}/status"), "VmHWM") / 1024 for each in ingest.process_tree(pid)]


def memory(count: int) -> None:
    with (
        tempfile.TemporaryDirectory() as tmpdir,
        ingest.bridge(Path(tmpdir), alertmanager=True) as (am_url, bridge),
    ):
        sampler = _MemorySampler(bridge.proc.pid)
        sampler.sample()
        at_start = sampler.peak_pss_kib / 1024
        sampler.start()
        retried = asyncio.run(_post_all(bridge.url, count, 50))
        while _am_count(am_url) < count:
            time.sleep(1)
        metrics = httpx.get(f"{bridge.url}/metrics").text
        tracked = re.findall(r'^sentry_bridge_cache_entries\{cache="(\w+)"\} (\S+)$', metrics, re.M)
        sampler.done.set()
        sampler.join()
        sampler.sample()
        rss = _peak_rss_mib(bridge.proc.pid)
        caches = ", ".join(f"{k} {float(v):.0f}" for k, v in tracked)
        print(
            f"memory: {count} distinct alerts through the dedup and escalation windows "
            f"({retried} sent twice); caches: {caches}"
        )
        print(
            f"  peak PSS of the bridge (edge + worker): {sampler.peak_pss_kib / 1024:.0f} MiB "
            f"({at_start:.0f} MiB at start; target < 150 MB)"
        )
        print(
            "  peak RSS per process: "
            + ", ".join(f"{n} {v:.0f} MiB" for n, v in zip(("edge", "worker"), rss, strict=False))
            + f" (sum {sum(rss):.0f} MiB, shared pages counted twice)"
        )


def main() -> None:
    p = argparse.ArgumentParser(prog="python -m bench")
    p.add_argument(
        "what", nargs="?", default="all", choices=["ingest", "delivery", "memory", "all"]
    )
    p.add_argument("--seconds", type=int, default=10)
    p.add_argument("--rounds", type=int, default=3)
    p.add_argument("--records", type=int, default=40_000)
    p.add_argument("--delivery-alerts", type=int, default=20_000)
    p.add_argument("--memory-alerts", type=int, default=100_000)
    args = p.parse_args()
    if args.what in ("ingest", "all"):
        ingest.ingest(args.seconds, args.records, args.rounds)
    if args.what in ("delivery", "all"):
        delivery(args.delivery_alerts)
    if args.what in ("memory", "all"):
        memory(args.memory_alerts)


if __name__ == "__main__":
    main()

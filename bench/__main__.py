"""``python -m bench [ingest|delivery|memory|all]``: the bridge's figures, printed.

- ingest: wrk (concurrency 50, one thread) posts distinct signed webhooks to
  (a) a bare Starlette app that only parses JSON and (b) the bridge with its real
  pipeline, one Uvicorn worker each, one after the other on this machine.
- delivery: distinct alerts through the bridge into a real Alertmanager; alerts/s
  end to end and the time until Alertmanager's API shows all of them.
- memory: peak RSS of the bridge after distinct alerts passed through its dedup
  and escalation windows.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import re
import shutil
import subprocess
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path

import httpx

from bench import payloads
from tests.integration import procs
from tests.integration.am import start_alertmanager

HERE = Path(__file__).resolve().parent


@contextlib.contextmanager
def environment(tmp: Path) -> Iterator[tuple[str, procs.Process]]:
    """A real Alertmanager and the bridge pointed at it."""
    tmp.mkdir(parents=True, exist_ok=True)
    with start_alertmanager(tmp / "am", procs.free_port()) as am_url:
        config = procs.write_config(tmp / "config.yaml", [am_url])
        env = {"SENTRY_CLIENT_SECRET": payloads.SECRET}
        with procs.bridge(config, tmp / "data", tmp / "bridge.log", env=env) as bridge:
            yield am_url, bridge


def _wrk(url: str, records: Path, seconds: int) -> dict[str, float]:
    out = subprocess.run(
        [
            "wrk",
            "-t1",
            "-c50",
            f"-d{seconds}s",
            "--latency",
            "-s",
            str(HERE / "wrk.lua"),
            url,
            "--",
            str(records),
            "/webhooks/sentry",
        ],
        check=True,
        capture_output=True,
        text=True,
    ).stdout
    m = re.search(r"^RESULT (.*)$", out, re.M)
    if not m:
        raise RuntimeError(f"wrk printed no result:\n{out}")
    fields = dict(pair.split("=") for pair in m.group(1).split())
    result = {k: float(v) for k, v in fields.items()}
    result["rps"] = result["requests"] / (result["duration_us"] / 1e6)
    return result


def ingest(seconds: int, records: int) -> None:
    if not shutil.which("wrk"):
        raise SystemExit("the ingest benchmark needs wrk: apt-get install wrk")
    with tempfile.TemporaryDirectory() as tmpdir:
        tmp = Path(tmpdir)
        data = tmp / "records.bin"
        sizes = payloads.write_wrk_records(data, records)
        print(
            f"ingest: {records} distinct signed webhooks, mean body "
            + ", ".join(f"{k} {v / 1024:.1f} KiB" for k, v in sizes.items())
        )
        print(f"ingest: wrk -t1 -c50 -d{seconds}s, one Uvicorn worker each")
        with procs.uvicorn_app("bench.bare:app", tmp / "bare.log") as bare:
            _wrk(bare.url, data, 2)  # warm-up
            base = _wrk(bare.url, data, seconds)
        # (b) as the issue defines it: signature, parse, classify, dedup, outbox; no
        # Alertmanager answers, so its sender only backs off.
        nowhere = [f"http://127.0.0.1:{procs.free_port()}"]
        config = procs.write_config(tmp / "config.yaml", nowhere)
        env = {"SENTRY_CLIENT_SECRET": payloads.SECRET}
        with procs.bridge(config, tmp / "data", tmp / "bridge.log", env) as bridge:
            _wrk(bridge.url, data, 2)
            ours = _wrk(bridge.url, data, seconds)
        # And with delivery too: a real Alertmanager sharing the same two cores.
        with environment(tmp / "full") as (_, bridge):
            _wrk(bridge.url, data, 2)
            full = _wrk(bridge.url, data, seconds)
        rows = (("bare starlette", base), ("bridge", ours), ("bridge + AM", full))
        for name, r in rows:
            print(
                f"  {name:15} {r['rps']:8.0f} req/s  p50 {r['p50_us'] / 1000:6.2f} ms  "
                f"p99 {r['p99_us'] / 1000:6.2f} ms  non-2xx {r['non2xx']:.0f}  "
                f"socket errors {r['socket_errors']:.0f}"
            )
        print(
            f"  ratio           {ours['rps'] / base['rps']:8.1%} of the bare app's req/s "
            f"({full['rps'] / base['rps']:.1%} while delivering; target >= 60%, p99 < 50 ms)"
        )


async def _post_all(url: str, count: int, concurrency: int) -> None:
    bodies = list(payloads.webhooks(count, metric_share=0))
    queue: asyncio.Queue[bytes] = asyncio.Queue()
    for _, body in bodies:
        queue.put_nowait(body)
    async with httpx.AsyncClient(base_url=url, timeout=30) as client:

        async def worker() -> None:
            while not queue.empty():
                body = queue.get_nowait()
                response = await client.post(
                    "/webhooks/sentry",
                    content=body,
                    headers={
                        "Sentry-Hook-Resource": "event_alert",
                        "Sentry-Hook-Signature": payloads.sign(body),
                        "Content-Type": "application/json",
                    },
                )
                response.raise_for_status()

        await asyncio.gather(*(worker() for _ in range(concurrency)))


def _am_count(am_url: str) -> int:
    alerts = httpx.get(f"{am_url}/api/v2/alerts", params={"active": "true"}, timeout=30).json()
    return len(alerts)


def delivery(count: int) -> None:
    with tempfile.TemporaryDirectory() as tmpdir, environment(Path(tmpdir)) as (am_url, bridge):
        start = time.monotonic()
        asyncio.run(_post_all(bridge.url, count, 50))
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
            f"({count / posted:.0f}/s accepted)"
        )
        print(
            f"  Alertmanager shows {seen} after {total:.1f} s: {seen / total:.0f} alerts/s "
            "end to end"
        )


def _peak_rss_mib(pid: int) -> float:
    status = Path(f"/proc/{pid}/status").read_text()
    m = re.search(r"^VmHWM:\s+(\d+) kB", status, re.M)
    return int(m.group(1)) / 1024 if m else float("nan")


def memory(count: int) -> None:
    with tempfile.TemporaryDirectory() as tmpdir, environment(Path(tmpdir)) as (am_url, bridge):
        before = _peak_rss_mib(bridge.proc.pid)
        asyncio.run(_post_all(bridge.url, count, 50))
        while _am_count(am_url) < count:
            time.sleep(1)
        metrics = httpx.get(f"{bridge.url}/metrics").text
        tracked = re.findall(r'^sentry_bridge_cache_entries\{cache="(\w+)"\} (\S+)$', metrics, re.M)
        peak = _peak_rss_mib(bridge.proc.pid)
        caches = ", ".join(f"{k} {float(v):.0f}" for k, v in tracked)
        print(
            f"memory: peak RSS {before:.0f} MiB at start, {peak:.0f} MiB after {count} "
            f"distinct alerts (target < 150 MB); caches: {caches}"
        )


def main() -> None:
    p = argparse.ArgumentParser(prog="python -m bench")
    p.add_argument(
        "what", nargs="?", default="all", choices=["ingest", "delivery", "memory", "all"]
    )
    p.add_argument("--seconds", type=int, default=15)
    p.add_argument("--records", type=int, default=30_000)
    p.add_argument("--delivery-alerts", type=int, default=20_000)
    p.add_argument("--memory-alerts", type=int, default=100_000)
    args = p.parse_args()
    if args.what in ("ingest", "all"):
        ingest(args.seconds, args.records)
    if args.what in ("delivery", "all"):
        delivery(args.delivery_alerts)
    if args.what in ("memory", "all"):
        memory(args.memory_alerts)


if __name__ == "__main__":
    main()

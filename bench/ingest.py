"""The ingest benchmark: wrk against a bare Starlette app and against the bridge.

Each round starts fresh processes (no dedup state or backlog carried over) and measures,
one after the other on this machine, one Uvicorn worker each:

* **bare**: Starlette that only parses the JSON and answers 202 (``bench/bare.py``);
* **bridge**: ``sentry-bridge serve`` with its real pipeline (signature, parse, classify,
  dedup, outbox); no Alertmanager answers, so its senders only back off;
* **bridge + AM**: the same, delivering to a real Alertmanager on the same two cores.

A shared machine's speed drifts by tens of percent from minute to minute, so the variants
alternate within each round and the summary takes the median over rounds. The warm-up
replays other records than the measurement, so dedup never turns measured webhooks into
cheap duplicates. After each bridge run the benchmark waits until the bridge's processes
are idle: "catch-up" is how long the pipeline worked on after the load stopped, and the
CPU per webhook counts every bridge process (edge and worker) up to that point.
"""

from __future__ import annotations

import contextlib
import re
import shutil
import statistics
import subprocess
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path

from bench import payloads
from tests.integration import procs
from tests.integration.am import start_alertmanager

HERE = Path(__file__).resolve().parent
WARMUP_SECONDS = 2
CLOCK_TICK = 100.0  # USER_HZ: /proc/<pid>/stat counts CPU time in these


def wrk(url: str, records: Path, seconds: int, offset: int = 0) -> dict[str, float]:
    command = ["wrk", "-t1", "-c50", f"-d{seconds}s", "--latency", "-s", str(HERE / "wrk.lua")]
    command += [url, "--", str(records), "/webhooks/sentry", str(offset)]
    out = subprocess.run(command, check=True, capture_output=True, text=True).stdout
    m = re.search(r"^RESULT (.*)$", out, re.M)
    if not m:
        raise RuntimeError(f"wrk printed no result:\n{out}")
    fields = dict(pair.split("=") for pair in m.group(1).split())
    result = {k: float(v) for k, v in fields.items()}
    result["rps"] = result["requests"] / (result["duration_us"] / 1e6)
    return result


def process_tree(pid: int) -> list[int]:
    """``pid`` and its descendants (the bridge's worker process)."""
    pids, i = [pid], 0
    while i < len(pids):
        for task in Path(f"/proc/{pids[i]}/task").glob("*/children"):
            with contextlib.suppress(OSError):
                pids += [int(child) for child in task.read_text().split()]
        i += 1
    return pids


def cpu_seconds(pids: list[int]) -> float:
    total = 0.0
    for pid in pids:
        with contextlib.suppress(OSError):
            fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
            total += (int(fields[11]) + int(fields[12])) / CLOCK_TICK
    return total


def wait_idle(pids: list[int], limit: float = 300.0) -> float:
    """Seconds until the processes use under 5 % of a core over half a second."""
    start = time.monotonic()
    before = cpu_seconds(pids)
    while time.monotonic() - start < limit:
        time.sleep(0.5)
        now = cpu_seconds(pids)
        if now - before < 0.025:
            return max(0.0, time.monotonic() - start - 0.5)
        before = now
    return limit


@contextlib.contextmanager
def _bare(tmp: Path) -> Iterator[procs.Process]:
    with procs.uvicorn_app("bench.bare:app", tmp / "bare.log") as server:
        yield server


@contextlib.contextmanager
def bridge(tmp: Path, *, alertmanager: bool) -> Iterator[tuple[str, procs.Process]]:
    """The bridge (shipped config) and the URL of its Alertmanager: a real one, or a
    loopback port nobody answers on."""
    tmp.mkdir(parents=True, exist_ok=True)
    env = {"SENTRY_CLIENT_SECRET": payloads.SECRET}
    with contextlib.ExitStack() as stack:
        if alertmanager:
            am_url = stack.enter_context(start_alertmanager(tmp / "am", procs.free_port()))
        else:
            am_url = f"http://127.0.0.1:{procs.free_port()}"  # nobody answers
        config = procs.write_config(tmp / "config.yaml", [am_url])
        server = stack.enter_context(procs.bridge(config, tmp / "data", tmp / "bridge.log", env))
        yield am_url, server


@contextlib.contextmanager
def _bridge_only(tmp: Path, alertmanager: bool) -> Iterator[procs.Process]:
    with bridge(tmp, alertmanager=alertmanager) as (_, server):
        yield server


VARIANTS = {
    "bare starlette": lambda tmp: _bare(tmp),
    "bridge": lambda tmp: _bridge_only(tmp, alertmanager=False),
    "bridge + AM": lambda tmp: _bridge_only(tmp, alertmanager=True),
}


def _measure(
    name: str, tmp: Path, records: Path, seconds: int, warmup_offset: int
) -> dict[str, float]:
    with VARIANTS[name](tmp) as server:
        wrk(server.url, records, WARMUP_SECONDS, warmup_offset)
        pids = process_tree(server.proc.pid)
        wait_idle(pids)
        cpu_before = cpu_seconds(pids)
        result = wrk(server.url, records, seconds)
        result["catch_up_s"] = wait_idle(pids)
        result["cpu_us"] = (cpu_seconds(pids) - cpu_before) / result["requests"] * 1e6
        result["processes"] = len(pids)
    return result


def _line(name: str, r: dict[str, float]) -> str:
    return (
        f"  {name:15} {r['rps']:6.0f} req/s  p50 {r['p50_us'] / 1000:6.2f} ms  "
        f"p99 {r['p99_us'] / 1000:6.2f} ms  CPU {r['cpu_us']:5.0f} us/webhook "
        f"({r['processes']:.0f} proc)  catch-up {r['catch_up_s']:4.1f} s  "
        f"non-2xx {r['non2xx']:.0f}  socket errors {r['socket_errors']:.0f}"
    )


def ingest(seconds: int, records_count: int, rounds: int) -> None:
    if not shutil.which("wrk"):
        raise SystemExit("the ingest benchmark needs wrk: apt-get install wrk")
    with tempfile.TemporaryDirectory() as tmpdir:
        tmp = Path(tmpdir)
        records = tmp / "records.bin"
        sizes = payloads.write_wrk_records(records, records_count)
        print(
            f"ingest: {records_count} distinct signed webhooks, mean body "
            + ", ".join(f"{k} {v / 1024:.1f} KiB" for k, v in sizes.items())
        )
        print(
            f"ingest: wrk -t1 -c50, {WARMUP_SECONDS} s warm-up + {seconds} s, one Uvicorn "
            f"worker each, {rounds} rounds alternating the variants"
        )
        # The warm-up replays the last records; the measurement starts at the first.
        warmup_offset = records_count * 4 // 5
        results: dict[str, list[dict[str, float]]] = {name: [] for name in VARIANTS}
        for n in range(rounds):
            print(f"round {n + 1}:")
            for name in VARIANTS:
                run_dir = tmp / f"{n}-{name.replace(' ', '_')}"
                run_dir.mkdir()
                result = _measure(name, run_dir, records, seconds, warmup_offset)
                results[name].append(result)
                print(_line(name, result), flush=True)
        print(f"median of {rounds} rounds:")
        medians = {
            name: {key: statistics.median(r[key] for r in runs) for key in runs[0]}
            for name, runs in results.items()
        }
        for name, median in medians.items():
            print(_line(name, median))
        base = medians["bare starlette"]["rps"]
        ratios = [f"{name} {medians[name]['rps'] / base:.0%}" for name in ("bridge", "bridge + AM")]
        print(f"  ratio to the bare app's req/s: {', '.join(ratios)} (target >= 60 %, p99 < 50 ms)")

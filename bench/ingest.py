"""The ingest benchmark: wrk at concurrency 50 against a bare Starlette app and the bridge.

Each run starts fresh processes (no dedup state or backlog carried over) and measures, one
after the other on this machine:

* **bare**: Starlette that only parses the JSON and answers 202 (``bench/bare.py``), with
  as many Uvicorn worker processes as the bridge runs processes (counted from /proc when
  the benchmark starts, unless ``--bare-workers`` says otherwise), so neither side gets
  more processes to spread its work over;
* **sqlite**, **postgres**: ``sentry-bridge serve`` on the shipped config with that store,
  its real pipeline, no Alertmanager answering (its senders only back off);
* **sqlite+am**, **postgres+am**: the same, delivering to a real Alertmanager on the same
  cores.

A shared machine's speed drifts by tens of percent from minute to minute, so the variants
alternate within each round and the summary takes the median over rounds. The warm-up
replays other records than the measurement, so dedup never turns measured webhooks into
cheap duplicates. After each run the benchmark waits until the processes are idle:
"catch-up" is how long the bridge worked on after the load stopped, and CPU per webhook
counts, up to then, every process of each group separately: the bridge (all of its
processes), its database (PostgreSQL's postmaster and all its backends; SQLite is inside
the bridge) and Alertmanager (when it runs).
"""

from __future__ import annotations

import contextlib
import re
import shutil
import statistics
import subprocess
import tempfile
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import httpx

from bench import payloads, processes, servers

HERE = Path(__file__).resolve().parent
WARMUP_SECONDS = 2
CONCURRENCY = 50
VARIANTS = ("bare", "sqlite", "sqlite+am", "postgres", "postgres+am")
DEFAULT_VARIANTS = ("bare", "sqlite+am", "postgres+am")


def wrk(
    url: str,
    records: Path,
    seconds: int,
    offset: int = 0,
    *,
    script: str = "wrk.lua",
    extra: tuple[str, ...] = (),
) -> dict[str, float]:
    """wrk -t1 -c50 replaying ``records`` from ``offset``; its RESULT line as numbers."""
    command = ["wrk", "-t1", f"-c{CONCURRENCY}", f"-d{seconds}s", "--latency"]
    command += ["-s", str(HERE / script), url, "--", str(records), "/webhooks/sentry"]
    command += [str(offset), *extra]
    out = subprocess.run(command, check=True, capture_output=True, text=True).stdout
    m = re.search(r"^RESULT (.*)$", out, re.M)
    if not m:
        raise RuntimeError(f"wrk printed no result:\n{out}")
    fields = dict(pair.split("=") for pair in m.group(1).split())
    result = {k: float(v) for k, v in fields.items()}
    result["rps"] = result["requests"] / (result["duration_us"] / 1e6)
    return result


@dataclass(frozen=True)
class Variant:
    name: str
    store: servers.StoreName | None  # None: the bare app
    alertmanager: bool
    synchronous: str | None = None  # SQLite's, where the bridge has a knob for it
    checkout: Path | None = None  # the baseline's source tree (--baseline), else this one

    @property
    def label(self) -> str:
        label = f"{self.name} ({self.synchronous})" if self.synchronous else self.name
        return f"{label} @baseline" if self.checkout else label


def variants(
    names: list[str], synchronous: list[str], baseline: Path | None = None
) -> list[Variant]:
    """The variants to run; SQLite ones once per ``synchronous`` mode when the bridge's
    config has the knob (``servers.sqlite_synchronous_knob``), else once as shipped; with
    a ``baseline`` source tree, each bridge variant right after the same on the baseline."""
    knob = servers.sqlite_synchronous_knob()
    out = []
    for name in names:
        store = None if name == "bare" else name.split("+")[0]
        assert store in (None, "sqlite", "postgres"), name
        modes: list[str | None] = [None]
        if store == "sqlite" and knob and synchronous:
            modes = list(synchronous)
        for mode in modes:
            out.append(Variant(name, store, name.endswith("+am"), mode))  # type: ignore[arg-type]
            if baseline is not None and store is not None:
                out.append(Variant(name, store, name.endswith("+am"), mode, baseline))  # type: ignore[arg-type]
    return out


@contextlib.contextmanager
def _stack(variant: Variant, tmp: Path, bare_workers: int, pg: object) -> Iterator[servers.Stack]:
    if variant.store is None:
        with servers.bare(tmp, bare_workers) as stack:
            yield stack
        return
    settings = {}
    knob = servers.sqlite_synchronous_knob()
    if variant.synchronous and knob:
        settings[knob[0]] = {knob[1]: variant.synchronous}
    with servers.bridge(
        tmp,
        store=variant.store,
        pg=pg if variant.store == "postgres" else None,  # type: ignore[arg-type]
        alertmanager=variant.alertmanager,
        settings=settings,
        checkout=variant.checkout,
    ) as stack:
        yield stack


def _measure(
    variant: Variant,
    tmp: Path,
    records: Path,
    seconds: int,
    warmup_offset: int,
    bare_workers: int,
    pg: object,
) -> dict[str, float]:
    with _stack(variant, tmp, bare_workers, pg) as stack:
        wrk(stack.url, records, WARMUP_SECONDS, warmup_offset)
        roots = list(stack.groups.values())
        processes.wait_idle(roots)
        before = {name: processes.cpu_seconds(pid) for name, pid in stack.groups.items()}
        logged = _log_lines(stack)
        posted = _posts(stack) if variant.alertmanager else None
        result = wrk(stack.url, records, seconds)
        result["catch_up_s"] = processes.wait_idle(roots)
        accepted = max(1.0, result["requests"] - result["non2xx"])
        if variant.store is not None:
            result["log_lines"] = (_log_lines(stack) - logged) / accepted
        if posted is not None:
            posts, alerts = (now - then for now, then in zip(_posts(stack), posted, strict=True))
            result["alerts_per_post"] = alerts / max(1.0, posts)
        for name, pid in stack.groups.items():
            used = processes.cpu_seconds(pid) - before[name]
            result[f"cpu_us {name}"] = used / accepted * 1e6
        if variant.store is None:
            result["workers"] = bare_workers
        else:
            result["processes"] = len(processes.process_tree(stack.groups["bridge"]))
    return result


def _log_lines(stack: servers.Stack) -> int:
    """Lines the bridge has logged so far (its log file: stdout and stderr)."""
    with stack.server.log.open("rb") as log:
        return sum(chunk.count(b"\n") for chunk in iter(lambda: log.read(1 << 16), b""))


_BATCH = re.compile(rb"^sentry_bridge_alertmanager_batch_size_alerts_(count|sum) (\S+)$", re.M)


def _posts(stack: servers.Stack) -> tuple[float, float]:
    """Posts to Alertmanager so far, and the alerts they carried (the bridge's metrics)."""
    text = httpx.get(f"{stack.url}/metrics", timeout=10).content
    got = {name: float(value) for name, value in _BATCH.findall(text)}
    return got.get(b"count", 0.0), got.get(b"sum", 0.0)


def _line(label: str, r: dict[str, float]) -> str:
    cpu = r.get("cpu_us bare app", r.get("cpu_us bridge", 0.0))
    database = r.get("cpu_us database")
    served = f"{cpu:5.0f}"
    if database is not None:
        served += f" + database {database:4.0f} = {cpu + database:5.0f}"
    am = r.get("cpu_us alertmanager")
    return (
        f"  {label:20} {r['rps']:6.0f} req/s  p50 {r['p50_us'] / 1000:6.2f} ms  "
        f"p99 {r['p99_us'] / 1000:6.2f} ms  CPU {served} us/webhook "
        + (
            f"({r['workers']:.0f} workers)"
            if "workers" in r
            else f"({r.get('processes', 0):.0f} proc)"
        )
        + (f"; Alertmanager {am:4.0f} us" if am is not None else "")
        + (f"; {r['log_lines']:.1f} log lines/webhook" if "log_lines" in r else "")
        + (f"; {r['alerts_per_post']:.1f} alerts/post" if "alerts_per_post" in r else "")
        + f"  catch-up {r['catch_up_s']:4.1f} s  non-2xx {r['non2xx']:.0f}  "
        f"socket errors {r['socket_errors']:.0f}"
    )


def detect_bridge_processes(tmp: Path) -> int:
    """Start the bridge once and count its processes."""
    with servers.bridge(tmp, alertmanager=False) as stack:
        return servers.bridge_processes(stack)


def ingest(
    seconds: int,
    records_count: int,
    rounds: int,
    *,
    names: list[str],
    bare_workers: int | None,
    synchronous: list[str],
    baseline: Path | None = None,
) -> None:
    if not shutil.which("wrk"):
        raise SystemExit("the ingest benchmark needs wrk: apt-get install wrk")
    with tempfile.TemporaryDirectory() as tmpdir, contextlib.ExitStack() as stack:
        tmp = Path(tmpdir)
        if bare_workers is None:
            bare_workers = detect_bridge_processes(tmp / "detect")
            how = "as many as the bridge runs processes (counted)"
        else:
            how = "--bare-workers"
        chosen = variants(names, synchronous, baseline)
        if synchronous and servers.sqlite_synchronous_knob() is None:
            print(
                "ingest: SQLite NORMAL vs FULL: this bridge's config has no synchronous "
                "key, so the SQLite variants run as shipped"
            )
        pg = None
        if any(v.store == "postgres" for v in chosen):
            try:
                pg = stack.enter_context(servers.postgres_server())
            except servers.Unsupported as exc:
                print(f"ingest: postgres variants skipped: {exc}")
                chosen = [v for v in chosen if v.store != "postgres"]
        records = tmp / "records.bin"
        sizes = payloads.write_wrk_records(records, records_count)
        print(
            f"ingest: {records_count} distinct signed webhooks, mean body "
            + ", ".join(f"{k} {v / 1024:.1f} KiB" for k, v in sizes.items())
        )
        print(
            f"ingest: wrk -t1 -c{CONCURRENCY}, {WARMUP_SECONDS} s warm-up + {seconds} s; "
            f"bare app on {bare_workers} Uvicorn worker(s), {how}; {rounds} rounds "
            "alternating the variants; CPU per webhook per process group"
        )
        # The warm-up replays the last records; the measurement starts at the first.
        warmup_offset = records_count * 4 // 5
        results: dict[str, list[dict[str, float]]] = {}
        for n in range(rounds):
            print(f"round {n + 1}:")
            for variant in list(chosen):
                run_dir = tmp / f"{n}-{variant.label.replace(' ', '_')}"
                run_dir.mkdir()
                try:
                    result = _measure(
                        variant, run_dir, records, seconds, warmup_offset, bare_workers, pg
                    )
                except servers.Unsupported as exc:
                    print(f"  {variant.label:20} skipped: {exc}")
                    chosen.remove(variant)
                    continue
                results.setdefault(variant.label, []).append(result)
                print(_line(variant.label, result), flush=True)
        print(f"median of {rounds} rounds:")
        medians = {
            label: {key: statistics.median(r.get(key, 0.0) for r in runs) for key in runs[0]}
            for label, runs in results.items()
        }
        for label, median in medians.items():
            print(_line(label, median))
        if "bare" in medians:
            base = medians["bare"]
            for label, median in medians.items():
                if label == "bare":
                    continue
                cpu = median["cpu_us bridge"] + median.get("cpu_us database", 0.0)
                print(
                    f"  {label}: {median['rps'] / base['rps']:.0%} of the bare app's req/s, "
                    f"{cpu / base['cpu_us bare app']:.2f}x its CPU per webhook "
                    "(targets: SQLite <= 2x and p99 < 50 ms; PostgreSQL p99 < 50 ms)"
                )

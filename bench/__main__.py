"""``bench/run [PART ...] [options]``: the bridge's figures, printed (parts: ``all`` by default).

- ingest: wrk at concurrency 50 against the bare Starlette app (as many Uvicorn workers as
  the bridge runs processes) and the bridge on each store, with a real Alertmanager;
  req/s, p50, p99 and CPU per webhook per process group (bench/ingest.py).
- visible: 202-to-visible at a steady open-loop rate into an idle bridge, per store,
  through a recording proxy in front of Alertmanager (bench/visible.py).
- active: the same with 100,000 alerts active, the window starting with a re-send round,
  at the default resend_interval (60 s) and at the 10 s stress; also the delivery rate of
  the preload and the bridge's memory with that many alerts active.
- sync: what SQLite's synchronous=FULL costs a group commit against NORMAL (bench/sync.py).
- calls: calls, thread hops and log lines per webhook, counted in process (bench/calls.py).
- stages: CPU per webhook of each pure stage of the webhook path, in process (bench/stages.py).
- sql: CPU per webhook of each SQL statement of the SQLite store, replayed alone (bench/sql.py).
- floods: signed webhooks' latency (p50, p99, max) while the bridge is flooded: idle
  connections, past max_connections, reload and status floods on the admin listener, 900
  slow 1 MiB bodies; and the bridge's peak memory growth (bench/floods.py).

Every part starts its own processes and stops them; ``--quick`` makes every part short (a
smoke run, not figures).
"""

from __future__ import annotations

import argparse
from pathlib import Path

from bench import calls, floods, ingest, servers, sql, stages, sync, visible

PARTS = ("ingest", "calls", "stages", "sql", "visible", "active", "sync", "floods")


def _list(value: str) -> list[str]:
    return [item for item in value.split(",") if item]


def parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="bench/run", description=__doc__, formatter_class=argparse.RawTextHelpFormatter
    )
    p.add_argument(
        "parts",
        nargs="*",
        choices=[*PARTS, "all"],
        default="all",  # a string: argparse checks a list default against choices whole
        metavar="PART",
        help=f"{', '.join(PARTS)} or all (default)",
    )
    p.add_argument("--stores", type=_list, default="sqlite,postgres", help="(default: %(default)s)")
    p.add_argument("--quick", action="store_true", help="short runs: checks the harness")
    g = p.add_argument_group("ingest")
    g.add_argument(
        "--bare-workers",
        type=int,
        default=None,
        help="Uvicorn workers of the bare app (default: the bridge's process count, "
        "counted from /proc)",
    )
    g.add_argument(
        "--variants",
        type=_list,
        default=",".join(ingest.DEFAULT_VARIANTS),
        help=f"of {','.join(ingest.VARIANTS)} (default: %(default)s)",
    )
    g.add_argument("--seconds", type=int, default=10, help="measured seconds per run")
    g.add_argument("--rounds", type=int, default=3)
    g.add_argument("--records", type=int, default=40_000, help="distinct webhooks replayed")
    g.add_argument(
        "--sqlite-synchronous",
        type=_list,
        default="NORMAL,FULL",
        help="SQLite modes to compare, where the bridge's config has the knob",
    )
    p.add_argument(
        "--baseline",
        type=Path,
        default=None,
        metavar="DIR",
        help="another source tree of the bridge (git archive REV | tar -x -C DIR), run on "
        "DIR/.venv's Python if there is one (its own dependencies); ingest: each bridge "
        "variant also runs from it, right after this one's, in every round; visible and "
        "active: each measurement, right after this one's",
    )
    g = p.add_argument_group("visible and active")
    g.add_argument("--rate", type=float, default=200.0, help="webhooks/s, open loop")
    g.add_argument("--steady-seconds", type=float, default=20.0)
    g.add_argument("--active-alerts", type=int, default=100_000)
    g.add_argument(
        "--preload-seconds",
        type=float,
        default=240.0,
        help="at most, for the preload (then the alerts accepted so far are the active ones)",
    )
    g.add_argument(
        "--resend-interval",
        type=_list,
        default="60,10",
        help="alertmanager.resend_interval while alerts are active, seconds, a bridge and "
        "preload each: the default (60) and the stress (10) (default: %(default)s)",
    )
    g.add_argument(
        "--py-spy",
        type=Path,
        default=None,
        metavar="DIR",
        help="sample the bridge with py-spy through each measured stream: collapsed stacks "
        "into DIR, a file per run",
    )
    return p


def main(argv: list[str] | None = None) -> None:
    args = parser().parse_args(argv)
    chosen = [args.parts] if isinstance(args.parts, str) else args.parts
    parts = set(PARTS) if "all" in chosen else set(chosen)
    stores: list[servers.StoreName] = [s for s in ("sqlite", "postgres") if s in args.stores]
    if args.quick:
        args.seconds, args.rounds, args.records = 3, 1, 5_000
        args.steady_seconds, args.active_alerts, args.preload_seconds = 3.0, 3_000, 30.0
        args.resend_interval = ["5"]
    if "ingest" in parts:
        names = [v for v in args.variants if v == "bare" or v.split("+")[0] in stores]
        ingest.ingest(
            args.seconds,
            args.records,
            args.rounds,
            names=names,
            bare_workers=args.bare_workers,
            synchronous=args.sqlite_synchronous,
            baseline=args.baseline,
        )
    if "calls" in parts:
        calls.run(quick=args.quick)
    if "stages" in parts:
        stages.run(quick=args.quick)
    if "sql" in parts:
        sql.run(quick=args.quick)
    if "visible" in parts or "active" in parts:
        options = visible.Options(
            args.rate,
            args.steady_seconds,
            tuple(float(i) for i in args.resend_interval),
            args.preload_seconds,
            args.baseline,
            args.py_spy,
        )
        visible.run(
            stores,
            options,
            active=args.active_alerts if "active" in parts else 0,
            idle="visible" in parts,
        )
    if "sync" in parts:
        sync.run(quick=args.quick)
    if "floods" in parts:
        floods.run(quick=args.quick)


if __name__ == "__main__":
    main()

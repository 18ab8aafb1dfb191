"""What ``synchronous=FULL`` costs SQLite's group commit, against ``NORMAL``.

In WAL mode NORMAL syncs only at checkpoints, so a commit survives a process crash but may
be lost to an OS crash or power loss; FULL syncs the WAL at every commit, so a commit is on
disk when it returns (https://www.sqlite.org/pragma.html#pragma_synchronous,
https://www.sqlite.org/wal.html). This times commits as the SQLite store makes them (one
transaction per group of accepted webhooks, 8 KB bodies) on the same filesystem the other
benchmarks put the bridge's data directory on, for groups of 1, 16 and 64 webhooks. It
measures the cost in isolation; the ingest part measures the bridge itself where its config
has a ``synchronous`` knob.
"""

from __future__ import annotations

import sqlite3
import tempfile
import time
from pathlib import Path

BODY = b"x" * 8192


def _commits(path: Path, mode: str, group: int, seconds: float) -> list[float]:
    db = sqlite3.connect(path, isolation_level=None)
    try:
        db.execute("PRAGMA journal_mode = WAL")
        db.execute(f"PRAGMA synchronous = {mode}")
        db.execute("CREATE TABLE IF NOT EXISTS inbox (id INTEGER PRIMARY KEY, body BLOB)")
        took = []
        end = time.monotonic() + seconds
        while time.monotonic() < end:
            start = time.perf_counter()
            db.execute("BEGIN IMMEDIATE")
            db.executemany("INSERT INTO inbox (body) VALUES (?)", [(BODY,)] * group)
            db.execute("COMMIT")
            took.append(time.perf_counter() - start)
        return took
    finally:
        db.close()


def run(*, quick: bool = False) -> None:
    seconds = 0.5 if quick else 2.0
    print(
        f"sync: SQLite WAL group commits of 8 KB webhooks, {seconds:g} s per cell, "
        "on the benchmarks' temporary directory"
    )
    with tempfile.TemporaryDirectory() as tmpdir:
        for group in (1, 16, 64):
            cells = []
            for mode in ("NORMAL", "FULL"):
                took = sorted(_commits(Path(tmpdir) / f"{mode}-{group}.db", mode, group, seconds))
                p50 = took[len(took) // 2] * 1000
                p99 = took[min(len(took) - 1, len(took) * 99 // 100)] * 1000
                rate = group * len(took) / sum(took)
                cells.append(f"{mode} p50 {p50:6.2f} ms, p99 {p99:6.2f} ms, {rate:7.0f} webhooks/s")
            print(f"  group of {group:2}: " + "; ".join(cells))

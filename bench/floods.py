"""Signed webhooks' latency while someone floods the bridge: the floods of
tests/integration/test_floods.py (tests/integration/floods.py), one at a time, each on a
fresh bridge (shipped config, SQLite) with a real Alertmanager, on loopback.

For each: the signed webhooks sent alongside (one every 20 ms, each on a connection of its
own, as Sentry sends them), their answers, p50/p99/max latency, and how much the bridge's
peak resident memory grew. The tests assert only Sentry's contract (every one 202 within
a second); the figures are here.
"""

from __future__ import annotations

import contextlib
import socket
import tempfile
from collections.abc import Callable, Iterator
from pathlib import Path

import yaml

from tests.integration import floods, procs
from tests.integration.am import start_alertmanager
from tests.integration.conftest import ENV


@contextlib.contextmanager
def _bridge(tmp: Path, **server: object) -> Iterator[procs.Process]:
    with start_alertmanager(tmp / "am", procs.free_port()) as am_url:
        config = procs.write_config(tmp / "config.yaml", [am_url])
        data = yaml.safe_load(config.read_text(encoding="utf-8"))
        data["server"].update(server)
        config.write_text(yaml.safe_dump(data), encoding="utf-8")
        with procs.bridge(config, tmp / "data", tmp / "bridge.log", ENV) as bridge:
            yield bridge


@contextlib.contextmanager
def _nothing(bridge: procs.Process) -> Iterator[str]:
    yield ""


@contextlib.contextmanager
def _held(sockets: Callable[[], list[socket.socket]]) -> Iterator[str]:
    held = sockets()
    try:
        yield f"({len(held)} held)"
    finally:
        for sock in held:
            sock.close()


@contextlib.contextmanager
def _flood(*args: str) -> Iterator[str]:
    with floods.flood(*args) as report:
        yield ""
    print(f"      flood: {report}")


@contextlib.contextmanager
def _populated_status_flood(bridge: procs.Process) -> Iterator[str]:
    floods.populate(bridge.url, 100_000, 2000)
    url = bridge.admin_url + "/-/status?limit=10000"
    with _flood("hammer", "GET", url, "--threads", "64") as note:
        yield note


Scenario = Callable[[procs.Process], contextlib.AbstractContextManager[str]]

SCENARIOS: dict[str, tuple[dict[str, object], Scenario]] = {
    "no flood": ({}, _nothing),
    "1,000 idle + 100 kept-alive connections": (
        {},
        lambda b: _held(
            lambda: (
                floods.idle(floods.port_of(b.url), 1000)
                + floods.kept_alive(floods.port_of(b.url), 100)
            )
        ),
    ),
    "1,030 connections, max_connections 200": (
        {"max_connections": 200, "max_concurrency": 64},
        lambda b: _held(lambda: floods.idle(floods.port_of(b.url), 1030)),
    ),
    "64 clients looping on POST /-/reload (admin)": (
        {},
        lambda b: _flood("hammer", "POST", b.admin_url + "/-/reload", "--threads", "64"),
    ),
    "64 clients looping on GET /-/status?limit=10000 (admin, 2,000 active)": (
        {},
        _populated_status_flood,
    ),
    "900 slow 1 MiB bodies (bad signature)": (
        {},
        lambda b: _flood("slow-bodies", str(floods.port_of(b.url)), "--count", "900"),
    ),
}


def run(*, quick: bool = False) -> None:
    count = 50 if quick else 300
    print(f"\nfloods: {count} signed webhooks alongside each (Sentry's timeout: 1 s)")
    for name, (server, scenario) in SCENARIOS.items():
        print(f"  {name}")
        with tempfile.TemporaryDirectory() as tmp, _bridge(Path(tmp), **server) as bridge:
            pid = bridge.proc.pid
            before = floods.peak_rss(pid)
            with scenario(bridge) as note, floods.Prober(bridge.url) as prober:
                prober.wait_for(count, timeout=120)
            grew = (floods.peak_rss(pid) - before) / 2**20
            print(f"      {prober.summary()}; peak memory +{grew:.0f} MiB {note}".rstrip())

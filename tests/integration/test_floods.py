"""Whoever reaches the webhook port cannot take it down, and only Sentry's and
Prometheus's routes are there: the bridge under Uvicorn as ``serve`` runs it, a real
Alertmanager, and one bounded flood at a time on loopback (tests/integration/floods.py),
while signed webhooks are sent alongside, each on a connection of its own. Sentry's
contract holds through each: every signed webhook answered 202 within one second, and
delivered. (The latency figures: ``bench/run floods``.)"""

from __future__ import annotations

import os
import signal
import subprocess
import time
from pathlib import Path

import yaml

from tests.integration import floods, procs
from tests.integration.conftest import ENV, Alertmanager
from tests.integration.test_edge_faults import running, wait_until_delivered


def probes_answer(url: str) -> None:
    for path in ("/-/healthy", "/-/ready", "/metrics"):
        assert procs.get(url + path, timeout=5).status_code == 200, path


def test_idle_connections_do_not_lock_out_webhooks_or_probes(
    tmp_path: Path, alertmanager: Alertmanager
) -> None:
    """1,000 connections that send nothing and 100 kept alive after a request: Uvicorn's
    limit_concurrency (server.max_concurrency) counted them, and every webhook, probe and
    scrape was answered 503. Now none is."""
    with running(tmp_path, alertmanager.url) as bridge:
        port = floods.port_of(bridge.url)
        held = floods.idle(port, 1000) + floods.kept_alive(port, 100)
        with floods.Prober(bridge.url) as prober:
            probes_answer(bridge.url)
            prober.wait_for(50)
        print(f"\n1,100 idle connections: {prober.summary()}")
        prober.check()
        assert sum(map(floods.is_open, held)) == len(held)  # under the bound: all kept
        for sock in held:
            sock.close()
        wait_until_delivered(alertmanager, prober.accepted())


def test_past_max_connections_the_idle_longest_are_closed_first(
    tmp_path: Path, alertmanager: Alertmanager
) -> None:
    """server.max_connections 200, and 1,030 connections held open: the ones idle longest
    are closed to make room (oldest first), the newest stay, and webhooks and probes
    still get through."""
    with running(tmp_path, alertmanager.url, max_connections=200, max_concurrency=64) as bridge:
        port = floods.port_of(bridge.url)
        oldest = floods.idle(port, 150)
        kept_alive = floods.kept_alive(port, 30)
        newest = floods.idle(port, 850)
        deadline = time.monotonic() + 10
        while any(map(floods.is_open, oldest + kept_alive)):
            assert time.monotonic() < deadline, "the oldest idle connections stayed open"
            time.sleep(0.05)
        assert all(map(floods.is_open, newest[-100:]))
        with floods.Prober(bridge.url) as prober:
            probes_answer(bridge.url)
            prober.wait_for(50)
        print(f"\n1,030 connections past max_connections 200: {prober.summary()}")
        prober.check()
        closed = bridge.metric(
            "sentry_bridge_connections_closed_total", {"reason": "idle_for_room"}
        )
        assert closed >= len(oldest) + len(kept_alive)
        for sock in oldest + kept_alive + newest:
            sock.close()
        wait_until_delivered(alertmanager, prober.accepted())


def test_operator_routes_are_only_on_the_admin_listener(
    tmp_path: Path, alertmanager: Alertmanager
) -> None:
    """Whoever reaches the webhook port can neither reload, read the alerts' labels nor
    empty the dead letters; the admin listener (loopback) can."""
    with running(tmp_path, alertmanager.url) as bridge:
        for method, path in [
            ("POST", "/-/reload"),
            ("GET", "/-/status?limit=10000"),
            ("POST", "/-/status/requeue-dead-letters"),
        ]:
            assert procs.request(method, bridge.url + path).status_code == 404, path
            assert bridge.admin(method, path).status_code == 200, path


def test_a_reload_flood_does_not_slow_webhooks(tmp_path: Path, alertmanager: Alertmanager) -> None:
    """64 clients calling POST /-/reload in a loop (each reload parsed the YAML on the event
    loop: webhooks took up to 7.3 s): reloads are shared and cost nothing while the file
    is unchanged. A change is still applied."""
    with running(tmp_path, alertmanager.url) as bridge:
        reload_url = bridge.process.admin_url + "/-/reload"
        with (
            floods.flood("hammer", "POST", reload_url, "--threads", "64") as report,
            floods.Prober(bridge.url) as prober,
        ):
            prober.wait_for(100)
        print(f"\nreload flood {report['answers']}: {prober.summary()}")
        prober.check()
        assert set(report["answers"]) == {"200"}, report
        assert bridge.metric("sentry_bridge_config_reloads_total") <= report["answers"]["200"]

        config = tmp_path / "config.yaml"
        data = yaml.safe_load(config.read_text(encoding="utf-8"))
        data["server"]["log_level"] = "warning"
        config.write_text(yaml.safe_dump(data), encoding="utf-8")
        assert bridge.admin("POST", "/-/reload").json()["status"] == "reloaded"
        assert bridge.admin("POST", "/-/reload").json()["status"] == "unchanged"
        wait_until_delivered(alertmanager, prober.accepted())


def test_a_status_flood_does_not_slow_webhooks(tmp_path: Path, alertmanager: Alertmanager) -> None:
    """2,000 active alerts and 64 clients reading GET /-/status?limit=10000 in a loop on
    the admin listener (on the webhook port, webhooks took up to 2.7 s): one answer is
    built at a time, encoded off the event loop."""
    with running(tmp_path, alertmanager.url) as bridge:
        floods.populate(bridge.url, 100_000, 2000)
        # Answered 202 is not yet decided: /-/status lists them once the pipeline has.
        decided = {"outcome": "forwarded"}
        bridge.until_metric("sentry_bridge_alerts_total", lambda n: n >= 2000, decided, 60)
        status_url = bridge.process.admin_url + "/-/status?limit=10000"
        assert len(procs.get(status_url, timeout=30).json()["active"]) >= 2000
        with (
            floods.flood("hammer", "GET", status_url, "--threads", "64") as report,
            floods.Prober(bridge.url) as prober,
        ):
            prober.wait_for(100)
        print(f"\nstatus flood {report['answers']}: {prober.summary()}")
        prober.check()
        assert report["answers"].get("200", 0) > 0, report
        wait_until_delivered(alertmanager, prober.accepted())


def test_slow_unsigned_bodies_are_bounded_in_memory(
    tmp_path: Path, alertmanager: Alertmanager
) -> None:
    """900 unsigned webhooks declaring 1 MiB, each sending all but its last byte: every
    one was buffered before the signature check (982 MB). Now at most
    server.max_pending_body_bytes (64 MiB) of bodies are held: the oldest still arriving
    is cut off (503) to make room, and signed webhooks sent meanwhile are answered."""
    with running(tmp_path, alertmanager.url) as bridge:
        pid = bridge.process.proc.pid
        probes_answer(bridge.url)
        before = floods.peak_rss(pid)
        with (
            floods.flood(
                "slow-bodies", str(floods.port_of(bridge.url)), "--count", "900"
            ) as report,
            floods.Prober(bridge.url) as prober,
        ):
            prober.wait_for(100)
            pending = bridge.metric("sentry_bridge_webhook_pending_body_bytes")
        grew = floods.peak_rss(pid) - before
        print(
            f"\n900 slow 1 MiB bodies {report}: peak memory +{grew / 2**20:.0f} MiB; "
            f"{prober.summary()}"
        )
        prober.check()
        assert grew < 200 * 2**20, f"peak memory grew by {grew / 2**20:.0f} MiB"
        assert pending <= 64 * 2**20  # server.max_pending_body_bytes
        assert bridge.metric("sentry_bridge_webhooks_rejected_total", {"reason": "evicted"}) > 0
        wait_until_delivered(alertmanager, prober.accepted())


def listening_on(port: int) -> set[str]:
    """The IPv4 addresses a socket listens on at ``port`` (from /proc/net/tcp)."""
    found = set()
    for line in Path("/proc/net/tcp").read_text().splitlines()[1:]:
        local, state = line.split()[1], line.split()[3]
        address, _, hex_port = local.partition(":")
        if state == "0A" and int(hex_port, 16) == port:
            found.add(".".join(str(b) for b in reversed(bytes.fromhex(address))))
    return found


def test_scripts_serve_keeps_the_operator_routes_on_loopback(
    tmp_path: Path, alertmanager: Alertmanager
) -> None:
    """scripts/serve (the README's first step) listened on every interface with /-/reload
    and /-/status on that port. Now webhooks are on every interface and the operator's
    routes only on 127.0.0.1."""
    port, admin_port = procs.free_port(), procs.free_port()
    config = procs.write_config(tmp_path / "config.yaml", [alertmanager.url])
    data = yaml.safe_load(config.read_text(encoding="utf-8"))
    data["server"].update(port=port, admin_port=admin_port)
    config.write_text(yaml.safe_dump(data), encoding="utf-8")
    env = {**ENV, "BRIDGE_CONFIG": str(config), "BRIDGE_DATA_DIR": str(tmp_path / "data")}
    with (tmp_path / "serve.log").open("wb") as log:
        serve = subprocess.Popen(
            [str(procs.ROOT / "scripts" / "serve")],
            cwd=procs.ROOT,
            env={**os.environ, **env},
            stdout=log,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
    try:
        # It may first install the runtime lock into .venv.
        procs.wait_http(f"http://127.0.0.1:{port}/-/ready", timeout=180, proc=serve)
        assert listening_on(port) == {"0.0.0.0"}
        assert listening_on(admin_port) == {"127.0.0.1"}
        webhook_port, admin = f"http://127.0.0.1:{port}", f"http://127.0.0.1:{admin_port}"
        assert procs.post(webhook_port + "/-/reload").status_code == 404
        assert procs.get(webhook_port + "/-/status").status_code == 404
        assert procs.post(admin + "/-/reload").json() == {"status": "unchanged"}
    finally:
        os.killpg(serve.pid, signal.SIGTERM)
        serve.wait(timeout=30)

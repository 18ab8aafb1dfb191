"""Stopping the bridge for real: a second SIGTERM or Ctrl+C during the drain stops it at
once, and what was not delivered stays in the store for the next start."""

from __future__ import annotations

import signal
import time
from pathlib import Path

import pytest

from tests.integration import procs
from tests.integration.am import start_alertmanager
from tests.integration.conftest import Alertmanager, BridgeFactory
from tests.integration.test_restarts import distinct_issue_alert, wait_for_count


def wait_log(process: procs.Process, text: str, timeout: float = 10.0) -> None:
    deadline = time.monotonic() + timeout
    while text not in process.logs():
        assert time.monotonic() < deadline, f"{text!r} never logged"
        time.sleep(0.05)


@pytest.mark.parametrize("signum", [signal.SIGTERM, signal.SIGINT], ids=["sigterm", "sigint"])
def test_a_second_signal_during_the_drain_stops_at_once(
    tmp_path: Path, bridge_factory: BridgeFactory, signum: signal.Signals
) -> None:
    am_port = procs.free_port()
    am_url = f"http://127.0.0.1:{am_port}"
    with bridge_factory([am_url]) as bridge:
        for n in range(5):
            assert bridge.post(distinct_issue_alert(n), resource="event_alert").status_code == 202
        proc = bridge.process.proc
        proc.send_signal(signum)
        # The drain is under way: Alertmanager is down, so it would take the whole
        # 25 s grace period of the shipped config.
        wait_log(bridge.process, "signal received, draining")
        started = time.monotonic()
        proc.send_signal(signum)
        proc.wait(timeout=20)
        assert time.monotonic() - started < 5
        assert "second signal: stopping now" in bridge.process.logs()

    # Nothing was lost: the next start delivers all of it.
    with start_alertmanager(tmp_path / "am", am_port) as url, bridge_factory([am_url]):
        assert len(wait_for_count(Alertmanager(url), 5)) == 5

"""bridge/serve.py's decisions, in-process: the start-up line, and what a first and a
second SIGTERM/SIGINT do (the signals for real: tests/integration/test_shutdown.py)."""

from __future__ import annotations

import asyncio
import contextlib
import gc
import logging
import signal
import socket
from pathlib import Path

import pytest
import uvicorn
from prometheus_client import CollectorRegistry

from bridge import config
from bridge.app import create_app
from bridge.compose import Bridge
from bridge.errors import ConfigError
from bridge.metrics import Metrics
from bridge.reload import Reloader
from bridge.serve import GC_THRESHOLDS, _Server, bind_admin, startup_line, tune_gc


def make_config(tmp_path: Path) -> config.Config:
    return config.parse(
        {
            "sentry": {"client_secrets": "s", "legacy_token": "t"},
            "alertmanager": {"urls": "http://user:pw@am-0:9093,http://am-1:9093"},
            "store": {"data_dir": str(tmp_path)},
        },
        env={},
    )


def test_the_start_up_line(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.INFO, "bridge.serve")
    startup_line(make_config(tmp_path), "/etc/bridge.yaml")
    [line] = caplog.records
    fields = line.__dict__
    assert fields["config"] == "/etc/bridge.yaml"
    assert fields["alertmanagers"] == ["http://am-0:9093", "http://am-1:9093"]  # no password
    assert fields["auth"] == ["integration", "legacy_token"]
    assert fields["enrichment"] == "off"
    assert "pw" not in str(fields)


async def test_a_second_signal_forces_the_exit_and_hurries_the_drain(tmp_path: Path) -> None:
    cfg = make_config(tmp_path)
    metrics = Metrics(CollectorRegistry())
    bridge = Bridge(cfg, metrics)
    bridge.ready = True
    app = create_app(bridge)
    server = _Server(uvicorn.Config(app), bridge, Reloader(tmp_path / "c.yaml", bridge))
    server._loop = asyncio.get_running_loop()

    server.handle_exit(signal.SIGTERM, None)
    assert server.should_exit
    assert not server.force_exit
    assert not bridge.ready
    assert bridge.stopping_since is not None
    assert server._captured_signals == []  # a drained SIGTERM exits 0, not 143
    assert not bridge._hurry.is_set()

    server.handle_exit(signal.SIGTERM, None)
    assert server.force_exit
    await asyncio.sleep(0)  # hurry() runs on the loop (the handler runs in a signal context)
    assert bridge._hurry.is_set()


pytestmark = pytest.mark.anyio


def test_an_admin_port_in_use_stops_the_start_naming_it() -> None:
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        with pytest.raises(ConfigError, match=f"server.admin_host/admin_port: .*127.0.0.1:{port}"):
            bind_admin("127.0.0.1", port)
    with contextlib.closing(bind_admin("127.0.0.1", 0)) as admin:
        assert admin.getsockname()[0] == "127.0.0.1"


def test_the_gc_is_tuned_for_the_webhook_path() -> None:
    """The server freezes what exists at start and collects the young generation less
    often than Python's 700 (issue 15: 4 % of the CPU under load went to the GC)."""
    before = gc.get_threshold()
    try:
        tune_gc()
        assert gc.get_threshold() == GC_THRESHOLDS
        assert GC_THRESHOLDS[0] > before[0]
        assert gc.get_freeze_count() > 0
    finally:
        gc.unfreeze()
        gc.set_threshold(*before)

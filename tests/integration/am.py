"""A real Alertmanager on a loopback port, for the integration tests and the benchmarks.

``start_alertmanager(path, port)`` runs ``prometheus-alertmanager`` with clustering
off and a route to a receiver that notifies nobody; what it holds is read back
through its API (``GET /api/v2/alerts``). Alertmanager keeps alerts in memory
only, so leaving the context and starting again on the same port is a restart
that forgot every alert.
"""

from __future__ import annotations

import contextlib
import os
import shutil
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.integration import procs

DEBIAN_BINARY = "/usr/bin/prometheus-alertmanager"

# group_wait 1s: alerts reach the (null) receiver quickly; nothing is notified.
CONFIG = """\
route:
  receiver: "null"
  group_wait: 1s
  group_interval: 1s
  repeat_interval: 1h
receivers:
  - name: "null"
"""


def binary() -> str | None:
    found = shutil.which("prometheus-alertmanager")
    if found:
        return found
    return DEBIAN_BINARY if Path(DEBIAN_BINARY).exists() else None


def require_binary() -> str:
    """The binary's path; skips the test without it, or fails under ``CI=true``."""
    path = binary()
    if path is None:
        message = "prometheus-alertmanager is not installed (apt-get install it)"
        if os.environ.get("CI") == "true":
            pytest.fail(message)
        pytest.skip(message)
    return path


@contextlib.contextmanager
def start_alertmanager(path: Path, port: int, config_text: str = CONFIG) -> Iterator[str]:
    """Alertmanager on ``127.0.0.1:port`` with its files under ``path`` (and another
    configuration than ``CONFIG``, if given); yields its URL once ``/-/ready`` answers,
    stops it (SIGTERM) on exit."""
    path.mkdir(parents=True, exist_ok=True)
    config = path / "alertmanager.yml"
    config.write_text(config_text, encoding="utf-8")
    url = f"http://127.0.0.1:{port}"
    args = [
        require_binary(),
        f"--config.file={config}",
        f"--storage.path={path / 'data'}",
        f"--web.listen-address=127.0.0.1:{port}",
        "--cluster.listen-address=",  # empty: no gossip port, no peers
    ]
    with procs.spawn(args, url, "/-/ready", path / "alertmanager.log"):
        yield url

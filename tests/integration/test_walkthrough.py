"""The README's first-alert walk-through, run as written: Alertmanager started by the
README's command, then the bridge and the session, their output compared with what the
README shows, so neither can rot. Only what differs from run to run is normalised (request
ids, times, the loopback ports the test uses in place of 8080 and 9093, Alertmanager's
storage directory and the bridge's data directory, temporary ones here, and what doctor's
test alert and Alertmanager's version make different)."""

from __future__ import annotations

import contextlib
import os
import re
import shlex
import signal
import subprocess
from collections.abc import Iterator
from pathlib import Path

import yaml

from tests.integration import am, procs

README = procs.ROOT / "README.md"


def block_after(marker: str, text: str) -> str:
    """The fenced block right after ``<!-- walk-through: marker -->``."""
    at = text.index(f"<!-- walk-through: {marker} -->")
    start = text.index("\n", text.index("```", at)) + 1
    return text[start : text.index("```", start)]


def normalise(text: str, bridge_port: int, am_port: int, data_dir: Path) -> str:
    text = re.sub(r"[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}", "<id>", text)
    text = re.sub(r"until \d{4}-\d\d-\d\d \d\d:\d\d:\d\dZ", "until <time>", text)
    # doctor: its test alert's issue id (bridge.doctor) and the Alertmanager's version.
    text = re.sub(r"sentry_issue_id=\"9\d{18}\"", 'sentry_issue_id="<test issue>"', text)
    text = re.sub(r"version [0-9][^,]*, cluster", "version <version>, cluster", text)
    text = text.replace(f"{data_dir}/", "./data/")
    text = text.replace(f"127.0.0.1:{bridge_port}", "127.0.0.1:8080")
    return text.replace(f"127.0.0.1:{am_port}", "localhost:9093")


@contextlib.contextmanager
def readme_alertmanager(readme: str, path: Path) -> Iterator[str]:
    """Alertmanager started by the README's command, on a free loopback port (no gossip
    port) and with its storage under ``path``; yields its URL once ready."""
    [line] = block_after("alertmanager", readme).strip().splitlines()
    assert line.endswith(" &"), "the README starts it in the background"
    args = shlex.split(line.removesuffix(" &"))
    assert args[0] == "prometheus-alertmanager"
    args = [am.require_binary(), *(a.replace("=/tmp/alertmanager", f"={path}") for a in args[1:])]
    port = procs.free_port()
    args += [f"--web.listen-address=127.0.0.1:{port}", "--cluster.listen-address="]
    url = f"http://127.0.0.1:{port}"
    path.mkdir()
    with procs.spawn(args, url, "/-/ready", path / "alertmanager.log"):
        yield url


def test_the_readme_walk_through_as_written(tmp_path: Path) -> None:
    readme = README.read_text(encoding="utf-8")
    with readme_alertmanager(readme, tmp_path / "alertmanager") as am_url:
        walk_through(readme, tmp_path, am_url)


def walk_through(readme: str, tmp_path: Path, am_url: str) -> None:
    [serve_line] = block_after("serve", readme).strip().splitlines()
    session = block_after("session", readme)
    commands = [line[2:] for line in session.splitlines() if line.startswith("$ ")]
    assert commands[1].startswith("scripts/sentry-bridge send")

    # The shipped config.yaml, on ports this test may use: BRIDGE_CONFIG is how both
    # scripts/serve and scripts/sentry-bridge find it.
    port = procs.free_port()
    am_port = int(am_url.rpartition(":")[2])
    config = procs.write_config(tmp_path / "config.yaml", [am_url])
    data = yaml.safe_load(config.read_text(encoding="utf-8"))
    data["server"]["port"] = port
    data["server"]["admin_port"] = procs.free_port()  # status talks to it; 8081 may be taken
    config.write_text(yaml.safe_dump(data), encoding="utf-8")
    env = {
        **os.environ,
        "BRIDGE_CONFIG": str(config),
        "BRIDGE_DATA_DIR": str(tmp_path / "data"),
    }
    env.pop("SENTRY_CLIENT_SECRET", None)

    with (tmp_path / "serve.log").open("wb") as log:
        serve = subprocess.Popen(
            ["bash", "-c", serve_line],
            cwd=procs.ROOT,
            env=env,
            stdout=log,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
    try:
        procs.wait_http(f"http://127.0.0.1:{port}/-/ready", timeout=120, proc=serve)
        # One shell, so `export` carries over, echoing each command as the README shows it.
        script = "set -e\n" + "".join(
            f"printf '%s\\n' {shlex.quote('$ ' + command)}\n{command}\n" for command in commands
        )
        out = subprocess.run(
            ["bash", "-c", script],
            cwd=procs.ROOT,
            env=env,
            capture_output=True,
            text=True,
            timeout=180,
        )
    finally:
        os.killpg(serve.pid, signal.SIGTERM)
        serve.wait(timeout=60)
    assert out.returncode == 0, out.stdout + out.stderr
    assert normalise(out.stdout, port, am_port, tmp_path / "data") == session

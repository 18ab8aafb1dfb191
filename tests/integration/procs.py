"""Real processes on loopback for the integration tests and the benchmarks: the bridge
under Uvicorn (``python -m bridge serve``) and any ASGI app under Uvicorn."""

from __future__ import annotations

import contextlib
import os
import signal
import socket
import ssl
import subprocess
import sys
import time
from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import Any

import httpx
import yaml

ROOT = Path(__file__).resolve().parents[2]

# httpx builds an SSL context for every client it makes (certifi's bundle parsed: 15-50 ms of
# CPU), and httpx.get() makes a client per call. Polls that call it every 50 ms took a core
# from the server they waited for, so the test side's clients share this one instead (the
# servers here are plain HTTP on loopback; it is never used). The functions below are the
# one way the tests make a client of a real server: they pass it.
TLS = ssl.create_default_context()


def client(**kwargs: Any) -> httpx.Client:
    """``httpx.Client(**kwargs)`` with the shared SSL context."""
    return httpx.Client(verify=TLS, **kwargs)


def async_client(**kwargs: Any) -> httpx.AsyncClient:
    """``httpx.AsyncClient(**kwargs)`` with the shared SSL context."""
    return httpx.AsyncClient(verify=TLS, **kwargs)


def request(method: str, url: str, **kwargs: Any) -> httpx.Response:
    """One request on a client of its own (``httpx.request``), with the shared SSL context."""
    return httpx.request(method, url, verify=TLS, **kwargs)


def get(url: str, **kwargs: Any) -> httpx.Response:
    return request("GET", url, **kwargs)


def post(url: str, **kwargs: Any) -> httpx.Response:
    return request("POST", url, **kwargs)


def write_config(path: Path, am_urls: list[str], **alertmanager: object) -> Path:
    """The shipped config.yaml, policy and all, pointed at ``am_urls``; ``alertmanager``
    overrides keys of its section (the tests retry faster than production)."""
    data = yaml.safe_load((ROOT / "config.yaml").read_text(encoding="utf-8"))
    section = data.setdefault("alertmanager", {})
    section.update({"urls": ",".join(am_urls), "backoff_initial": "0.1s", "backoff_max": "0.5s"})
    section.update(alertmanager)
    path.write_text(yaml.safe_dump(data), encoding="utf-8")
    return path


def update_config(path: Path, **sections: object) -> Path:
    """Replace whole top-level sections of a config ``write_config`` made (``store=...``,
    ``dedup=...``)."""
    data = yaml.safe_load(path.read_text(encoding="utf-8"))
    data.update(sections)
    path.write_text(yaml.safe_dump(data), encoding="utf-8")
    return path


def use_postgres(path: Path, schema: str, **store: object) -> Path:
    """Point a config ``write_config`` made at PostgreSQL (``schema``), its DSN read from
    ``BRIDGE_DATABASE_URL`` as the chart's Secret gives it; ``store``: more keys of the
    ``store`` section (``spool={...}``)."""
    data = yaml.safe_load(path.read_text(encoding="utf-8"))
    section = data["store"]
    section["backend"] = "postgres"
    section["postgres"].update({"dsn": "${BRIDGE_DATABASE_URL}", "schema": schema})
    section.update(store)
    path.write_text(yaml.safe_dump(data), encoding="utf-8")
    return path


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


def wait_http(
    url: str, *, timeout: float = 20.0, proc: subprocess.Popen[bytes] | None = None
) -> None:
    """Poll until ``url`` answers 200; fail early if ``proc`` died."""
    deadline = time.monotonic() + timeout
    last: object = None
    while time.monotonic() < deadline:
        if proc is not None and proc.poll() is not None:
            raise RuntimeError(f"process exited with {proc.returncode} before {url} was up")
        try:
            if get(url, timeout=1.0).status_code == 200:
                return
        except httpx.HTTPError as exc:
            last = exc
        time.sleep(0.05)
    raise TimeoutError(f"{url} not up after {timeout}s ({last})")


class Process:
    """A started server: its base URL (and the bridge's admin listener's), the process and
    where it logs."""

    def __init__(
        self, proc: subprocess.Popen[bytes], url: str, log: Path, admin_url: str = ""
    ) -> None:
        self.proc = proc
        self.url = url
        self.log = log
        self.admin_url = admin_url

    def kill(self) -> None:
        """SIGKILL to every process of the server at once (its process group): no
        shutdown hook runs, like an OOM kill of the container or a node loss."""
        if self.proc.poll() is None:
            os.killpg(self.proc.pid, signal.SIGKILL)
            self.proc.wait(timeout=10)

    def terminate(self, timeout: float = 30.0) -> int:
        """SIGTERM, as Kubernetes does, and wait for the exit code."""
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
        return self.proc.wait(timeout=timeout)

    def logs(self) -> str:
        return self.log.read_text(encoding="utf-8", errors="replace")


@contextlib.contextmanager
def spawn(
    args: list[str],
    url: str,
    ready_path: str,
    log: Path,
    env: Mapping[str, str] | None = None,
    cwd: Path = ROOT,
    admin_url: str = "",
) -> Iterator[Process]:
    full_env = {**os.environ, "PYTHONUNBUFFERED": "1", **(env or {})}
    with log.open("ab") as out:
        # A session of its own: kill() reaches the server's children, and a terminal's
        # Ctrl-C does not.
        proc = subprocess.Popen(
            args,
            cwd=cwd,
            env=full_env,
            stdout=out,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
    process = Process(proc, url, log, admin_url)
    try:
        try:
            wait_http(url + ready_path, proc=proc)
        except (RuntimeError, TimeoutError) as exc:
            tail = "\n".join(process.logs().splitlines()[-15:])
            raise RuntimeError(f"{exc}; last lines of {log.name}:\n{tail}") from None
        yield process
    finally:
        if proc.poll() is None:
            proc.send_signal(signal.SIGTERM)
            try:
                proc.wait(timeout=30)
            except subprocess.TimeoutExpired:
                os.killpg(proc.pid, signal.SIGKILL)
                proc.wait()
        # Whatever the server left behind (a child outliving it) goes too.
        with contextlib.suppress(ProcessLookupError):
            os.killpg(proc.pid, signal.SIGKILL)


def bridge(
    config: Path,
    data_dir: Path,
    log: Path,
    env: Mapping[str, str],
    port: int | None = None,
    cwd: Path = ROOT,
    python: str = sys.executable,
) -> contextlib.AbstractContextManager[Process]:
    """``python -m bridge serve`` on 127.0.0.1 (the admin listener on a port of its own),
    ready when ``/-/ready`` answers; ``cwd``: the checkout whose ``bridge`` runs (the
    benchmark's baseline), this one by default; ``python``: the interpreter (the
    baseline's own virtualenv)."""
    port = port or free_port()
    admin_port = free_port()
    args = [python, "-m", "bridge", "serve", "--config", str(config)]
    args += ["--host", "127.0.0.1", "--port", str(port), "--admin-port", str(admin_port)]
    return spawn(
        args,
        f"http://127.0.0.1:{port}",
        "/-/ready",
        log,
        {**env, "BRIDGE_DATA_DIR": str(data_dir)},
        cwd=cwd,
        admin_url=f"http://127.0.0.1:{admin_port}",
    )


def uvicorn_app(
    app: str, log: Path, port: int | None = None
) -> contextlib.AbstractContextManager[Process]:
    """Any ASGI app (``module:attribute``) under one Uvicorn worker, ready when ``/`` answers."""
    port = port or free_port()
    args = [sys.executable, "-m", "uvicorn", app, "--host", "127.0.0.1", "--port", str(port)]
    args += ["--no-access-log", "--log-level", "warning"]
    return spawn(args, f"http://127.0.0.1:{port}", "/-/healthy", log)

"""The processes a benchmark runs against, started for real on loopback ports.

* :func:`bare`: the baseline, ``bench/bare.py`` under Uvicorn with ``workers`` worker
  processes (Uvicorn's supervisor in front when more than one);
* :func:`bridge`: ``sentry-bridge serve`` on the shipped config with the SQLite store or a
  real PostgreSQL (``tests/integration/postgres.py``), and optionally a real Alertmanager
  (``tests/integration/am.py``), itself optionally behind the recording proxy
  (``bench/recorder.py``).

Each yields a :class:`Stack`: the URL to load, and the root process of every group whose
CPU the benchmark counts separately (bridge, database, Alertmanager).
"""

from __future__ import annotations

import contextlib
import sys
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

import yaml

from bench import payloads, processes
from tests.integration import postgres, procs
from tests.integration.am import start_alertmanager

StoreName = Literal["sqlite", "postgres"]

# Alertmanager as production runs it (README: group_wait 30s, group_interval 5m), notifying
# nobody. The tests' CONFIG flushes every group each second, which is cheap for their few
# alerts; with the benchmarks' 100,000 in one group, Alertmanager would spend the machine's
# cores aggregating them every second instead of taking the bridge's posts.
ALERTMANAGER_CONFIG = """\
route:
  receiver: "null"
  group_by: [alertname, project, environment]
  group_wait: 30s
  group_interval: 5m
  repeat_interval: 4h
receivers:
  - name: "null"
"""


class Unsupported(Exception):
    """The bridge under test cannot run this variant (e.g. it refuses store.backend:
    postgres before the PostgreSQL engine is wired); the benchmark says so and goes on."""


@dataclass
class Stack:
    url: str
    server: procs.Process
    groups: dict[str, int] = field(default_factory=dict)  # group name -> root pid
    recorded: Path | None = None  # the recording proxy's file, if one runs


def bridge_processes(stack: Stack) -> int:
    """How many processes the bridge runs (edge and worker today; one after the
    process-model change): read from /proc, not assumed."""
    return len(processes.process_tree(stack.groups["bridge"]))


@contextlib.contextmanager
def bare(tmp: Path, workers: int) -> Iterator[Stack]:
    port = procs.free_port()
    args = [sys.executable, "-m", "uvicorn", "bench.bare:app", "--host", "127.0.0.1"]
    args += ["--port", str(port), "--no-access-log", "--log-level", "warning"]
    # The server the bridge runs (bridge/serve.py): httptools on uvloop, so the baseline
    # measures what the bridge adds, not a different HTTP stack.
    args += ["--http", "httptools", "--loop", "uvloop", "--workers", str(workers)]
    url = f"http://127.0.0.1:{port}"
    with procs.spawn(args, url, "/-/healthy", tmp / "bare.log") as server:
        yield Stack(url, server, {"bare app": server.proc.pid})


def postgres_available() -> bool:
    return postgres.bindir() is not None


@contextlib.contextmanager
def postgres_server() -> Iterator[postgres.Server]:
    """A fresh PostgreSQL cluster (fsync on, as production), as the store tests start it."""
    if not postgres_available():
        raise Unsupported("the PostgreSQL server is not installed (apt-get install postgresql)")
    with postgres.start_postgres() as server:
        yield server


def postmaster_pid(server: postgres.Server) -> int:
    # postmaster.pid's first line is the postmaster's process id (PostgreSQL docs, 19.2).
    return int((server.data / "postmaster.pid").read_text().split()[0])


_schemas = iter(range(1, 1_000_000))


def write_config(
    path: Path,
    am_url: str,
    *,
    store: StoreName,
    pg: postgres.Server | None,
    settings: dict[str, dict[str, Any]] | None = None,
) -> Path:
    """The shipped config (``procs.write_config``) with the store section for ``store``
    and ``settings`` merged into its sections; with PostgreSQL, a schema of its own per
    run, so no run sees another's rows."""
    procs.write_config(path, [am_url])
    data = yaml.safe_load(path.read_text(encoding="utf-8"))
    data.setdefault("store", {})["backend"] = store
    if store == "postgres":
        assert pg is not None
        data["store"].setdefault("postgres", {}).update(
            {"dsn": pg.dsn(), "schema": f"bench_{next(_schemas)}"}
        )
    for section, values in (settings or {}).items():
        data.setdefault(section, {}).update(values)
    path.write_text(yaml.safe_dump(data), encoding="utf-8")
    return path


@contextlib.contextmanager
def _recorder(tmp: Path, upstream: str) -> Iterator[tuple[str, Path, int]]:
    port = procs.free_port()
    recorded = tmp / "recorded.jsonl"
    recorded.touch()
    args = [sys.executable, "-m", "uvicorn", "--factory", "bench.recorder:create_app"]
    args += ["--host", "127.0.0.1", "--port", str(port), "--no-access-log"]
    args += ["--log-level", "warning"]
    env = {"RECORDER_UPSTREAM": upstream, "RECORDER_FILE": str(recorded)}
    url = f"http://127.0.0.1:{port}"
    with procs.spawn(args, url, "/-/recorder", tmp / "recorder.log", env) as proxy:
        yield url, recorded, proxy.proc.pid


def server_log(tmp: Path) -> str:
    log = tmp / "bridge.log"
    return log.read_text(errors="replace") if log.exists() else ""


def sqlite_synchronous_knob() -> tuple[str, str] | None:
    """Where the config sets SQLite's ``synchronous`` (section, key), if this bridge has
    such a key: then the benchmark can compare NORMAL with FULL; else it says so."""
    from bridge import config

    for section, model in (("store", config.Store),):
        for name, info in model.model_fields.items():
            if "synchronous" in (info.alias or name):
                return section, info.alias or name
    return None


def _python(checkout: Path | None) -> str:
    own = checkout / ".venv" / "bin" / "python" if checkout is not None else None
    return str(own) if own is not None and own.exists() else sys.executable


@contextlib.contextmanager
def bridge(
    tmp: Path,
    *,
    store: StoreName = "sqlite",
    pg: postgres.Server | None = None,
    alertmanager: bool = True,
    record: bool = False,
    settings: dict[str, dict[str, Any]] | None = None,
    checkout: Path | None = None,
) -> Iterator[Stack]:
    """The bridge, its database (PostgreSQL: ``pg``, a running server) and its
    Alertmanager: a real one (behind the recording proxy with ``record``), or a loopback
    port nobody answers on. ``checkout``: run the ``bridge`` of that source tree (a
    baseline to compare with, e.g. ``git archive main | tar -x -C DIR``), not this one's,
    on the Python of ``DIR/.venv`` when there is one (the baseline's own locked
    dependencies: Uvicorn picks uvloop whenever it is installed)."""
    tmp.mkdir(parents=True, exist_ok=True)
    env = {"SENTRY_CLIENT_SECRET": payloads.SECRET}
    groups: dict[str, int] = {}
    recorded: Path | None = None
    with contextlib.ExitStack() as stack:
        if alertmanager:
            am_port = procs.free_port()
            am_url = stack.enter_context(
                start_alertmanager(tmp / "am", am_port, ALERTMANAGER_CONFIG)
            )
            am_pid = processes.pid_with_argument(f"--web.listen-address=127.0.0.1:{am_port}")
            if am_pid is not None:
                groups["alertmanager"] = am_pid
            if record:
                am_url, recorded, proxy = stack.enter_context(_recorder(tmp, am_url))
                groups["recorder"] = proxy  # the instrument's own CPU, shown apart
        else:
            am_url = f"http://127.0.0.1:{procs.free_port()}"  # nobody answers
        config = write_config(tmp / "config.yaml", am_url, store=store, pg=pg, settings=settings)
        try:
            server = stack.enter_context(
                procs.bridge(
                    config,
                    tmp / "data",
                    tmp / "bridge.log",
                    env,
                    cwd=checkout or procs.ROOT,
                    python=_python(checkout),
                )
            )
        except RuntimeError as exc:
            if store != "postgres":
                raise
            # Until the PostgreSQL engine is wired the bridge refuses it at start.
            last = (server_log(tmp).strip().splitlines() or [str(exc)])[-1]
            raise Unsupported(f"the bridge did not start on PostgreSQL: {last[:300]}") from None
        groups = {"bridge": server.proc.pid, **groups}
        if pg is not None and store == "postgres":
            groups["database"] = postmaster_pid(pg)
        yield Stack(server.url, server, groups, recorded)

"""A real PostgreSQL on a loopback port, for the store's tests (and, later, the fault tests).

The Debian ``postgresql`` server (``/usr/lib/postgresql/<version>/bin``): ``initdb`` makes a
cluster in a temporary directory, ``pg_ctl`` starts it listening on 127.0.0.1 only (no Unix
socket), with trust authentication (loopback only, nothing else can reach it) and fsync on,
as production runs (the benchmarks; the tests' session server runs without, tests/conftest.py).
PostgreSQL refuses to run as root ("root" execution of the PostgreSQL server is not
permitted), so under root every server command runs as the ``postgres`` user,
which owns the directory.

Without the binaries the tests that need them are skipped on a workstation and fail under
``CI=true``, as for Alertmanager (``tests/integration/am.py``).
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import pwd
import shutil
import subprocess
import tempfile
from collections.abc import Iterator
from pathlib import Path

import asyncpg
import pytest

from tests.integration import procs

DEBIAN_ROOT = Path("/usr/lib/postgresql")
USER = "postgres"


def bindir() -> Path | None:
    """The newest installed server's ``bin`` (``initdb`` is not on ``PATH`` on Debian)."""
    versions = sorted(
        (p for p in DEBIAN_ROOT.glob("*/bin/initdb") if p.parent.parent.name.isdigit()),
        key=lambda p: int(p.parent.parent.name),
    )
    if versions:
        return versions[-1].parent
    found = shutil.which("initdb")  # elsewhere: initdb and pg_ctl on PATH, resolved
    return Path(found).resolve().parent if found else None


def require_bindir() -> Path:
    """The server's ``bin``; skips the test without it, or fails under ``CI=true``."""
    path = bindir()
    if path is None:
        message = "the PostgreSQL server is not installed (apt-get install postgresql)"
        if os.environ.get("CI") == "true":
            pytest.fail(message)
        pytest.skip(message)
    return path


class Server:
    """One PostgreSQL cluster: ``dsn()`` to reach it, ``stop_immediately()`` and ``start()``
    for fault tests (``pg_ctl stop -m immediate`` is a crash: no checkpoint, recovery from
    the WAL at the next start)."""

    def __init__(
        self,
        bin_dir: Path,
        root: Path,
        port: int,
        tls: tuple[Path, Path] | None = None,
        fsync: bool = True,
    ) -> None:
        self.bin_dir = bin_dir
        self.tls = tls
        self.fsync = fsync
        self.root = root
        self.data = root / "data"
        self.log = root / "postgres.log"
        self.port = port

    def dsn(self, database: str = "postgres") -> str:
        return f"postgresql://{USER}@127.0.0.1:{self.port}/{database}"

    def _run(self, *args: str) -> None:
        # As root: run as the postgres user, which owns root/ (runuser keeps the environment
        # minimal and needs no password). As anyone else: as ourselves.
        prefix = ["runuser", "-u", USER, "--"] if os.geteuid() == 0 else []
        command = [*prefix, str(self.bin_dir / args[0]), *args[1:]]
        done = subprocess.run(
            command, cwd=self.root, capture_output=True, text=True, timeout=60, check=False
        )
        if done.returncode != 0:
            tail = self.log.read_text(errors="replace")[-2000:] if self.log.exists() else ""
            raise RuntimeError(
                f"{' '.join(args[:2])} failed ({done.returncode}): {done.stderr.strip()}\n{tail}"
            )

    def init(self) -> None:
        self._run(
            "initdb",
            f"--pgdata={self.data}",
            f"--username={USER}",
            "--auth=trust",
            "--encoding=UTF8",
            "--locale=C",
        )
        settings = {
            "listen_addresses": "'127.0.0.1'",
            "port": str(self.port),
            "unix_socket_directories": "''",  # TCP on loopback only
            "fsync": "on" if self.fsync else "off",
            "shared_buffers": "'32MB'",  # the machine is shared; the tests' data is small
            "max_connections": "100",
        }
        if self.tls is not None:
            # TLS offered beside plain TCP (the trust lines of pg_hba.conf match both).
            for source, name in zip(self.tls, ("server.crt", "server.key"), strict=True):
                shutil.copyfile(source, self.data / name)
                (self.data / name).chmod(0o600)  # the server refuses a readable key
                _give_to_postgres(self.data / name)
            settings |= {
                "ssl": "on",
                "ssl_cert_file": "'server.crt'",
                "ssl_key_file": "'server.key'",
            }
        with (self.data / "postgresql.conf").open("a", encoding="utf-8") as conf:
            conf.writelines(f"{key} = {value}\n" for key, value in settings.items())

    def start(self) -> None:
        """Start (again) and wait until it accepts connections (``pg_ctl -w``)."""
        self._run("pg_ctl", "start", f"--pgdata={self.data}", f"--log={self.log}", "-w", "-t", "60")

    def stop(self) -> None:
        """A clean stop: disconnect clients, checkpoint, exit."""
        self._run("pg_ctl", "stop", f"--pgdata={self.data}", "-m", "fast", "-w")

    def stop_immediately(self) -> None:
        """A crash, as far as clients and the data directory can tell."""
        self._run("pg_ctl", "stop", f"--pgdata={self.data}", "-m", "immediate", "-w")

    @property
    def running(self) -> bool:
        return (self.data / "postmaster.pid").exists()


def drop_schema(server: Server, schema: str) -> None:
    """Drop a schema a test made its bridges use (started again first if the test stopped
    the server)."""
    if not server.running:
        server.start()

    async def drop() -> None:
        conn = await asyncpg.connect(server.dsn())
        try:
            await conn.execute(f'DROP SCHEMA IF EXISTS "{schema}" CASCADE')
        finally:
            await conn.close()

    asyncio.run(drop())


def _give_to_postgres(path: Path) -> None:
    if os.geteuid() == 0:
        account = pwd.getpwnam(USER)
        os.chown(path, account.pw_uid, account.pw_gid)


@contextlib.contextmanager
def start_postgres(
    port: int | None = None, tls: tuple[Path, Path] | None = None, fsync: bool = True
) -> Iterator[Server]:
    """A fresh cluster in a temporary directory; stopped and removed on exit. ``tls``: the
    server's certificate and key files, to offer TLS. ``fsync``: as production (a commit on
    disk), or off where only a crash of the server, never of the machine, is tested."""
    bin_dir = require_bindir()
    # Not pytest's tmp_path: it is private to root, and the server runs as postgres.
    root = Path(tempfile.mkdtemp(prefix="bridge-postgres-"))
    _give_to_postgres(root)
    server = Server(bin_dir, root, port or procs.free_port(), tls, fsync)
    try:
        server.init()
        server.start()
        yield server
    finally:
        if server.running:
            with contextlib.suppress(RuntimeError):
                server.stop()
        shutil.rmtree(root, ignore_errors=True)

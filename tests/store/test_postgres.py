"""The PostgreSQL engine's groundwork against a real PostgreSQL: the pool's settings, the
schema migration (once, even with several replicas starting together), the database clock;
and the TLS options as the SSLContext libpq's sslmode describes (unit)."""

from __future__ import annotations

import asyncio
import contextlib
import socket
import ssl
import subprocess
import sys
import time
from collections.abc import AsyncIterator, Iterator
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import asyncpg
import pytest
from prometheus_client import CollectorRegistry
from pydantic import SecretStr

from bridge import config
from bridge.config import Postgres, PostgresSSL
from bridge.errors import ConfigError, StoreError
from bridge.metrics import Metrics
from bridge.store import open_for_operator
from bridge.store.contract import Processed
from bridge.store.pg import connection as postgres
from bridge.store.pg import sql
from bridge.store.pg.schema import MIGRATIONS, Migration
from tests import factories
from tests.conftest import PostgresTarget
from tests.factories import postable
from tests.integration.postgres import Server, start_postgres
from tests.store import probes
from tests.store.engines import postgres_store

pytestmark = pytest.mark.anyio

ROOT = Path(__file__).resolve().parents[2]
TABLES = {
    "schema_version",
    "inbox",
    "seen_body",
    "identity_state",
    "queue",
    "progress",
    "resolved",
    "dead_letter",
    "quarantine",
    "lease",
    "probe",
}
LATEST = [m.version for m in MIGRATIONS]


@contextlib.asynccontextmanager
async def pool(target: PostgresTarget, **overrides: object) -> AsyncIterator[Any]:
    settings = target.settings.model_copy(update=overrides)
    opened = await postgres.connect(settings)
    try:
        yield opened
    finally:
        await opened.close()


async def tables(conn: Any, schema: str) -> set[str]:
    rows = await conn.fetch("SELECT tablename FROM pg_tables WHERE schemaname = $1", schema)
    return {row[0] for row in rows}


# --- the pool ------------------------------------------------------------------------------


async def test_connections_start_in_the_schema_with_the_timeouts(
    pg: PostgresTarget,
) -> None:
    async with pool(pg, statement_timeout=0.25) as p, p.acquire() as conn:
        assert await conn.fetchval("SHOW search_path") == f'"{pg.schema}"'
        assert await conn.fetchval("SHOW statement_timeout") == "250ms"
        assert await conn.fetchval("SHOW application_name") == "sentry-alertmanager-bridge"
        # The server enforces it: a statement running longer is cancelled.
        with pytest.raises(asyncpg.QueryCanceledError):
            await conn.execute("SELECT pg_sleep(2)")


async def test_the_pool_holds_at_most_pool_size_connections(pg: PostgresTarget) -> None:
    async with pool(pg, pool_size=2) as p, p.acquire(), p.acquire():
        with pytest.raises(TimeoutError):
            await p.acquire(timeout=0.2)


async def test_connect_gives_up_after_connect_timeout(pg: PostgresTarget) -> None:
    """A server that accepts TCP but never answers (a hung database, a black-holing proxy)."""
    with socket.socket() as silent:
        silent.bind(("127.0.0.1", 0))
        silent.listen()
        port = silent.getsockname()[1]
        dsn = f"postgresql://postgres@127.0.0.1:{port}/postgres"
        started = time.monotonic()
        settings = pg.settings.model_copy(update={"dsn": SecretStr(dsn), "connect_timeout": 0.3})
        with pytest.raises(TimeoutError):
            await postgres.connect(settings)
        assert 0.3 <= time.monotonic() - started < 3


async def test_the_database_clock(pg: PostgresTarget) -> None:
    async with pool(pg) as p, p.acquire() as conn, conn.transaction():
        first = await probes.database_now(conn)
        second = await probes.database_now(conn)
    # clock_timestamp(), not now(): it moves inside a transaction too.
    assert second > first
    assert first.tzinfo is not None
    assert abs((first - datetime.now(UTC)).total_seconds()) < 5


# --- migration -----------------------------------------------------------------------------


async def test_migrate_creates_the_schema_once(pg: PostgresTarget) -> None:
    async with pool(pg) as p, p.acquire() as conn:
        assert await postgres.schema_version(conn, pg.schema) == 0
        assert await postgres.migrate(conn, pg.schema) == LATEST
        assert await tables(conn, pg.schema) == TABLES
        assert await postgres.migrate(conn, pg.schema) == [], "idempotent"
        assert await postgres.schema_version(conn, pg.schema) == LATEST[-1]
        rows = await conn.fetch("SELECT version FROM schema_version ORDER BY version")
        assert [row[0] for row in rows] == LATEST
        # Nothing landed outside the bridge's schema.
        assert await tables(conn, "public") == set()


async def test_a_failed_migration_leaves_nothing_behind(pg: PostgresTarget) -> None:
    broken = (*MIGRATIONS, Migration(len(MIGRATIONS) + 1, "test", "CREATE TABLE inbox ()"))
    async with pool(pg) as p, p.acquire() as conn:
        with pytest.raises(asyncpg.DuplicateTableError):
            await postgres.migrate(conn, pg.schema, broken)
        assert await postgres.schema_version(conn, pg.schema) == 0
        assert await tables(conn, pg.schema) == set()


async def test_a_newer_schema_is_refused(pg: PostgresTarget) -> None:
    async with pool(pg) as p, p.acquire() as conn:
        await postgres.migrate(conn, pg.schema)
        await conn.execute("INSERT INTO schema_version VALUES (99, 'from the future')")
        with pytest.raises(StoreError, match="version 99, newer than this bridge's"):
            await postgres.migrate(conn, pg.schema)


async def test_concurrent_migrations_apply_each_version_once(pg: PostgresTarget) -> None:
    """Eight replicas starting at the same instant: every one returns, no error, and each
    migration was applied by exactly one of them (a second CREATE TABLE would fail)."""
    async with pool(pg, pool_size=8) as p:
        conns = [await p.acquire() for _ in range(8)]
        try:
            results = await asyncio.gather(*(postgres.migrate(c, pg.schema) for c in conns))
        finally:
            for conn in conns:
                await p.release(conn)
        assert sorted(v for applied in results for v in applied) == LATEST
        async with p.acquire() as conn:
            assert await conn.fetchval("SELECT count(*) FROM schema_version") == len(LATEST)


MIGRATE_PROCESS = """
import asyncio, sys
import asyncpg
from bridge.store.pg import connection as postgres
from bridge.store.pg import sql

async def main(dsn: str, schema: str, gate: int) -> None:
    conn = await asyncpg.connect(dsn)
    await conn.execute("SELECT pg_advisory_lock_shared($1)", gate)  # the start gate
    print(",".join(map(str, await postgres.migrate(conn, schema))))

asyncio.run(main(sys.argv[1], sys.argv[2], int(sys.argv[3])))
"""


async def test_three_processes_migrate_together(pg: PostgresTarget) -> None:
    """Three bridge processes: all wait at a gate (an advisory lock the test holds), are let
    go at once, and the schema ends up migrated once."""
    gate = 4242
    holder = await asyncpg.connect(pg.dsn)
    try:
        await holder.execute("SELECT pg_advisory_lock($1)", gate)
        args = [sys.executable, "-c", MIGRATE_PROCESS, pg.dsn, pg.schema, str(gate)]
        procs = [
            await asyncio.create_subprocess_exec(
                *args, cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.PIPE
            )
            for _ in range(3)
        ]
        deadline = time.monotonic() + 30
        waiting = 0
        while waiting < 3:  # the condition: three sessions queued on the gate
            assert time.monotonic() < deadline, "the processes never reached the gate"
            waiting = await holder.fetchval(
                "SELECT count(*) FROM pg_locks WHERE locktype = 'advisory' AND objid = $1 "
                "AND NOT granted",
                gate,
            )
            await asyncio.sleep(0.02)
        await holder.execute("SELECT pg_advisory_unlock($1)", gate)
        outputs = [await asyncio.wait_for(proc.communicate(), 60) for proc in procs]
        assert [proc.returncode for proc in procs] == [0, 0, 0], [err for _, err in outputs]
        applied = [int(v) for out, _ in outputs for v in out.decode().split(",") if v.strip()]
        assert sorted(applied) == LATEST
        versions = await holder.fetch(f'SELECT version FROM "{pg.schema}".schema_version')  # noqa: S608
        assert [row[0] for row in versions] == LATEST
    finally:
        await holder.close()


def test_the_migration_lock_key_never_changes() -> None:
    """Replicas of two versions meet during a rolling upgrade: they must lock the same key."""
    assert postgres.MIGRATION_LOCK == 0x7362
    assert postgres.lock_key("sentry_bridge") == 634815366  # zlib.crc32(b"sentry_bridge")
    assert -(2**31) <= postgres.lock_key("x" * 63) < 2**31


# --- TLS options (unit) --------------------------------------------------------------------


def _openssl(path: Path, *args: str) -> None:
    subprocess.run(["openssl", *args], cwd=path, check=True, capture_output=True)


def _ca(path: Path, name: str) -> None:
    _openssl(path, "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-keyout", f"{name}.key",
             "-out", f"{name}.pem", "-days", "2", "-subj", f"/CN=bridge-test-{name}")  # fmt: skip


def _signed(path: Path, name: str, cn: str, ca: str, san: str | None = None) -> None:
    _openssl(path, "req", "-newkey", "rsa:2048", "-nodes", "-keyout", f"{name}.key",
             "-out", f"{name}.csr", "-subj", f"/CN={cn}")  # fmt: skip
    extra = ["-extfile", "san.cnf"] if san else []
    if san:
        (path / "san.cnf").write_text(f"subjectAltName={san}\n", encoding="utf-8")
    _openssl(path, "x509", "-req", "-in", f"{name}.csr", "-CA", f"{ca}.pem", "-CAkey",
             f"{ca}.key", "-CAcreateserial", "-out", f"{name}.pem", "-days", "2",
             *extra)  # fmt: skip


@pytest.fixture(scope="module")
def certs(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    """Two CAs; a client certificate and a server certificate (for 127.0.0.1) signed by
    the first; made with the openssl CLI."""
    path = tmp_path_factory.mktemp("certs")
    _ca(path, "ca")
    _ca(path, "other-ca")
    _signed(path, "client", "bridge", "ca")
    _signed(path, "server", "127.0.0.1", "ca", san="IP:127.0.0.1")
    names = ("ca.pem", "ca.key", "other-ca.pem", "client.pem", "client.key")
    return {name: path / name for name in (*names, "server.pem", "server.key")}


@pytest.fixture(scope="module")
def tls_server(certs: dict[str, Path]) -> Iterator[Server]:
    with start_postgres(tls=(certs["server.pem"], certs["server.key"])) as server:
        yield server


def context(**options: object) -> ssl.SSLContext:
    built = postgres.ssl_option(PostgresSSL.model_validate(options))
    assert isinstance(built, ssl.SSLContext)
    assert built.minimum_version >= ssl.TLSVersion.TLSv1_2
    return built


@pytest.mark.parametrize(
    ("mode", "expected"),
    [
        pytest.param(None, None, id="unset-the-dsn-decides"),
        pytest.param("disable", False, id="disable"),
        pytest.param("prefer", "prefer", id="prefer-asyncpg-advisory"),
    ],
)
def test_modes_without_a_context(mode: str | None, expected: object) -> None:
    assert postgres.ssl_option(PostgresSSL(mode=mode)) == expected


def test_require_encrypts_without_verifying() -> None:
    built = context(mode="require")
    assert (built.verify_mode, built.check_hostname) == (ssl.CERT_NONE, False)


def test_require_with_a_root_cert_verifies_the_chain_as_libpq_does(
    certs: dict[str, Path],
) -> None:
    built = context(mode="require", root_cert=certs["ca.pem"])
    assert (built.verify_mode, built.check_hostname) == (ssl.CERT_REQUIRED, False)
    assert [c["subject"] for c in built.get_ca_certs()] == [((("commonName", "bridge-test-ca"),),)]


@pytest.mark.parametrize(
    ("mode", "hostname"), [("verify-ca", False), ("verify-full", True)], ids=str
)
def test_verify_modes(mode: str, hostname: bool, certs: dict[str, Path]) -> None:
    built = context(mode=mode, root_cert=certs["ca.pem"])
    assert (built.verify_mode, built.check_hostname) == (ssl.CERT_REQUIRED, hostname)
    assert len(built.get_ca_certs()) == 1, "only the configured CA is trusted"


def test_verify_without_a_root_cert_trusts_the_system_cas() -> None:
    built = context(mode="verify-full")
    assert (built.verify_mode, built.check_hostname) == (ssl.CERT_REQUIRED, True)
    assert built.cert_store_stats()["x509_ca"] > 0 or ssl.get_default_verify_paths().cafile is None


def test_a_client_certificate_is_loaded(certs: dict[str, Path]) -> None:
    context(mode="verify-full", root_cert=certs["ca.pem"], cert=certs["client.pem"],
            key=certs["client.key"])  # fmt: skip
    # The pair is checked when loaded: a key that does not match the certificate fails.
    with pytest.raises(ssl.SSLError):
        context(mode="require", cert=certs["client.pem"], key=certs["ca.key"])


# --- TLS against a real server -------------------------------------------------------------


async def encrypted(server: Server, **ssl_options: object) -> bool:
    """Connect with these ``ssl`` options; whether the session is encrypted."""
    settings = Postgres.model_validate({"dsn": server.dsn(), "ssl": ssl_options})
    opened = await postgres.connect(settings)
    try:
        return bool(
            await opened.fetchval("SELECT ssl FROM pg_stat_ssl WHERE pid = pg_backend_pid()")
        )
    finally:
        await opened.close()


@pytest.mark.parametrize(
    ("options", "expected"),
    [
        pytest.param({"mode": "disable"}, False, id="disable"),
        pytest.param({"mode": "prefer"}, True, id="prefer"),
        pytest.param({"mode": "require"}, True, id="require"),
        pytest.param({"mode": "verify-ca", "root_cert": "ca.pem"}, True, id="verify-ca"),
        pytest.param({"mode": "verify-full", "root_cert": "ca.pem"}, True, id="verify-full"),
        pytest.param(
            {
                "mode": "verify-full",
                "root_cert": "ca.pem",
                "cert": "client.pem",
                "key": "client.key",
            },
            True,
            id="verify-full-with-a-client-certificate",
        ),
    ],
)
async def test_tls_modes_against_a_server_offering_tls(
    tls_server: Server, certs: dict[str, Path], options: dict[str, str], expected: bool
) -> None:
    resolved = {k: str(certs[v]) if k != "mode" else v for k, v in options.items()}
    assert await encrypted(tls_server, **resolved) is expected


async def test_a_server_certificate_from_another_ca_is_refused(
    tls_server: Server, certs: dict[str, Path]
) -> None:
    with pytest.raises(ssl.SSLCertVerificationError):
        await encrypted(tls_server, mode="verify-ca", root_cert=str(certs["other-ca.pem"]))


async def test_prefer_falls_back_to_plain_where_tls_is_not_offered(pg: PostgresTarget) -> None:
    assert await encrypted(pg.server, mode="prefer") is False
    with pytest.raises(ConnectionError):  # asyncpg: "rejected SSL upgrade"
        await encrypted(pg.server, mode="require")


# --- durability ----------------------------------------------------------------------------


async def test_a_202_waits_for_its_flush_and_what_follows_from_it_does_not(
    pg: PostgresTarget, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Which commits wait for their WAL flush (sql.NOT_DURABLE): every one a 202 or an
    operator's answer rests on, and none that only writes what the inbox and the states
    give again (as SQLite's tests/store/test_sqlite_durability.py)."""
    store = postgres_store(pg)
    await store.open()
    levels: list[str] = []
    commit = asyncpg.transaction.Transaction._Transaction__commit

    async def recorded(transaction: Any) -> None:
        levels.append(await transaction._connection.fetchval("SHOW synchronous_commit"))
        await commit(transaction)

    monkeypatch.setattr(asyncpg.transaction.Transaction, "_Transaction__commit", recorded)
    try:
        assert await store.accept(factories.issue(1), b"1" * 32)
        taken = await store.take(10)
        [entry] = taken.entries
        await store.complete(taken, [Processed(entry.inbox_id, [postable(1)])])
        for target in store.targets:
            async with store.lane(target) as lane:
                assert lane is not None
                [item] = await lane.pending(10)
                await lane.advance(item.id)
        await store.expire(resolved_for=60.0)
        assert await store.accept(factories.issue(2), b"2" * 32)
        assert await store.quarantine("parse_error", "x", {}, b"{}", b"3" * 32)
        assert await store.requeue_dead_letters() is not None
    finally:
        monkeypatch.undo()
        await store.close()
    # accept; complete, two lanes' advances, expiry; accept, quarantine, requeue.
    assert levels == ["on", "off", "off", "off", "off", "on", "on", "on"]


# --- seen bodies ---------------------------------------------------------------------------


async def test_an_accept_waits_on_no_seen_body_another_transaction_holds(
    pg: PostgresTarget,
) -> None:
    """The bound on seen bodies is swept in the accept's own transaction and skips rows
    another transaction holds: the accept does not wait for them (it waited until the
    statement timeout), and the row goes once it is free."""
    async with contextlib.AsyncExitStack() as stack:
        store = postgres_store(pg, max_bodies=1)
        await store.open()
        stack.push_async_callback(store.close)
        assert await store.accept(factories.issue(1), b"1" * 32)
        holder = await asyncpg.connect(pg.dsn, server_settings={"search_path": pg.schema})
        stack.push_async_callback(holder.close)
        held = holder.transaction()
        await held.start()
        await holder.execute("SELECT 1 FROM seen_body FOR UPDATE")  # the first body's row
        async with asyncio.timeout(2):  # the pool's statement timeout is 5 s
            assert await store.accept(factories.issue(2), b"2" * 32)
        await held.rollback()
        assert await store.accept(factories.issue(3), b"3" * 32)
        assert await store.accept(factories.issue(1), b"1" * 32), "swept once free"


async def test_the_sweep_of_seen_bodies_reads_their_indexes(pg: PostgresTarget) -> None:
    """The statement as asyncpg runs it, prepared (a generic plan), on a table of bodies
    the bound leaves alone: it reads each bound's index, not every row (a scan of 100,000
    rows took 10-12 ms per accepted group, issue 15)."""
    store = postgres_store(pg)
    await store.open()
    try:
        async with pool(pg) as p, p.acquire() as conn:
            await conn.execute(
                "INSERT INTO seen_body (digest, seen_at) SELECT sha256(g::text::bytea), now()"
                " FROM generate_series(1, 20000) AS g"
            )
            await conn.execute("ANALYZE seen_body")
            await conn.execute("SET plan_cache_mode = force_generic_plan")
            await conn.execute(f"PREPARE sweep AS {sql.SWEEP_BODIES}")
            plan = await conn.fetch(f"EXPLAIN EXECUTE sweep (86400, 100000, {store.sweep_key})")
            text = "\n".join(row[0] for row in plan)
            assert "Seq Scan" not in text, text
            assert "seen_body_seen_at" in text, text
    finally:
        await store.close()


# --- the test server's fault helpers ---------------------------------------------------------


async def test_a_commit_survives_an_immediate_stop(pg: PostgresTarget) -> None:
    """``stop_immediately`` is a crash for clients (the session dies) and a commit is in
    the WAL (written before the commit returns): after ``start`` the row is there,
    recovered from the WAL."""
    conn = await asyncpg.connect(pg.dsn)
    await conn.execute(f'CREATE SCHEMA "{pg.schema}"')
    await conn.execute(f'CREATE TABLE "{pg.schema}".t (v int)')
    await conn.execute(f'INSERT INTO "{pg.schema}".t VALUES (42)')  # noqa: S608
    pg.server.stop_immediately()
    with pytest.raises((asyncpg.PostgresConnectionError, ConnectionError, OSError)):
        await conn.fetchval("SELECT 1")
    conn.terminate()
    with pytest.raises(ConnectionRefusedError):
        await asyncpg.connect(pg.dsn, timeout=2)
    pg.server.start()
    conn = await asyncpg.connect(pg.dsn)
    try:
        assert await conn.fetchval(f'SELECT v FROM "{pg.schema}".t') == 42  # noqa: S608
    finally:
        await conn.close()


async def test_an_operators_command_migrates_no_schema(pg: PostgresTarget) -> None:
    """``sentry-bridge quarantine --offline`` opens the engine itself: with a mistyped
    ``store.postgres.schema`` it used to create that schema, empty, and list an empty
    quarantine. It refuses, naming the key, and creates nothing; the schema the bridge made
    opens; one at another version is the running bridge's to migrate."""
    base = {"sentry": {"client_secrets": "s"}, "alertmanager": {"urls": "http://am:9093"}}
    store = {"backend": "postgres", "postgres": {"dsn": pg.dsn, "schema": pg.schema}}
    cfg = config.parse(base | {"store": store}, env={})
    metrics = Metrics(CollectorRegistry())
    operator = open_for_operator(cfg, metrics, ["am:9093"])
    with pytest.raises(ConfigError, match=f"store.postgres.schema: no bridge schema '{pg.schema}'"):
        await operator.open()
    async with pool(pg) as p, p.acquire() as conn:
        assert await tables(conn, pg.schema) == set()
        await postgres.migrate(conn, pg.schema)  # as the bridge's own start does
    await operator.open()
    try:
        assert await operator.quarantined() == []
    finally:
        await operator.close()
    async with pool(pg) as p, p.acquire() as conn:
        await conn.execute("INSERT INTO schema_version VALUES (99, 'from the future')")
    with pytest.raises(ConfigError, match="at version 99, this bridge's is"):
        await open_for_operator(cfg, metrics, ["am:9093"]).open()

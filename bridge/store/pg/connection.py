"""The PostgreSQL engine's connection: a pool and the schema migration.

``connect(settings)`` opens an asyncpg pool with the configured timeouts, TLS and schema
(``search_path``); ``migrate(conn, schema)`` brings the schema to this version's
(``schema.MIGRATIONS``), once even when several replicas start together: each runs
the migration in one transaction holding a transaction-scoped advisory lock on the schema,
so the others wait and then find nothing left to do. Time windows are measured in SQL on
the database's clock, the one every replica agrees on (issue 10: skewed pods agree).
"""

from __future__ import annotations

import ssl
import zlib
from typing import Any, Protocol

import asyncpg

from bridge.config import Postgres, PostgresSSL
from bridge.errors import ConfigError, StoreError
from bridge.store.pg.schema import MIGRATIONS, Migration

# pg_advisory_xact_lock(int4, int4): this constant says "sentry-bridge migration", the
# second key is the schema's, so two bridges with their own schemas in one database do not
# wait for each other. ("sb" in ASCII.)
MIGRATION_LOCK = 0x7362
# The migration waits for another replica's and runs DDL: more than a statement's timeout.
MIGRATION_TIMEOUT_MS = 60_000


class Connection(Protocol):
    """What this module needs of an asyncpg connection (asyncpg ships no type hints)."""

    async def execute(self, query: str, *args: object) -> str: ...
    async def fetch(self, query: str, *args: object) -> list[Any]: ...
    async def fetchval(self, query: str, *args: object) -> Any: ...
    def transaction(self) -> Any: ...


def ssl_option(settings: PostgresSSL) -> ssl.SSLContext | str | bool | None:
    """asyncpg's ``ssl=`` for the configured mode, following libpq's sslmode (PostgreSQL
    docs, "Protection Provided in Different Modes"):

    - unset: ``None``, and the DSN's ``sslmode=`` decides (libpq's default, prefer);
    - ``disable``: no TLS; ``prefer``: asyncpg's own advisory TLS (tries TLS, falls back to
      plain, never verifies: it only resists passive eavesdropping);
    - ``require``: TLS without verification, except that, as libpq does, a root certificate
      makes it verify the chain (verify-ca);
    - ``verify-ca``: the chain must lead to ``root_cert`` (or the system's CAs);
    - ``verify-full``: that, and the server's name must match the DSN's host.

    A client certificate (``cert`` + ``key``) is presented in every TLS mode it is set in.
    """
    if settings.mode is None:
        return None
    if settings.mode == "disable":
        return False
    if settings.mode == "prefer":
        return "prefer"
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    context.minimum_version = ssl.TLSVersion.TLSv1_2
    verify = settings.mode != "require" or settings.root_cert is not None
    if verify:
        if settings.root_cert is not None:
            context.load_verify_locations(cafile=str(settings.root_cert))
        else:
            context.load_default_certs(ssl.Purpose.SERVER_AUTH)
        context.verify_mode = ssl.CERT_REQUIRED
        context.check_hostname = settings.mode == "verify-full"
    else:
        context.check_hostname = False
        context.verify_mode = ssl.CERT_NONE
    if settings.cert is not None and settings.key is not None:
        context.load_cert_chain(str(settings.cert), str(settings.key))
    return context


def server_settings(settings: Postgres) -> dict[str, str]:
    """Session settings every connection starts with (sent in the startup packet)."""
    return {
        # Unqualified names are the bridge's tables; the schema is a checked identifier.
        "search_path": f'"{settings.schema_}"',
        # The server cancels a statement that runs longer (PostgreSQL: statement_timeout).
        "statement_timeout": str(int(settings.statement_timeout * 1000)),
        # A transaction left open by a stuck replica must not hold its locks for ever.
        "idle_in_transaction_session_timeout": str(int(settings.statement_timeout * 4000)),
        "application_name": "sentry-alertmanager-bridge",
    }


def _options(settings: Postgres) -> dict[str, Any]:
    if settings.dsn is None:  # config.Store refuses this already; a direct caller may not
        raise StoreError("store.postgres.dsn is not set")
    return {
        "dsn": settings.dsn.get_secret_value(),
        "timeout": settings.connect_timeout,
        # The client gives up a little after the server should have cancelled.
        "command_timeout": settings.statement_timeout + 1.0,
        "ssl": ssl_option(settings.ssl),
        "server_settings": server_settings(settings),
    }


async def connect(settings: Postgres) -> Any:
    """An asyncpg pool: at most ``pool_size`` connections, each with the timeouts, TLS and
    schema configured. The DSN is a secret: it is passed on, never logged."""
    return await asyncpg.create_pool(min_size=1, max_size=settings.pool_size, **_options(settings))


async def connect_one(settings: Postgres) -> Any:
    """One connection outside the pool, configured the same (for LISTEN)."""
    return await asyncpg.connect(**_options(settings))


# Identifiers cannot be query parameters: the schema name is put into SQL, quoted, and only
# ever comes from config.Postgres.schema, which admits [a-z_][a-z0-9_]* alone.


def lock_key(schema: str) -> int:
    """The schema's advisory-lock key: a stable signed 32-bit hash of its name."""
    return int.from_bytes(zlib.crc32(schema.encode()).to_bytes(4, "big"), "big", signed=True)


async def schema_version(conn: Connection, schema: str) -> int:
    """The highest migration applied to ``schema``; 0 for none (or no schema yet)."""
    exists = await conn.fetchval("SELECT to_regclass($1)", f'"{schema}".schema_version')
    if exists is None:
        return 0
    query = f'SELECT coalesce(max(version), 0) FROM "{schema}".schema_version'  # noqa: S608
    return int(await conn.fetchval(query))


async def check_version(conn: Connection, schema: str) -> None:
    """For an operator's command, which migrates nothing: ``schema`` is at this bridge's
    version, else ``ConfigError``. Migrated, a mistyped ``store.postgres.schema`` would be
    created empty and show an empty quarantine; an older or newer one is the running
    bridge's to migrate."""
    version, latest = await schema_version(conn, schema), MIGRATIONS[-1].version
    if version == 0:
        raise ConfigError(f"store.postgres.schema: no bridge schema {schema!r} in that database")
    if version != latest:
        raise ConfigError(
            f"the database schema {schema!r} is at version {version}, this bridge's is "
            f"{latest}: run the command with the bridge version that runs there"
        )


async def migrate(
    conn: Connection, schema: str, migrations: tuple[Migration, ...] = MIGRATIONS
) -> list[int]:
    """Apply what ``schema`` lacks, in order, in one transaction; the versions applied here.

    Several replicas may call this at once: the advisory lock makes them take turns, and the
    ones after the first find the versions recorded and apply nothing. A schema newer than
    this bridge (a downgrade) is refused rather than run against tables it does not know.
    """
    async with conn.transaction():
        await conn.execute(f"SET LOCAL statement_timeout = {MIGRATION_TIMEOUT_MS}")
        await conn.execute("SELECT pg_advisory_xact_lock($1, $2)", MIGRATION_LOCK, lock_key(schema))
        await conn.execute(f'CREATE SCHEMA IF NOT EXISTS "{schema}"')
        await conn.execute(f'SET LOCAL search_path TO "{schema}"')
        await conn.execute(
            """
            CREATE TABLE IF NOT EXISTS schema_version (
                version     integer PRIMARY KEY,
                description text NOT NULL,
                applied_at  timestamptz NOT NULL DEFAULT clock_timestamp()
            )
            """
        )
        applied = {int(row[0]) for row in await conn.fetch("SELECT version FROM schema_version")}
        latest = max((m.version for m in migrations), default=0)
        if applied and max(applied) > latest:
            raise StoreError(
                f"the database schema {schema!r} is at version {max(applied)}, newer than this "
                f"bridge's {latest}: run the newer bridge (downgrades are not supported)"
            )
        done: list[int] = []
        for migration in migrations:
            if migration.version in applied:
                continue
            await conn.execute(migration.sql)
            await conn.execute(
                "INSERT INTO schema_version (version, description) VALUES ($1, $2)",
                migration.version,
                migration.description,
            )
            done.append(migration.version)
        return done

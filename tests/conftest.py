from __future__ import annotations

import itertools
from collections.abc import Iterator
from dataclasses import dataclass

import pytest

from bridge.config import Postgres
from tests.integration.postgres import Server, drop_schema, start_postgres


@pytest.fixture
def anyio_backend() -> str:
    return "asyncio"


@pytest.fixture(scope="session")
def postgres_server() -> Iterator[Server]:
    """One real PostgreSQL for the session (a cluster takes a second or two to make)."""
    with start_postgres() as server:
        yield server


@dataclass(frozen=True)
class PostgresTarget:
    server: Server
    settings: Postgres  # the DSN and a schema of the test's own

    @property
    def dsn(self) -> str:
        return self.server.dsn()

    @property
    def schema(self) -> str:
        return self.settings.schema_


_schemas = itertools.count(1)


@pytest.fixture
def pg(postgres_server: Server) -> Iterator[PostgresTarget]:
    """The session's PostgreSQL with a fresh schema name for this test, dropped after it
    (the server is started again first if the test stopped it)."""
    schema = f"test_{next(_schemas)}"
    settings = Postgres.model_validate({"dsn": postgres_server.dsn(), "schema": schema})
    yield PostgresTarget(postgres_server, settings)
    drop_schema(postgres_server, schema)

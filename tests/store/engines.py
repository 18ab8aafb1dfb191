"""The engines of the store contract, opened for a test: ``sqlite`` (the store, in the
test's directory), ``postgres`` (the session's PostgreSQL, a schema of the test's own) and
``spooled`` (that PostgreSQL engine behind the spool, as ``open_store`` builds it for
``store.backend: postgres``)."""

from __future__ import annotations

import contextlib
from collections.abc import AsyncIterator, Callable
from datetime import timedelta
from pathlib import Path
from typing import Any

import pytest
from prometheus_client import CollectorRegistry

from bridge.metrics import Metrics
from bridge.store.contract import Store
from bridge.store.pg import PostgresStore
from bridge.store.spool import FILENAME, Spooled
from bridge.store.sqlite import SqliteStore
from tests.conftest import PostgresTarget

TARGETS = ("am-a:9093", "am-b:9093")
ENGINES = ("sqlite", "postgres", "spooled")

Opener = Callable[..., contextlib.AbstractAsyncContextManager[Any]]


def postgres_store(pg: PostgresTarget, **options: Any) -> PostgresStore:
    values: dict[str, Any] = {"max_queued": 10_000, "metrics": Metrics(CollectorRegistry())}
    values |= options
    values.setdefault("lease_ttl", timedelta(seconds=15))
    return PostgresStore(pg.settings, TARGETS, **values)


def opener(request: pytest.FixtureRequest, engine: str, tmp_path: Path) -> Opener:
    """``async with open_engine(**options) as store``: a fresh, open store of ``engine``."""
    pg: PostgresTarget | None = None
    if engine in {"postgres", "spooled"}:
        pg = request.getfixturevalue("pg")

    @contextlib.asynccontextmanager
    async def open_engine(**options: Any) -> AsyncIterator[Store]:
        store: Any
        if pg is not None:
            store = postgres_store(pg, **options)
            if engine == "spooled":  # bridge.store.spool.spooled: store.max_queued, too
                path = tmp_path / FILENAME
                store = Spooled(store, path, metrics=store.metrics, max_queued=store.max_queued)
        else:
            values: dict[str, Any] = {"max_queued": 10_000, "metrics": Metrics(CollectorRegistry())}
            store = SqliteStore(tmp_path, TARGETS, **(values | options))
        await store.open()
        try:
            yield store
        finally:
            await store.close()

    return open_engine


def engine(store: Any) -> Any:
    """The engine itself, for a test that tunes it (``Spooled`` keeps it as ``primary``)."""
    return store.primary if isinstance(store, Spooled) else store

"""``open_store``: the configured engine, and what the PostgreSQL engine refuses at start."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
from prometheus_client import CollectorRegistry

from bridge import config
from bridge.errors import ConfigError
from bridge.metrics import Metrics
from bridge.store import open_store
from bridge.store.pg import PostgresStore
from bridge.store.spool import FILENAME, Spooled
from bridge.store.sqlite import SqliteStore

BASE = {"sentry": {"client_secrets": "s"}}
DSN = "postgresql://bridge@db.example/bridge"
TARGETS = ("am-a:9093",)


def test_sqlite_is_the_store_in_the_data_directory(tmp_path: Path) -> None:
    cfg = config.parse(BASE | {"store": {"data_dir": str(tmp_path)}}, env={})
    store = open_store(cfg, Metrics(CollectorRegistry()), TARGETS)
    assert isinstance(store, SqliteStore)
    assert store.path.parent == tmp_path


def test_postgres_is_the_shared_engine_with_its_settings_behind_the_spool(
    tmp_path: Path,
) -> None:
    data: dict[str, Any] = {
        "store": {"backend": "postgres", "postgres": {"dsn": DSN, "schema": "bridge_a"}}
    }
    data["store"] |= {"spool": {"max_webhooks": 9}, "data_dir": str(tmp_path), "max_bodies": 7}
    cfg = config.parse(BASE | data, env={})
    spool = open_store(cfg, Metrics(CollectorRegistry()), TARGETS)
    assert isinstance(spool, Spooled)
    assert (spool.max_webhooks, spool._file.path) == (9, tmp_path / FILENAME)
    store = spool.primary
    assert isinstance(store, PostgresStore)
    assert store.settings.schema_ == "bridge_a"
    assert (store.targets, store.max_bodies) == (TARGETS, 7)


def test_a_pool_too_small_for_the_alertmanagers_is_refused() -> None:
    """Each sender holds its lane's connection and may write on another meanwhile: a pool
    smaller than that would hang delivery, so it fails at start, naming the key."""
    data: dict[str, Any] = {"store": {"backend": "postgres", "postgres": {"dsn": DSN}}}
    data["store"]["postgres"]["pool_size"] = 6
    two = {"alertmanager": {"urls": "http://am-a:9093,http://am-b:9093"}}
    with pytest.raises(ConfigError, match=r"store.postgres.pool_size: 6 .* at least 7"):
        config.parse(BASE | data | two, env={})
    cfg = config.parse(BASE | data, env={})  # one Alertmanager: 5 are enough
    with pytest.raises(ConfigError, match=r"store.postgres.pool_size: 6 .* at least 7"):
        open_store(cfg, Metrics(CollectorRegistry()), ("am-a:9093", "am-b:9093"))
    assert isinstance(open_store(cfg, Metrics(CollectorRegistry()), TARGETS), Spooled)

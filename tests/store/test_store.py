"""What the store package decides before any engine runs."""

from __future__ import annotations

import pytest

from bridge import config
from bridge.errors import ConfigError
from bridge.store import check_supported

BASE = {"sentry": {"client_secrets": "s"}}
DSN = "postgresql://bridge@db.example/bridge"


def test_sqlite_is_supported() -> None:
    check_supported(config.parse(BASE, env={}))


def test_postgres_is_refused_with_the_reason_until_it_is_wired() -> None:
    cfg = config.parse(BASE | {"store": {"backend": "postgres", "postgres": {"dsn": DSN}}}, env={})
    with pytest.raises(ConfigError, match="not yet supported by this version") as exc:
        check_supported(cfg)
    assert "store.backend: sqlite" in str(exc.value)

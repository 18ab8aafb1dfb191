"""bridge/client.py: what the client commands read, and which Alertmanagers ``send --wait``
polls (against a real bridge: tests/integration/test_quarantine.py)."""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml

from bridge import client, config
from bridge.errors import ConfigError

SHIPPED = Path(__file__).resolve().parents[1] / "config.yaml"


def shipped_on_postgres(tmp_path: Path) -> Path:
    data = yaml.safe_load(SHIPPED.read_text(encoding="utf-8"))
    data["store"]["backend"] = "postgres"
    path = tmp_path / "config.yaml"
    path.write_text(yaml.safe_dump(data), encoding="utf-8")
    return path


def test_a_client_reads_a_postgres_config_without_the_database_url(tmp_path: Path) -> None:
    offline = config.load_offline(shipped_on_postgres(tmp_path), env={})
    assert offline.config.store.backend == "postgres"
    assert offline.config.store.postgres.dsn is None
    assert any(n.startswith("store.postgres.dsn: required") for n in offline.needed)
    with pytest.raises(ConfigError, match=r"postgres\.dsn: required"):
        config.load(shipped_on_postgres(tmp_path), env={"SENTRY_CLIENT_SECRET": "s"})


def test_the_running_bridges_alertmanagers_are_polled(capsys: pytest.CaptureFixture[str]) -> None:
    cfg = config.parse(
        {
            "sentry": {"allow_unauthenticated": True},
            "alertmanager": {"urls": "http://u:p@am-a:9093,http://localhost:9093"},
        },
        env={},
    )
    reported = {"alertmanagers": ["http://am-a:9093", "http://am-b:9093"]}
    # The config's credentials for the one it names too; the bridge's list wins.
    assert client.alertmanagers(cfg, reported) == ["http://u:p@am-a:9093", "http://am-b:9093"]
    err = capsys.readouterr().err
    assert (
        "alertmanagers: http://am-a:9093, http://am-b:9093 (as the running bridge reports)" in err
    )
    assert "the bridge's environment differs" in err
    assert "u:p" not in err
    no_bridge = "no answer from http://127.0.0.1:8080: ConnectError"
    assert client.alertmanagers(cfg, no_bridge) == cfg.alertmanager.urls
    assert f"(from the config; {no_bridge})" in capsys.readouterr().err

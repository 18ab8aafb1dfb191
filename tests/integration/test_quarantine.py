"""The client commands against a real bridge on a real PostgreSQL, as an operator runs them
from a shell whose environment is not the bridge's: no ``ALERTMANAGER_URLS``, no
``BRIDGE_DATABASE_URL`` unless the command needs it.

- ``quarantine list|show|discard`` through the running bridge, and ``--offline`` on
  PostgreSQL itself while the bridge runs (it used to open an empty local SQLite file);
- ``send --wait`` polls the Alertmanagers the bridge posts to (it used to poll this shell's
  default, localhost:9093, and say "NO" after the timeout), without the database URL it
  does not use (it used to demand it);
- ``status`` says which config, bridge, store and Alertmanagers it read.
"""

from __future__ import annotations

import contextlib
import json
import os
from collections.abc import Iterator
from pathlib import Path
from unittest import mock

import yaml

from tests.conftest import PostgresTarget
from tests.integration import procs
from tests.integration.conftest import ENV, Alertmanager, Bridge
from tests.integration.test_replicas import postgres_store
from tests.integration.test_send import cli_main


@contextlib.contextmanager
def bridge_on_postgres(
    tmp_path: Path, alertmanager: Alertmanager, pg: PostgresTarget
) -> Iterator[tuple[Bridge, Path]]:
    """The shipped config on PostgreSQL (``urls: ${ALERTMANAGER_URLS:-http://localhost:9093}``
    as shipped), its Alertmanager URL and DSN only in the bridge's
    environment (as the chart sets them)."""
    config = procs.write_config(
        tmp_path / "config.yaml", ["${ALERTMANAGER_URLS:-http://localhost:9093}"]
    )
    server = yaml.safe_load(config.read_text(encoding="utf-8"))["server"]
    # Nothing listens there: serve gets --port and --admin-port.
    server["port"] = procs.free_port()
    server["admin_port"] = procs.free_port()
    procs.update_config(config, store=postgres_store(pg), server=server)
    env = {**ENV, "ALERTMANAGER_URLS": alertmanager.url, "BRIDGE_DATABASE_URL": pg.dsn}
    with (
        procs.bridge(config, tmp_path / "data", tmp_path / "bridge.log", env) as process,
        procs.client(base_url=process.url, timeout=10) as client,
    ):
        yield Bridge(process, client), config


def operator(args: list[str], client_dir: Path, env: dict[str, str]) -> tuple[int, str]:
    """``sentry-bridge ARGS`` from an operator's shell: only ``env`` (and a data directory of
    its own, to see whether anything is created there) is set."""
    with mock.patch.dict(os.environ):
        for name in ("ALERTMANAGER_URLS", "BRIDGE_DATABASE_URL", "BRIDGE_CONFIG"):
            os.environ.pop(name, None)
        os.environ["BRIDGE_DATA_DIR"] = str(client_dir)
        return cli_main(args, env)


def test_quarantine_send_and_status_on_postgres_from_an_operators_shell(
    tmp_path: Path, alertmanager: Alertmanager, pg: PostgresTarget
) -> None:
    client_dir = tmp_path / "client-data"
    with bridge_on_postgres(tmp_path, alertmanager, pg) as (bridge, config):
        admin = bridge.process.admin_url
        where = ["--config", str(config), "--url", admin]
        body = json.dumps({"action": "triggered", "data": {"unknown": True}}).encode()
        response = bridge.post(body, resource="event_alert", headers={"Request-ID": "req-q1"})
        assert response.json() == {"status": "quarantined", "reason": "invalid_payload"}

        # No bridge where the config says: the store itself, PostgreSQL (not a SQLite file).
        db = {"BRIDGE_DATABASE_URL": pg.dsn}
        code, out = operator(["quarantine", "list", "--config", str(config)], client_dir, ENV | db)
        assert code == 0, out
        assert "1 quarantined (invalid_payload: 1)" in out
        assert "opening the configured store directly" in out
        assert not client_dir.exists(), "no local store made up"

        # Through the running bridge: no database URL needed.
        code, out = operator(["quarantine", "list", *where], client_dir, ENV)
        assert code == 0, out
        assert "1 quarantined (invalid_payload: 1)" in out
        assert f"store: postgres 127.0.0.1:{pg.server.port}/postgres, schema {pg.schema}" in out
        [line] = [x for x in out.splitlines() if "invalid_payload " in x]
        entry_id = line.split()[0]
        code, out = operator(["quarantine", "show", entry_id, *where], client_dir, ENV)
        assert code == 0, out
        assert '"request-id": "req-q1"' in out
        assert "sentry-hook-signature" not in out, "kept headers only"
        assert '{"action": "triggered", "data": {"unknown": true}}' in out

        # On PostgreSQL itself while the bridge runs, with the URL the bridge has.
        offline = ["quarantine", "list", "--offline", "--config", str(config)]
        code, out = operator(offline, client_dir, {})
        assert code == 2, "without the database URL, said so"
        assert "store.postgres.dsn: needed to reach PostgreSQL" in out
        code, out = operator(offline, client_dir, db)
        assert code == 0, out
        assert "1 quarantined (invalid_payload: 1)" in out
        assert "(opened directly)" in out
        assert not client_dir.exists(), "no local store made up"

        # send --wait: the bridge's Alertmanager, not this shell's default.
        send = ["send", "--example", "issue-alert", "--wait", "--timeout", "15"]
        code, out = operator(
            [*send, "--config", str(config), "--url", bridge.url, "--admin-url", admin],
            client_dir,
            ENV,
        )
        assert code == 0, out
        assert f"alertmanagers: {alertmanager.url} (as the running bridge reports)" in out
        assert f"{alertmanager.url.removeprefix('http://')}: yes" in out

        code, out = operator(["status", *where], client_dir, {})
        assert code == 0, out
        assert f"bridge: {admin}" in out
        assert f"config: {config}" in out
        assert f"store: postgres 127.0.0.1:{pg.server.port}/postgres" in out
        assert f"alertmanagers: {alertmanager.url}" in out
        assert "quarantined webhooks: 1\n  invalid_payload: 1\n  oldest: " in out

        code, out = operator(["quarantine", "discard", entry_id, *where], client_dir, {})
        assert code == 0, out
        assert f"discarded 1: {entry_id}" in out
        assert bridge.metric("sentry_bridge_quarantine_discarded_total") == 1
        code, out = operator(["quarantine", "list", *where], client_dir, {})
        assert "0 quarantined" in out


def test_send_wait_polls_the_bridges_alertmanager_not_this_shells_default(
    tmp_path: Path, alertmanager: Alertmanager
) -> None:
    """On SQLite: the shipped ``urls: ${ALERTMANAGER_URLS:-http://localhost:9093}`` with the
    variable set for the bridge only; ``send --wait`` used to poll localhost:9093 and say NO."""
    config = procs.write_config(
        tmp_path / "config.yaml", ["${ALERTMANAGER_URLS:-http://localhost:9093}"]
    )
    env = {**ENV, "ALERTMANAGER_URLS": alertmanager.url}
    with procs.bridge(config, tmp_path / "data", tmp_path / "bridge.log", env) as process:
        where = ["--config", str(config), "--url", process.url, "--admin-url", process.admin_url]
        args = ["send", "--example", "issue-alert", "--wait", "--timeout", "5", *where]
        code, out = operator(args, tmp_path / "client-data", ENV)
    assert code == 0, out
    assert f"{alertmanager.url.removeprefix('http://')}: yes" in out
    assert "localhost:9093" in out, "this shell's default is named, and not used"

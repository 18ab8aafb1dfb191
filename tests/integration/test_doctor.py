"""``sentry-bridge doctor`` against a real running bridge, a real Alertmanager and a
stand-in for Sentry's API: a healthy path, a dead Alertmanager, a wrong token and a full
spool, each named in its output and in the exit code."""

from __future__ import annotations

import asyncio
import json
from pathlib import Path

from bridge import config
from bridge import doctor as doctor_module
from bridge.store.pg import connection
from bridge.store.pg.schema import MIGRATIONS
from tests.conftest import PostgresTarget
from tests.integration import procs
from tests.integration.conftest import ENV, Alertmanager, Bridge, BridgeFactory, fixture
from tests.integration.test_send import cli_main
from tests.sentry_api import FakeSentryAPI

TOKEN = "doctor-t0ken"


def doctor(
    bridge: Bridge,
    api: FakeSentryAPI,
    *args: str,
    token: str = TOKEN,
    env: dict[str, str] = ENV,
) -> tuple[int, str]:
    """``sentry-bridge doctor`` in this process, with the bridge's config, the bridge's
    secrets and the stand-in as Sentry's API (its token ``token``)."""
    config = Path(bridge.process.log).parent / "config.yaml"
    data_dir = str(Path(bridge.process.log).parent / "data")
    env = {
        **env,
        "SENTRY_API_TOKEN": token,
        "SENTRY_BASE_URL": api.url,
        "BRIDGE_DATA_DIR": data_dir,
    }
    where = ["--config", str(config), "--url", bridge.url, "--admin-url", bridge.process.admin_url]
    return cli_main(["doctor", *where, "--timeout", "20", *args], env)


def checks(out: str) -> dict[str, dict[str, object]]:
    data = json.loads(out[out.index("{") :])
    return {check["name"]: check for check in data["checks"]}


def test_a_healthy_path_passes_and_the_test_alert_never_pages(
    bridge: Bridge, alertmanager: Alertmanager
) -> None:
    with FakeSentryAPI(token=TOKEN) as api:
        api.index(["event:read", "org:read", "project:read"])
        code, out = doctor(bridge, api, "--json")
    assert code == 0, out
    found = checks(out)
    assert all(check["ok"] for check in found.values()), out
    assert "scopes event:read, org:read, project:read" in str(found["sentry_api"]["detail"])
    am_name = f"alertmanager {alertmanager.url.removeprefix('http://')}"
    assert "cluster disabled, 0 peer(s)" in str(found[am_name]["detail"])
    assert "sentry.client_secrets: set (from $SENTRY_CLIENT_SECRET)" in str(
        found["secrets"]["detail"]
    )
    assert "sentry.api_token: set (from $SENTRY_API_TOKEN)" in str(found["secrets"]["detail"])
    # The shipped config makes that example critical with page="true"; the test alert was
    # read back low, labelled sentry_test="true" (doctor fails on any other label set).
    name = alertmanager.url.removeprefix("http://")
    test = str(found["test alert"]["detail"])
    assert f"{name}: received by null;" in test
    assert f"{name}: resolved" in test
    assert "BUT" not in test
    assert TOKEN not in out  # never printed
    assert alertmanager.sentry_alerts() == []  # resolved: nothing left behind


def test_a_dead_alertmanager_is_named(bridge_factory: BridgeFactory) -> None:
    dead = f"http://127.0.0.1:{procs.free_port()}"
    # A short grace: the stop at the end cannot deliver the test alert (it waited 25 s).
    sections = {"shutdown": {"grace_period": "1s"}}
    with bridge_factory([dead], sections=sections) as bridge, FakeSentryAPI(token=TOKEN) as api:
        api.index(["event:read"])
        code, out = doctor(bridge, api, "--timeout", "2")
    assert code == 1
    name = dead.removeprefix("http://")
    assert f"FAIL alertmanager {name}: {dead}/api/v2/status:" in out
    assert "is Alertmanager running there" in out
    assert f"{name}: NOT seen" in out


def test_a_wrong_token_is_named(bridge: Bridge) -> None:
    with FakeSentryAPI(token=TOKEN) as api:
        api.index(["event:read"])
        code, out = doctor(bridge, api, token="stale-token")
    assert code == 1
    assert "FAIL sentry_api:" in out
    assert "refused the token (401)" in out
    assert "stale-token" not in out
    assert "ok   test alert:" in out  # the rest of the path still works


def test_a_token_without_event_read_is_named(bridge: Bridge) -> None:
    with FakeSentryAPI(token=TOKEN) as api:
        api.index(["org:read"])
        code, out = doctor(bridge, api)
    assert code == 1
    assert "FAIL sentry_api: the token's scopes (org:read) lack event:read" in out


def test_a_full_spool_is_named(
    tmp_path: Path, alertmanager: Alertmanager, pg: PostgresTarget
) -> None:
    config = procs.write_config(tmp_path / "config.yaml", [alertmanager.url])
    procs.use_postgres(config, pg.schema, spool={"max_webhooks": 1})
    env = {**ENV, "BRIDGE_DATABASE_URL": pg.dsn}
    pg.server.stop()
    try:
        with (
            procs.bridge(config, tmp_path / "data", tmp_path / "bridge.log", env) as process,
            procs.client(base_url=process.url, timeout=10) as http,
            FakeSentryAPI(token=TOKEN) as api,
        ):
            bridge = Bridge(process, http)
            body = json.dumps(fixture("event_alert.json")).encode()
            assert bridge.post(body, resource="event_alert").status_code == 202
            assert bridge.metric("sentry_bridge_spool_webhooks") == 1
            api.index(["event:read"])
            code, out = doctor(bridge, api, "--timeout", "2", "--json", env=env)
    finally:
        if not pg.server.running:
            pg.server.start()
    assert code == 1
    found = checks(out)
    assert not found["bridge"]["ok"]
    assert "the spool is full (1 of store.spool.max_webhooks 1)" in str(found["bridge"]["detail"])
    assert "sentry_bridge_store_up 0" in str(found["bridge"]["detail"])
    assert not found["store"]["ok"]
    assert "not reachable from here" in str(found["store"]["detail"])
    assert not found["test alert"]["ok"]
    assert "503" in str(found["test alert"]["detail"])
    assert "store.postgres.dsn: set (from $BRIDGE_DATABASE_URL)" in str(found["secrets"]["detail"])


def test_the_store_check_reads_postgresqls_schema_version(
    tmp_path: Path, pg: PostgresTarget
) -> None:
    cfg = config.parse(
        {
            "sentry": {"client_secrets": "s"},
            "store": {
                "backend": "postgres",
                "postgres": {"dsn": pg.dsn, "schema": pg.schema},
                "data_dir": str(tmp_path),
            },
        }
    )
    before = asyncio.run(doctor_module.store(cfg))  # nothing migrated it yet
    assert not before.ok
    assert f"schema version 0: this bridge's is {MIGRATIONS[-1].version}" in before.detail
    assert "start the bridge (it migrates at start)" in before.detail
    asyncio.run(_migrate(cfg))
    after = asyncio.run(doctor_module.store(cfg))
    assert after.ok, after.detail
    assert f"reachable, schema version {MIGRATIONS[-1].version}; pool_size 10" in after.detail
    assert pg.dsn not in after.detail


async def _migrate(cfg: config.Config) -> None:
    conn = await connection.connect_one(cfg.store.postgres)
    try:
        await connection.migrate(conn, cfg.store.postgres.schema_)
    finally:
        await conn.close()

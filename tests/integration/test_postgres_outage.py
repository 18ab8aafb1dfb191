"""``serve`` with ``store.backend: postgres`` started while PostgreSQL is down (every pod
restarted during an outage): it answers Sentry and its probes, and delivers to a real
Alertmanager once the server is up (issue 10)."""

from __future__ import annotations

import json
import time
from pathlib import Path

from tests.conftest import PostgresTarget
from tests.integration import procs
from tests.integration.conftest import ENV, Alertmanager, Bridge, fixture

TEMPLATE = json.dumps(fixture("event_alert.json"))
TEMPLATE_ISSUE = "1117540176"


def test_a_bridge_started_while_postgresql_is_down_answers_and_delivers_after(
    tmp_path: Path, alertmanager: Alertmanager, pg: PostgresTarget
) -> None:
    config = procs.write_config(tmp_path / "config.yaml", [alertmanager.url])
    procs.use_postgres(config, pg.schema)
    env = {**ENV, "BRIDGE_DATABASE_URL": pg.dsn}
    issues = [str(7_100_000_000 + n) for n in range(5)]
    pg.server.stop()
    try:
        with (
            procs.bridge(config, tmp_path / "data", tmp_path / "bridge.log", env) as process,
            procs.client(base_url=process.url, timeout=10) as client,
        ):
            bridge = Bridge(process, client)
            for issue in issues:
                started = time.monotonic()
                body = TEMPLATE.replace(TEMPLATE_ISSUE, issue).encode()
                assert bridge.post(body, resource="event_alert").status_code == 202
                assert time.monotonic() - started < 1.0  # Sentry's timeout
            assert bridge.client.get("/-/healthy").status_code == 200
            assert bridge.metric("sentry_bridge_store_up") == 0
            assert bridge.metric("sentry_bridge_spool_webhooks") == len(issues)
            status = bridge.admin("GET", "/-/status")
            assert status.status_code == 503
            assert "has not been reachable since this bridge started" in status.json()["error"]
            pg.server.start()
            alerts = alertmanager.wait_for(lambda alerts: len(alerts) >= len(issues), timeout=60)
            assert sorted(a["labels"]["sentry_issue_id"] for a in alerts) == issues
            assert bridge.metric("sentry_bridge_store_up") == 1
            assert bridge.metric("sentry_bridge_spool_webhooks") == 0
            assert bridge.client.get("/-/healthy").status_code == 200
            assert bridge.admin("GET", "/-/status").status_code == 200
    finally:
        if not pg.server.running:
            pg.server.start()

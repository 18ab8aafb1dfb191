"""Issue 16, contract items 1 and 2, through the HTTP edge into a real Alertmanager, with
the shipped config: one test per bullet of the issue's first list that they answer.

* A staging issue pages P1 through its own issue webhook (and loses its link).
* A regression from a device with a lagging clock is dropped as stale.
* On PostgreSQL, a regression during a database outage is lost.
* The per-issue ``environments`` list grows without bound.

Each fails on the code before issue 16 (the outcome named in each test's comment)."""

from __future__ import annotations

import copy
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

from tests.conftest import PostgresTarget
from tests.integration import procs
from tests.integration.conftest import ENV, Alertmanager, Bridge
from tests.integration.test_state_machine import OUTCOMES, event_alert, issue_webhook

ISSUE = "8100000001"


def decided(bridge: Bridge, count: int, timeout: float = 30.0) -> None:
    """Wait until the bridge decided ``count`` webhooks (any outcome)."""
    deadline = time.monotonic() + timeout
    while (
        sum(bridge.metric("sentry_bridge_alerts_total", {"outcome": o}) for o in OUTCOMES) < count
    ):
        assert time.monotonic() < deadline, "the bridge never decided the webhooks"
        time.sleep(0.05)


def issue_created_without_link(issue: str, users: int) -> dict[str, Any]:
    """``issue.created`` as Sentry sends it to every integration subscribed to ``issue``:
    no environment (an issue spans environments); as some Sentry versions send it, no
    link either (tests/fixtures/sentry/captured/zulip_issue_created_2020.json)."""
    body = issue_webhook("issue_created.json", issue)
    data = body["data"]["issue"]
    for key in ("url", "web_url", "permalink", "project_url"):
        data.pop(key, None)
    data["userCount"] = users
    return body


def only_alert(alerts: list[dict[str, Any]]) -> dict[str, Any]:
    mine = [a for a in alerts if a["labels"]["sentry_issue_id"] == ISSUE]
    assert len(mine) == 1, mine
    return mine[0]


def test_an_issue_webhook_is_classified_in_the_environment_its_alert_fires_in(
    bridge: Bridge, alertmanager: Alertmanager
) -> None:
    # Before issue 16: the issue webhook fell past non-production to many-users: the alert
    # became critical, page="true", environment="staging", and lost its generatorURL.
    assert bridge.post(event_alert(ISSUE, "staging"), resource="event_alert").status_code == 202
    decided(bridge, 1)
    first = only_alert(alertmanager.wait_for(lambda alerts: len(alerts) == 1))
    assert first["labels"]["severity"] == "low"
    link = first["generatorURL"]
    assert link.startswith("https://")
    body = issue_created_without_link(ISSUE, users=50)
    assert bridge.post(body, resource="issue").status_code == 202
    decided(bridge, 2)
    alert = only_alert(alertmanager.sentry_alerts())
    assert alert["labels"]["severity"] == "low"
    assert alert["labels"]["environment"] == "staging"
    assert alert["labels"]["page"] == "false"
    assert alert["generatorURL"] == link


def test_a_regression_sentry_received_after_the_resolve_fires_whatever_the_client_clock(
    bridge: Bridge, alertmanager: Alertmanager
) -> None:
    # Before issue 16: the regression was compared by its client timestamp (an hour behind)
    # with the resolve, counted stale, and Alertmanager showed nothing.
    assert bridge.post(event_alert(ISSUE, "production"), resource="event_alert").status_code == 202
    alertmanager.wait_for(lambda alerts: len(alerts) == 1)
    resolved = issue_webhook("issue_resolved.json", ISSUE)
    assert bridge.post(resolved, resource="issue").status_code == 202
    alertmanager.wait_for(lambda alerts: alerts == [])
    now = datetime.now(UTC)
    phone = event_alert(ISSUE, "production", when=now - timedelta(hours=1), received=now)
    assert bridge.post(phone, resource="event_alert").status_code == 202
    decided(bridge, 3)
    assert bridge.metric("sentry_bridge_alerts_total", {"outcome": "stale"}) == 0
    alert = only_alert(alertmanager.wait_for(lambda alerts: len(alerts) == 1))
    assert alert["labels"]["environment"] == "production"


def test_the_environments_kept_per_issue_are_bounded(
    alertmanager: Alertmanager, tmp_path: Path
) -> None:
    # Before issue 16: every environment named went into the state and the annotation
    # (here 25 of them); a webhook credential could grow one identity without bound.
    config = procs.write_config(tmp_path / "config.yaml", [alertmanager.url])
    procs.update_config(config, dedup={"window": "0.001s"})  # every webhook posts its annotation
    with (
        procs.bridge(config, tmp_path / "data", tmp_path / "bridge.log", ENV) as process,
        procs.client(base_url=process.url, timeout=10) as client,
    ):
        bridge = Bridge(process, client)
        names = [f"env-{n:02}" for n in range(25)]
        for name in names:
            assert bridge.post(event_alert(ISSUE, name), resource="event_alert").status_code == 202
        decided(bridge, len(names))
        alert = only_alert(alertmanager.sentry_alerts())
        shown = alert["annotations"]["environments"].split(",")
        assert shown == names[:10]


def test_a_regression_spooled_during_a_postgresql_outage_fires_after_it(
    tmp_path: Path, alertmanager: Alertmanager, pg: PostgresTarget
) -> None:
    # Before issue 16: the resolve was stamped when it reached PostgreSQL (after the
    # outage), the regression looked older, was counted stale, and the alert stayed resolved.
    config = procs.write_config(tmp_path / "config.yaml", [alertmanager.url])
    procs.use_postgres(config, pg.schema)
    env = {**ENV, "BRIDGE_DATABASE_URL": pg.dsn}
    try:
        with (
            procs.bridge(config, tmp_path / "data", tmp_path / "bridge.log", env) as process,
            procs.client(base_url=process.url, timeout=10) as client,
        ):
            bridge = Bridge(process, client)
            fire = event_alert(ISSUE, "production", when=datetime.now(UTC))
            assert bridge.post(fire, resource="event_alert").status_code == 202
            alertmanager.wait_for(lambda alerts: len(alerts) == 1)
            pg.server.stop()
            resolved = issue_webhook("issue_resolved.json", ISSUE)
            assert bridge.post(resolved, resource="issue").status_code == 202
            regression = event_alert(ISSUE, "production", when=datetime.now(UTC))
            assert bridge.post(copy.deepcopy(regression), resource="event_alert").status_code == 202
            assert bridge.metric("sentry_bridge_spool_webhooks") == 2
            pg.server.start()
            decided(bridge, 3, timeout=60)
            assert bridge.metric("sentry_bridge_alerts_total", {"outcome": "stale"}) == 0
            assert bridge.metric("sentry_bridge_alerts_total", {"outcome": "resolved"}) == 1
            alert = only_alert(alertmanager.wait_for(lambda alerts: len(alerts) == 1))
            assert alert["labels"]["environment"] == "production"
    finally:
        if not pg.server.running:
            pg.server.start()

"""``sentry-bridge status`` against the running bridge: what it holds, and re-queueing the
dead letters once the cause (here a proxy refusing with 401) is fixed."""

from __future__ import annotations

import json
import time

from tests.integration.am_proxy import FaultProxy
from tests.integration.conftest import Alertmanager, Bridge, BridgeFactory
from tests.integration.test_send import cli_main, send


def status(bridge: Bridge, *args: str) -> tuple[int, str]:
    return cli_main(["status", "--url", bridge.process.admin_url, *args])


def status_json(bridge: Bridge) -> dict[str, object]:
    code, out = status(bridge, "--json")
    assert code == 0, out
    # After the lines on stderr saying what the command used (cli_main merges them).
    data: dict[str, object] = json.loads(out[out.index("{") :])
    return data


def test_status_lists_the_active_alerts_and_the_queues(
    bridge: Bridge, alertmanager: Alertmanager
) -> None:
    assert send(bridge, "--example", "issue-alert", "--wait")[0] == 0
    assert send(bridge, "--example", "metric-critical", "--wait")[0] == 0
    code, out = status(bridge)
    assert code == 0, out
    assert "active alerts: 2" in out
    assert "issue:1117540176" in out
    assert "metric_alert:7011" in out
    assert f"{alertmanager.url.removeprefix('http://')}: 0 queued" in out
    assert "dead letters: 0" in out
    data = status_json(bridge)
    assert data["active_count"] == 2
    active = data["active"]
    assert isinstance(active, list)
    assert {a["identity"] for a in active} == {"issue:1117540176", "metric_alert:7011"}


def test_requeue_dead_letters_after_the_fix(
    alertmanager: Alertmanager, bridge_factory: BridgeFactory
) -> None:
    with FaultProxy(alertmanager.url).running() as proxy, bridge_factory([proxy.url]) as bridge:
        proxy.fail(401)  # a 4xx about the request: the batch is dead-lettered
        for example in ("issue-alert", "metric-critical", "metric-resolved"):
            assert send(bridge, "--example", example)[0] == 0
        deadline = time.monotonic() + 20
        while status_json(bridge)["dead_letter_count"] != 3:
            assert time.monotonic() < deadline
            time.sleep(0.1)
        code, out = status(bridge)
        assert "HTTP 401" in out
        assert "--requeue-dead-letters" in out

        proxy.heal()
        code, out = status(bridge, "--requeue-dead-letters")
        assert code == 0, out
        # The issue alert is still active: sent. The metric alert resolved since: its
        # resolve is sent, its old firing alert is not (it would fire it again).
        assert "re-queued 2 dead letter(s); dropped 1 firing alert(s)" in out
        alerts = alertmanager.wait_for(
            lambda alerts: [a["labels"].get("sentry_issue_id") for a in alerts] == ["1117540176"]
        )
        assert not any("sentry_alert_rule_id" in a["labels"] for a in alerts)
        assert status_json(bridge)["dead_letter_count"] == 0

"""Escalation tiers with a real Alertmanager (issue 16, contract item 4): a tier fires after
its delay, a silence created through Alertmanager's API holds it (an acknowledgement), a
restart of the bridge in between changes nothing, and a resolve ends every tier at once."""

from __future__ import annotations

import contextlib
import time
from datetime import UTC, datetime, timedelta
from typing import Any

import httpx
import pytest

from tests.conftest import PostgresTarget
from tests.integration.conftest import Alertmanager, Bridge, BridgeFactory, fixture

ISSUE = "1117540176"  # event_alert.json's and issue_resolved.json's issue
DELAY = 2.0  # the step's `after`: short, and waited on as a condition, never slept
POLICY = {"after": f"{DELAY}s", "labels": {"escalation_tier": "2"}}
ESCALATION = {
    "default": dict.fromkeys(("low", "medium", "high", "critical"), "tiers"),
    "policies": {"tiers": [POLICY]},
    "interval": "0.2s",
}


def tier(alert: dict[str, Any]) -> str:
    return str(alert["labels"].get("escalation_tier", "1"))


def of_issue(alerts: list[dict[str, Any]]) -> dict[str, dict[str, Any]]:
    """The issue's active alerts in Alertmanager, by tier."""
    return {tier(a): a for a in alerts if a["labels"].get("sentry_issue_id") == ISSUE}


def wait_metric(bridge: Bridge, outcome: str, at_least: float, timeout: float = 20.0) -> None:
    deadline = time.monotonic() + timeout
    labels = {"outcome": outcome}
    while bridge.metric("sentry_bridge_alerts_total", labels) < at_least:
        assert time.monotonic() < deadline, f"never {at_least} {outcome}"
        time.sleep(0.05)


def silence(am: Alertmanager, labels: dict[str, str]) -> str:
    """A silence on the alert's label set, through Alertmanager's API v2
    (``POST /api/v2/silences``, api/v2/openapi.yaml ``postableSilence``)."""
    now = datetime.now(UTC)
    body = {
        "matchers": [
            {"name": k, "value": v, "isRegex": False, "isEqual": True} for k, v in labels.items()
        ],
        "startsAt": now.isoformat(),
        "endsAt": (now + timedelta(hours=1)).isoformat(),
        "createdBy": "on-call",
        "comment": "acknowledged",
    }
    response = httpx.post(f"{am.url}/api/v2/silences", json=body, timeout=10)
    response.raise_for_status()
    return str(response.json()["silenceID"])


@pytest.mark.parametrize("engine", ["sqlite", "postgres"])
def test_a_tier_waits_for_its_delay_and_a_silence_then_a_resolve_ends_every_tier(
    alertmanager: Alertmanager,
    bridge_factory: BridgeFactory,
    engine: str,
    request: pytest.FixtureRequest,
) -> None:
    sections: dict[str, object] = {"escalation": ESCALATION}
    env: dict[str, str] = {}
    if engine == "postgres":  # the timer in the shared store, read back after the restart
        pg: PostgresTarget = request.getfixturevalue("pg")
        postgres = {"dsn": "${BRIDGE_DATABASE_URL}", "schema": pg.schema}
        sections["store"] = {"backend": "postgres", "postgres": postgres}
        env["BRIDGE_DATABASE_URL"] = pg.dsn

    def start() -> contextlib.AbstractContextManager[Bridge]:
        return bridge_factory([alertmanager.url], sections=sections, env=env)

    with start() as bridge:
        assert bridge.post(fixture("event_alert.json"), resource="event_alert").status_code == 202
        first = of_issue(alertmanager.wait_for(lambda a: "1" in of_issue(a)))["1"]
        fired_at = time.monotonic()
        # Acknowledged before the step is due: the step waits, counted, while it lasts.
        silence_id = silence(alertmanager, {"sentry_issue_id": ISSUE})
        wait_metric(bridge, "acknowledged", 2)
        assert time.monotonic() - fired_at >= DELAY - 0.5  # not looked at before it was due
        assert set(of_issue(alertmanager.sentry_alerts())) == {"1"}
        bridge.process.terminate()

    # A restart in between changes nothing: still held while the silence lasts.
    with start() as bridge:
        wait_metric(bridge, "acknowledged", 1)
        assert set(of_issue(alertmanager.sentry_alerts())) == {"1"}
        # The silence lifted: the next look fires the tier; the first alert is unchanged.
        httpx.delete(f"{alertmanager.url}/api/v2/silence/{silence_id}", timeout=10)
        tiers = of_issue(alertmanager.wait_for(lambda a: "2" in of_issue(a)))
        assert tiers["2"]["labels"] == {**first["labels"], "escalation_tier": "2"}
        assert tiers["1"]["labels"] == first["labels"]
        assert tiers["1"]["startsAt"] == first["startsAt"]  # no false "resolved" to tier 1
        assert bridge.metric("sentry_bridge_alerts_total", {"outcome": "escalated"}) == 1

        resolve = fixture("issue_resolved.json")
        assert bridge.post(resolve, resource="issue").status_code == 202
        alertmanager.wait_for(lambda a: not of_issue(a))  # both tiers resolved at once

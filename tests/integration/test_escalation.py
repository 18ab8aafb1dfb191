"""Escalation tiers with a real Alertmanager (issue 16, contract item 4): a tier fires after
its delay, a silence created through Alertmanager's API holds it (an acknowledgement), a
restart of the bridge in between changes nothing, and a resolve ends every tier at once. Two
replicas on one PostgreSQL fire each step once, and the next one fires from the survivor
once the replica holding the periodic lease stops."""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import asyncpg
import pytest

from tests.conftest import PostgresTarget
from tests.integration import procs
from tests.integration.conftest import Alertmanager, Bridge, BridgeFactory, fixture
from tests.integration.test_replicas import (
    Recording,
    database_env,
    postgres_store,
    replicas,
    start_pod,
)

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
    response = procs.post(f"{am.url}/api/v2/silences", json=body, timeout=10)
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
        procs.request("DELETE", f"{alertmanager.url}/api/v2/silence/{silence_id}", timeout=10)
        tiers = of_issue(alertmanager.wait_for(lambda a: "2" in of_issue(a)))
        assert tiers["2"]["labels"] == {**first["labels"], "escalation_tier": "2"}
        assert tiers["1"]["labels"] == first["labels"]
        assert tiers["1"]["startsAt"] == first["startsAt"]  # no false "resolved" to tier 1
        assert bridge.metric("sentry_bridge_alerts_total", {"outcome": "escalated"}) == 1

        resolve = fixture("issue_resolved.json")
        assert bridge.post(resolve, resource="issue").status_code == 202
        alertmanager.wait_for(lambda a: not of_issue(a))  # both tiers resolved at once


# --- two replicas on one PostgreSQL -------------------------------------------------------

LATER = 15.0  # the second step's `after`: well after the first replica has stopped
TWO_STEPS = {
    **ESCALATION,
    "policies": {"tiers": [POLICY, {"after": f"{LATER}s", "labels": {"escalation_tier": "3"}}]},
}


def lease_holder(pg: PostgresTarget) -> str | None:
    """Who holds the periodic lease now (bridge/store/pg/lease.py), read from PostgreSQL."""

    async def read() -> str | None:
        conn = await asyncpg.connect(pg.dsn, server_settings={"search_path": pg.schema})
        try:
            holder = await conn.fetchval(
                "SELECT holder FROM lease "
                "WHERE name = 'periodic' AND expires_at > clock_timestamp()"
            )
        finally:
            await conn.close()
        return None if holder is None else str(holder)

    try:
        return asyncio.run(read())
    except asyncpg.UndefinedTableError:  # not migrated yet
        return None


def wait_until(condition: Callable[[], bool], what: str, timeout: float = 20.0) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        assert time.monotonic() < deadline, what
        time.sleep(0.05)


def tier_starts(recorder: Recording) -> dict[str, set[str]]:
    """Per tier, every ``startsAt`` a firing post of the issue carried through ``recorder``:
    a tier fired twice would show two."""
    out: dict[str, set[str]] = {}
    for _, wall, alerts in list(recorder.posts):
        for alert in alerts:
            firing = datetime.fromisoformat(alert["endsAt"]) > wall
            if alert["labels"].get("sentry_issue_id") == ISSUE and firing:
                out.setdefault(tier(alert), set()).add(alert["startsAt"])
    return out


def test_two_replicas_fire_each_step_once_and_the_survivor_fires_the_next(
    tmp_path: Path, alertmanager: Alertmanager, pg: PostgresTarget
) -> None:
    """Both replicas run the escalation job; the lease lets one tick at a time, so the step
    fires once. The holder stopped, the other replica takes the lease and the next step fires
    from it, and the tiers already fired keep firing unchanged."""
    ports = [procs.free_port(), procs.free_port()]
    with contextlib.ExitStack() as stack:
        recorder = Recording(alertmanager.url)
        stack.enter_context(recorder.running())
        pods = stack.enter_context(
            replicas(
                tmp_path, [recorder.url], postgres_store(pg), count=0,
                env=database_env(pg), ports=ports,
            )
        )  # fmt: skip
        procs.update_config(pods.config, escalation=TWO_STEPS)
        a = stack.enter_context(start_pod(tmp_path, pods.config, "pod-a", ports[0], pods.env))
        wait_until(lambda: lease_holder(pg) is not None, "pod A never took the periodic lease")
        holder_a = lease_holder(pg)
        b = stack.enter_context(start_pod(tmp_path, pods.config, "pod-b", ports[1], pods.env))

        def escalated(*pods: Bridge) -> float:
            return sum(
                p.metric("sentry_bridge_alerts_total", {"outcome": "escalated"}) for p in pods
            )

        assert b.post(fixture("event_alert.json"), resource="event_alert").status_code == 202
        first = of_issue(alertmanager.wait_for(lambda a: "1" in of_issue(a)))["1"]
        fired = time.monotonic()
        tiers = of_issue(alertmanager.wait_for(lambda a: "2" in of_issue(a)))
        assert tiers["2"]["labels"] == {**first["labels"], "escalation_tier": "2"}
        # Both replicas up, one tick decided: the step fired once.
        assert lease_holder(pg) == holder_a
        assert escalated(a, b) == 1
        by_a = escalated(a)

        assert a.process.terminate() == 0  # the lease holder stops (and hands the lease over)
        assert time.monotonic() - fired < LATER, "pod A stopped too late to show a takeover"
        assert set(of_issue(alertmanager.sentry_alerts())) == {"1", "2"}

        # The survivor takes the lease at its next look and fires the next step on time.
        tiers = of_issue(alertmanager.wait_for(lambda a: "3" in of_issue(a), timeout=LATER + 20))
        assert lease_holder(pg) not in {None, holder_a}
        assert time.monotonic() - fired >= LATER - 1.0  # not before it was due
        assert by_a + escalated(b) == 2
        assert tiers["1"]["startsAt"] == first["startsAt"]  # no false "resolved" to tier 1
        # Every post of each tier, from either replica, carried the one firing's startsAt.
        assert {t: len(s) for t, s in tier_starts(recorder).items()} == {"1": 1, "2": 1, "3": 1}

        resolve = fixture("issue_resolved.json")
        assert b.post(resolve, resource="issue").status_code == 202
        alertmanager.wait_for(lambda a: not of_issue(a))  # every tier resolved at once

"""What one Alertmanager refuses stays that Alertmanager's business (issue 15).

The real bridge under Uvicorn, fed signed Sentry webhooks, posting to two real
Alertmanagers, one behind a proxy that answers 400 to every post (a misconfigured auth
front): 200 issues fire, 100 of them are resolved, 50 of those fire again. The healthy
Alertmanager must end exactly as it does in the same run without the bad one: a refusal is
dead-lettered for the Alertmanager that refused, and never changes what the identity holds
(before issue 15 it cleared the identity's alert for every Alertmanager, so the resolves and
re-fires were computed against nothing: 100 resolved issues stayed firing in the healthy
one and the re-fired ones carried two label sets).
"""

from __future__ import annotations

import contextlib
import time
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest

from tests.conftest import PostgresTarget
from tests.integration import procs
from tests.integration.am import require_binary, start_alertmanager
from tests.integration.am_proxy import FaultProxy
from tests.integration.conftest import ENV, Alertmanager, Bridge
from tests.integration.postgres import drop_schema
from tests.integration.test_state_machine import event_alert, issue_webhook

pytestmark = pytest.mark.integration

ISSUES = [str(5_000_000 + n) for n in range(200)]
RESOLVED = ISSUES[:100]
REFIRED = RESOLVED[:50]
OUTCOMES = ("forwarded", "resolved", "duplicate", "stale", "dropped", "ignored")


def processed(bridge: Bridge) -> float:
    return sum(bridge.metric("sentry_bridge_alerts_total", {"outcome": o}) for o in OUTCOMES)


def wait(bridge: Bridge, done: float, what: str) -> None:
    """Until the bridge counted ``done`` webhooks processed and its store is empty (every
    Alertmanager settled: delivered, or dead-lettered by the refusing one)."""
    deadline = time.monotonic() + 60
    while processed(bridge) < done or bridge.metric("sentry_bridge_store_queued_alerts") > 0:
        assert time.monotonic() < deadline, f"the bridge never settled {what}"
        time.sleep(0.05)


def resolved(issue: str) -> dict[str, Any]:
    return issue_webhook("issue_resolved.json", issue)


def run(bridge: Bridge) -> None:
    """The story: fire 200, resolve 100, fire 50 of those again; each step settled."""
    sent = 0
    for issues, make, resource, what in (
        (ISSUES, event_alert, "event_alert", "the firings"),
        (RESOLVED, resolved, "issue", "the resolves"),
        # Events after the resolves (made now: they happened after Sentry resolved them).
        (REFIRED, lambda i: event_alert(i, when=datetime.now(UTC)), "event_alert", "the re-fires"),
    ):
        for issue in issues:
            assert bridge.post(make(issue), resource=resource).status_code == 202
        sent += len(issues)
        wait(bridge, sent, what)


def held(am: Alertmanager) -> dict[str, list[dict[str, str]]]:
    """What Alertmanager holds firing: per Sentry issue, its label sets."""
    out: dict[str, list[dict[str, str]]] = {}
    for alert in am.sentry_alerts():
        out.setdefault(alert["labels"]["sentry_issue_id"], []).append(alert["labels"])
    return {issue: sorted(sets, key=sorted) for issue, sets in out.items()}


@contextlib.contextmanager
def bridge_on(tmp: Path, urls: list[str], pg: PostgresTarget | None) -> Iterator[Bridge]:
    """The bridge on SQLite, or on PostgreSQL in a schema of this run's own."""
    tmp.mkdir(parents=True, exist_ok=True)
    config = procs.write_config(tmp / "config.yaml", urls)
    env: dict[str, str] = {}
    if pg is not None:
        schema = f"{pg.schema}_{tmp.name}"
        settings = {"dsn": "${BRIDGE_DATABASE_URL}", "schema": schema}
        procs.update_config(config, store={"backend": "postgres", "postgres": settings})
        env["BRIDGE_DATABASE_URL"] = pg.dsn
    try:
        with (
            procs.bridge(config, tmp / "data", tmp / "bridge.log", {**ENV, **env}) as process,
            procs.client(base_url=process.url, timeout=10) as client,
        ):
            yield Bridge(process, client)
    finally:
        if pg is not None:
            drop_schema(pg.server, schema)


@pytest.mark.parametrize("engine", ["sqlite", "postgres"])
def test_a_refusing_alertmanager_changes_nothing_for_the_healthy_one(
    tmp_path: Path, engine: str, request: pytest.FixtureRequest
) -> None:
    require_binary()
    pg: PostgresTarget | None = request.getfixturevalue("pg") if engine == "postgres" else None
    # The reference: the same run with the healthy Alertmanager alone.
    with (
        start_alertmanager(tmp_path / "am-alone", procs.free_port()) as alone_url,
        bridge_on(tmp_path / "alone", [alone_url], pg) as bridge,
    ):
        run(bridge)
        expected = held(Alertmanager(alone_url))
    assert sorted(expected) == sorted(ISSUES[100:] + REFIRED)
    assert all(len(sets) == 1 for sets in expected.values()), "one label set per issue"

    with (
        start_alertmanager(tmp_path / "am-good", procs.free_port()) as good_url,
        start_alertmanager(tmp_path / "am-bad", procs.free_port()) as bad_url,
    ):
        proxy = FaultProxy(bad_url)
        with proxy.running(), bridge_on(tmp_path / "both", [good_url, proxy.url], pg) as bridge:
            proxy.fail(400)
            run(bridge)
            assert held(Alertmanager(good_url)) == expected
            assert proxy.failed > 0
            assert bridge.metric("sentry_bridge_dead_letters_total") >= len(ISSUES)
        assert Alertmanager(bad_url).sentry_alerts() == []

"""Sentry's status is the truth (issue 16, contract item 3): the real bridge under Uvicorn,
the Sentry API stand-in (tests/sentry_api.py) and a real Alertmanager. One test per bullet
of the issue this part owns, each failing on the code before the reconciler:

* "Pages end that Sentry never resolved": an issue Sentry holds open stays firing in
  Alertmanager long past ``alert_lifetime``;
* "Resolves that never come": Sentry resolved it and sent no webhook (here: while the bridge
  was down, so the start-up round catches it up);
* "A captured resolve clears a live alert": a replayed resolve is undone at the next check;
* Sentry's status ``escalating`` escalates the alert one step in Alertmanager, once;
* and Sentry's 429s are waited out as its ``Retry-After`` says.
"""

from __future__ import annotations

import contextlib
import itertools
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml

from bridge.model import Severity
from tests.conftest import PostgresTarget
from tests.integration import procs
from tests.integration.conftest import ENV, Alertmanager, Bridge
from tests.integration.test_state_machine import event_alert, issue_webhook
from tests.sentry_api import FakeSentryAPI, Reply

pytestmark = pytest.mark.integration

ISSUE = "6100000001"
LIFETIME = 4.0  # seconds: alertmanager.alert_lifetime where a test needs it short


@contextlib.contextmanager
def running(
    tmp_path: Path,
    am: Alertmanager,
    api: FakeSentryAPI,
    *,
    lifetime: str,
    interval: str,
    pg: PostgresTarget | None = None,
) -> Iterator[Bridge]:
    """The bridge with the stand-in as its Sentry (token, organization ``acme``), on SQLite
    or on ``pg``'s schema."""
    path = procs.write_config(tmp_path / "config.yaml", [am.url], alert_lifetime=lifetime)
    data = yaml.safe_load(path.read_text(encoding="utf-8"))
    data["sentry"].update(
        base_url=api.url, api_token="t0ken", organization="acme", reconcile_interval=interval
    )
    data["dedup"]["window"] = "1s"  # shorter than the lifetime, as config requires
    path.write_text(yaml.safe_dump(data), encoding="utf-8")
    env = dict(ENV)
    if pg is not None:
        procs.use_postgres(path, pg.schema)
        env["BRIDGE_DATABASE_URL"] = pg.dsn
    with (
        procs.bridge(path, tmp_path / "data", tmp_path / "bridge.log", env) as process,
        procs.client(base_url=process.url, timeout=10) as client,
    ):
        yield Bridge(process, client)


def fire(bridge: Bridge, am: Alertmanager, issue: str = ISSUE) -> None:
    assert bridge.post(event_alert(issue), resource="event_alert").status_code == 202
    am.wait_for(lambda alerts: issue in ids(alerts))


def ids(alerts: list[dict[str, Any]]) -> list[str]:
    return [a["labels"]["sentry_issue_id"] for a in alerts]


def test_an_issue_sentry_holds_open_stays_firing_past_the_lifetime(
    tmp_path: Path, alertmanager: Alertmanager
) -> None:
    with FakeSentryAPI(token="t0ken") as api:
        api.status(ISSUE, "unresolved")
        with running(tmp_path, alertmanager, api, lifetime=f"{LIFETIME}s", interval="1s") as b:
            fire(b, alertmanager)
            # Three lifetimes with no webhook: Alertmanager shows it firing throughout.
            deadline = time.monotonic() + 3 * LIFETIME
            while time.monotonic() < deadline:
                assert ids(alertmanager.sentry_alerts()) == [ISSUE], "the page lapsed"
                time.sleep(0.2)
            assert b.metric("sentry_bridge_alerts_total", {"outcome": "reconciled"}) >= 2
            # Then Sentry resolves it, and says so only through its API.
            api.status(ISSUE, "resolved")
            alertmanager.wait_for(lambda alerts: not alerts)


@pytest.mark.parametrize("engine", ["sqlite", "postgres"])
def test_a_resolve_sentry_never_sent_is_caught_up_at_start(
    engine: str, tmp_path: Path, alertmanager: Alertmanager, request: pytest.FixtureRequest
) -> None:
    pg: PostgresTarget | None = request.getfixturevalue("pg") if engine == "postgres" else None
    # A long interval: only the round at start-up can see it in time.
    options: dict[str, Any] = {"lifetime": "1h", "interval": "20m", "pg": pg}
    with FakeSentryAPI(token="t0ken") as api:
        api.status(ISSUE, "unresolved")
        with running(tmp_path, alertmanager, api, **options) as b:
            fire(b, alertmanager)
        api.status(ISSUE, "resolved")  # while the bridge is down; no webhook, ever
        with running(tmp_path, alertmanager, api, **options) as b:
            alertmanager.wait_for(lambda alerts: not alerts)
            assert b.metric("sentry_bridge_alerts_total", {"outcome": "reconciled"}) == 1


def test_a_replayed_resolve_is_undone_at_the_next_check(
    tmp_path: Path, alertmanager: Alertmanager
) -> None:
    with FakeSentryAPI(token="t0ken") as api:
        api.status(ISSUE, "unresolved")
        with running(tmp_path, alertmanager, api, lifetime="1h", interval="1s") as b:
            fire(b, alertmanager)
            # A captured resolve, replayed once the body retention forgot it (a new body).
            resolve = issue_webhook("issue_resolved.json", ISSUE)
            assert b.post(resolve, resource="issue").status_code == 202
            b.until_metric("sentry_bridge_alerts_total", lambda n: n >= 1, {"outcome": "resolved"})
            alertmanager.wait_for(lambda alerts: ids(alerts) == [ISSUE])
            assert b.metric("sentry_bridge_alerts_total", {"outcome": "reconciled"}) >= 1


def test_sentrys_escalating_status_escalates_the_alert_once(
    tmp_path: Path, alertmanager: Alertmanager
) -> None:
    """Sentry's API says the issue escalates (``substatus: escalating``, no webhook): in
    Alertmanager the alert ends one severity up with ``escalated="true"``, the old label
    set resolved (no second alert of the issue), and later rounds saying the same leave it."""
    with FakeSentryAPI(token="t0ken") as api:
        api.status(ISSUE, "unresolved")
        with running(tmp_path, alertmanager, api, lifetime="1h", interval="1s") as b:
            # From staging (the shipped non-production rule): below critical, room to rise.
            staging = event_alert(ISSUE, environment="staging")
            assert b.post(staging, resource="event_alert").status_code == 202
            [first] = alertmanager.wait_for(lambda alerts: ids(alerts) == [ISSUE])
            before = Severity(first["labels"]["severity"])
            assert before is not Severity.CRITICAL, "nothing above it to escalate to"
            raised = before.escalate().value
            api.status(ISSUE, "unresolved", substatus="escalating")

            def escalated(alerts: list[dict[str, Any]]) -> bool:
                return [
                    (a["labels"]["severity"], a["labels"].get("escalated")) for a in alerts
                ] == [(raised, "true")]

            [now] = alertmanager.wait_for(escalated)
            assert ids([now]) == [ISSUE]
            assert b.metric("sentry_bridge_alerts_total", {"outcome": "reconciled"}) == 1
            # Three more rounds of Sentry saying escalating: no second step.
            seen = len(api.requests_to(api.list_path()))
            assert api.wait_for_requests(len(api.requests) + 3, timeout=20)
            assert len(api.requests_to(api.list_path())) >= seen + 3
            assert escalated(alertmanager.sentry_alerts())
            assert b.metric("sentry_bridge_alerts_total", {"outcome": "reconciled"}) == 1


def test_429s_are_waited_out_as_retry_after_says(
    tmp_path: Path, alertmanager: Alertmanager
) -> None:
    with FakeSentryAPI(token="t0ken") as api:
        api.status(ISSUE, "unresolved")
        with running(tmp_path, alertmanager, api, lifetime="1h", interval="1s") as b:
            fire(b, alertmanager)
            limited = Reply(429, {"detail": "Rate limit exceeded"}, headers={"Retry-After": "2"})
            api.clear()
            api.fail(limited, times=2)
            api.status(ISSUE, "resolved")
            alertmanager.wait_for(lambda alerts: not alerts)
            # Retry-After: 2, each time: the request after each 429 came 2 s later. (A
            # round may ask between clear() and fail(): only what follows a 429 counts.)
            asked = api.requests_to(api.list_path())
            gaps = [
                later.at - earlier.at
                for earlier, later in itertools.pairwise(asked)
                if earlier.status == 429
            ]
            assert len(gaps) == 2, asked
            assert min(gaps) >= 1.9, gaps
            assert (
                b.metric("sentry_bridge_reconcile_requests_total", {"result": "rate_limited"}) == 2
            )

"""bridge/status.py in-process: GET /-/status, the re-queue of dead letters, and the view
``sentry-bridge status`` prints (against real processes: tests/integration/test_status.py)."""

from __future__ import annotations

import hashlib
import hmac
import json
from collections.abc import AsyncIterator
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import anyio
import httpx
import pytest

from bridge import config, send, status
from bridge.admin import create_admin_app
from bridge.app import create_app
from bridge.compose import build
from tests.factories import both_listeners

pytestmark = pytest.mark.anyio


class Alertmanager:
    """Refuses with 401 (a proxy's credentials: the batch is dead-lettered) until healed."""

    def __init__(self) -> None:
        self.refusing = True
        self.alerts: list[dict[str, Any]] = []

    def __call__(self, request: httpx.Request) -> httpx.Response:
        if request.url.path != "/api/v2/alerts":
            return httpx.Response(200)
        if self.refusing:
            return httpx.Response(401, text="no credentials")
        self.alerts.extend(json.loads(request.content))
        return httpx.Response(200)


@pytest.fixture
def am() -> Alertmanager:
    return Alertmanager()


@pytest.fixture
async def client(tmp_path: Path, am: Alertmanager) -> AsyncIterator[httpx.AsyncClient]:
    cfg = config.parse(
        {"sentry": {"client_secrets": "s"}, "store": {"data_dir": str(tmp_path)}}, env={}
    )
    bridge = build(cfg, alertmanager_transport=httpx.MockTransport(am))
    app = create_app(bridge)
    both = both_listeners(app, create_admin_app(bridge, None))
    async with (
        app.router.lifespan_context(app),
        httpx.AsyncClient(transport=httpx.ASGITransport(app=both), base_url="http://b") as c,
    ):
        yield c


async def post_example(client: httpx.AsyncClient, name: str) -> None:
    spec = send.EXAMPLES[name]
    body = send.example_body(name, 1_780_000_000.0)
    headers = {
        "Sentry-Hook-Resource": str(spec.resource),
        "Sentry-Hook-Signature": hmac.new(b"s", body, hashlib.sha256).hexdigest(),
    }
    response = await client.post("/webhooks/sentry", content=body, headers=headers)
    assert response.status_code == 202


async def current(client: httpx.AsyncClient, **params: str) -> dict[str, Any]:
    response = await client.get("/-/status", params=params)
    assert response.status_code == 200
    data: dict[str, Any] = response.json()
    return data


async def test_status_and_requeue(client: httpx.AsyncClient, am: Alertmanager) -> None:
    for name in ("issue-alert", "metric-critical", "metric-resolved"):
        await post_example(client, name)
    with anyio.fail_after(10):
        while (await current(client))["dead_letter_count"] < 3:
            await anyio.sleep(0.02)
    data = await current(client)
    assert data["active_count"] == 1
    assert [a["identity"] for a in data["active"]] == ["issue:1117540176"]
    assert data["queue_depth"] == {"localhost:9093": 0}
    assert {d["reason"] for d in data["dead_letters"]} == {"HTTP 401: no credentials"}
    assert data["quarantined"] == 0
    assert data["store"].startswith("sqlite ")
    assert data["alertmanagers"] == ["http://localhost:9093"]

    view = status.render(data)
    assert "active alerts: 1" in view
    assert "dead letters: 3" in view
    assert "--requeue-dead-letters" in view

    am.refusing = False
    counts = (await client.post("/-/status/requeue-dead-letters")).json()
    # The issue alert is still active: sent again. Rule 7011 resolved since: its resolve is
    # sent, its firing alert is not (it would fire a resolved alert again).
    assert counts == {"requeued": 2, "superseded": 1}
    # Until the bridge's own queue says all is delivered; then exactly the two are there.
    with anyio.fail_after(10):
        while (await current(client))["queue_depth"] != {"localhost:9093": 0} or not am.alerts:
            await anyio.sleep(0.02)
    assert len(am.alerts) == 2
    sent = {
        a["labels"].get("sentry_issue_id") or a["labels"]["sentry_alert_rule_id"] for a in am.alerts
    }
    assert sent == {"1117540176", "7011"}
    resolve = next(a for a in am.alerts if "sentry_alert_rule_id" in a["labels"])
    # A resolve: it ended when Sentry resolved it, not an hour from now as a firing one.
    assert datetime.fromisoformat(resolve["endsAt"]) <= datetime.now(UTC)
    assert (await current(client))["dead_letter_count"] == 0


async def test_limit_is_checked(client: httpx.AsyncClient) -> None:
    assert (await client.get("/-/status", params={"limit": "x"})).status_code == 400
    assert (await current(client, limit="1"))["active"] == []


def test_base_url() -> None:
    cfg = config.Config(sentry=config.Sentry(allow_unauthenticated=True))
    assert status.base_url(None, cfg) == "http://127.0.0.1:8081"  # the admin listener
    assert status.base_url("http://b:9/", cfg) == "http://b:9"


def test_render_names_the_quarantine_reasons_and_the_oldest_age() -> None:
    data = _page(
        quarantined=3,
        quarantine_reasons={"parse_error": 1, "invalid_payload": 2},
        quarantine_oldest_at=1_780_000_000.0,
        quarantine_oldest_age_seconds=5400.0,
    )
    view = status.render(data)
    assert view.endswith(
        "quarantined webhooks: 3\n  invalid_payload: 2\n  parse_error: 1\n"
        "  oldest: 1.5h ago (sentry-bridge quarantine list)"
    )


def test_render_shows_the_escalation_tiers_and_the_next_step() -> None:
    alert = {"identity": "issue:1", "ends_at": 1.8e9, "labels": {"severity": "critical"}}
    active = [{**alert, "tiers": 1, "next_step_at": 1.8e9 - 60}, {**alert, "tiers": 0}]
    data = _page(active_count=2, active=active, store="sqlite x", alertmanagers=[])
    view = status.render(data)
    assert "escalation: 1 tier(s) firing; next step due 2027-01-15 07:59:00Z" in view
    assert view.count("escalation:") == 1  # nothing shown for an alert with no policy


def _page(**extra: Any) -> dict[str, Any]:
    return {
        "active_count": 0,
        "active": [],
        "inbox": 0,
        "queue_depth": {},
        "alertmanager_down": [],
        "dead_letter_count": 0,
        "dead_letters": [],
        "quarantined": 0,
        "quarantine_reasons": {},
        "quarantine_oldest_age_seconds": None,
        **extra,
    }


@pytest.mark.parametrize(
    ("reconciler", "line"),
    [
        pytest.param(
            {"enabled": False, "interval_seconds": 60.0, "last_round_at": None},
            "reconciler: off (no sentry.api_token)",
            id="off",
        ),
        pytest.param(
            {"enabled": True, "interval_seconds": 60.0, "last_round_at": None},
            "reconciler: no round completed on this replica yet",
            id="no-round",
        ),
        pytest.param(
            {"enabled": True, "interval_seconds": 60.0, "last_round_at": 1.8e9},
            "reconciler: last round 2027-01-15 08:00:00Z (",
            id="last-round",
        ),
    ],
)
def test_render_says_when_the_reconciler_last_finished_a_round(
    reconciler: dict[str, Any], line: str
) -> None:
    view = status.render(_page(reconciler=reconciler))
    assert f"\n{line}" in view
    assert "reconciler" not in status.render(_page())  # a bridge older than the field


def test_render_says_sentry_last_said_escalating() -> None:
    alert = {"identity": "issue:1", "ends_at": 1.8e9, "labels": {"severity": "critical"}}
    told = [{**alert, "sentry_escalating": True}]
    view = status.render(_page(active_count=1, active=told))
    assert "Sentry's API last said: escalating" in view
    quiet = [{**alert, "sentry_escalating": False}]
    assert "escalating" not in status.render(_page(active_count=1, active=quiet))


async def test_status_shows_the_reconcilers_last_round(tmp_path: Path) -> None:
    """With an API token, /-/status says when this replica's reconciler finished a round
    (the first one runs at start; no issue to check: no request to Sentry)."""
    asked: list[httpx.Request] = []

    def sentry(request: httpx.Request) -> httpx.Response:
        asked.append(request)
        return httpx.Response(200, json=[])

    cfg = config.parse(
        {
            "sentry": {"client_secrets": "s", "api_token": "t", "organization": "acme"},
            "store": {"data_dir": str(tmp_path)},
        },
        env={},
    )
    bridge = build(
        cfg,
        alertmanager_transport=httpx.MockTransport(Alertmanager()),
        sentry_transport=httpx.MockTransport(sentry),
    )
    app = create_app(bridge)
    both = both_listeners(app, create_admin_app(bridge, None))
    async with (
        app.router.lifespan_context(app),
        httpx.AsyncClient(transport=httpx.ASGITransport(app=both), base_url="http://b") as c,
    ):
        with anyio.fail_after(10):
            while bridge.reconciler.last_round is None:
                await anyio.sleep(0.01)
        view = (await current(c))["reconciler"]
    assert view == {
        "enabled": True,
        "interval_seconds": 60.0,
        "last_round_at": bridge.reconciler.last_round,
    }
    assert asked == []

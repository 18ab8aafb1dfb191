"""bridge/compose.py: the bridge in one process, and health as progress.

In-process, over ASGI, with the watchdog's clock moved by hand (``check_progress(now)``)
and Sentry's API as an ``httpx.MockTransport`` that answers only when the test says so.
The same faults for real, under Uvicorn: tests/integration/test_edge_faults.py."""

from __future__ import annotations

import asyncio
import hashlib
import hmac
import json
import logging
import time
from collections.abc import AsyncIterator, Callable
from pathlib import Path

import httpx
import pytest
from prometheus_client import CollectorRegistry

from bridge import config, pipeline
from bridge.app import create_app
from bridge.compose import Bridge, build
from bridge.errors import StoreError
from bridge.store.contract import Taken
from tests.factories import sizes, until_sizes
from tests.sentry_payloads import load_fixture

pytestmark = pytest.mark.anyio
SECRET = "compose-secret"
TIMEOUT = 10.0  # server.progress_timeout


def make_bridge(tmp_path: Path, sentry: httpx.AsyncBaseTransport | None = None) -> Bridge:
    cfg = config.parse(
        {
            "server": {"progress_timeout": f"{TIMEOUT}s"},
            "sentry": {
                "client_secrets": SECRET,
                "api_token": "token" if sentry is not None else "",
                "api_timeout": "1h",  # the look-up below is held by the test, not cut short
            },
            "store": {"data_dir": str(tmp_path)},
        },
        env={},
    )
    transport = httpx.MockTransport(lambda request: httpx.Response(200))
    return build(
        cfg, registry=CollectorRegistry(), alertmanager_transport=transport, sentry_transport=sentry
    )


class HeldSentry(httpx.AsyncBaseTransport):
    """Sentry's API, answering nothing until ``release`` (an API that hangs)."""

    def __init__(self) -> None:
        self.released = asyncio.Event()
        self.asked = asyncio.Event()

    async def handle_async_request(self, request: httpx.Request) -> httpx.Response:
        self.asked.set()
        await self.released.wait()
        return httpx.Response(200, json={"userCount": 3, "count": "7"})


async def wait_until(condition: Callable[[], bool], what: str, timeout: float = 10.0) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        assert time.monotonic() < deadline, what
        await asyncio.sleep(0.01)


def signed(n: int) -> tuple[bytes, dict[str, str]]:
    """event_alert.json for issue 9000 + n: a distinct identity and body each."""
    body = json.dumps(load_fixture("event_alert.json")).replace("1117540176", str(9_000 + n))
    body_bytes = body.encode()
    signature = hmac.new(SECRET.encode(), body_bytes, hashlib.sha256).hexdigest()
    return body_bytes, {"Sentry-Hook-Resource": "event_alert", "Sentry-Hook-Signature": signature}


async def running(bridge: Bridge) -> AsyncIterator[httpx.AsyncClient]:
    app = create_app(bridge)
    async with (
        app.router.lifespan_context(app),
        httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://bridge") as c,
    ):
        yield c


async def test_a_stuck_pipeline_turns_health_red_and_the_edge_keeps_accepting(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    sentry = HeldSentry()
    bridge = make_bridge(tmp_path, sentry)
    gauge = "sentry_bridge_pipeline_last_progress_timestamp_seconds"
    async for client in running(bridge):
        body, headers = signed(1)
        assert (
            await client.post("/webhooks/sentry", content=body, headers=headers)
        ).status_code == 202
        await asyncio.wait_for(sentry.asked.wait(), 10)  # the pipeline is in the look-up
        t0 = time.monotonic()
        bridge.check_progress(t0)  # a first look: the batch is under way
        before = bridge.metrics.registry.get_sample_value(gauge)
        bridge.check_progress(t0 + TIMEOUT - 1)
        assert (await client.get("/-/healthy")).status_code == 200  # busy, not stuck yet

        caplog.set_level(logging.ERROR, "bridge.compose")
        bridge.check_progress(t0 + TIMEOUT + 1)
        answer = await client.get("/-/healthy")
        assert answer.status_code == 503
        assert "the pipeline completed no batch" in answer.json()["status"]
        assert any("the bridge is unhealthy" in r.getMessage() for r in caplog.records)
        assert bridge.metrics.registry.get_sample_value(gauge) == before  # no progress
        # The edge is not held up by it: it still commits and answers.
        body, headers = signed(2)
        assert (
            await client.post("/webhooks/sentry", content=body, headers=headers)
        ).status_code == 202
        assert (await client.get("/-/ready")).status_code == 200

        sentry.released.set()  # the API answers: the batch completes, and the next
        await until_sizes(bridge.store, lambda s: s.inbox == 0, "the inbox never emptied")
        bridge.check_progress(t0 + TIMEOUT + 2)
        assert (await client.get("/-/healthy")).status_code == 200
        after = bridge.metrics.registry.get_sample_value(gauge)
        assert before is not None
        assert after is not None
        assert after > before  # set again once it progressed


async def test_idle_is_not_stuck(tmp_path: Path) -> None:
    """Nothing waiting for hours is no reason to restart."""
    bridge = make_bridge(tmp_path)
    async for client in running(bridge):
        await wait_until(bridge.store.idle, "the pipeline never waited for work")
        bridge.check_progress(time.monotonic() + 3600)
        assert (await client.get("/-/healthy")).json() == {"status": "ok"}


@pytest.mark.parametrize("task", ["pipeline", "delivery"])
@pytest.mark.parametrize("how", ["cancelled", "raised"])
async def test_a_dead_task_turns_health_red_says_why_and_asks_to_exit(
    tmp_path: Path, caplog: pytest.LogCaptureFixture, task: str, how: str
) -> None:
    bridge = make_bridge(tmp_path)
    part = bridge.pipeline if task == "pipeline" else bridge.delivery
    broken = asyncio.Event()

    async def run() -> None:
        await broken.wait()
        raise RuntimeError("a bug")

    if how == "raised":
        part.run = run  # type: ignore[method-assign]
    exits: list[str | None] = []
    bridge.on_failure = lambda: exits.append(bridge.failure)
    caplog.set_level(logging.ERROR, "bridge.compose")
    async for client in running(bridge):
        assert (await client.get("/-/healthy")).status_code == 200
        if how == "raised":
            broken.set()
        else:
            [running_task] = [t for t in bridge._tasks if t.get_name() == task]
            running_task.cancel()
        await wait_until(lambda: bridge.failure is not None, "the end went unnoticed")
        answer = await client.get("/-/healthy")
        assert answer.status_code == 503
        expected = "task was cancelled" if how == "cancelled" else "task failed: RuntimeError"
        assert f"the {task} {expected}" in answer.json()["status"]
        assert (await client.get("/-/ready")).status_code == 503
        assert exits == [bridge.failure]  # once: serve stops, exit 1
        assert any(f"the {task}" in r.getMessage() for r in caplog.records)
    assert exits == [bridge.failure]  # stopping is no second failure


async def test_one_registry_in_metrics(tmp_path: Path) -> None:
    """The edge's and the pipeline's families in one exposition (no halves to join)."""
    bridge = make_bridge(tmp_path)
    async for client in running(bridge):
        body, headers = signed(3)
        assert (
            await client.post("/webhooks/sentry", content=body, headers=headers)
        ).status_code == 202
        # Idle: the batch is committed and counted (the count follows the commit).
        await wait_until(
            lambda: bridge.pipeline.batches > 0 and bridge.store.idle(), "not processed"
        )
        text = (await client.get("/metrics")).text
        assert 'sentry_bridge_webhooks_received_total{resource="event_alert"} 1.0' in text
        assert 'sentry_bridge_alerts_total{outcome="forwarded"} 1.0' in text


async def test_a_failing_store_is_not_a_stuck_pipeline(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The store refusing reads (PostgreSQL gone) shows in /-/ready and store_up; the
    pipeline's loop is alive, and a liveness restart would not mend the database."""
    monkeypatch.setattr(pipeline, "RETRY_DELAY", 0.01)
    bridge = make_bridge(tmp_path)
    failures = 0

    async def refuse(limit: int) -> Taken:
        nonlocal failures
        failures += 1
        raise StoreError("the database is gone")

    async for client in running(bridge):
        take = bridge.store.take
        monkeypatch.setattr(bridge.store, "take", refuse)
        body, headers = signed(3)
        assert (
            await client.post("/webhooks/sentry", content=body, headers=headers)
        ).status_code == 202
        t0 = time.monotonic()
        await wait_until(lambda: failures >= 2, "the pipeline never tried the store")
        bridge.check_progress(t0)
        seen = failures
        await wait_until(lambda: failures > seen, "the pipeline stopped trying")  # noqa: B023
        bridge.check_progress(t0 + TIMEOUT + 1)
        assert (await client.get("/-/healthy")).json() == {"status": "ok"}
        assert (await sizes(bridge.store)).inbox == 1  # still waiting: nothing was lost

        monkeypatch.setattr(bridge.store, "take", take)
        await until_sizes(bridge.store, lambda s: s.inbox == 0, "the inbox never emptied")

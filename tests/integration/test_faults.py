"""Delivery under faults, against real Alertmanager processes on loopback.

The store and the senders run in the test's event loop (real SQLite file, real
HTTP, real time with short backoffs); Alertmanager is the real binary, started,
stopped and restarted by the tests, with a fault-injecting proxy in front where
a test needs 5xx answers. Every test asserts through Alertmanager's own API.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import AsyncIterator, Callable, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import httpx
import pytest
from prometheus_client import CollectorRegistry

from bridge import config
from bridge.alertmanager import PostableAlert, target_name
from bridge.delivery import Delivery
from bridge.metrics import Metrics
from bridge.store.sqlite import SqliteStore
from tests.factories import commit, held, sizes
from tests.integration import procs
from tests.integration.am import require_binary, start_alertmanager
from tests.integration.am_proxy import FaultProxy
from tests.store.probes import dead_letters

pytestmark = [pytest.mark.integration, pytest.mark.anyio]


@pytest.fixture(autouse=True)
def _binary() -> None:
    require_binary()


def postable(n: int | str, *, generator_url: str | None = None) -> PostableAlert:
    now = datetime.now(UTC).replace(microsecond=0)
    return PostableAlert(
        labels={"alertname": "SentryIssue", "source": "sentry", "sentry_issue_id": str(n)},
        annotations={"summary": f"Error {n}"},
        starts_at=now - timedelta(minutes=5),
        ends_at=now + timedelta(hours=1),
        generator_url=generator_url or f"https://sentry.example/issues/{n}/",
    )


@dataclass
class Bridge:
    """The delivery half of the bridge: a real store and the senders, running."""

    store: SqliteStore
    delivery: Delivery
    metrics: Metrics

    async def send(self, alerts: Sequence[PostableAlert], *, active: bool = True) -> None:
        """What the pipeline does for one webhook: accept, take, complete."""
        current = {f"issue:{a.labels['sentry_issue_id']}": a for a in alerts} if active else {}
        await commit(self.store, alerts, held(current, datetime.now(UTC) + timedelta(days=1)))

    def failures(self, url: str, reason: str) -> float:
        value = self.metrics.registry.get_sample_value(
            "sentry_bridge_alertmanager_requests_failed_total",
            {"alertmanager": target_name(url), "reason": reason},
        )
        return value or 0.0


@contextlib.asynccontextmanager
async def running_bridge(data: Path, urls: list[str], **settings: Any) -> AsyncIterator[Bridge]:
    cfg = config.Alertmanager(
        **{"urls": urls, "timeout": 2, "backoff_initial": 0.1, "backoff_max": 0.5, **settings}
    )
    metrics = Metrics(CollectorRegistry())
    store = SqliteStore(
        data, [target_name(u) for u in cfg.urls], max_queued=10_000, metrics=metrics
    )
    await store.open()
    delivery = Delivery(store, cfg, metrics)
    task = asyncio.create_task(delivery.run())
    try:
        yield Bridge(store, delivery, metrics)
    finally:
        task.cancel()
        await asyncio.gather(task, return_exceptions=True)
        await delivery.aclose()
        await store.close()


async def am_alerts(url: str) -> dict[str, dict[str, Any]]:
    """Alertmanager's view: the active alerts it holds, by sentry_issue_id."""
    async with procs.async_client(timeout=5) as client:
        response = await client.get(f"{url}/api/v2/alerts")
    response.raise_for_status()
    return {a["labels"]["sentry_issue_id"]: a for a in response.json()}


async def eventually(predicate: Callable[[], bool], within: float = 10.0) -> None:
    deadline = time.monotonic() + within
    while not predicate():
        assert time.monotonic() < deadline, "timed out"
        await asyncio.sleep(0.05)


async def wait_for(
    url: str, predicate: Callable[[dict[str, dict[str, Any]]], bool], within: float = 10.0
) -> dict[str, dict[str, Any]]:
    deadline = time.monotonic() + within
    while True:
        try:
            alerts = await am_alerts(url)
        except httpx.HTTPError:
            alerts = {}
        if predicate(alerts):
            return alerts
        if time.monotonic() > deadline:
            raise AssertionError(
                f"Alertmanager at {url} never got there; it holds {sorted(alerts)}"
            )
        await asyncio.sleep(0.1)


def has(names: Sequence[str]) -> Callable[[dict[str, dict[str, Any]]], bool]:
    return lambda alerts: set(names) <= set(alerts)


NAMES = [str(n) for n in range(20)]


async def test_alertmanager_down_when_alerts_arrive(tmp_path: Path) -> None:
    port = procs.free_port()
    url = f"http://127.0.0.1:{port}"
    async with running_bridge(tmp_path / "data", [url]) as bridge:
        await bridge.send([postable(n) for n in NAMES])
        await eventually(lambda: bridge.failures(url, "connect") >= 2)  # tried, backs off
        assert (await sizes(bridge.store)).behind == len(NAMES)

        with start_alertmanager(tmp_path / "am", port):
            await wait_for(url, has(NAMES))
            assert (await sizes(bridge.store)).behind == 0


async def test_drain_does_not_wait_out_a_backoff(tmp_path: Path) -> None:
    port = procs.free_port()
    url = f"http://127.0.0.1:{port}"
    async with running_bridge(
        tmp_path / "data", [url], backoff_initial=60, backoff_max=60
    ) as bridge:
        await bridge.send([postable(n) for n in NAMES])
        await eventually(lambda: bridge.failures(url, "connect") >= 1)  # now backing off 30-60 s
        with start_alertmanager(tmp_path / "am", port):
            started = time.monotonic()
            assert await bridge.delivery.drain(10)  # SIGTERM: one last try, at once
            assert time.monotonic() - started < 5
            assert set(await am_alerts(url)) == set(NAMES)


async def test_one_of_two_alertmanagers_down(tmp_path: Path) -> None:
    down_port = procs.free_port()
    down_url = f"http://127.0.0.1:{down_port}"
    with start_alertmanager(tmp_path / "am-up", procs.free_port()) as up_url:
        async with running_bridge(tmp_path / "data", [up_url, down_url]) as bridge:
            started = time.monotonic()
            await bridge.send([postable(n) for n in NAMES])
            await wait_for(up_url, has(NAMES), within=5)
            assert time.monotonic() - started < 3  # not held up by the one that is down
            assert bridge.failures(down_url, "connect") >= 1
            assert (await sizes(bridge.store)).behind == len(NAMES)  # kept for the other one

            with start_alertmanager(tmp_path / "am-down", down_port):
                await wait_for(down_url, has(NAMES))
                assert await bridge.delivery.drain(5)
            # The healthy one got them once, in one request (the next re-send is a minute away).
            requests = bridge.metrics.registry.get_sample_value(
                "sentry_bridge_alertmanager_requests_total", {"alertmanager": target_name(up_url)}
            )
            assert requests == 1


async def test_alertmanager_answering_500_for_a_while(tmp_path: Path) -> None:
    with start_alertmanager(tmp_path / "am", procs.free_port()) as am_url:
        proxy = FaultProxy(am_url)
        with proxy.running():
            proxy.fail(500)
            async with running_bridge(tmp_path / "data", [proxy.url]) as bridge:
                await bridge.send([postable(n) for n in NAMES])
                await eventually(lambda: proxy.failed >= 3)
                assert await am_alerts(am_url) == {}
                proxy.heal()
                await wait_for(am_url, has(NAMES))
                assert bridge.failures(proxy.url, "status_5xx") >= 3


@pytest.mark.parametrize(
    ("bad", "status"),
    [
        # Alertmanager validates generatorURL as a URI and refuses the whole batch (422).
        pytest.param(postable("bad", generator_url="not a uri"), 422, id="bad-uri-422"),
        # endsAt before startsAt: 400, but Alertmanager 0.25 keeps the valid alerts of the
        # batch. The bridge refuses to send such an alert; the check is switched off here
        # to see what happens when Alertmanager is stricter than the bridge.
        pytest.param(
            postable("bad").model_copy(update={"ends_at": datetime.now(UTC) - timedelta(hours=1)}),
            400,
            id="ends-before-start-400",
        ),
    ],
)
async def test_a_malformed_alert_is_dead_lettered_and_the_rest_delivered(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, bad: PostableAlert, status: int
) -> None:
    monkeypatch.setattr("bridge.delivery.check_wire", lambda body: None)
    alerts = [postable(n) for n in NAMES]
    alerts.insert(7, bad)
    with start_alertmanager(tmp_path / "am", procs.free_port()) as url:
        async with running_bridge(tmp_path / "data", [url]) as bridge:
            await bridge.send(alerts, active=False)
            held = await wait_for(url, has(NAMES))
            assert await bridge.delivery.drain(5)
            [(target, reason, alert)] = await dead_letters(bridge.store)
    assert "bad" not in held
    assert (target, alert) == (target_name(url), bad.wire())
    assert reason.startswith(f"HTTP {status}")
    assert bridge.failures(url, "status_4xx") >= 2  # the batch, then the bad one alone


async def test_a_restarted_alertmanager_gets_the_active_alerts_back(tmp_path: Path) -> None:
    port = procs.free_port()
    url = f"http://127.0.0.1:{port}"
    alerts = [postable(n) for n in NAMES[:5]]
    async with running_bridge(tmp_path / "data", [url], resend_interval=1) as bridge:
        with start_alertmanager(tmp_path / "am", port):
            await bridge.send(alerts)
            before = await wait_for(url, has(NAMES[:5]))
            assert await bridge.delivery.drain(5)  # nothing queued: only a re-send can help
        # Stopped: Alertmanager keeps alerts in memory only, so it forgot them all.
        with start_alertmanager(tmp_path / "am", port):
            started = time.monotonic()
            after = await wait_for(url, has(NAMES[:5]), within=5)
            assert time.monotonic() - started < 2.5  # within a resend_interval or two
    for name in NAMES[:5]:
        assert after[name]["startsAt"] == before[name]["startsAt"]  # the original times
        assert after[name]["endsAt"] == before[name]["endsAt"]

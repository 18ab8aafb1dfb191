"""bridge/outages.py: one warning per outage, one line when it ends, the up gauge; with a
fake clock. Against a real Alertmanager: tests/integration/test_operator.py."""

from __future__ import annotations

import logging

import httpx
import pytest
from prometheus_client import CollectorRegistry

from bridge.metrics import Metrics
from bridge.outages import Outages, probe


class Clock:
    def __init__(self) -> None:
        self.now = 100.0

    def __call__(self) -> float:
        return self.now


def up(metrics: Metrics, name: str) -> float | None:
    return metrics.registry.get_sample_value(
        "sentry_bridge_alertmanager_up", {"alertmanager": name}
    )


def test_an_outage_is_said_once_and_its_end_once(caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.DEBUG, "bridge.delivery")
    metrics, clock = Metrics(CollectorRegistry()), Clock()
    outages = Outages(metrics, ["am1", "am2"], clock)
    assert up(metrics, "am1") == 1
    for _ in range(5):
        outages.failed("am1", "connect")
        clock.now += 2
    outages.answered("am2")  # another Alertmanager, never down: says nothing
    assert up(metrics, "am1") == 0
    assert up(metrics, "am2") == 1
    outages.answered("am1")
    outages.answered("am1")
    at_info = [r for r in caplog.records if r.levelno >= logging.INFO]
    assert [(r.levelname, r.getMessage()) for r in at_info] == [
        ("WARNING", "alertmanager failing; retrying until it answers (said once per outage)"),
        ("INFO", "alertmanager recovered"),
    ]
    recovered = at_info[1].__dict__
    assert recovered["failed_attempts"] == 5
    assert recovered["down_seconds"] == 10
    assert up(metrics, "am1") == 1


@pytest.mark.anyio
async def test_probe_warns_about_each_that_does_not_answer(
    caplog: pytest.LogCaptureFixture,
) -> None:
    def answer(request: httpx.Request) -> httpx.Response:
        if request.url.host == "down":
            raise httpx.ConnectError("refused")
        return httpx.Response(200 if request.url.host == "ok" else 503)

    metrics = Metrics(CollectorRegistry())
    outages = Outages(metrics, ["ok", "down", "starting"])
    async with httpx.AsyncClient(transport=httpx.MockTransport(answer)) as client:
        targets = [("ok", "http://ok"), ("down", "http://down"), ("starting", "http://starting")]
        await probe(client, targets, outages)
    assert (up(metrics, "ok"), up(metrics, "down"), up(metrics, "starting")) == (1, 0, 0)
    warned = sorted(r.__dict__["alertmanager"] for r in caplog.records if r.levelname == "WARNING")
    assert warned == ["down", "starting"]
    # The outage began at the probe: the first failed delivery is not a second warning.
    caplog.clear()
    outages.failed("down", "connect")
    assert [r for r in caplog.records if r.levelno >= logging.WARNING] == []

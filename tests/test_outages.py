"""bridge/outages.py: one warning per outage, one line when it ends, the up gauge; with a
fake clock. Against a real Alertmanager: tests/integration/test_operator.py."""

from __future__ import annotations

import logging

import httpx
import pytest
from hypothesis import settings
from hypothesis import strategies as st
from hypothesis.stateful import RuleBasedStateMachine, invariant, rule
from prometheus_client import CollectorRegistry

from bridge.metrics import Metrics
from bridge.outages import Outages, probe
from tests.clock import Ticks


def up(metrics: Metrics, name: str) -> float | None:
    return metrics.registry.get_sample_value(
        "sentry_bridge_alertmanager_up", {"alertmanager": name}
    )


def test_an_outage_is_said_once_and_its_end_once(caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.DEBUG, "bridge.delivery")
    metrics, clock = Metrics(CollectorRegistry()), Ticks()
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


# --- model-based: any sequence of answers and failures, against the rule --------
# "delivered to each Alertmanager or failing (once per outage, not per retry), recovered":
# the reference model below is that sentence, per Alertmanager: a warning when one that
# was up fails, an info line when one that was down answers, nothing else at INFO and
# above; up is 1 exactly when the last event for it was an answer.


class Collect(logging.Handler):
    def __init__(self, into: list[logging.LogRecord]) -> None:
        super().__init__()
        self.into = into

    def emit(self, record: logging.LogRecord) -> None:
        self.into.append(record)


class OutagesModel(RuleBasedStateMachine):
    names = ("am-0", "am-1")

    def __init__(self) -> None:
        super().__init__()
        self.metrics = Metrics(CollectorRegistry())
        self.clock = Ticks()
        self.lines: list[logging.LogRecord] = []
        handler = Collect(self.lines)
        self.logger = logging.getLogger("bridge.delivery")
        self.logger.addHandler(handler)
        self.handler = handler
        self.old_level = self.logger.level
        self.logger.setLevel(logging.INFO)
        self.outages = Outages(self.metrics, self.names, self.clock)
        # The model: which are down, since when, how many failed attempts.
        self.down: dict[str, tuple[float, int]] = {}
        self.expected: list[tuple[str, str, dict[str, object]]] = []

    @rule(name=st.sampled_from(names), reason=st.sampled_from(["connect", "status_5xx"]))
    def fail(self, name: str, reason: str) -> None:
        self.outages.failed(name, reason)
        if name in self.down:
            since, attempts = self.down[name]
            self.down[name] = (since, attempts + 1)
        else:
            self.down[name] = (self.clock.now, 1)
            self.expected.append(("WARNING", name, {"reason": reason}))

    @rule(name=st.sampled_from(names))
    def answer(self, name: str) -> None:
        self.outages.answered(name)
        if name in self.down:
            since, attempts = self.down.pop(name)
            down_for = round(self.clock.now - since, 3)
            fields: dict[str, object] = {"failed_attempts": attempts, "down_seconds": down_for}
            self.expected.append(("INFO", name, fields))

    @rule(seconds=st.floats(min_value=0.001, max_value=600))
    def wait(self, seconds: float) -> None:
        self.clock.now += seconds

    @invariant()
    def lines_and_gauge_follow_the_model(self) -> None:
        got = [(r.levelname, r.__dict__["alertmanager"], r.__dict__) for r in self.lines]
        assert len(got) == len(self.expected)
        for (level, name, fields), (want_level, want_name, want) in zip(
            got, self.expected, strict=True
        ):
            assert (level, name) == (want_level, want_name)
            assert {k: fields[k] for k in want} == want
        for name in self.names:
            assert up(self.metrics, name) == (0 if name in self.down else 1)

    def teardown(self) -> None:
        self.logger.removeHandler(self.handler)
        self.logger.setLevel(self.old_level)


TestOutagesModel = OutagesModel.TestCase
TestOutagesModel.settings = settings(stateful_step_count=30)

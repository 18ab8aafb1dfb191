"""The worker protocol's control messages, against a real worker process driven through
WorkerIntake: reload, status, requeue, and hurry cutting the drain short."""

from __future__ import annotations

import time
from collections.abc import AsyncIterator
from pathlib import Path

import anyio
import pytest

from bridge import config, sentry
from bridge.model import SentryAlert
from bridge.worker import WorkerIntake
from tests.integration.procs import free_port
from tests.sentry_payloads import BASE, FIXTURES, hook

pytestmark = pytest.mark.anyio


def make_config(data_dir: Path, rules: list[dict[str, object]] | None = None) -> config.Config:
    return config.parse(
        {
            "sentry": {"allow_unauthenticated": True},
            # Nobody listens there: what is accepted stays queued.
            "alertmanager": {"urls": f"http://127.0.0.1:{free_port()}"},
            "outbox": {"data_dir": str(data_dir)},
            "classification": {"rules": rules or []},
            "shutdown": {"grace_period": "30s"},
        },
        env={},
    )


def metric_alert() -> SentryAlert:
    body = (FIXTURES / "metric_alert_critical.json").read_bytes()
    _, result = sentry.read(hook("metric_alert"), body, base_url=BASE)
    assert isinstance(result, SentryAlert)
    return result


@pytest.fixture
async def intake(tmp_path: Path) -> AsyncIterator[WorkerIntake]:
    worker = WorkerIntake(make_config(tmp_path))
    await worker.start()
    yield worker
    await worker.stop(0.0)


async def active_severity(intake: WorkerIntake) -> str:
    deadline = time.monotonic() + 10
    while True:
        status = await intake.status(10)
        if status["active"]:
            severity: str = status["active"][0]["labels"]["severity"]
            return severity
        assert time.monotonic() < deadline
        await anyio.sleep(0.02)


async def test_reload_reaches_the_pipeline(intake: WorkerIntake, tmp_path: Path) -> None:
    await intake.accept(metric_alert())
    assert await active_severity(intake) == "medium"  # default_severity
    rule: dict[str, object] = {
        "name": "low-now",
        "match": {"kind": "metric_alert"},
        "severity": "low",
    }
    await intake.reload(make_config(tmp_path, [rule]))
    assert intake.config.classification.rules[0].name == "low-now"
    await intake.accept(metric_alert())
    deadline = time.monotonic() + 10
    while await active_severity(intake) != "low":
        assert time.monotonic() < deadline
        await anyio.sleep(0.02)


async def test_status_and_an_empty_requeue(intake: WorkerIntake) -> None:
    status = await intake.status(5)
    assert status["active_count"] == 0
    assert status["dead_letter_count"] == 0
    assert list(status["queue_depth"].values()) == [0]
    assert await intake.requeue_dead_letters() == {"requeued": 0, "superseded": 0}


async def test_hurry_cuts_the_drain_short(tmp_path: Path) -> None:
    worker = WorkerIntake(make_config(tmp_path))
    await worker.start()
    await worker.accept(metric_alert())  # queued for an Alertmanager that is not there
    worker.hurry()
    started = time.monotonic()
    await worker.stop(30.0)  # would wait the whole 30 s for the Alertmanager
    assert time.monotonic() - started < 10
    # Kept for the next start.
    again = WorkerIntake(make_config(tmp_path))
    await again.start()
    assert sum((await again.status(1))["queue_depth"].values()) >= 1
    await again.stop(0.0)

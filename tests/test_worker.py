"""bridge/worker.py: the backend in a real child process, driven through WorkerIntake.

Alertmanager is never reachable here (a closed loopback port), so accepted alerts stay
queued in the outbox file, where the tests read them after the worker has exited.
"""

from __future__ import annotations

import asyncio
import json
import os
import signal
import sqlite3
from collections.abc import AsyncIterator, Callable
from pathlib import Path

import pytest

from bridge import config, sentry
from bridge.errors import BadPayload, OutboxFull, WorkerFailed
from bridge.model import SentryAlert
from bridge.store.sqlite import FILENAME
from bridge.worker import WorkerDied, WorkerIntake, _frame, _read
from tests.integration.procs import free_port
from tests.sentry_payloads import BASE, FIXTURES, LEGACY, SERVICE_HOOK, hook

pytestmark = pytest.mark.anyio


def make_config(data_dir: Path, **outbox: object) -> config.Config:
    return config.parse(
        {
            "sentry": {"allow_unauthenticated": True},
            "alertmanager": {"urls": f"http://127.0.0.1:{free_port()}"},
            "outbox": {"data_dir": str(data_dir), **outbox},
            "shutdown": {"grace_period": "1s"},
        },
        env={},
    )


def alert(n: int) -> SentryAlert:
    body = (FIXTURES / "event_alert.json").read_text(encoding="utf-8")
    body = body.replace('"issue_id": "', f'"issue_id": "{n}')
    _, result = sentry.read(hook("event_alert"), body.encode(), base_url=BASE)
    assert isinstance(result, SentryAlert)
    return result


def queued(data_dir: Path) -> list[str]:
    """The Sentry issue ids of the alerts queued in the outbox file, in order."""
    with sqlite3.connect(data_dir / FILENAME) as db:
        rows = db.execute("SELECT alert FROM queue ORDER BY id").fetchall()
    return [str(json.loads(text)["labels"]["sentry_issue_id"]) for (text,) in rows]


def stored(data_dir: Path) -> list[str]:
    """The issue ids in the outbox file, accepted (inbox) or processed (queue)."""
    with sqlite3.connect(data_dir / FILENAME) as db:
        rows = db.execute("SELECT alert FROM inbox ORDER BY id").fetchall()
    return [str(json.loads(text)["issue_id"]) for (text,) in rows] + queued(data_dir)


@pytest.fixture
async def intake(tmp_path: Path) -> AsyncIterator[WorkerIntake]:
    worker = WorkerIntake(make_config(tmp_path))
    await worker.start()
    yield worker
    await worker.stop(1.0)


# --- frames ------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "message",
    [
        ("accept", 7, ("a", None, 1.5, True, (("k", "v"),))),
        ("done", [(1, True), (2, False), (3, "the outbox is full; retry later")]),
        ("quarantine", 4, "invalid_payload", "no data", {"request-id": "r"}, b"{}", b"\0" * 32),
        ("ping", 5),
        ("pong", 5, True),
        ("metrics", 3, b"# HELP x\n"),
        ("ready",),
    ],
)
async def test_plain_values_travel_as_marshal(message: tuple[object, ...]) -> None:
    frame = _frame(message)
    assert frame[4:5] == b"m"
    reader = asyncio.StreamReader()
    reader.feed_data(frame + frame)
    reader.feed_eof()
    assert await _read(reader) == message
    assert await _read(reader) == message
    assert await _read(reader) is None  # end-of-file


async def test_anything_else_travels_as_pickle(tmp_path: Path) -> None:
    cfg = make_config(tmp_path)
    frame = _frame(cfg)
    assert frame[4:5] == b"p"
    reader = asyncio.StreamReader()
    reader.feed_data(frame[:3])  # a frame cut short by a dying peer is end-of-file too
    reader.feed_eof()
    assert await _read(reader) is None
    reader = asyncio.StreamReader()
    reader.feed_data(frame)
    reader.feed_eof()
    assert await _read(reader) == cfg


RESOURCES = ("event_alert", "metric_alert", "issue", "error", "activity_alert")


@pytest.mark.parametrize("path", sorted(FIXTURES.glob("*.json")), ids=lambda p: p.name)
def test_every_fixture_alert_survives_the_tuple_round_trip(path: Path) -> None:
    for headers in (hook(path.stem.split("_")[0]), SERVICE_HOOK, LEGACY, *map(hook, RESOURCES)):
        try:
            _, result = sentry.read(headers, path.read_bytes(), base_url=BASE, request_id="r")
        except BadPayload:
            continue
        if isinstance(result, SentryAlert):
            assert SentryAlert.from_tuple(result.to_tuple()) == result


# --- the worker process ------------------------------------------------------------------


async def test_accepted_alerts_are_durable_and_processed(
    intake: WorkerIntake, tmp_path: Path
) -> None:
    await asyncio.gather(*(intake.accept(alert(n)) for n in range(20)))
    intake.ignored()
    text = (await intake.exposition()).decode()
    # The worker's own families, and none of the edge's (the edge exports those).
    assert 'sentry_bridge_alerts_total{outcome="ignored"} 1.0' in text
    assert "sentry_bridge_outbox_alerts" in text
    assert "sentry_bridge_webhooks_received_total" not in text
    await intake.stop(0.5)
    assert intake.crashed is False
    assert sorted(stored(tmp_path)) == sorted(str(alert(n).issue_id) for n in range(20))


async def test_a_full_outbox_answers_503(tmp_path: Path) -> None:
    worker = WorkerIntake(make_config(tmp_path, max_queued=3))
    await worker.start()
    try:
        results = await asyncio.gather(
            *(worker.accept(alert(n)) for n in range(10)), return_exceptions=True
        )
    finally:
        await worker.stop(0.5)
    refused = [r for r in results if isinstance(r, OutboxFull)]
    assert 0 < len(refused) < 10
    assert len(stored(tmp_path)) == 10 - len(refused)


async def test_a_dying_worker_fails_fast_and_asks_for_a_restart(tmp_path: Path) -> None:
    asked: list[str] = []
    worker = WorkerIntake(make_config(tmp_path), on_failure=lambda: asked.append("restart"))
    await worker.start()
    await worker.accept(alert(1))
    assert worker._proc is not None
    os.kill(worker._proc.pid, signal.SIGKILL)
    await asyncio.wait_for(worker._proc.wait(), 10)
    for _ in range(100):
        if not worker.healthy():
            break
        await asyncio.sleep(0.05)
    assert not worker.healthy()
    assert worker.crashed
    assert asked == ["restart"]
    with pytest.raises(WorkerDied) as refused:
        await worker.accept(alert(2))
    assert refused.value.status_code == 503
    assert await worker.exposition() == b""
    await worker.stop(0.5)
    assert stored(tmp_path) == [alert(1).issue_id]


async def test_the_worker_exits_when_the_edge_goes_away(tmp_path: Path) -> None:
    worker = WorkerIntake(make_config(tmp_path))
    await worker.start()
    await worker.accept(alert(1))
    assert worker._proc is not None
    assert worker._writer is not None
    worker._writer.transport.abort()  # what the kernel does when the edge is SIGKILLed
    assert await asyncio.wait_for(worker._proc.wait(), 10) == 0
    # It closed the outbox: another bridge can open it.
    successor = WorkerIntake(make_config(tmp_path))
    await successor.start()
    await successor.stop(0.5)
    assert stored(tmp_path) == [alert(1).issue_id]


async def test_a_worker_that_cannot_start_says_why(tmp_path: Path) -> None:
    not_a_dir = tmp_path / "file"
    not_a_dir.write_text("")
    worker = WorkerIntake(make_config(not_a_dir / "data"))
    with pytest.raises(WorkerFailed, match=r"Not a directory|File exists"):
        await worker.start()
    assert not worker.healthy()
    await worker.stop(0.5)


def cfg_with(data_dir: Path, worker_timeout: str) -> config.Config:
    return config.parse(
        {
            "sentry": {"allow_unauthenticated": True},
            "server": {"worker_timeout": worker_timeout},
            "alertmanager": {"urls": f"http://127.0.0.1:{free_port()}"},
            "outbox": {"data_dir": str(data_dir)},
            "shutdown": {"grace_period": "1s"},
        },
        env={},
    )


async def until(condition: Callable[[], bool], timeout: float) -> float:
    """Seconds until ``condition`` held; fails after ``timeout``."""
    loop = asyncio.get_running_loop()
    start = loop.time()
    while not condition():
        assert loop.time() - start < timeout, "condition never held"
        await asyncio.sleep(0.02)
    return loop.time() - start


async def test_a_worker_dying_with_unread_frames_resets_the_socket_and_is_noticed(
    tmp_path: Path,
) -> None:
    """Killed with frames in its receive buffer, the worker's socket is reset: the edge's
    read raises ConnectionResetError, not end-of-file, and must still notice at once."""
    asked: list[str] = []
    worker = WorkerIntake(cfg_with(tmp_path, "60s"), on_failure=lambda: asked.append("restart"))
    await worker.start()
    assert worker._proc is not None
    await worker.accept(alert(1))
    os.kill(worker._proc.pid, signal.SIGSTOP)
    for _ in range(1000):
        worker.ignored()  # frames the stopped worker never reads
    await asyncio.sleep(0)  # sent at the end of this loop iteration
    await asyncio.sleep(0.1)
    waiting = asyncio.ensure_future(worker.accept(alert(2)))
    os.kill(worker._proc.pid, signal.SIGKILL)
    await until(lambda: not worker.healthy(), 5.0)  # far below worker_timeout
    assert worker.crashed
    assert asked == ["restart"]
    with pytest.raises(WorkerDied):
        await waiting
    await worker.stop(0.5)


async def test_a_stuck_worker_is_killed_and_in_flight_webhooks_get_503(tmp_path: Path) -> None:
    asked: list[str] = []
    worker = WorkerIntake(cfg_with(tmp_path, "1s"), on_failure=lambda: asked.append("restart"))
    await worker.start()
    assert worker._proc is not None
    await worker.accept(alert(1))
    os.kill(worker._proc.pid, signal.SIGSTOP)  # alive, holding the outbox, answering nothing
    waiting = asyncio.ensure_future(worker.accept(alert(2)))
    took = await until(lambda: not worker.healthy(), 10.0)
    assert 0.5 < took < 5.0
    with pytest.raises(WorkerDied) as refused:
        await waiting
    assert refused.value.status_code == 503
    assert worker.crashed
    assert asked == ["restart"]
    # Killed, so it lets go of the outbox file for the restarted bridge.
    assert await asyncio.wait_for(worker._proc.wait(), 10) == -signal.SIGKILL
    await worker.stop(0.5)
    assert stored(tmp_path) == [alert(1).issue_id]


async def test_a_healthy_worker_answers_pings_and_reports_the_store(tmp_path: Path) -> None:
    worker = WorkerIntake(cfg_with(tmp_path, "1s"))
    await worker.start()
    try:
        before = worker._heard
        await until(lambda: worker._heard > before + 1.0, 5.0)  # pongs keep coming
        assert worker.healthy()
        assert worker.store_ok()
    finally:
        await worker.stop(0.5)
    assert not worker.crashed

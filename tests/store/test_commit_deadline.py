"""The edge's store deadline (``commit_deadline``, bridge/store/group_commit.py): it ends
the wait for a commit to start, never a commit that went through (issue 15: a webhook
committed as ``server.store_timeout`` passed was answered 503)."""

from __future__ import annotations

import asyncio
import sqlite3
import threading
from collections.abc import Sequence
from pathlib import Path
from typing import cast

import httpx
import pytest
from prometheus_client import CollectorRegistry

from bridge import config
from bridge.app import create_app
from bridge.compose import build
from bridge.metrics import Metrics
from bridge.store.contract import Store
from bridge.store.engine import Shield
from bridge.store.group_commit import GroupCommit, commit_deadline
from bridge.store.spool import FILENAME, Spooled
from bridge.store.sqlite import SqliteStore
from tests.factories import issue
from tests.store.fakes import FakePrimary
from tests.test_app import SECRET, Recorder, load, sign

pytestmark = pytest.mark.anyio


class Writes:
    """A write that waits for the test to let it finish, recording what it wrote."""

    def __init__(self) -> None:
        self.started = asyncio.Event()
        self.release = asyncio.Event()
        self.written: list[int] = []

    async def __call__(self, items: Sequence[int]) -> list[bool]:
        self.started.set()
        await self.release.wait()
        self.written.extend(items)
        return [True] * len(items)


async def test_a_deadline_passing_mid_commit_answers_what_the_commit_did() -> None:
    writes = Writes()
    commits = GroupCommit(writes, name="test")

    async def release_later() -> None:
        await writes.started.wait()
        await asyncio.sleep(0.1)  # the commit outlasts the caller's 0.02 s deadline
        writes.release.set()

    releasing = asyncio.create_task(release_later())
    async with commit_deadline(0.02):
        assert await commits.submit(1) is True  # committed: not a TimeoutError
    await releasing
    assert writes.written == [1]


async def test_a_deadline_passing_before_the_commit_starts_withdraws_the_item() -> None:
    writes = Writes()
    commits = GroupCommit(writes, name="test")
    first = asyncio.create_task(commits.submit(1))  # its batch holds the writer
    await writes.started.wait()
    with pytest.raises(TimeoutError):
        async with commit_deadline(0.02):
            await commits.submit(2)  # queued behind it until the deadline
    writes.release.set()
    assert await first is True
    await commits.idle()
    assert writes.written == [1]  # 2 was never written: its 503 was true


async def test_any_other_cancel_leaves_a_started_item_to_its_batch() -> None:
    """A stop (or the spool's own deadline on its primary) cancels as before: the caller
    goes; the item is committed with its batch."""
    writes = Writes()
    commits = GroupCommit(writes, name="test")
    caller = asyncio.create_task(commits.submit(1))
    await writes.started.wait()
    caller.cancel()
    with pytest.raises(asyncio.CancelledError):
        await caller
    writes.release.set()
    await commits.idle()
    assert writes.written == [1]


async def test_a_shielded_write_past_the_deadline_answers_its_outcome() -> None:
    release = asyncio.Event()

    async def write() -> str:
        await release.wait()
        return "kept"

    shield = Shield()
    asyncio.get_running_loop().call_later(0.1, release.set)
    async with commit_deadline(0.02):
        assert await shield(write()) == "kept"


class SlowCommit:
    """SQLite authorizer: each COMMIT waits ``seconds`` on the file's thread (a slow disk)."""

    def __init__(self, seconds: float) -> None:
        self.seconds = seconds

    def __call__(self, action: int, arg1: str | None, *_: object) -> int:
        if action == sqlite3.SQLITE_TRANSACTION and arg1 == "COMMIT":
            threading.Event().wait(self.seconds)  # the injected fault's length
        return sqlite3.SQLITE_OK


async def test_a_webhook_committed_after_store_timeout_is_answered_202(tmp_path: Path) -> None:
    """A commit taking 0.3 s against ``store_timeout`` 0.1 s: the webhook is on disk, so
    the answer is 202 (it was 503, and Sentry's retry then got a 200 duplicate)."""
    cfg = config.parse(
        {
            "server": {"store_timeout": "100ms"},
            "sentry": {"client_secrets": SECRET},
            "store": {"data_dir": str(tmp_path)},
        },
        env={},
    )
    registry = CollectorRegistry()
    bridge = build(cfg, registry=registry, alertmanager_transport=httpx.MockTransport(Recorder()))
    app = create_app(bridge)
    body = load("event_alert.json")
    headers = {"Sentry-Hook-Resource": "event_alert", "Sentry-Hook-Signature": sign(body)}
    transport = httpx.ASGITransport(app=app)
    async with (
        app.router.lifespan_context(app),
        httpx.AsyncClient(transport=transport, base_url="http://bridge") as client,
    ):
        box = bridge.store
        assert isinstance(box, SqliteStore)
        await box._file.call(lambda: box._file.db.set_authorizer(SlowCommit(0.3)))
        response = await client.post("/webhooks/sentry", content=body, headers=headers)
        assert response.status_code == 202, response.text
        retry = await client.post("/webhooks/sentry", content=body, headers=headers)
        assert retry.status_code == 200  # Sentry's retry of it: the duplicate it is
        await box._file.call(lambda: box._file.db.set_authorizer(None))
    assert registry.get_sample_value("sentry_bridge_webhooks_rejected_total") is None


async def test_a_webhook_taken_back_from_the_spool_is_not_counted(tmp_path: Path) -> None:
    """The spool counts a webhook against its bounds from its submit: one taken back
    (the edge's deadline passed before its commit started) leaves the count too, or the
    spool would hold new webhooks behind a phantom forever."""
    primary = FakePrimary()
    spool = Spooled(
        cast(Store, primary),
        tmp_path / FILENAME,
        metrics=Metrics(CollectorRegistry()),
        drainer=False,
    )
    await spool.open()
    primary.mode = "down"  # webhooks go to the spool
    try:
        await spool._file.call(lambda: spool._file.db.set_authorizer(SlowCommit(0.3)))
        first = asyncio.create_task(spool.accept(issue(1), b"1" * 32))
        while not spool._writes.busy:  # its commit is under way (0.3 s)
            await asyncio.sleep(0)
        await asyncio.sleep(0)  # the flusher has taken it
        with pytest.raises(TimeoutError):
            async with commit_deadline(0.05):
                await spool.accept(issue(2), b"2" * 32)  # queued behind it: taken back
        assert await first
        await spool._file.call(lambda: spool._file.db.set_authorizer(None))
        assert spool.depth() == 1
        primary.mode = "up"
        assert await spool.drain_once() == 1
        assert not spool.spooling()
        assert primary.records == [("accept", "1")]
    finally:
        await spool.close()

"""Which SQLite commits are fsynced (bridge/store/sqlite_file.py, issue 15): every one a
202 or an operator's answer rests on, and none that only writes what the inbox and the
states give again, so accepts do not queue behind an fsync per batch and Alertmanager."""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path

import pytest
from prometheus_client import CollectorRegistry

from bridge.metrics import Metrics
from bridge.store.contract import Processed
from bridge.store.sqlite import SqliteStore
from tests.clock import Clock
from tests.factories import issue, postable
from tests.store import probes

pytestmark = pytest.mark.anyio

FULL, NORMAL = 2, 1
TARGETS = ("am-a:9093", "am-b:9093")


@pytest.fixture
async def store(tmp_path: Path) -> AsyncIterator[SqliteStore]:
    box = SqliteStore(
        tmp_path, TARGETS, max_queued=100, metrics=Metrics(CollectorRegistry()), clock=Clock()
    )
    await box.open()
    yield box
    await box.close()


async def test_a_202_is_fsynced_and_what_follows_from_it_rides_on_the_next(
    store: SqliteStore,
) -> None:
    levels = probes.SyncLevels(store)
    assert await store.accept(issue(1), b"1" * 32)
    taken = await store.take(10)
    [entry] = taken.entries
    await store.complete(taken, [Processed(entry.inbox_id, [postable(1)])])
    for target in TARGETS:
        async with store.lane(target) as lane:
            assert lane is not None
            [item] = await lane.pending(10)
            await lane.advance(item.id)
    await store.expire(resolved_for=60.0)
    assert await store.accept(issue(2), b"2" * 32)
    assert await store.quarantine("parse_error", "x", {}, b"{}", b"3" * 32)
    assert await store.requeue_dead_letters() is not None
    # accept; complete, two lanes' advances, expiry; accept, quarantine, requeue.
    assert levels.seen == [FULL, NORMAL, NORMAL, NORMAL, NORMAL, FULL, FULL, FULL]

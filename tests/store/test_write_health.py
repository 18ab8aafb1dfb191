"""A store that cannot write (a full disk) logs one line per outage, and one when it
ends, not a traceback per failed commit (bridge/store/health.py, issue 15); the metric
still counts every failure. Faults as on a full disk: COMMIT refused at SQLite itself."""

from __future__ import annotations

import asyncio
import hashlib
import logging
from pathlib import Path
from typing import cast

import pytest
from prometheus_client import CollectorRegistry

from bridge.errors import StoreFull
from bridge.metrics import Metrics
from bridge.store.contract import Store
from bridge.store.spool import FILENAME, Spooled
from bridge.store.sqlite import SqliteStore
from tests.factories import issue
from tests.store import probes
from tests.store.fakes import FakePrimary

pytestmark = pytest.mark.anyio


def digest(n: int) -> bytes:
    return hashlib.sha256(b"%d" % n).digest()


def store_lines(caplog: pytest.LogCaptureFixture) -> list[tuple[int, str]]:
    return [
        (record.levelno, record.getMessage())
        for record in caplog.records
        if record.name == "bridge.store"
    ]


def tracebacks(caplog: pytest.LogCaptureFixture) -> list[str]:
    return [record.getMessage() for record in caplog.records if record.exc_info]


async def test_a_full_store_logs_once_per_outage(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    registry = CollectorRegistry()
    box = SqliteStore(tmp_path, ["am"], max_queued=10_000, metrics=Metrics(registry))
    await box.open()
    commits = probes.FailingCommits()
    caplog.set_level(logging.INFO, logger="bridge")
    try:
        for outage in range(2):
            commits.failing = 1000
            await probes.fail_commits(
                box, commits
            )  # again: a COMMIT that worked is prepared already
            for n in range(10):  # one by one, then a burst sharing group commits
                with pytest.raises(StoreFull):
                    await box.accept(issue(n), digest(100 * outage + n))
            burst = await asyncio.gather(
                *(box.accept(issue(n), digest(100 * outage + n)) for n in range(10, 60)),
                return_exceptions=True,
            )
            assert all(isinstance(answer, StoreFull) for answer in burst)
            commits.failing = 0
            assert await box.accept(issue(99), digest(100 * outage + 99))
    finally:
        await box.close()
    failed = registry.get_sample_value("sentry_bridge_store_errors_total") or 0
    assert failed >= 2 * 11  # each failed commit counted (the burst's shared a few)
    once = "cannot write the store; said once until a write succeeds (each failed write counts"
    back = (logging.WARNING, "the store can be written again")
    lines = store_lines(caplog)
    assert [(level, text[: len(once)]) for level, text in lines[::2]] == [(logging.ERROR, once)] * 2
    assert lines[1::2] == [back, back]
    assert tracebacks(caplog) == []
    first = next(r for r in caplog.records if r.name == "bridge.store")
    assert "not authorized" in first.__dict__["error"]  # the error, on one line


async def test_a_full_spool_logs_once_per_outage(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    primary = FakePrimary()
    primary.mode = "down"
    metrics = Metrics(CollectorRegistry())
    spool = Spooled(cast(Store, primary), tmp_path / FILENAME, metrics=metrics, drainer=False)
    await spool.open()
    commits = probes.FailingCommits()
    await spool._file.call(lambda: spool._file.db.set_authorizer(commits))
    caplog.set_level(logging.INFO, logger="bridge")
    try:
        commits.failing = 1000
        for n in range(20):
            with pytest.raises(StoreFull):
                await spool.accept(issue(n), digest(n))
        commits.failing = 0
        assert await spool.accept(issue(20), digest(20))
    finally:
        await spool.close()
    lines = store_lines(caplog)
    assert len(lines) == 2
    assert lines[0][0] == logging.ERROR
    assert lines[0][1].startswith("cannot write the spool;")
    assert lines[1] == (logging.WARNING, "the spool can be written again")
    assert tracebacks(caplog) == []

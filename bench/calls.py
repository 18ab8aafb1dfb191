"""``bench/run calls``: what one webhook costs in calls, thread hops and log lines.

The bridge runs in this process on the shipped config with the SQLite store, behind
httpx's ASGI transport, with an Alertmanager stand-in that answers 200 at once; no socket,
no other process, so the counts are the bridge's own and do not drift with the machine.
Distinct signed issue and metric alerts (``bench.payloads``) go in:

* **one at a time**: each webhook waits until Alertmanager has it before the next is
  sent, so it has its own group commit, batch and post: the per-webhook path, unbatched;
* **50 at a time**: 50 concurrent webhooks, then a wait until Alertmanager has them all
  (how the group commit and the batches spread the fixed costs).

Counted per webhook over the measured ones (after a warm-up):

* calls: every call of a function defined in the ``bridge`` package (a coroutine counts
  when it starts, not at each resume), counted by a profile hook (``sys.setprofile``, and
  ``threading.setprofile`` for the store's thread); with the distinct functions and
  modules one unbatched webhook passes through;
* thread hops: calls onto the SQLite file's thread (``SqliteFile.call``), each a hand-off
  to another thread and back through the event loop;
* SQL statements (SQLite's trace callback; BEGIN, COMMIT and PRAGMA not counted) and write
  transactions (``SqliteFile.transaction``), and how many of those were fsynced;
* log lines: records at ``info`` and above from the bridge's loggers.
"""

from __future__ import annotations

import asyncio
import collections
import contextlib
import dis
import logging
import sys
import tempfile
import threading
import types
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
from prometheus_client import CollectorRegistry

import bridge
from bench import payloads
from bridge import config
from bridge.app import create_app
from bridge.compose import build
from bridge.store.sqlite_file import SqliteFile
from tests.integration import procs

PACKAGE = str(Path(bridge.__file__).resolve().parent)
_RESUME = dis.opmap["RESUME"]  # oparg 0: a function's start; else a resume after a yield


@dataclass
class Counts:
    calls: collections.Counter[types.CodeType] = field(default_factory=collections.Counter)
    hops: collections.Counter[str] = field(default_factory=collections.Counter)
    statements: int = 0
    transactions: int = 0
    fsynced: int = 0
    log_lines: int = 0
    counting: bool = False

    def profile(self, frame: types.FrameType, event: str, arg: Any) -> None:
        if event != "call" or not self.counting:
            return
        code = frame.f_code
        if not code.co_filename.startswith(PACKAGE):
            return
        raw = code.co_code
        lasti = frame.f_lasti
        if raw[lasti] == _RESUME and raw[lasti + 1] != 0:
            return  # a coroutine or generator resumed, not called
        self.calls[code] += 1

    def statement(self, text: str) -> None:
        if self.counting and not text.startswith(("BEGIN", "COMMIT", "PRAGMA")):
            self.statements += 1


class _LineCounter(logging.Handler):
    def __init__(self, counts: Counts) -> None:
        super().__init__(logging.INFO)
        self.counts = counts

    def emit(self, record: logging.LogRecord) -> None:
        if self.counts.counting and record.name.startswith("bridge"):
            self.counts.log_lines += 1


@contextlib.contextmanager
def _counted(counts: Counts) -> Iterator[None]:
    call, connect, transaction = SqliteFile.call, SqliteFile._connect, SqliteFile.transaction

    def traced(self: SqliteFile, schema: str) -> Any:
        db = connect(self, schema)
        db.set_trace_callback(counts.statement)
        return db

    @contextlib.contextmanager
    def counted(self: SqliteFile, *, durable: bool = True) -> Iterator[Any]:
        if counts.counting:
            counts.transactions += 1
            counts.fsynced += durable
        with transaction(self, durable=durable) as db:
            yield db

    async def hop(self: SqliteFile, fn: Any, *args: Any) -> Any:
        if counts.counting:
            # What runs there: the engine's helper names the function it runs first.
            inner = args[0] if args and callable(args[0]) else fn
            counts.hops[getattr(inner, "__name__", "?")] += 1
        return await call(self, fn, *args)

    handler = _LineCounter(counts)
    root = logging.getLogger()
    level = root.level
    root.addHandler(handler)
    root.setLevel(logging.INFO)
    SqliteFile.call = hop  # type: ignore[method-assign]
    SqliteFile._connect = traced  # type: ignore[method-assign]
    SqliteFile.transaction = counted  # type: ignore[method-assign]
    sys.setprofile(counts.profile)
    threading.setprofile(counts.profile)  # the store's thread starts after this
    try:
        yield
    finally:
        sys.setprofile(None)
        threading.setprofile(None)
        SqliteFile.call = call  # type: ignore[method-assign]
        SqliteFile._connect = connect  # type: ignore[method-assign]
        SqliteFile.transaction = transaction  # type: ignore[method-assign]
        root.removeHandler(handler)
        root.setLevel(level)


@dataclass(frozen=True)
class Result:
    mode: str
    webhooks: int
    calls: float
    functions: float  # distinct, per unbatched webhook
    modules: float
    hops: float
    statements: float
    transactions: float
    fsynced: float
    log_lines: float
    hops_by_function: dict[str, float]


async def _run(tmp: Path, batch: int, warmup: int, measured: int) -> Result:
    delivered = 0
    arrived = asyncio.Event()

    def alertmanager(request: httpx.Request) -> httpx.Response:
        nonlocal delivered
        delivered += request.content.count(b'"labels"')
        arrived.set()
        return httpx.Response(200)

    path = procs.write_config(tmp / "config.yaml", ["http://alertmanager.invalid:9093"])
    env = {"SENTRY_CLIENT_SECRET": payloads.SECRET, "BRIDGE_DATA_DIR": str(tmp / "data")}
    counts = Counts()
    bodies = list(payloads.webhooks(warmup + measured, start=batch * 1_000_000))
    distinct: list[tuple[int, int]] = []
    with _counted(counts):
        cfg = config.load(path, env=env)
        the_bridge = build(
            cfg,
            registry=CollectorRegistry(),
            alertmanager_transport=httpx.MockTransport(alertmanager),
        )
        app = create_app(the_bridge)
        transport = httpx.ASGITransport(app=app)
        async with (
            app.router.lifespan_context(app),
            httpx.AsyncClient(transport=transport, base_url="http://bridge") as client,
        ):

            async def post(resource: str, body: bytes) -> None:
                headers = {
                    "Content-Type": "application/json",
                    "Sentry-Hook-Resource": resource,
                    "Sentry-Hook-Signature": payloads.sign(body),
                }
                response = await client.post("/webhooks/sentry", content=body, headers=headers)
                assert response.status_code == 202, response.text

            for start in range(0, len(bodies), batch):
                group = bodies[start : start + batch]
                counts.counting = start >= warmup
                before = collections.Counter(counts.calls)
                expected = delivered + len(group)
                await asyncio.gather(*(post(resource, body) for resource, body in group))
                while delivered < expected:
                    arrived.clear()
                    await asyncio.wait_for(arrived.wait(), 10)
                if counts.counting and batch == 1:
                    grown = counts.calls - before  # the functions this webhook called
                    distinct.append((len(grown), len({c.co_filename for c in grown})))
                counts.counting = False
    calls = sum(counts.calls.values())
    functions = sum(d[0] for d in distinct) / len(distinct) if distinct else 0.0
    modules = sum(d[1] for d in distinct) / len(distinct) if distinct else 0.0
    return Result(
        "one at a time" if batch == 1 else f"{batch} at a time",
        measured,
        calls / measured,
        functions,
        modules,
        sum(counts.hops.values()) / measured,
        counts.statements / measured,
        counts.transactions / measured,
        counts.fsynced / measured,
        counts.log_lines / measured,
        {name: n / measured for name, n in counts.hops.most_common()},
    )


def run(quick: bool = False) -> None:
    print("calls: the bridge in process (SQLite, Alertmanager answering at once)")
    for batch in (1, 50):
        # Whole groups: the warm-up, then the measured webhooks.
        warmup, measured = (batch * 10, batch * 20) if batch == 1 else (batch, batch * 4)
        if quick:
            warmup, measured = batch, batch * 2
        with tempfile.TemporaryDirectory() as tmpdir:
            r = asyncio.run(_run(Path(tmpdir), batch, warmup, measured))
        named = f", {r.functions:.0f} functions in {r.modules:.0f} modules" if batch == 1 else ""
        hops = ", ".join(f"{name} {n:.2f}" for name, n in r.hops_by_function.items())
        print(
            f"  {r.mode:14} ({r.webhooks} webhooks) {r.calls:6.0f} calls/webhook{named}; "
            f"{r.hops:5.2f} thread hops/webhook ({hops}); {r.statements:5.2f} statements, "
            f"{r.transactions:5.2f} transactions ({r.fsynced:4.2f} fsynced)/webhook; "
            f"{r.log_lines:4.2f} log lines/webhook"
        )

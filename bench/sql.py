"""``bench/run sql``: what the SQLite store's statements cost per webhook, statement by
statement, replayed without the rest of the bridge.

The bridge's schema, indexes and named queries (``bridge.store.sqlite``) on a file in a
temporary directory, WAL with ``synchronous=FULL`` for the accept and NORMAL for the rest,
as ``SqliteFile`` runs them; groups of ``GROUP`` webhooks (about what the group commit
gathers at concurrency 50) go through what the store does for them: the accept (seen
bodies, inbox rows, the seen bodies' bounds; a durable commit), the take's states read,
the batch's writes (inbox rows deleted, a post queued per Alertmanager, states upserted),
delivery's queue read and settle. Rows are the sizes the bench's webhooks make (measured
here: their alert's JSON, the state a new identity's step leaves, its post). Then the same
without the seen bodies, so their share (the digest index's random pages) shows. CPU time
of the replaying thread per webhook.
"""

from __future__ import annotations

import collections
import json
import os
import sqlite3
import statistics
import tempfile
import time
from collections.abc import Callable
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from bench import payloads
from bridge import config, sentry
from bridge.alertmanager import wire_json
from bridge.classify import classify
from bridge.model import SentryAlert
from bridge.pipeline import read_in_context
from bridge.state import Policy, step
from bridge.store import jsontext
from bridge.store.contract import Entry
from bridge.store.sqlite import sql
from bridge.store.sqlite.dialect import each_rows
from bridge.store.sqlite.schema import INDEXES, SCHEMA
from bridge.store.sqlite.sql import SEE_BODIES
from tests.integration import procs

GROUP = 12
_STORE = config.Store.model_fields  # the config's defaults
RETENTION: float = _STORE["body_retention"].default
MAX_BODIES: int = _STORE["max_bodies"].default


def _sizes(count: int) -> tuple[int, int, int]:
    """Median bytes of the inbox alert, the state and the post of the bench's webhooks."""
    with tempfile.TemporaryDirectory() as tmp:
        path = procs.write_config(Path(tmp) / "config.yaml", ["http://127.0.0.1:9"])
        cfg = config.load(path, env={"SENTRY_CLIENT_SECRET": payloads.SECRET})
    policy, now = Policy.from_config(cfg), datetime.now(UTC)
    inbox: list[int] = []
    states: list[int] = []
    posts: list[int] = []
    for resource, body in payloads.webhooks(count):
        headers = sentry.LowerHeaders(
            {"sentry-hook-resource": resource, "sentry-hook-signature": payloads.sign(body)}
        )
        _, alert = sentry.read(
            headers, body, base_url=cfg.sentry.base_url, organization=cfg.sentry.organization
        )
        assert isinstance(alert, SentryAlert), "every bench record is an alert"
        inbox.append(len(jsontext.dumps(alert.to_json()).encode()))
        alert = read_in_context(Entry(1, now, alert), None, now)[0]
        done = step(None, alert, classify(alert, cfg.classification), now, policy)
        states.append(len(jsontext.dumps(done.state.to_json()).encode()))
        posts.extend(len(wire_json(post).encode()) for post in done.posts)
    return tuple(int(statistics.median(v)) for v in (inbox, states, posts))  # type: ignore[return-value]


def _replay(
    directory: Path, webhooks: int, sizes: tuple[int, int, int], seen: bool
) -> dict[str, float]:
    spent: collections.defaultdict[str, float] = collections.defaultdict(float)

    def timed(name: str, fn: Callable[..., Any], *args: Any) -> Any:
        started = time.thread_time()
        result = fn(*args)
        spent[name] += time.thread_time() - started
        return result

    def begin(level: str) -> None:
        db.execute(f"PRAGMA synchronous = {level}")
        timed("BEGIN", db.execute, "BEGIN IMMEDIATE")

    db = sqlite3.connect(directory / "store.sqlite3", isolation_level=None)
    db.execute("PRAGMA journal_mode = WAL")
    db.executescript(SCHEMA)
    db.executescript(INDEXES)
    inbox_alert, state, post = ("x" * size for size in sizes)
    for first in range(0, webhooks, GROUP):
        now = time.time()
        names = json.dumps([f"issue:{first + n}" for n in range(GROUP)])
        begin("FULL")
        if seen:
            digests = [os.urandom(32) for _ in range(GROUP)]
            seen_rows = [(digest,) for digest in digests]  # as the engine runs it
            timed("seen bodies: upsert", each_rows, db, SEE_BODIES, seen_rows, (now, RETENTION))
        ids = timed("inbox: insert", _inserted, db, now, inbox_alert)
        if seen:
            timed("seen bodies: bounds", db.execute, sql.FORGET_OLD_BODIES, (now - RETENTION,))
            timed("seen bodies: bounds", db.execute, sql.FORGET_MANY_BODIES, (MAX_BODIES,))
        timed("COMMIT (durable: fsynced)", db.execute, "COMMIT")
        timed("take: states read", _rows, db, sql.STATES, (names,))
        begin("NORMAL")
        timed("inbox: delete", db.executemany, sql.DELETE_INBOX, [(i,) for i in ids])
        timed("queue: insert", db.executemany, sql.ENQUEUE, [("am", now, post)] * GROUP)
        rows = [
            (f"issue:{first + n}", now + 3600, 1, now + 3600, state, None) for n in range(GROUP)
        ]
        timed("state: upsert", db.executemany, sql.UPSERT_STATE, rows)
        timed("COMMIT (not fsynced)", db.execute, "COMMIT")
        timed("queue: read", _rows, db, sql.PENDING, ("am", 0, 256))
        begin("NORMAL")
        timed("queue: settle", db.execute, sql.SETTLE, ("am", 2**62))
        timed("COMMIT (not fsynced)", db.execute, "COMMIT")
    db.close()
    return {name: seconds / webhooks * 1e6 for name, seconds in spent.items()}


def _rows(db: sqlite3.Connection, text: str, args: tuple[Any, ...]) -> list[Any]:
    return db.execute(text, args).fetchall()


def _inserted(db: sqlite3.Connection, now: float, alert: str) -> list[int | None]:
    return [db.execute(sql.INSERT_INBOX, (now, alert)).lastrowid for _ in range(GROUP)]


def run(quick: bool = False) -> None:
    webhooks = 1_200 if quick else 6_000
    sizes = _sizes(50 if quick else 400)
    print(
        f"sql: the SQLite store's statements, {webhooks} webhooks in groups of {GROUP}; rows of "
        f"{sizes[0]} (inbox alert), {sizes[1]} (state) and {sizes[2]} (post) bytes; CPU per webhook"
    )
    with tempfile.TemporaryDirectory() as tmp:
        runs = {}
        for seen in (True, False):
            directory = Path(tmp) / str(seen)
            directory.mkdir()
            runs[seen] = _replay(directory, webhooks, sizes, seen)
    for name, us in sorted(runs[True].items(), key=lambda item: -item[1]):
        print(
            f"  {name:28} {us:6.1f} us   without seen bodies {runs[False].get(name, 0.0):6.1f} us"
        )
    with_, without = sum(runs[True].values()), sum(runs[False].values())
    print(f"  {'all':28} {with_:6.1f} us   without seen bodies {without:6.1f} us")

"""How the SQLite engine runs the shared steps (``bridge.store.steps``): a whole step on
the file's thread, given the connection, in the caller's transaction where it writes.
Times are epoch seconds, lists one JSON array (``json_each``), strings as they are."""

from __future__ import annotations

import json
import sqlite3
from collections.abc import Callable
from datetime import UTC, datetime
from typing import Any, TypeVar

from bridge.store import jsontext
from bridge.store.sqlite import sql
from bridge.store.steps import Dialect, Q, Step, drive

T = TypeVar("T")


def dialect(clock: Callable[[], datetime]) -> Dialect:
    return Dialect(
        sql=sql,
        text=str,
        untext=str,
        array=lambda values: json.dumps(list(values)),
        time=datetime.timestamp,
        when=lambda at: datetime.fromtimestamp(at, UTC),
        dumps=jsontext.dumps,
        loads=json.loads,
        wire=str,
        clock=clock,
    )


def run(db: sqlite3.Connection, d: Dialect, step: Step[T]) -> T:
    """``step``, its queries on ``db`` (on the file's thread)."""

    def execute(q: Q) -> Any:
        if q.how == "now":
            assert d.clock is not None
            return d.clock()
        text = getattr(d.sql, q.name)
        if text is None:
            return None
        if q.how == "many":
            return db.executemany(text, q.args[0]).rowcount if q.args[0] else 0
        if q.how == "each":  # executemany returns no rows
            rest = q.args[1:]
            return [got for one in q.args[0] for got in db.execute(text, (*one, *rest))]
        cursor = db.execute(text, q.args)
        if q.how == "rows":
            return cursor.fetchall()
        if q.how == "run":
            return cursor.rowcount
        first = cursor.fetchone()
        return first if q.how == "row" or first is None else first[0]

    return drive(step, execute)

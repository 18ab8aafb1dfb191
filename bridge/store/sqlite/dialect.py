"""How the SQLite engine runs the shared steps (``bridge.store.steps``): a whole step on
the file's thread, given the connection, in the caller's transaction where it writes.
Times are epoch seconds, lists one JSON array (``json_each``), strings as they are."""

from __future__ import annotations

import json
import sqlite3
from collections.abc import Callable, Sequence
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
        if q.how == "each":
            return each_rows(db, text, q.args[0], q.args[1:])
        cursor = db.execute(text, q.args)
        if q.how == "rows":
            return cursor.fetchall()
        if q.how == "run":
            return cursor.rowcount
        first = cursor.fetchone()
        return first if q.how == "row" or first is None else first[0]

    return drive(step, execute)


# Rows per statement of a query run ``each``: SQLite binds at most 32,766 parameters (its
# docs, "Limits", SQLITE_MAX_VARIABLE_NUMBER since 3.32), and each size of VALUES list is a
# statement of its own in the connection's cache (``SqliteFile.cached_statements`` keeps them
# all: padding the lists to fewer sizes cost more per group than the compiles it saved).
EACH_ROWS = 256


def each_rows(
    db: sqlite3.Connection, text: str, rows: Sequence[Sequence[Any]], rest: Sequence[Any]
) -> list[Any]:
    """Every row the statement returns for ``rows``, given as one VALUES list per
    ``EACH_ROWS`` (``executemany`` returns no rows, and a statement per row costs a
    webhook a statement on the accept path)."""
    got: list[Any] = []
    for start in range(0, len(rows), EACH_ROWS):
        chunk = rows[start : start + EACH_ROWS]
        one = "(" + ", ".join("?" * len(chunk[0])) + ")"
        values = [value for row in chunk for value in row]
        got += db.execute(text.format(rows=", ".join([one] * len(chunk))), (*values, *rest))
    return got

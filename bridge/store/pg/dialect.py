"""How the PostgreSQL engine runs the shared steps (``bridge.store.steps``): each query
awaited on the caller's connection, in its transaction. Times are ``timestamptz``, lists
arrays (``many`` and ``each`` pass each column as one, for ``unnest``), strings and states
escaped by ``codec``; ``now`` is the database's clock."""

from __future__ import annotations

from collections.abc import Iterable
from datetime import datetime
from typing import Any, TypeVar

from bridge.store.pg import codec, sql
from bridge.store.steps import Dialect, Q, Step

T = TypeVar("T")


def _same(at: datetime) -> datetime:
    return at


def dialect(lock_key: int, queue_channel: str) -> Dialect:
    return Dialect(
        sql=sql,
        text=codec.text,
        untext=codec.untext,
        array=list,
        time=_same,
        when=_same,
        dumps=codec.to_jsonb,
        loads=codec.from_jsonb,
        wire=codec.wire_from_jsonb,
        lock_key=lock_key,
        queue_channel=queue_channel,
    )


async def run(conn: Any, d: Dialect, step: Step[T]) -> T:
    """``step``, its queries awaited on ``conn``."""
    result: Any = None
    try:
        while True:
            result = await _execute(conn, d, step.send(result))
    except StopIteration as stop:
        return stop.value  # type: ignore[no-any-return]


async def _execute(conn: Any, d: Dialect, q: Q) -> Any:
    text = sql.NOW if q.how == "now" else getattr(d.sql, q.name)
    if text is None:
        return None
    if q.how == "now" or q.how == "value":
        return await conn.fetchval(text, *q.args)
    if q.how == "rows":
        return await conn.fetch(text, *q.args)
    if q.how == "row":
        return await conn.fetchrow(text, *q.args)
    args: Iterable[Any] = q.args
    if q.how == "many" or q.how == "each":
        if not q.args[0]:
            return 0 if q.how == "many" else []
        args = [list(column) for column in zip(*q.args[0], strict=True)] + list(q.args[1:])
        if q.how == "each":
            return await conn.fetch(text, *args)
    status: str = await conn.execute(text, *args)
    count = status.rpartition(" ")[2]  # "UPDATE 3", "INSERT 0 3": the rows changed
    return int(count) if count.isdigit() else 0

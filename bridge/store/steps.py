"""Store logic written once for both engines, as steps (issue 15: "each rule once").

A step is a generator that yields the queries it needs (``Q``: a query's name in the
dialect's ``sql`` module, its arguments, how to run it) and is sent each one's result; it
returns its answer. It never touches a connection, so each engine drives it its own way:
SQLite runs a whole step on its file's thread, in one hop and (for a write) one
transaction (``sqlite/dialect.py``); PostgreSQL awaits each query on its connection
(``pg/dialect.py``). Steps compose with ``yield from``.

What differs between the dialects beside their SQL is a ``Dialect``: how a time, a list, a
string and a JSON value are passed and read back (PostgreSQL's ``codec`` escapes NUL), and
which clock says ``now`` (SQLite's engine clock, PostgreSQL's ``clock_timestamp()``).
A query a dialect has no use for is ``None`` in its ``sql`` (SQLite has one process: no
notifications, no advisory locks); running it does nothing.
"""

from __future__ import annotations

from collections.abc import Callable, Generator, Iterable, Sequence
from dataclasses import dataclass
from datetime import datetime
from types import ModuleType
from typing import Any, Literal, NamedTuple, TypeVar

T = TypeVar("T")

How = Literal["rows", "row", "value", "run", "many", "each", "now"]


class Q(NamedTuple):
    """One query of a step. ``rows``: every row; ``row``: the first or None; ``value``: its
    first column or None; ``run``: how many rows it changed; ``many``: the statement once
    per row of ``args[0]`` (SQLite's ``executemany``; PostgreSQL passes the columns as
    arrays); ``each``: the rows of ``args[0]`` in one statement, ``args[1:]`` after them,
    and every row the statement returned (SQLite a VALUES list, PostgreSQL arrays);
    ``now``: the dialect's clock (no query). A tuple: one is made per query, on the
    webhook's path."""

    how: How
    name: str
    args: tuple[Any, ...] = ()


Step = Generator[Q, Any, T]


def rows(name: str, *args: Any) -> Q:
    return Q("rows", name, args)


def row(name: str, *args: Any) -> Q:
    return Q("row", name, args)


def value(name: str, *args: Any) -> Q:
    return Q("value", name, args)


def run(name: str, *args: Any) -> Q:
    return Q("run", name, args)


def many(name: str, values: Sequence[Sequence[Any]]) -> Q:
    return Q("many", name, (values,))


def each(name: str, values: Sequence[Sequence[Any]], *args: Any) -> Q:
    return Q("each", name, (values, *args))


NOW = Q("now", "")


@dataclass(frozen=True, slots=True)
class Dialect:
    """What an engine's SQL takes and gives besides the queries themselves."""

    sql: ModuleType
    text: Callable[[str], str]  # a string as stored (an identity, a reason)
    untext: Callable[[str], str]
    array: Callable[[Iterable[Any]], Any]  # a list as one parameter
    time: Callable[[datetime], Any]  # a time as stored
    when: Callable[[Any], datetime]  # a time as read back
    dumps: Callable[[Any], str]  # a state's JSON as stored
    loads: Callable[[str], Any]  # JSON as read back from a state's column
    wire: Callable[[str], str]  # an alert read from a state's column, as wire JSON
    clock: Callable[[], datetime] | None = None  # None: the database's (``sql.NOW``)
    lock_key: int | None = None  # the identities' advisory locks (``identity.lock``)
    queue_channel: str = ""  # told when posts are queued


def drive(step: Step[T], execute: Callable[[Q], Any]) -> T:
    """Runs ``step`` with ``execute`` answering each query, synchronously."""
    result: Any = None
    try:
        while True:
            result = execute(step.send(result))
    except StopIteration as stop:
        return stop.value  # type: ignore[no-any-return]

"""``bridge.store.bodies.first_sight``, the seen-body rule both engines run, driven with
the queries answered here: what it asks the database and what it makes of the answer.
The contract tests (test_contract.py) run it against every engine."""

from __future__ import annotations

import sqlite3
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest

from bridge.store import bodies
from bridge.store.sqlite import sql as sqlite_sql
from bridge.store.sqlite.dialect import EACH_ROWS, dialect, run
from bridge.store.sqlite.schema import SCHEMA
from bridge.store.sqlite_file import SqliteFile
from bridge.store.steps import Q, drive

NOW = datetime(2026, 12, 7, 12, 0, tzinfo=UTC)
D = dialect(lambda: NOW)


def sight(
    digests: list[bytes | None], written: set[bytes], at: datetime | None = None
) -> tuple[list[bool], list[Q]]:
    """The answer, and the queries asked, when the upsert writes the ``written`` digests
    (the ones not seen within the retention)."""
    asked: list[Q] = []

    def execute(q: Q) -> Any:
        asked.append(q)
        if q.how == "now":
            return NOW
        return [(digest,) for (digest,) in q.args[0] if digest in written]

    return drive(bodies.first_sight(D, digests, 60.0, at), execute), asked


@pytest.mark.parametrize(
    ("digests", "written", "fresh"),
    [
        pytest.param([b"a", b"b"], {b"a", b"b"}, [True, True], id="all-new"),
        pytest.param([b"a", b"b"], {b"b"}, [False, True], id="one-seen-before"),
        pytest.param([b"a", b"a", b"a"], {b"a"}, [True, False, False], id="first-copy-counts"),
        pytest.param([b"a", b"a"], set(), [False, False], id="seen-before-twice"),
        pytest.param([None, b"a", None], set(), [True, False, True], id="no-digest-is-new"),
    ],
)
def test_what_is_new(digests: list[bytes | None], written: set[bytes], fresh: list[bool]) -> None:
    assert sight(digests, written)[0] == fresh


def test_each_digest_is_written_once_in_sorted_order_at_the_dialects_time() -> None:
    _, asked = sight([b"c", b"a", None, b"c", b"b"], set())
    assert [q.how for q in asked] == ["now", "each"]
    assert asked[1].name == "SEE_BODIES"
    assert asked[1].args == ([(b"a",), (b"b",), (b"c",)], NOW.timestamp(), 60.0)


def test_the_callers_time_is_taken_where_it_has_one() -> None:
    # SQLite's accept stamps its inbox rows with a time: the step reads no clock of its own.
    at = NOW - timedelta(seconds=5)
    _, asked = sight([b"a"], set(), at)
    assert [q.how for q in asked] == ["each"]
    assert asked[0].args == ([(b"a",)], at.timestamp(), 60.0)


def test_no_digest_asks_nothing() -> None:
    assert sight([None, None], set()) == ([True, True], [])


def test_sqlite_writes_a_large_group_in_statements_of_each_rows(tmp_path: Path) -> None:
    # One statement per EACH_ROWS digests (SQLite binds a bounded number of parameters),
    # and what each answers counts as one answer for the group.
    db = sqlite3.connect(tmp_path / "store.sqlite3", isolation_level=None)
    db.executescript(SCHEMA)
    statements: list[str] = []
    db.set_trace_callback(statements.append)
    digests: list[bytes | None] = [n.to_bytes(32, "big") for n in range(EACH_ROWS * 2 + 1)]
    assert run(db, D, bodies.first_sight(D, digests, 60.0)) == [True] * len(digests)
    assert run(db, D, bodies.first_sight(D, [*digests, digests[0]], 60.0)) == [False] * (
        len(digests) + 1
    )
    assert sum("INSERT INTO seen_body" in text for text in statements) == 6
    db.close()


def test_sqlite_keeps_every_statement_a_group_of_any_size_makes() -> None:
    # One text per size of VALUES list (1 to EACH_ROWS rows) beside every named statement:
    # a cache smaller than that compiles statements again under groups of varied sizes.
    named = [name for name in vars(sqlite_sql) if name.isupper() and name.strip("_")]
    assert SqliteFile.cached_statements >= EACH_ROWS + len(named)

"""The embedded engine of the store: one SQLite file between the 202 and Alertmanager.

It keeps the store contract (``bridge.store.contract``) for one process and one replica:
a lane is an ``asyncio.Lock`` per Alertmanager (never None), ``periodic()`` is always
True, ``Taken.now`` is this process's clock, and the one taker is the pipeline task.

``SqliteStore`` (``engine``) composes the parts: ``schema`` (the tables), ``sql``
(every query, by name), ``dialect`` (running the shared steps, ``bridge.store.steps``, on
the file's thread), ``inbox`` (accepts, takes, bounding the seen bodies) and ``queue``
(the lanes), on ``bridge.store.sqlite_file`` (``SqliteFile``: the file on its one thread)
and ``bridge.store.group_commit``, the plumbing the spool uses too.

Its tables (``schema``: the package ``bridge.store`` says what each holds) are in
``store.sqlite3`` under ``store.data_dir``, ``schema.VERSION`` in the file's
``user_version``.

Memory: the active and resolved alerts and the identities' states live in the file only
(100,000 active alerts would take some 230 MB as objects): ``take`` reads the states of
the identities it hands out, re-sends read keyset pages. What stays in memory is an id
and a time per accepted webhook not yet taken, with the alerts of the first
``kept_in_memory``.

Durability, the one thread and the exclusive lock are ``SqliteFile``'s (its docstring says
why a 202 is fsynced and what the batch's writes commit at); concurrent accepts share one
commit (``GroupCommit``). README's performance section has the cost measured.
"""

from __future__ import annotations

from bridge.store.sqlite.engine import SqliteStore
from bridge.store.sqlite.schema import FILENAME

__all__ = ["FILENAME", "SqliteStore"]

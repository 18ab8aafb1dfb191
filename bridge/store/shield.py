"""Writes that run to their end even when their caller is cancelled, for every engine.

An engine keeps in memory what it committed (sizes, cursors, ids handed out); a write
whose caller is cancelled half-way (a request timing out, a task stopped at shutdown)
would otherwise leave memory behind the file. ``close`` waits for them with ``idle``. A
caller whose ``commit_deadline`` passed waits for the write and gets its outcome.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable
from typing import Any

from bridge.store.group_commit import deadline_passed


class Shield:
    def __init__(self) -> None:
        self._tasks: set[asyncio.Future[Any]] = set()

    @property
    def busy(self) -> bool:
        return bool(self._tasks)

    async def __call__(self, write: Awaitable[Any]) -> Any:
        task = asyncio.ensure_future(write)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)
        try:
            return await asyncio.shield(task)
        except asyncio.CancelledError:
            if not deadline_passed():
                raise
            # The caller's commit_deadline passed with the write running: its outcome is
            # the answer (a committed webhook is not answered 503), as in GroupCommit.
            return await asyncio.shield(task)

    async def idle(self) -> None:
        """Wait until every shielded write has ended (failed ones included)."""
        while self._tasks:
            await asyncio.gather(*self._tasks, return_exceptions=True)

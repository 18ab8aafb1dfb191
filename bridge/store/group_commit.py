"""Group commit: concurrent writers batched into one write, for every engine.

Callers that arrive while one write runs are written together by the next one, so a storm
costs one transaction (one fsync) per write, not one per caller, and a lone caller waits
for no timer. A caller that is cancelled (its request timed out) does not take its item
back: it may still be committed with its batch, which the digest dedup of a retried body
absorbs. The SQLite outbox, the spool and PostgreSQL's inbox accept through it.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable, Sequence
from typing import Generic, TypeVar

I = TypeVar("I")  # noqa: E741 (an item written)
R = TypeVar("R")  # its result


class GroupCommit(Generic[I, R]):
    """Writes items in batches with ``write`` (one call per batch, results in item order),
    one batch at a time; ``submit`` returns the item's result once its batch is written,
    or raises what ``write`` raised."""

    def __init__(self, write: Callable[[Sequence[I]], Awaitable[Sequence[R]]], name: str) -> None:
        self._write = write
        self._name = name
        self._pending: list[tuple[I, asyncio.Future[R]]] = []
        self._flusher: asyncio.Task[None] | None = None
        self.batches = 0  # writes so far; tests check that callers share them

    def __len__(self) -> int:
        """Items submitted and not yet written (the running batch is not counted)."""
        return len(self._pending)

    @property
    def busy(self) -> bool:
        """Something is submitted or being written."""
        return self._flusher is not None

    async def submit(self, item: I) -> R:
        future: asyncio.Future[R] = asyncio.get_running_loop().create_future()
        self._pending.append((item, future))
        if self._flusher is None:
            self._flusher = asyncio.create_task(self._flush(), name=self._name)
        return await future

    async def idle(self) -> None:
        """Wait until everything submitted is written (close waits on it)."""
        while self._flusher is not None:
            await asyncio.gather(self._flusher, return_exceptions=True)

    async def _flush(self) -> None:
        try:
            while self._pending:
                batch, self._pending = self._pending, []
                self.batches += 1
                try:
                    results = await self._write([item for item, _ in batch])
                except Exception as exc:
                    for _, future in batch:
                        if not future.done():
                            future.set_exception(exc)
                    continue
                for (_, future), result in zip(batch, results, strict=True):
                    if not future.done():  # the caller may have been cancelled meanwhile
                        future.set_result(result)
        finally:
            self._flusher = None

"""Group commit: concurrent writers batched into one write, for every engine.

Callers that arrive while one write runs are written together by the next one, so a storm
costs one transaction (one fsync) per write, not one per caller, and a lone caller waits
for no timer. The SQLite store, the spool and PostgreSQL's inbox accept through it.

A caller that is cancelled leaves its item to be committed (or not) with its batch, which
the digest dedup of a retried body absorbs. A caller whose ``commit_deadline`` passed
instead takes its item back if its batch has not started (nothing of it is written: the
failure it reports is true), and otherwise waits for the batch and answers what it did
(issue 15: the edge answered 503 for webhooks its ``store_timeout`` caught committing).
"""

from __future__ import annotations

import asyncio
import contextvars
from collections.abc import Awaitable, Callable, Sequence
from types import TracebackType
from typing import Generic, TypeVar

I = TypeVar("I")  # noqa: E741 (an item written)
R = TypeVar("R")  # its result

# The deadline of the caller waiting on a commit, as ``commit_deadline`` set it.
_deadline: contextvars.ContextVar[asyncio.Timeout | None] = contextvars.ContextVar(
    "commit_deadline", default=None
)


class commit_deadline:  # lower case: used as asyncio.timeout is
    """``asyncio.timeout(seconds)`` for a caller waiting on a commit (the edge's
    ``server.store_timeout``): it bounds the wait for the commit to start, as the module
    docstring says; a running batch is bounded by the engine's own write timeouts."""

    __slots__ = ("_timeout", "_token")

    def __init__(self, seconds: float) -> None:
        self._timeout = asyncio.timeout(seconds)

    async def __aenter__(self) -> None:
        await self._timeout.__aenter__()
        self._token = _deadline.set(self._timeout)

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        _deadline.reset(self._token)
        await self._timeout.__aexit__(exc_type, exc, traceback)  # raises TimeoutError


def deadline_passed() -> bool:
    """Whether the caller's ``commit_deadline`` has passed (its cancel is the deadline's)."""
    deadline = _deadline.get()
    return deadline is not None and deadline.expired()


class GroupCommit(Generic[I, R]):
    """Writes items in batches with ``write`` (one call per batch, results in item order),
    one batch at a time; ``submit`` returns the item's result once its batch is written,
    or raises what ``write`` raised."""

    def __init__(
        self,
        write: Callable[[Sequence[I]], Awaitable[Sequence[R]]],
        name: str,
        withdrawn: Callable[[I], None] | None = None,
    ) -> None:
        self._write = write
        self._name = name
        # Told of an item taken back (its caller's deadline passed before its batch):
        # for a writer that counted it on submitting (the spool's bounds).
        self._withdrawn = withdrawn
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
        entry = (item, future)
        self._pending.append(entry)
        if self._flusher is None:
            # A context of its own: it writes for every caller, under no one's deadline.
            self._flusher = asyncio.create_task(
                self._flush(), name=self._name, context=contextvars.Context()
            )
        try:
            # Shielded: a cancelled caller must not cancel the future its batch answers,
            # or a committed result would be lost before the caller could read it.
            return await asyncio.shield(future)
        except asyncio.CancelledError:
            if not deadline_passed():
                # Someone else's cancel (a stop, the spool's try on its primary): the item
                # stays for its batch. The spool relies on it for order: a webhook that
                # timed out on the primary still commits there before those behind it.
                raise
            if not future.done() and self._withdraw(entry):
                raise  # not started: nothing of it will be written, the 503 is true
            # The caller's deadline passed once its batch had started (or had even ended):
            # the batch's outcome is the answer. The cancel was the deadline's own, which
            # its __aexit__ takes back (uncancel) when the block ends without it.
            return await future

    def _withdraw(self, entry: tuple[I, asyncio.Future[R]]) -> bool:
        """Take a not-yet-written item back; False when its batch has started."""
        for index, pending in enumerate(self._pending):
            if pending is entry:
                del self._pending[index]
                entry[1].cancel()
                if self._withdrawn is not None:
                    self._withdrawn(entry[0])
                return True
        return False

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
                    if not future.done():
                        future.set_result(result)
        finally:
            self._flusher = None

"""The PostgreSQL engine's part of the contract while a pod that started during an outage
has not opened it yet (bridge/store/spool.py): a store holding nothing. ``take`` waits for
it to open, ``lane`` yields None (delivery looks again after its ``LANE_BUSY_WAIT``, as if
another replica held it), ``periodic`` is False, and the operators' calls raise
``StoreError`` saying why.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import AsyncIterator, Callable, Coroutine
from typing import Any

from bridge.errors import StoreError
from bridge.store.contract import Lane, Sizes, Store, Taken


class Unopened:
    def __init__(self, engine: Store, opened: asyncio.Event) -> None:
        self._engine = engine
        self._opened = opened

    async def take(self, limit: int) -> Taken:
        await self._opened.wait()  # nothing to take before; the spool drains into it then
        return await self._engine.take(limit)

    @contextlib.asynccontextmanager
    async def lane(self, target: str) -> AsyncIterator[Lane | None]:
        yield None

    def wakeup(self, target: str) -> asyncio.Event:
        return self._engine.wakeup(target)

    async def periodic(self) -> bool:
        return False

    async def sizes(self, max_age: float = 1.0) -> Sizes:
        return Sizes(time.time(), 0, dict.fromkeys(self._engine.targets, 0), 0, 0, 0, None)

    async def full(self) -> bool:
        return False

    def __getattr__(self, name: str) -> Any:
        """The operators' calls: ``StoreError``."""
        getattr(Store, name)  # AttributeError for what the contract lacks
        return _refuse(name)


def _refuse(name: str) -> Callable[..., Coroutine[Any, Any, Any]]:
    async def refuse(*args: Any, **kwargs: Any) -> Any:
        raise StoreError(
            f"cannot {name.replace('_', ' ')}: the store (PostgreSQL) has not been reachable "
            "since this bridge started; webhooks are kept in the local spool meanwhile"
        )

    return refuse

"""The fake clocks the tests hand to the code under test, one definition each: the bridge
takes ``now`` as an argument or a clock as a parameter (STYLE.md: pure stages, a clock
injected), so tests move time instead of sleeping."""

from __future__ import annotations

import asyncio
from datetime import datetime, timedelta

from tests.factories import START


class Clock:
    """Wall time (an aware datetime) for what the bridge stamps and compares: webhooks,
    ``startsAt``/``endsAt``, retention. ``sleep`` advances it and only yields, so code that
    waits between retries runs without waiting; ``sleeps`` records what it asked for."""

    def __init__(self, start: datetime = START) -> None:
        self.start = start
        self.now = start
        self.sleeps: list[float] = []

    def __call__(self) -> datetime:
        return self.now

    def advance(self, seconds: float = 0.0, **units: float) -> None:
        """Forward by ``seconds`` and any other ``timedelta`` units (``minutes=5``)."""
        self.now += timedelta(seconds=seconds, **units)

    def seconds(self) -> float:
        """Seconds since ``start``."""
        return (self.now - self.start).total_seconds()

    async def sleep(self, seconds: float) -> None:
        self.sleeps.append(seconds)
        self.advance(seconds)
        await asyncio.sleep(0)


class Ticks:
    """A monotonic clock in seconds (a float, as ``time.monotonic`` or ``time.time`` give)
    for what the bridge measures as durations: outages, cache ages, spool ages."""

    def __init__(self, start: float = 1_700_000_000.0) -> None:
        self.now = start

    def __call__(self) -> float:
        return self.now

    def advance(self, seconds: float) -> None:
        self.now += seconds

"""The lease against a real PostgreSQL: a model of its rules (issue 10: one holder at a time,
taken over once expired) driven by hypothesis on a clock the test moves; then exclusivity
under real concurrency and a takeover on the database's own clock."""

from __future__ import annotations

import asyncio
import time
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

import asyncpg
import pytest
from hypothesis import settings
from hypothesis import strategies as st
from hypothesis.stateful import RuleBasedStateMachine, invariant, rule, run_state_machine_as_test

from bridge.store.pg import connection as postgres
from bridge.store.pg import lease
from tests.conftest import PostgresTarget
from tests.store import probes

NAMES = ("resend", "expiry")
HOLDERS = ("pod-a", "pod-b", "pod-c")
START = datetime(2026, 1, 1, tzinfo=UTC)
# Coarse times, so that "now" often lands exactly on an expiry: the boundary is the rule.
STEPS = st.sampled_from([0, 100, 200, 300, 500])
TTLS = st.sampled_from([100, 200, 500, 1000])


@dataclass
class Held:
    holder: str
    expires_ms: int


class LeaseModel:
    """The rules, in milliseconds on the test's clock: a lease is free, or held until its
    expiry; at the expiry instant it is already free (``expires_at <= now``)."""

    def __init__(self) -> None:
        self.leases: dict[str, Held] = {}

    def live(self, name: str, now: int) -> Held | None:
        held = self.leases.get(name)
        return held if held is not None and held.expires_ms > now else None

    def acquire(self, name: str, holder: str, ttl: int, now: int) -> int | None:
        current = self.live(name, now)
        if current is not None and current.holder != holder:
            return None
        self.leases[name] = Held(holder, now + ttl)
        return now + ttl

    def renew(self, name: str, holder: str, ttl: int, now: int) -> int | None:
        current = self.live(name, now)
        if current is None or current.holder != holder:
            return None
        current.expires_ms = now + ttl
        return now + ttl

    def release(self, name: str, holder: str) -> bool:
        held = self.leases.get(name)
        if held is None or held.holder != holder:
            return False
        del self.leases[name]
        return True


def at(ms: int) -> datetime:
    return START + timedelta(milliseconds=ms)


def test_the_lease_follows_its_rules(pg: PostgresTarget) -> None:
    loop = asyncio.new_event_loop()
    conn: Any = loop.run_until_complete(asyncpg.connect(pg.dsn))
    loop.run_until_complete(postgres.migrate(conn, pg.schema))
    loop.run_until_complete(conn.execute(f'SET search_path TO "{pg.schema}"'))

    class Machine(RuleBasedStateMachine):
        def __init__(self) -> None:
            super().__init__()
            loop.run_until_complete(conn.execute("DELETE FROM lease"))
            self.model = LeaseModel()
            self.now = 0

        @rule(ms=STEPS)
        def time_passes(self, ms: int) -> None:
            self.now += ms

        @rule(name=st.sampled_from(NAMES), holder=st.sampled_from(HOLDERS), ttl=TTLS)
        def acquire(self, name: str, holder: str, ttl: int) -> None:
            got = loop.run_until_complete(
                lease.acquire(conn, name, holder, timedelta(milliseconds=ttl), at=at(self.now))
            )
            want = self.model.acquire(name, holder, ttl, self.now)
            assert got == (None if want is None else at(want))

        @rule(name=st.sampled_from(NAMES), holder=st.sampled_from(HOLDERS), ttl=TTLS)
        def renew(self, name: str, holder: str, ttl: int) -> None:
            got = loop.run_until_complete(
                probes.renew(conn, name, holder, timedelta(milliseconds=ttl), at=at(self.now))
            )
            want = self.model.renew(name, holder, ttl, self.now)
            assert got == (None if want is None else at(want))

        @rule(name=st.sampled_from(NAMES), holder=st.sampled_from(HOLDERS))
        def release(self, name: str, holder: str) -> None:
            got = loop.run_until_complete(lease.release(conn, name, holder))
            assert got == self.model.release(name, holder)

        @invariant()
        def holders_agree(self) -> None:
            for name in NAMES:
                got = loop.run_until_complete(probes.holder(conn, name, at=at(self.now)))
                live = self.model.live(name, self.now)
                assert got == (None if live is None else live.holder)

    try:
        run_state_machine_as_test(
            Machine, settings=settings(max_examples=60, stateful_step_count=30, deadline=None)
        )
    finally:
        loop.run_until_complete(conn.close())
        loop.close()


@pytest.mark.anyio
async def test_one_holder_when_replicas_race(pg: PostgresTarget) -> None:
    """Eight replicas acquire the same free lease at the same instant, twenty times over:
    exactly one wins each round, and the others see it as the holder."""
    async with await postgres.connect(pg.settings.model_copy(update={"pool_size": 8})) as p:
        async with p.acquire() as conn:
            await postgres.migrate(conn, pg.schema)
        conns = [await p.acquire() for _ in range(8)]
        try:
            for _ in range(20):
                await conns[0].execute("DELETE FROM lease")
                holders = [f"pod-{i}" for i in range(8)]
                results = await asyncio.gather(
                    *(
                        lease.acquire(c, "resend", h, timedelta(seconds=30))
                        for c, h in zip(conns, holders, strict=True)
                    )
                )
                winners = [h for h, got in zip(holders, results, strict=True) if got is not None]
                assert len(winners) == 1
                assert await probes.holder(conns[1], "resend") == winners[0]
        finally:
            for conn in conns:
                await p.release(conn)


@pytest.mark.anyio
async def test_a_dead_holders_lease_is_taken_over_on_the_database_clock(
    pg: PostgresTarget,
) -> None:
    """pod-a takes a 300 ms lease and dies (never renews, never releases): pod-b cannot take
    it before the expiry, and takes it once the database's clock has passed it."""
    ttl = timedelta(milliseconds=300)
    async with await postgres.connect(pg.settings) as p, p.acquire() as conn:
        await postgres.migrate(conn, pg.schema)
        expires = await lease.acquire(conn, "resend", "pod-a", ttl)
        assert expires is not None
        deadline = time.monotonic() + 10
        while await lease.acquire(conn, "resend", "pod-b", ttl) is None:
            assert await probes.database_now(conn) < expires + timedelta(milliseconds=200)
            assert time.monotonic() < deadline
            await asyncio.sleep(0.02)
        taken_at = await probes.database_now(conn)
        assert taken_at >= expires, "not taken before it expired"
        assert await probes.holder(conn, "resend") == "pod-b"
        assert await probes.renew(conn, "resend", "pod-a", ttl) is None, "the dead pod lost it"
        assert await lease.release(conn, "resend", "pod-a") is False

"""bridge/admission.py: which webhooks the edge takes on, and which it cuts off to make
room (the floods for real: tests/integration/test_floods.py)."""

from __future__ import annotations

import asyncio

import pytest

from bridge.admission import Busy, Gate, Ticket

pytestmark = pytest.mark.anyio


@pytest.fixture
def anyio_backend() -> str:
    return "asyncio"  # asyncio.Timeout is what the gate reschedules


async def receiving(gate: Gate, size: int, done: asyncio.Event) -> tuple[Ticket, asyncio.Task[str]]:
    """A webhook admitted and receiving ``size`` bytes of body until ``done`` is set; its
    task ends with "evicted" if it was cut off, "received" otherwise."""
    ticket = gate.enter()

    async def read() -> str:
        try:
            async with asyncio.timeout(60) as ticket.read:
                gate.hold(ticket, size)
                await done.wait()
        except TimeoutError:
            return "evicted" if ticket.evicted else "timeout"
        gate.received(ticket)
        return "received"

    task = asyncio.create_task(read())
    await asyncio.sleep(0)  # let it enter its read (its deadline is set there)
    return ticket, task


async def test_past_max_in_flight_the_oldest_body_still_arriving_is_cut_off() -> None:
    gate = Gate(max_in_flight=2, max_pending_bytes=10_000)
    done = asyncio.Event()
    first, first_task = await receiving(gate, 10, done)
    second, second_task = await receiving(gate, 10, done)
    third, third_task = await receiving(gate, 10, done)
    assert await first_task == "evicted"
    assert (gate.in_flight, gate.pending_bytes, gate.evictions) == (2, 20, 1)
    done.set()
    assert [await second_task, await third_task] == ["received", "received"]
    for ticket in (first, second, third):
        gate.leave(ticket)
    assert (gate.in_flight, gate.pending_bytes) == (0, 0)


async def test_when_every_webhook_is_past_its_body_a_new_one_is_busy() -> None:
    gate = Gate(max_in_flight=1, max_pending_bytes=10_000)
    done = asyncio.Event()
    done.set()
    ticket, task = await receiving(gate, 10, done)
    assert await task == "received"  # signed, waiting for the store: never cut off
    with pytest.raises(Busy):
        gate.enter()
    gate.leave(ticket)
    gate.leave(gate.enter())


async def test_past_the_byte_budget_the_oldest_bodies_make_room() -> None:
    gate = Gate(max_in_flight=100, max_pending_bytes=1000)
    done = asyncio.Event()
    started = [await receiving(gate, 400, done) for _ in range(2)]
    big, big_task = await receiving(gate, 900, done)  # needs both others' bytes
    assert [await task for _, task in started] == ["evicted", "evicted"]
    assert gate.pending_bytes == 900
    done.set()
    assert await big_task == "received"
    gate.leave(big)
    assert (gate.in_flight, gate.pending_bytes, gate.evictions) == (0, 0, 2)


async def test_a_body_that_fits_cuts_off_nobody() -> None:
    gate = Gate(max_in_flight=10, max_pending_bytes=1000)
    done = asyncio.Event()
    tickets = [await receiving(gate, 300, done) for _ in range(3)]
    assert gate.evictions == 0
    done.set()
    assert [await task for _, task in tickets] == ["received"] * 3
    assert gate.pending_bytes == 0


async def test_a_body_that_grows_past_the_budget_cuts_itself_off_when_it_is_the_oldest() -> None:
    """A chunked body trickling in since before the others does not push younger ones out."""
    gate = Gate(max_in_flight=100, max_pending_bytes=1000)
    done = asyncio.Event()
    slow, slow_task = await receiving(gate, 100, done)
    _young, young_task = await receiving(gate, 800, done)
    gate.hold(slow, 200)  # 1,100 bytes: over the budget, and the slow one is the oldest
    assert await slow_task == "evicted"
    assert gate.pending_bytes == 800
    done.set()
    assert await young_task == "received"

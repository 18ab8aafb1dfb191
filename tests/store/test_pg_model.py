"""Two replicas' accepts, takes, completes and abandons in random interleavings, against a
reference model of the contract's rules (hypothesis): every accepted entry is completed
exactly once; an identity is held by one replica at a time; its entries are handed out,
and completed, in the order they were accepted; a take finds whatever is free."""

from __future__ import annotations

import asyncio
from collections.abc import Coroutine
from dataclasses import dataclass, field
from typing import Any, TypeVar

from hypothesis import settings
from hypothesis import strategies as st
from hypothesis.stateful import (
    RuleBasedStateMachine,
    invariant,
    precondition,
    rule,
    run_state_machine_as_test,
)

from bridge.store.contract import Processed, Taken
from bridge.store.pg import PostgresStore
from tests import factories
from tests.conftest import PostgresTarget
from tests.store.engines import postgres_store

T = TypeVar("T")
REPLICAS = (0, 1)
IDENTITIES = st.integers(min_value=1, max_value=4)
PROMPTLY = 10.0  # a failure detector: a take the model says can succeed returns at once


@dataclass
class Model:
    """Entries by name ("e<n>"), per identity in acceptance order."""

    pending: dict[int, list[str]] = field(default_factory=dict)  # not completed yet
    held: dict[int, dict[int, list[str]]] = field(default_factory=dict)  # replica -> taken
    completed: dict[int, list[str]] = field(default_factory=dict)

    def free(self, replica: int) -> dict[int, list[str]]:
        """What ``replica`` may be handed: identities no other replica holds."""
        others = {i for r, held in self.held.items() if r != replica for i in held}
        return {i: names for i, names in self.pending.items() if names and i not in others}


def test_two_replicas_follow_the_model(pg: PostgresTarget) -> None:
    loop = asyncio.new_event_loop()
    stores = [postgres_store(pg, holder=f"pod-{r}") for r in REPLICAS]
    for store in stores:
        loop.run_until_complete(store.open())

    def run(coro: Coroutine[Any, Any, T]) -> T:
        return loop.run_until_complete(asyncio.wait_for(coro, PROMPTLY))

    class Machine(RuleBasedStateMachine):
        def __init__(self) -> None:
            super().__init__()
            self.model = Model()
            self.taken: dict[int, Taken] = {}
            self.count = 0

        @rule(replica=st.sampled_from(REPLICAS), identity=IDENTITIES)
        def accept(self, replica: int, identity: int) -> None:
            self.count += 1
            name = f"e{self.count}"
            assert run(stores[replica].accept(factories.issue(identity, title=name))) is True
            self.model.pending.setdefault(identity, []).append(name)

        @precondition(lambda self: any(self.model.free(r) for r in REPLICAS if r not in self.taken))
        @rule(replica=st.sampled_from(REPLICAS), limit=st.integers(min_value=1, max_value=5))
        def take(self, replica: int, limit: int) -> None:
            if replica in self.taken or not self.model.free(replica):
                return
            taken = run(stores[replica].take(limit))
            assert 1 <= len(taken.entries) <= limit
            free = self.model.free(replica)
            got: dict[int, list[str]] = {}
            for entry in taken.entries:
                got.setdefault(int(entry.alert.identity.split(":")[1]), []).append(
                    entry.alert.title
                )
            for identity, names in got.items():
                assert identity in free, f"issue:{identity} is held by the other replica"
                assert names == free[identity][: len(names)], "in acceptance order, earliest first"
            ids = [entry.inbox_id for entry in taken.entries]
            assert ids == sorted(ids)
            self.taken[replica] = taken
            self.model.held[replica] = got

        @precondition(lambda self: self.taken)
        @rule(replica=st.sampled_from(REPLICAS))
        def complete(self, replica: int) -> None:
            taken = self.taken.pop(replica, None)
            if taken is None:
                return
            run(stores[replica].complete(taken, [Processed(e.inbox_id, ()) for e in taken.entries]))
            for identity, names in self.model.held.pop(replica).items():
                del self.model.pending[identity][: len(names)]
                self.model.completed.setdefault(identity, []).extend(names)

        @precondition(lambda self: self.taken)
        @rule(replica=st.sampled_from(REPLICAS))
        def abandon(self, replica: int) -> None:
            taken = self.taken.pop(replica, None)
            if taken is None:
                return
            run(stores[replica].abandon(taken))
            self.model.held.pop(replica)

        @invariant()
        def completed_once_in_order(self) -> None:
            accepted = {
                i: [*self.model.completed.get(i, []), *names]
                for i, names in self.model.pending.items()
            }
            for identity, names in self.model.completed.items():
                assert accepted[identity][: len(names)] == names
                assert len(set(names)) == len(names)

        def teardown(self) -> None:
            for replica, taken in self.taken.items():
                run(stores[replica].abandon(taken))
            # Whatever is left is taken and completed, then the inbox is empty.
            while any(self.model.pending.values()):
                taken = run(stores[0].take(100))
                run(stores[0].complete(taken, [Processed(e.inbox_id, ()) for e in taken.entries]))
                for entry in taken.entries:
                    identity = int(entry.alert.identity.split(":")[1])
                    assert self.model.pending[identity].pop(0) == entry.alert.title
            assert loop.run_until_complete(_inbox_rows(stores[0])) == 0

    try:
        run_state_machine_as_test(
            Machine, settings=settings(max_examples=40, stateful_step_count=30, deadline=None)
        )
    finally:
        for store in stores:
            loop.run_until_complete(store.close())
        loop.close()


async def _inbox_rows(store: PostgresStore) -> int:
    async with store._pool.acquire() as conn:
        return int(await conn.fetchval("SELECT count(*) FROM inbox"))

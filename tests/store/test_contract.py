"""The store contract (``bridge/store/contract.py``), from its docstrings, against both
engines: what the pipeline, delivery and the edge may rely on whichever one runs."""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import json
from collections.abc import Sequence
from dataclasses import replace
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any

import pytest

from bridge.alertmanager import PostableAlert, wire_json
from bridge.errors import StoreFull
from bridge.model import Kind, SentryAlert, Severity
from bridge.state import IdentityState
from bridge.store.contract import Failed, Processed, Queued, Store, Taken
from tests import factories
from tests.factories import sizes
from tests.store.engines import ENGINES, TARGETS, Opener, engine, opener
from tests.store.probes import dead_letters
from tests.store.test_spool import until

pytestmark = pytest.mark.anyio

# A failure detector, not a pause: take() returns at once when something is there.
PROMPTLY = 10.0


@pytest.fixture(params=ENGINES)
def open_engine(request: pytest.FixtureRequest, tmp_path: Path) -> Opener:
    return opener(request, request.param, tmp_path)


def digest(text: str) -> bytes:
    return hashlib.sha256(text.encode()).digest()


async def take(store: Store, limit: int = 100) -> Taken:
    return await asyncio.wait_for(store.take(limit), PROMPTLY)


def firing(n: int, now: datetime, *, ends_in: float = 3600, **labels: str) -> PostableAlert:
    return factories.postable(n, start=now, ends_in=ends_in, labels=labels)


def resolve_of(alert: PostableAlert, now: datetime) -> PostableAlert:
    return alert.model_copy(update={"ends_at": now})


def state_of(alert: PostableAlert | None, now: datetime) -> IdentityState:
    return IdentityState(
        alert=alert,
        severity=Severity.HIGH if alert else None,
        environments=("production",),
        firings=(now - timedelta(seconds=5), now),
        posted="abc" if alert else None,
        posted_at=now if alert else None,
    )


async def commit(
    store: Store,
    taken: Taken,
    sends: dict[str, Sequence[PostableAlert]] | None = None,
    states: dict[str, IdentityState | None] | None = None,
) -> None:
    """Complete ``taken``: each identity's sends and new state go with its first entry."""
    sends, states = sends or {}, states or {}
    results, done = [], set()
    for entry in taken.entries:
        identity = entry.alert.identity
        first = identity not in done
        done.add(identity)
        kept: dict[str, tuple[IdentityState, datetime | None]] = {}
        if first and identity in states:
            state = states[identity]
            until = taken.now + timedelta(days=1)
            kept = {identity: (state or IdentityState(), until if state else None)}
        send = sends.get(identity, ()) if first else ()
        results.append(Processed(entry.inbox_id, send, kept))
    await store.complete(taken, results)


async def drain_lane(store: Store, target: str) -> list[Queued]:
    async with store.lane(target) as lane:
        assert lane is not None
        items = await lane.pending(1000)
        if items:
            await lane.advance(items[-1].id)
    return items


async def fire_one(store: Store) -> PostableAlert:
    """Issue 1 accepted, taken and committed firing, its alert queued for every target."""
    await store.accept(factories.issue(1))
    taken = await take(store)
    alert = firing(1, taken.now)
    await commit(
        store, taken, sends={"issue:1": [alert]}, states={"issue:1": state_of(alert, taken.now)}
    )
    return alert


async def fire_all_but_the_last(
    store: Store, count: int
) -> tuple[dict[str, PostableAlert], PostableAlert]:
    """Issues 1 to ``count`` accepted, taken and committed, all firing but the last, which is
    resolved (the two kinds a re-send page holds): the firing alerts by identity, and the
    resolve."""
    for n in range(1, count + 1):
        await store.accept(factories.issue(n))
    taken = await take(store)
    now = taken.now
    active = {f"issue:{n}": firing(n, now) for n in range(1, count)}
    gone = resolve_of(firing(count, now - timedelta(minutes=1)), now - timedelta(seconds=1))
    await commit(
        store,
        taken,
        sends={**{k: [v] for k, v in active.items()}, f"issue:{count}": [gone]},
        states={
            **{k: state_of(v, now) for k, v in active.items()},
            f"issue:{count}": state_of(None, now),
        },
    )
    return active, gone


async def resendable(store: Store, target: str, limit: int = 2) -> list[str]:
    bodies: list[str] = []
    after: Any = None
    while True:
        async with store.lane(target) as lane:
            assert lane is not None
            page = await lane.resend_page(after, limit)
        assert len(page.bodies) <= limit
        bodies.extend(page.bodies)
        if page.after is None:
            return bodies
        after = page.after


def labels(bodies: Sequence[str]) -> list[dict[str, str]]:
    return [json.loads(body)["labels"] for body in bodies]


# --- the edge ---------------------------------------------------------------------------


async def test_the_same_body_is_accepted_once(open_engine: Opener) -> None:
    async with open_engine() as store:
        assert await store.accept(factories.issue(1), digest("one")) is True
        assert await store.accept(factories.issue(1), digest("one")) is False
        assert await store.accept(factories.issue(2), digest("two")) is True
        assert await store.accept(factories.issue(2)) is True, "no digest: never a duplicate"
        assert (await sizes(store)).inbox == 3
        taken = await take(store)
        assert [e.alert.identity for e in taken.entries] == ["issue:1", "issue:2", "issue:2"]
        await store.abandon(taken)


async def test_concurrent_accepts_of_one_body_make_one_entry(open_engine: Opener) -> None:
    async with open_engine() as store:
        added = await asyncio.gather(
            *(store.accept(factories.issue(7), digest("x")) for _ in range(5))
        )
        assert sorted(added) == [False, False, False, False, True]
        assert (await sizes(store)).inbox == 1


async def test_a_body_is_forgotten_after_max_bodies(open_engine: Opener) -> None:
    async with open_engine(max_bodies=3) as store:
        for n in range(5):
            assert await store.accept(factories.issue(n), digest(f"b{n}"))
        assert await store.accept(factories.issue(0), digest("b0")) is True, "forgotten"
        assert await store.accept(factories.issue(4), digest("b4")) is False, "still kept"


async def test_a_body_is_forgotten_after_body_retention(open_engine: Opener) -> None:
    async with open_engine(body_retention=0.0) as store:
        assert await store.accept(factories.issue(1), digest("b"))
        assert await store.accept(factories.issue(1), digest("b")) is True


async def test_a_full_store_refuses_until_every_alertmanager_settled(
    open_engine: Opener,
) -> None:
    """``store.max_queued`` bounds the inbox and the queue of the Alertmanager furthest
    behind; what this replica settles is read again, not counted down (``full``)."""
    async with open_engine(max_queued=2) as store:
        await store.accept(factories.issue(1))
        await store.accept(factories.issue(2))
        assert await store.full()
        with pytest.raises(StoreFull, match="the store is full"):
            await store.accept(factories.issue(3))
        assert (await sizes(store)).inbox == 2
        taken = await take(store)
        now = taken.now
        await commit(store, taken, sends={"issue:1": [firing(1, now)], "issue:2": [firing(2, now)]})
        with pytest.raises(StoreFull):  # queued for Alertmanager: still held
            await store.accept(factories.issue(3))
        await drain_lane(store, TARGETS[0])
        with pytest.raises(StoreFull):  # the other one still needs them
            await store.accept(factories.issue(3))
        await drain_lane(store, TARGETS[1])
        assert not await store.full()
        assert await store.accept(factories.issue(3))


async def test_quarantine_keeps_the_webhook_once(open_engine: Opener) -> None:
    async with open_engine() as store:
        headers = {"sentry-hook-resource": "issue"}
        assert await store.quarantine("unparseable", "bad json", headers, b"{", digest("q"))
        assert not await store.quarantine("unparseable", "bad json", headers, b"{", digest("q"))
        assert not await store.accept(factories.issue(1), digest("q")), "one body space"
        (entry,) = await store.quarantined()
        assert (entry.reason, entry.detail, entry.headers, entry.body) == (
            "unparseable",
            "bad json",
            headers,
            b"{",
        )
        assert entry.alert is None
        assert (await sizes(store)).quarantined == 1


# --- the pipeline -----------------------------------------------------------------------


async def test_take_hands_out_in_arrival_order_with_the_states(open_engine: Opener) -> None:
    async with open_engine() as store:
        for n in (3, 1, 2, 1):
            await store.accept(factories.issue(n, title=f"t{n}"))
        taken = await take(store)
        assert [e.alert.identity for e in taken.entries] == [
            "issue:3",
            "issue:1",
            "issue:2",
            "issue:1",
        ]
        ids = [e.inbox_id for e in taken.entries]
        assert ids == sorted(ids)
        assert taken.states == {}, "nothing known yet"
        now = taken.now
        state = state_of(firing(1, now), now)
        await commit(store, taken, states={"issue:1": state})

        await store.accept(factories.issue(1))
        again = await take(store)
        assert again.states == {"issue:1": state}, "the state round trips"
        assert abs((again.now - now).total_seconds()) < 60
        await commit(store, again, states={"issue:1": None})  # forgotten
        await store.accept(factories.issue(1))
        last = await take(store)
        assert last.states == {}
        await store.abandon(last)


async def test_take_respects_the_limit_and_waits_for_an_entry(open_engine: Opener) -> None:
    async with open_engine() as store:
        waiting = asyncio.ensure_future(store.take(2))
        await asyncio.sleep(0)
        assert not waiting.done()
        for n in range(3):
            await store.accept(factories.issue(n))
        taken = await asyncio.wait_for(waiting, PROMPTLY)
        assert 1 <= len(taken.entries) <= 2
        await commit(store, taken)
        rest = await take(store, 10)
        assert [e.alert.identity for e in rest.entries] == [
            f"issue:{n}" for n in range(len(taken.entries), 3)
        ]
        await commit(store, rest)


async def test_idle_only_while_take_waits_with_nothing_to_claim(open_engine: Opener) -> None:
    """``idle``: the taker's own progress (bridge.compose's watchdog and stop read it)."""
    async with open_engine() as store:
        assert not store.idle()  # no take is looking
        waiting = asyncio.ensure_future(store.take(10))
        await until(store.idle)
        await store.accept(factories.issue(1))
        assert not store.idle()  # something to claim: a wake-up is pending
        taken = await asyncio.wait_for(waiting, PROMPTLY)
        assert not store.idle()  # a batch is out
        await commit(store, taken)
        waiting = asyncio.ensure_future(store.take(10))
        await until(store.idle)
        waiting.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await waiting
        assert not store.idle()


async def test_abandoned_entries_are_handed_out_again_first(open_engine: Opener) -> None:
    async with open_engine() as store:
        await store.accept(factories.issue(1))
        await store.accept(factories.issue(2))
        first = await take(store)
        await store.abandon(first)
        await store.accept(factories.issue(3))
        again = await take(store)
        assert [e.inbox_id for e in again.entries][:2] == [e.inbox_id for e in first.entries]
        assert [e.alert for e in again.entries][:2] == [e.alert for e in first.entries]
        await commit(store, again)
        assert (await sizes(store)).inbox == 0


async def test_failed_entries_go_to_quarantine(open_engine: Opener) -> None:
    async with open_engine() as store:
        good, bad = factories.issue(1), factories.issue(2, title="breaks the pipeline")
        await store.accept(good)
        await store.accept(bad)
        taken = await take(store)
        ok, broken = taken.entries
        await store.complete(
            taken,
            [Processed(ok.inbox_id, [firing(1, taken.now)])],
            [Failed(broken.inbox_id, broken.alert, "ValueError: boom")],
        )
        (entry,) = await store.quarantined()
        assert (entry.reason, entry.detail, entry.body) == (
            "pipeline_error",
            "ValueError: boom",
            b"",
        )
        assert entry.alert is not None
        assert SentryAlert.from_json(entry.alert) == bad
        assert (await sizes(store)).quarantined == 1
        assert (await sizes(store)).inbox == 0
        assert [labels([q.body]) for q in await drain_lane(store, TARGETS[0])] == [
            labels([wire_json(firing(1, taken.now))])
        ]


async def test_release_accepts_the_replayed_alert(open_engine: Opener) -> None:
    async with open_engine() as store:
        await store.quarantine("unparseable", "x", {}, b"{", digest("r"))
        await store.quarantine("unparseable", "y", {}, b"[", digest("s"))
        first, second = await store.quarantined()
        await store.release(first.id, factories.issue(5))
        await store.release(second.id, None)
        assert await store.quarantined() == []
        assert (await sizes(store)).quarantined == 0
        assert not await store.release(first.id, factories.issue(6)), "gone: nothing accepted"
        taken = await take(store)
        assert [e.alert for e in taken.entries] == [factories.issue(5)]
        await commit(store, taken)
        assert (await sizes(store)).inbox == 0


async def test_quarantine_pages_one_entry_and_summary(open_engine: Opener) -> None:
    async with open_engine() as store:
        empty = await store.snapshot(5)
        assert (empty["quarantine_reasons"], empty["quarantine_oldest_at"]) == ({}, None)
        for n, reason in enumerate(("parse_error", "invalid_payload", "invalid_payload")):
            await store.quarantine(reason, f"d{n}", {"request-id": f"r{n}"}, b"{", digest(f"p{n}"))
        every = await store.quarantined()
        assert [q.detail for q in every] == ["d0", "d1", "d2"]
        first_page = await store.quarantined(limit=2)
        assert first_page == every[:2]
        assert await store.quarantined(after=first_page[-1].id, limit=2) == every[2:]
        assert await store.quarantined(every[1].id) == [every[1]]
        assert await store.quarantined(every[-1].id + 100) == []
        snapshot = await store.snapshot(5)
        assert snapshot["quarantine_reasons"] == {"invalid_payload": 2, "parse_error": 1}
        assert snapshot["quarantine_oldest_at"] == pytest.approx(every[0].at, abs=1e-3)


async def test_discard_removes_only_what_it_names_or_all(open_engine: Opener) -> None:
    async with open_engine() as store:
        for n in range(4):
            await store.quarantine("parse_error", f"d{n}", {}, b"{", digest(f"x{n}"))
        a, b, c, d = (q.id for q in await store.quarantined())
        assert await store.discard_quarantined([b, d + 100, b]) == [b], "missing ids: not removed"
        assert [q.id for q in await store.quarantined()] == [a, c, d]
        assert (await sizes(store)).quarantined == 3
        assert await store.discard_quarantined([]) == []
        assert sorted(await store.discard_quarantined(None)) == [a, c, d]
        assert await store.quarantined() == []
        assert (await sizes(store)).quarantined == 0
        assert (await sizes(store)).inbox == 0, "discarding accepts nothing"


# --- delivery ---------------------------------------------------------------------------


async def test_lanes_read_and_settle_each_alertmanagers_queue(open_engine: Opener) -> None:
    async with open_engine() as store:
        for n in (1, 2):
            await store.accept(factories.issue(n))
        taken = await take(store)
        now = taken.now
        for target in TARGETS:
            store.wakeup(target).clear()
        await commit(store, taken, sends={"issue:1": [firing(1, now)], "issue:2": [firing(2, now)]})
        assert all(store.wakeup(target).is_set() for target in TARGETS)
        held = await sizes(store)
        assert (held.queued, held.behind, held.length, held.inbox) == (
            dict.fromkeys(TARGETS, 2),
            2,
            2,
            0,
        )
        assert held.oldest_at is not None
        assert held.oldest_at <= held.at
        assert held.oldest_age == held.at - held.oldest_at

        async with store.lane(TARGETS[0]) as lane:
            assert lane is not None
            items = await lane.pending(1)
            assert [json.loads(q.body)["labels"]["sentry_issue_id"] for q in items] == ["1"]
            assert items[0].body == wire_json(firing(1, now))
            assert abs(items[0].queued_at - taken.entries[0].accepted_at.timestamp()) < 1e-3
            await lane.advance(items[0].id)
        assert (await sizes(store)).queued == {TARGETS[0]: 1, TARGETS[1]: 2}
        rest = await drain_lane(store, TARGETS[0])
        assert [json.loads(q.body)["labels"]["sentry_issue_id"] for q in rest] == ["2"]
        assert await drain_lane(store, TARGETS[0]) == []
        assert len(await drain_lane(store, TARGETS[1])) == 2, "each Alertmanager its own"
        assert (await sizes(store)).behind == 0


async def test_the_queue_keeps_the_order_decided_across_entries(open_engine: Opener) -> None:
    async with open_engine() as store:
        await store.accept(factories.issue(1))
        await store.accept(factories.issue(2))
        taken = await take(store)
        now = taken.now
        old = resolve_of(firing(9, now - timedelta(minutes=1)), now - timedelta(seconds=1))
        sends: dict[str, Sequence[PostableAlert]] = {
            "issue:1": [old, firing(1, now)],
            "issue:2": [firing(2, now)],
        }
        await commit(store, taken, sends=sends)
        for target in TARGETS:
            bodies = [q.body for q in await drain_lane(store, target)]
            assert bodies == [wire_json(a) for a in (old, firing(1, now), firing(2, now))]


async def test_a_forgotten_state_holds_nothing_active(open_engine: Opener) -> None:
    async with open_engine() as store:
        alert = await fire_one(store)
        assert (await sizes(store)).active == 1
        await store.accept(factories.issue(1))
        taken = await take(store)
        assert taken.states["issue:1"].alert == alert
        await commit(store, taken, states={"issue:1": None})  # forgotten
        assert (await sizes(store)).active == 0
        for target in TARGETS:
            assert await resendable(store, target) == []


async def test_a_lane_block_that_raises_commits_nothing(open_engine: Opener) -> None:
    async with open_engine() as store:
        await store.accept(factories.issue(1))
        taken = await take(store)
        await commit(store, taken, sends={"issue:1": [firing(1, taken.now)]})

        async def fail_half_way() -> None:
            async with store.lane(TARGETS[0]) as lane:
                assert lane is not None
                items = await lane.pending(10)
                await lane.advance(items[-1].id)
                raise RuntimeError("the post failed half-way")

        with pytest.raises(RuntimeError):
            await fail_half_way()
        assert len(await drain_lane(store, TARGETS[0])) == 1, "still queued"


async def test_dead_letters_and_their_requeue(open_engine: Opener) -> None:
    async with open_engine() as store:
        for n in (1, 2, 3):
            await store.accept(factories.issue(n))
        taken = await take(store)
        now = taken.now
        old1 = firing(1, now, ends_in=600)
        current1 = firing(1, now, ends_in=3600)  # the same label set, refreshed since
        superseded2 = firing(2, now, environment="staging")
        gone3 = resolve_of(firing(3, now - timedelta(minutes=5)), now - timedelta(seconds=1))
        await commit(
            store,
            taken,
            sends={"issue:1": [old1], "issue:2": [superseded2], "issue:3": [gone3]},
            states={
                "issue:1": state_of(current1, now),
                "issue:2": state_of(firing(2, now, environment="production"), now),
                "issue:3": state_of(None, now),
            },
        )
        async with store.lane(TARGETS[0]) as lane:
            assert lane is not None
            items = await lane.pending(10)
            await lane.advance(items[-1].id, [(q, "HTTP 400: bad label") for q in items])
        letters = await dead_letters(store)
        assert [(t, r) for t, r, _ in letters] == [(TARGETS[0], "HTTP 400: bad label")] * 3
        assert [a["labels"]["sentry_issue_id"] for _, _, a in letters] == ["1", "2", "3"]
        snapshot = await store.snapshot(10)
        assert snapshot["dead_letter_count"] == 3
        assert [d["labels"]["sentry_issue_id"] for d in snapshot["dead_letters"]] == ["3", "2", "1"]

        counts = await store.requeue_dead_letters()
        assert counts == {"requeued": 2, "superseded": 1}
        assert await dead_letters(store) == []
        for target in TARGETS:
            bodies = [q.body for q in await drain_lane(store, target)]
            if target == TARGETS[1]:
                bodies = bodies[3:]  # it had the originals queued still
            requeued = [json.loads(b) for b in bodies]
            assert requeued == [json.loads(wire_json(a)) for a in (current1, gone3)]


async def test_resend_pages_hold_the_resolved_then_the_active(open_engine: Opener) -> None:
    async with open_engine() as store:
        active, gone = await fire_all_but_the_last(store, 5)
        assert (await sizes(store)).active == 4
        assert (await sizes(store)).resendable == 5
        for target in TARGETS:
            bodies = await resendable(store, target, limit=2)
            assert labels(bodies[:1]) == [gone.labels]
            assert sorted(labels(bodies[1:]), key=str) == sorted(
                (a.labels for a in active.values()), key=str
            )
        snapshot = await store.snapshot(2)
        assert [a["identity"] for a in snapshot["active"]] == ["issue:1", "issue:2"]
        assert snapshot["active"][0]["labels"] == active["issue:1"].labels


async def test_resend_pages_name_the_identities_of_their_alerts(open_engine: Opener) -> None:
    """A page carries its alerts' identities (the active ones by their key, a resolve from
    its labels), so a sender can tell whether a fresh alert shares one without parsing the
    page (bridge.resends)."""
    async with open_engine() as store:
        await fire_all_but_the_last(store, 4)
        pages: list[tuple[list[str], frozenset[str | None]]] = []
        after: Any = None
        while True:
            async with store.lane(TARGETS[0]) as lane:
                assert lane is not None
                page = await lane.resend_page(after, 2)
            pages.append(
                ([f"issue:{b['sentry_issue_id']}" for b in labels(page.bodies)], page.identities)
            )
            if page.after is None:
                break
            after = page.after
        assert [bodies[0] for bodies, _ in pages[:1]] == ["issue:4"]
        assert sorted(i for bodies, _ in pages for i in bodies) == [
            f"issue:{n}" for n in range(1, 5)
        ]
        for bodies, identities in pages:
            assert identities == frozenset(bodies)


async def refuse(store: Store, target: str, refused: Sequence[tuple[str, str]]) -> int:
    async with store.lane(target) as lane:
        assert lane is not None
        return await lane.refuse(refused)


async def test_a_refusal_is_the_refusing_alertmanagers_dead_letter_only(
    open_engine: Opener,
) -> None:
    """Issue 15: what one Alertmanager refuses for its content is its dead letter, once;
    its re-sends skip it; the identity and the other Alertmanagers keep everything."""
    async with open_engine() as store:
        for n in (1, 2, 3):
            await store.accept(factories.issue(n))
        taken = await take(store)
        now = taken.now
        a1, a2 = firing(1, now), firing(2, now)
        gone = resolve_of(firing(3, now - timedelta(minutes=1)), now - timedelta(seconds=1))
        await commit(
            store,
            taken,
            sends={"issue:1": [a1], "issue:2": [a2], "issue:3": [gone]},
            states={"issue:1": state_of(a1, now), "issue:2": state_of(a2, now)},
        )
        everything = labels(await resendable(store, TARGETS[0], limit=10))
        pages = await resendable(store, TARGETS[0], limit=10)
        by_id = {json.loads(b)["labels"]["sentry_issue_id"]: b for b in pages}
        refused = [(by_id["1"], "HTTP 400: too long"), (by_id["3"], "HTTP 400: too long")]
        assert await refuse(store, TARGETS[0], refused) == 2
        assert labels(await resendable(store, TARGETS[0])) == [a2.labels]
        assert labels(await resendable(store, TARGETS[1], limit=10)) == everything
        assert len(await dead_letters(store)) == 2
        assert await refuse(store, TARGETS[0], refused) == 0
        assert len(await dead_letters(store)) == 2, "once"
        # The identity keeps its alert: its next decision is computed from it.
        await store.accept(factories.issue(1))
        again = await take(store)
        assert again.states["issue:1"] == state_of(a1, now)
        await store.abandon(again)
        # Requeued (fixed), it is re-sent again.
        await store.requeue_dead_letters()
        assert labels(await resendable(store, TARGETS[0], limit=10)) == everything


async def test_a_refusal_in_a_lane_that_raises_is_not_kept(open_engine: Opener) -> None:
    async with open_engine() as store:
        a1 = await fire_one(store)
        (body,) = await resendable(store, TARGETS[0])

        async def fail_after_refusing() -> None:
            async with store.lane(TARGETS[0]) as lane:
                assert lane is not None
                assert await lane.refuse([(body, "HTTP 400: no")]) == 1
                raise RuntimeError("the sender failed")

        with pytest.raises(RuntimeError):
            await fail_after_refusing()
        assert await dead_letters(store) == []
        assert labels(await resendable(store, TARGETS[0])) == [a1.labels]


async def test_a_refusal_of_the_request_does_not_stop_resends(open_engine: Opener) -> None:
    async with open_engine() as store:
        a1 = await fire_one(store)
        async with store.lane(TARGETS[0]) as lane:
            assert lane is not None
            (item,) = await lane.pending(10)
            await lane.advance(item.id, [(item, "HTTP 401: unauthorized")])
        assert len(await dead_letters(store)) == 1
        assert labels(await resendable(store, TARGETS[0])) == [a1.labels]
        async with store.lane(TARGETS[1]) as lane:
            assert lane is not None
            (item,) = await lane.pending(10)
            await lane.advance(item.id, [(item, "HTTP 422: bad label")])
        assert labels(await resendable(store, TARGETS[0])) == [a1.labels]
        assert await resendable(store, TARGETS[1]) == []


@pytest.mark.parametrize("one_batch", [False, True], ids=["two-batches", "one-batch"])
async def test_firing_again_ends_the_re_sends_of_the_resolve(
    open_engine: Opener, one_batch: bool
) -> None:
    """A resolve starts its label set's re-sends, firing again ends them (re-sending the
    resolve would resolve the alert that fires again), in one batch as in two."""
    async with open_engine() as store:
        for _ in range(2 if one_batch else 1):
            await store.accept(factories.issue(1))
        taken = await take(store)
        now = taken.now
        gone = resolve_of(firing(1, now - timedelta(minutes=1)), now - timedelta(seconds=1))
        again = firing(1, now)
        later = now + timedelta(days=1)
        if one_batch:
            first, second = (e.inbox_id for e in taken.entries)
            await store.complete(
                taken,
                [
                    Processed(first, [gone], {"issue:1": (state_of(None, now), None)}),
                    Processed(second, [again], {"issue:1": (state_of(again, now), later)}),
                ],
            )
        else:
            await commit(store, taken, sends={"issue:1": [gone]}, states={"issue:1": None})
            assert labels(await resendable(store, TARGETS[0])) == [gone.labels]
            await store.accept(factories.issue(1))
            taken = await take(store)
            await commit(
                store,
                taken,
                sends={"issue:1": [again]},
                states={"issue:1": state_of(again, taken.now)},
            )
        assert [
            PostableAlert.model_validate_json(b) for b in await resendable(store, TARGETS[0])
        ] == [again]
        assert (await sizes(store)).resendable == 1


async def test_expire_forgets_ended_alerts_and_old_resolves(open_engine: Opener) -> None:
    async with open_engine() as store:
        for n in (1, 2, 3):
            await store.accept(factories.issue(n))
        taken = await take(store)
        now = taken.now
        ended = firing(1, now - timedelta(hours=2), ends_in=3600)  # endsAt an hour ago
        live = firing(2, now)
        gone = resolve_of(firing(3, now - timedelta(minutes=1)), now - timedelta(seconds=1))
        await commit(
            store,
            taken,
            sends={"issue:2": [live], "issue:3": [gone]},
            states={"issue:1": state_of(ended, now), "issue:2": state_of(live, now)},
        )
        await store.expire(resolved_for=3600)
        assert labels(await resendable(store, TARGETS[0])) == [gone.labels, live.labels]
        assert (await sizes(store)).active == 1
        await store.expire(resolved_for=0)
        assert labels(await resendable(store, TARGETS[0])) == [live.labels]
        assert (await sizes(store)).resendable == 1


async def test_expire_forgets_states_past_their_time(open_engine: Opener) -> None:
    async with open_engine() as store:
        await store.accept(factories.issue(1))
        taken = await take(store)
        entry = taken.entries[0]
        past = taken.now - timedelta(seconds=1)
        state = state_of(None, taken.now)
        await store.complete(taken, [Processed(entry.inbox_id, (), {"issue:1": (state, past)})])
        await store.expire(resolved_for=900)
        await store.accept(factories.issue(1))
        again = await take(store)
        assert again.states == {}
        await store.abandon(again)


# --- operators --------------------------------------------------------------------------


async def test_a_healthy_store(open_engine: Opener) -> None:
    async with open_engine() as store:
        assert store.store_ok()
        assert await store.probe() is True
        assert await store.periodic() is True, "a lone replica runs the periodic jobs"
        held = await sizes(store)
        assert (held.length, held.inbox, held.behind, held.active, held.quarantined) == (0,) * 5
        assert (held.oldest_at, held.oldest_age) == (None, 0.0)
        snapshot = await store.snapshot(10)
        assert (snapshot["active"], snapshot["dead_letters"]) == ([], [])
        assert (snapshot["dead_letter_count"], snapshot["quarantined"]) == (0, 0)


async def test_a_resolve_is_re_sent_as_it_was_queued_whatever_its_text(
    open_engine: Opener,
) -> None:
    """A resolve's re-sends post the very body queued, also with the characters the
    PostgreSQL engine escapes in jsonb (NUL, U+E000): only the active alerts are read back
    from jsonb."""
    async with open_engine() as store:
        await store.accept(factories.issue(1))
        taken = await take(store)
        now = taken.now
        text = {"summary": "bad \x00 \ue000x \ue000\ue001"}
        posted = firing(1, now - timedelta(minutes=1)).model_copy(update={"annotations": text})
        gone = resolve_of(posted, now - timedelta(seconds=1))
        await commit(store, taken, sends={"issue:1": [gone]}, states={"issue:1": None})
        for target in TARGETS:
            assert await resendable(store, target) == [wire_json(gone)]


async def test_the_escape_mark_without_a_nul_reads_back_as_written(open_engine: Opener) -> None:
    """U+E000 is the mark PostgreSQL's jsonb escape uses (bridge.store.pg.codec); a text
    holding it and no NUL reads back exactly, in the state and in the re-sent alert (it
    lost the character after the mark)."""
    async with open_engine() as store:
        await store.accept(factories.issue(1))
        taken = await take(store)
        now = taken.now
        posted = firing(1, now).model_copy(update={"annotations": {"summary": "mark \ue000x"}})
        state = replace(state_of(posted, now), last_event_id="e\ue000y")
        await commit(store, taken, sends={"issue:1": [posted]}, states={"issue:1": state})
        (resent,) = await resendable(store, TARGETS[0])
        assert PostableAlert.model_validate_json(resent) == posted
        await store.accept(factories.issue(1))
        again = await take(store)
        assert again.states == {"issue:1": state}
        await store.abandon(again)


async def test_a_nul_neither_fails_a_batch_nor_is_lost(open_engine: Opener) -> None:
    """PostgreSQL text and jsonb cannot hold NUL; a Sentry title or tag can."""
    async with open_engine() as store:
        alert = factories.issue(1, title="bad \x00 title \ue000", tags=(("k\x00", "v\x00"),))
        await store.accept(alert, digest("nul"))
        taken = await take(store)
        assert [e.alert for e in taken.entries] == [alert]
        now = taken.now
        posted = firing(1, now).model_copy(update={"annotations": {"summary": "bad \x00 \ue000"}})
        state = replace(state_of(posted, now), last_event_id="e\x00", environments=("p\x00",))
        await commit(store, taken, sends={"issue:1": [posted]}, states={"issue:1": state})
        (queued,) = await drain_lane(store, TARGETS[0])
        assert queued.body == wire_json(posted)
        (resent,) = await resendable(store, TARGETS[0])
        assert PostableAlert.model_validate_json(resent) == posted
        await store.accept(factories.issue(1))
        again = await take(store)
        assert again.states == {"issue:1": state}
        await store.complete(again, [], [Failed(again.entries[0].inbox_id, alert, "boom \x00")])
        (entry,) = await store.quarantined()
        assert entry.detail == "boom \x00"
        assert await refuse(store, TARGETS[0], [(resent, "HTTP 400: \x00")]) == 1
        assert await resendable(store, TARGETS[0]) == []
        assert [reason for _, reason, _ in await dead_letters(store)] == ["HTTP 400: \x00"]


async def test_the_newest_dead_letters_and_quarantined_are_kept(open_engine: Opener) -> None:
    async with open_engine() as store:
        engine(store).dead_letters_kept = 2  # every engine has the bound
        engine(store).quarantine_kept = 2
        for n in (1, 2, 3):
            await store.accept(factories.issue(n))
        taken = await take(store)
        await commit(store, taken, sends={f"issue:{n}": [firing(n, taken.now)] for n in (1, 2, 3)})
        async with store.lane(TARGETS[0]) as lane:
            assert lane is not None
            items = await lane.pending(10)
            for item in items:  # one batch each, as a sender settles them
                await lane.advance(item.id, [(item, "HTTP 400: bad")])
        letters = await dead_letters(store)
        assert [a["labels"]["sentry_issue_id"] for _, _, a in letters] == ["2", "3"]
        for n in (1, 2, 3):
            await store.quarantine("unparseable", f"q{n}", {}, b"{", digest(f"q{n}"))
        assert [q.detail for q in await store.quarantined()] == ["q2", "q3"]


# --- escalation (issue 16) ------------------------------------------------------------------


def escalating(alert: PostableAlert, now: datetime, due_in: float, *tiers: str) -> IdentityState:
    """A firing state whose next escalation step is ``due_in`` seconds away, with tiers."""
    fired = tuple(
        alert.model_copy(update={"labels": {**alert.labels, "escalation_tier": t}}) for t in tiers
    )
    return replace(
        state_of(alert, now),
        escalation="p",
        escalation_since=now,
        tiers=fired,
        due_at=now + timedelta(seconds=due_in),
    )


async def test_due_names_the_identities_whose_next_step_is_due(open_engine: Opener) -> None:
    async with open_engine() as store:
        for n in (1, 2, 3, 4):
            await store.accept(factories.issue(n))
        taken = await take(store)
        now = taken.now
        alerts = {n: firing(n, now) for n in (1, 2, 3, 4)}
        await commit(
            store,
            taken,
            states={
                "issue:1": escalating(alerts[1], now, -5),
                "issue:2": escalating(alerts[2], now, 3600),
                "issue:3": state_of(alerts[3], now),  # no policy
                "issue:4": escalating(alerts[4], now, -60),
            },
        )
        due = await store.due(10)
        assert [name for name, _ in due] == ["issue:4", "issue:1"]  # the most overdue first
        assert [at for _, at in due] == [now - timedelta(seconds=60), now - timedelta(seconds=5)]
        assert [name for name, _ in await store.due(1)] == ["issue:4"]
        # A resolved identity has no step due, whatever its state says.
        await store.accept(factories.issue(4))
        again = await take(store)
        await commit(store, again, states={"issue:4": replace(state_of(None, now), due_at=now)})
        assert [name for name, _ in await store.due(10)] == ["issue:1"]


async def test_resends_keep_the_tiers_alive_with_their_alert(open_engine: Opener) -> None:
    async with open_engine() as store:
        await store.accept(factories.issue(1))
        taken = await take(store)
        alert = firing(1, taken.now)
        state = escalating(alert, taken.now, 60, "2", "3")
        await commit(store, taken, states={"issue:1": state})
        for target in TARGETS:
            bodies = await resendable(store, target, limit=10)
            assert labels(bodies) == [alert.labels, *(t.labels for t in state.tiers)]
        # The status page shows the tiers and the next step (sentry-bridge status).
        [shown] = (await store.snapshot(10))["active"]
        assert shown["tiers"] == 2
        assert state.due_at is not None
        assert shown["next_step_at"] == pytest.approx(state.due_at.timestamp())


# --- the reconciler's read (issue 16) ---------------------------------------------------


async def test_the_status_page_says_when_sentry_last_said_escalating(open_engine: Opener) -> None:
    async with open_engine() as store:
        for n in (1, 2):
            await store.accept(factories.issue(n))
        taken = await take(store)
        told = replace(state_of(firing(1, taken.now), taken.now), sentry_escalating=True)
        states: dict[str, IdentityState | None] = {
            "issue:1": told,
            "issue:2": state_of(firing(2, taken.now), taken.now),
        }
        await commit(store, taken, states=states)
        shown = {
            a["identity"]: a["sentry_escalating"] for a in (await store.snapshot(10))["active"]
        }
        assert shown == {"issue:1": True, "issue:2": False}


async def test_issues_pages_the_issue_states_in_byte_order(open_engine: Opener) -> None:
    async with open_engine() as store:
        names = ["issue:10", "issue:9", "issue:100", "metric_alert:1"]
        for name in names:
            kind = Kind.METRIC_ALERT if name.startswith("metric") else Kind.ISSUE
            await store.accept(factories.sentry_alert(identity=name, kind=kind))
        taken = await take(store)
        alert = firing(1, taken.now)
        await commit(store, taken, states={name: state_of(alert, taken.now) for name in names})
        first = await store.issues(None, 2)
        rest = await store.issues(first[-1][0], 2)
        assert [name for name, _ in first + rest] == ["issue:10", "issue:100", "issue:9"]
        assert first[0][1] == state_of(alert, taken.now)
        assert await store.issues(rest[-1][0], 2) == []

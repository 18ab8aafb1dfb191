"""Delivery to Alertmanager in-process: two fake Alertmanagers behind an
``httpx.MockTransport``, a real store in tmp_path, and a fake clock whose
``sleep`` moves time instead of waiting."""

from __future__ import annotations

import asyncio
import base64
import contextlib
import json
import re
from collections import defaultdict
from collections.abc import AsyncIterator, Awaitable, Callable, Sequence
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any, TypeVar

import httpx
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from prometheus_client import CollectorRegistry

from bridge import alertmanager, config, posting, resends
from bridge import delivery as delivery_module
from bridge.alertmanager import PostableAlert, target_name
from bridge.delivery import Delivery
from bridge.errors import ConfigError
from bridge.metrics import Metrics
from bridge.model import Severity
from bridge.state import IdentityState
from bridge.store.contract import Lane
from bridge.store.sqlite import SqliteStore
from bridge.store.sqlite import queue as sqlite_queue
from tests.clock import Clock
from tests.conftest import examples
from tests.factories import START, commit, held, postable, sizes, stored_state
from tests.store.probes import dead_letters

pytestmark = pytest.mark.anyio

T = TypeVar("T")

URL_A, URL_B = "http://am-a:9093", "http://am-b:9093"
A, B = "am-a:9093", "am-b:9093"


Step = int | type[httpx.TransportError] | httpx.Response | Callable[[list[dict[str, Any]]], int]


class FakeAlertmanagers:
    """Answers per host: scripted steps first, then ``default``; records what it accepted."""

    def __init__(self) -> None:
        self.script: dict[str, list[Step]] = defaultdict(list)
        self.default: dict[str, Step] = {}
        self.requests: dict[str, list[httpx.Request]] = defaultdict(list)
        self.batches: dict[str, list[list[dict[str, Any]]]] = defaultdict(list)
        self.accepted: dict[str, list[dict[str, Any]]] = defaultdict(list)
        self.meanwhile: Callable[[str, list[dict[str, Any]]], Awaitable[None]] | None = None

    async def __call__(self, request: httpx.Request) -> httpx.Response:
        host = request.url.host
        assert request.method == "POST"
        assert request.url.path == "/api/v2/alerts"
        assert request.headers["content-type"] == "application/json"
        alerts = json.loads(request.content)
        self.requests[host].append(request)
        self.batches[host].append(alerts)
        if self.meanwhile is not None:
            # What happens elsewhere while this request is in flight (the pipeline).
            await self.meanwhile(host, alerts)
        step = self.script[host].pop(0) if self.script[host] else self.default.get(host, 200)
        if isinstance(step, type):
            raise step("injected", request=request)
        if isinstance(step, httpx.Response):
            response = step
        else:
            status = step if isinstance(step, int) else step(alerts)
            response = httpx.Response(status, json="injected" if status >= 300 else None)
        if response.is_success:
            self.accepted[host].extend(alerts)
        return response

    def names(self, host: str) -> list[str]:
        return [a["labels"]["sentry_issue_id"] for a in self.accepted[host]]


class Env:
    def __init__(self, tmp_path: Path) -> None:
        self.tmp_path = tmp_path
        self.clock = Clock()
        self.metrics = Metrics(CollectorRegistry())
        self.ams = FakeAlertmanagers()
        self.store: SqliteStore | None = None
        self.delivery: Delivery | None = None

    async def start(self, **settings: Any) -> Delivery:
        cfg = config.Alertmanager(**{"urls": [URL_A, URL_B], **settings})
        self.store = SqliteStore(
            self.tmp_path,
            [target_name(u) for u in cfg.urls],
            max_queued=10_000,
            metrics=self.metrics,
            clock=self.clock,
        )
        await self.store.open()
        self.delivery = Delivery(
            self.store,
            cfg,
            self.metrics,
            transport=httpx.MockTransport(self.ams),
            clock=self.clock,
            rng=lambda: 1.0,
            sleep=self.clock.sleep,
        )
        return self.delivery

    async def enqueue(
        self, alerts: Sequence[PostableAlert], active: dict[str, PostableAlert | None] | None = None
    ) -> None:
        """Queue ``alerts``, the identities of ``active`` holding those alerts active."""
        assert self.store is not None
        await commit(self.store, alerts, held(active or {}))

    def sample(self, name: str, **labels: str) -> float:
        value = self.metrics.registry.get_sample_value(f"sentry_bridge_{name}", labels)
        return 0.0 if value is None else value

    async def stop(self) -> None:
        if self.delivery:
            await self.delivery.aclose()
        if self.store:
            await self.store.close()


@pytest.fixture
async def env(tmp_path: Path) -> AsyncIterator[Env]:
    environment = Env(tmp_path)
    yield environment
    await environment.stop()


async def until(predicate: Callable[[], bool], what: str) -> None:
    """Let the tasks run (no real sleeping) until ``predicate`` holds."""

    async def poll() -> None:
        while not predicate():
            await asyncio.sleep(0)

    try:
        await asyncio.wait_for(poll(), 5)
    except TimeoutError:
        raise AssertionError(f"never happened: {what}") from None


async def running(coro: Awaitable[T]) -> asyncio.Task[T]:
    task = asyncio.ensure_future(coro)
    await asyncio.sleep(0)
    return task


async def cancel(task: asyncio.Task[Any]) -> None:
    task.cancel()
    await asyncio.gather(task, return_exceptions=True)


# --- batching and independence ----------------------------------------------------------


async def test_batches_of_batch_size_in_order(env: Env) -> None:
    delivery = await env.start(batch_size=3)
    await env.enqueue([postable(n) for n in range(7)])
    await delivery.deliver(A)
    assert [len(b) for b in env.ams.batches["am-a"]] == [3, 3, 1]
    assert env.ams.names("am-a") == [str(n) for n in range(7)]
    assert env.ams.batches["am-b"] == []  # each Alertmanager has its own sender
    assert env.sample("alertmanager_alerts_sent_total", alertmanager=A) == 7
    assert env.sample("alertmanager_batch_size_alerts_count") == 3
    assert env.sample("alertmanager_request_duration_seconds_count", alertmanager=A) == 3


async def test_a_short_batch_ends_delivery_without_reading_the_queue_again(
    env: Env, monkeypatch: pytest.MonkeyPatch
) -> None:
    """At a steady rate each webhook is a batch of its own: after a batch shorter than
    batch_size, with no wake-up since it was read, the queue is known empty and not read
    again (issue 15: one store round trip per webhook less). Something queued while the
    batch was in flight sets the wake-up, and is delivered in the same call."""
    reads: list[int] = []
    pending = sqlite_queue.Lane.pending

    async def counted(lane: sqlite_queue.Lane, limit: int) -> list[Any]:
        found = await pending(lane, limit)
        reads.append(len(found))
        return found

    monkeypatch.setattr(sqlite_queue.Lane, "pending", counted)
    delivery = await env.start(batch_size=4)
    await env.enqueue([postable(1)])
    assert await delivery.deliver(A)
    assert reads == [1]

    async def meanwhile(host: str, batch: list[dict[str, Any]]) -> None:
        if issue_ids(batch) == ["2"]:
            await env.enqueue([postable(3)])

    env.ams.meanwhile = meanwhile
    reads.clear()
    await env.enqueue([postable(2)])
    assert await delivery.deliver(A)
    assert reads == [1, 1]
    assert env.ams.names("am-a") == ["1", "2", "3"]


async def test_one_alertmanager_down_does_not_hold_up_the_other(env: Env) -> None:
    delivery = await env.start()
    env.ams.default["am-a"] = 503
    await env.enqueue([postable(n) for n in range(5)])

    stuck = await running(delivery.deliver(A))
    await delivery.deliver(B)
    assert env.ams.names("am-b") == ["0", "1", "2", "3", "4"]  # all, once, in order
    assert len(env.ams.requests["am-b"]) == 1

    await until(lambda: len(env.ams.requests["am-a"]) >= 3, "am-a retried")
    assert not stuck.done()
    assert env.ams.accepted["am-a"] == []
    assert env.store is not None
    assert (await sizes(env.store)).behind == 5  # am-a still needs them

    env.ams.default["am-a"] = 200
    await asyncio.wait_for(stuck, 5)
    assert env.ams.names("am-a") == ["0", "1", "2", "3", "4"]
    assert env.ams.names("am-b") == ["0", "1", "2", "3", "4"]  # nothing sent twice
    assert (await sizes(env.store)).behind == 0


async def test_run_delivers_to_every_alertmanager_and_drains(env: Env) -> None:
    delivery = await env.start()
    task = await running(delivery.run())
    try:
        await env.enqueue([postable(1), postable(2)])
        assert await delivery.drain(5)
        assert env.ams.names("am-a") == env.ams.names("am-b") == ["1", "2"]
    finally:
        await cancel(task)


async def test_drain_reports_what_is_left(env: Env) -> None:
    delivery = await env.start()
    assert await delivery.drain(0)
    await env.enqueue([postable(1)])
    assert not await delivery.drain(0)  # no sender ran: it stays on disk


async def test_leftovers_are_delivered_after_a_restart(env: Env, tmp_path: Path) -> None:
    delivery = await env.start()
    await env.enqueue([postable(1), postable(2)])
    await delivery.deliver(B)
    await env.stop()  # am-a never got them

    fresh = Env(tmp_path)
    try:
        delivery = await fresh.start()
        task = await running(delivery.run())
        await until(lambda: len(fresh.ams.accepted["am-a"]) == 2, "leftovers delivered")
        await cancel(task)
        assert fresh.ams.names("am-a") == ["1", "2"]
        assert fresh.ams.accepted["am-b"] == []  # it had them already
    finally:
        await fresh.stop()


# --- retries ----------------------------------------------------------------------------


async def test_retries_what_can_succeed_with_exponential_backoff(env: Env) -> None:
    delivery = await env.start(backoff_initial=0.5, backoff_max=3)
    env.ams.script["am-a"] = [
        500,
        httpx.Response(429, headers={"Retry-After": "2"}),
        httpx.ConnectError,
        httpx.ReadTimeout,
        httpx.RemoteProtocolError,
        502,
        200,
    ]
    await env.enqueue([postable(1)])
    await delivery.deliver(A)
    assert env.ams.names("am-a") == ["1"]
    # rng() == 1.0 means no jitter reduction; 429's Retry-After raises the delay to 2;
    # the cap is backoff_max.
    assert env.clock.sleeps == [0.5, 2.0, 2.0, 3.0, 3.0, 3.0]
    for reason, count in [
        ("status_5xx", 2),
        ("status_429", 1),
        ("connect", 1),
        ("timeout", 1),
        ("other", 1),
        ("status_4xx", 0),
    ]:
        assert env.sample("alertmanager_requests_failed_total", alertmanager=A, reason=reason) == (
            count
        ), reason
    assert env.sample("alertmanager_requests_total", alertmanager=A) == 7


async def test_backoff_is_jittered_and_resets_after_success(env: Env) -> None:
    delivery = await env.start(backoff_initial=1, backoff_max=30)
    delivery.rng = lambda: 0.0  # the lower end: half the delay
    env.ams.script["am-a"] = [500, 500, 200, 500, 200]
    await env.enqueue([postable(1)])
    await env.enqueue([postable(2)])
    await delivery.deliver(A)  # batch 1: two failures; batch 2 starts from the beginning
    assert env.clock.sleeps == [0.5, 1.0]
    await env.enqueue([postable(3)])
    await delivery.deliver(A)
    assert env.clock.sleeps == [0.5, 1.0, 0.5]


@pytest.mark.parametrize("status", [401, 403, 404])
async def test_other_4xx_are_not_retried(env: Env, status: int) -> None:
    delivery = await env.start()
    env.ams.default["am-a"] = status
    await env.enqueue([postable(n) for n in range(4)])
    await delivery.deliver(A)
    assert len(env.ams.requests["am-a"]) == 1  # neither retried nor split
    assert env.clock.sleeps == []
    assert env.sample("alertmanager_alerts_dropped_total", alertmanager=A, reason="rejected") == 4
    assert env.store is not None
    dead = await dead_letters(env.store)
    assert [(t, r.split(":")[0]) for t, r, _ in dead] == [(A, f"HTTP {status}")] * 4


# --- bad alerts ---------------------------------------------------------------------------


def reject_bad(alerts: list[dict[str, Any]]) -> int:
    return 400 if any(a["labels"]["sentry_issue_id"] == "bad" for a in alerts) else 200


@pytest.mark.parametrize("position", [0, 4, 9])
async def test_a_400_batch_isolates_the_bad_alert(env: Env, position: int) -> None:
    delivery = await env.start()
    env.ams.default["am-a"] = reject_bad
    alerts = [postable(n) for n in range(9)]
    alerts.insert(position, postable("bad"))
    await env.enqueue(alerts)
    await delivery.deliver(A)

    assert env.ams.names("am-a") == [str(n) for n in range(9)]  # every good one, in order
    assert len(env.ams.requests["am-a"]) <= 2 * 4 + 1  # bisection, not one by one
    assert env.store is not None
    [(target, reason, alert)] = await dead_letters(env.store)
    assert (target, alert) == (A, postable("bad").wire())
    assert reason.startswith("HTTP 400")
    assert env.sample("dead_letters_total") == 1
    assert env.sample("alertmanager_alerts_dropped_total", alertmanager=A, reason="rejected") == 1
    assert (await sizes(env.store)).behind == 10  # am-b has not been sent anything yet


async def test_alerts_alertmanager_would_refuse_are_never_sent(env: Env) -> None:
    delivery = await env.start()
    backwards = postable("backwards").model_copy(update={"ends_at": START - timedelta(hours=1)})
    naive = postable("naive").model_copy(update={"starts_at": datetime(2024, 5, 1, 11, 0)})
    await env.enqueue([postable(1), backwards, naive, postable(2)])
    await delivery.deliver(A)
    assert env.ams.names("am-a") == ["1", "2"]
    assert len(env.ams.requests["am-a"]) == 1
    assert env.store is not None
    reasons = [reason for _, reason, _ in await dead_letters(env.store)]
    assert reasons == ["invalid: endsAt is before startsAt", "invalid: startsAt has no time zone"]
    assert env.sample("alertmanager_alerts_dropped_total", alertmanager=A, reason="invalid") == 2


async def test_a_retried_batch_is_validated_once(env: Env, monkeypatch: pytest.MonkeyPatch) -> None:
    """Through an outage the same batch is posted again and again; its alerts are checked
    on the first attempt only (per Alertmanager), and the invalid one is still refused."""
    checked: list[str] = []
    real_check = alertmanager.check_wire

    def counting(body: str) -> str | None:
        checked.append(body)
        return real_check(body)

    monkeypatch.setattr(delivery_module, "check_wire", counting)
    delivery = await env.start()
    backwards = postable("backwards").model_copy(update={"ends_at": START - timedelta(hours=1)})
    env.ams.script["am-a"] = [500, 503, httpx.ConnectError, 200]
    await env.enqueue([postable(1), backwards, postable(2)])
    await delivery.deliver(A)
    assert env.ams.names("am-a") == ["1", "2"]
    assert len(env.ams.requests["am-a"]) == 4
    assert len(checked) == 3
    # Refused once: one dead letter, counted once, however many attempts the batch took.
    assert env.store is not None
    assert [reason for _, reason, _ in await dead_letters(env.store)] == [
        "invalid: endsAt is before startsAt"
    ]
    assert env.sample("alertmanager_alerts_dropped_total", alertmanager=A, reason="invalid") == 1
    await env.enqueue([postable(3)])
    await delivery.deliver(A)
    assert len(checked) == 4  # a new alert is checked
    await delivery.deliver(B)
    assert len(checked) == 4 + 4  # the other Alertmanager checks for itself
    assert env.ams.names("am-b") == ["1", "2", "3"]


async def test_gives_up_after_max_age(env: Env) -> None:
    delivery = await env.start(max_age=60, backoff_initial=1, backoff_max=10)
    env.ams.default["am-a"] = 503
    await env.enqueue([postable(1), postable(2)])
    await delivery.deliver(A)  # returns: nothing left it may still send
    assert 60 <= sum(env.clock.sleeps) < 70
    assert env.ams.accepted["am-a"] == []
    assert env.sample("alertmanager_alerts_dropped_total", alertmanager=A, reason="max_age") == 2
    assert env.store is not None
    assert await dead_letters(env.store) == []  # given up on, not rejected
    await delivery.deliver(B)
    assert (await sizes(env.store)).behind == 0


# --- draining -----------------------------------------------------------------------------


class Parked:
    """A sleep that never ends by itself (the fake clock stands still): a sender in a
    backoff stays there until drain() cuts it short."""

    def __init__(self) -> None:
        self.asleep: list[float] = []  # the durations of the sleeps under way

    async def __call__(self, seconds: float) -> None:
        self.asleep.append(seconds)
        try:
            await asyncio.Event().wait()
        finally:
            self.asleep.remove(seconds)


async def parked_run(env: Env) -> tuple[Delivery, Parked, asyncio.Task[None]]:
    # Backoffs of 1 s then 2 s; the idle wait for the next re-send is an hour.
    delivery = await env.start(backoff_initial=1, backoff_max=2, resend_interval=3600)
    delivery.sleep = parked = Parked()
    return delivery, parked, await running(delivery.run())


async def test_drain_cuts_a_backoff_short(env: Env) -> None:
    delivery, parked, task = await parked_run(env)
    try:
        env.ams.script["am-a"] = [503]  # then 200
        await env.enqueue([postable(1)])
        await until(lambda: 1.0 in parked.asleep, "am-a backing off")
        # The healthy one is not held up by the other's backoff (its own task, its own pace).
        await until(lambda: env.ams.names("am-b") == ["1"], "am-b delivered")

        # Far less than the drain budget: the backoff did not run its course.
        assert await asyncio.wait_for(delivery.drain(60), 5)
        assert env.ams.names("am-a") == ["1"]
        assert len(env.ams.requests["am-a"]) == 2
        assert env.clock() == START  # no (fake) time passed
    finally:
        await cancel(task)


async def test_drain_wakes_a_backoff_once_and_leaves_the_rest_on_disk(env: Env) -> None:
    delivery, parked, task = await parked_run(env)
    try:
        env.ams.default["am-a"] = 503
        await env.enqueue([postable(1)])
        await until(lambda: 1.0 in parked.asleep, "am-a backing off")
        assert len(env.ams.requests["am-a"]) == 1

        assert not await delivery.drain(0)  # the budget is spent, the wake-up is given
        await until(lambda: 2.0 in parked.asleep, "am-a retried and backing off again")
        for _ in range(50):
            await asyncio.sleep(0)
        assert len(env.ams.requests["am-a"]) == 2  # one retry, not a loop until the deadline
        assert 2.0 in parked.asleep
        assert env.store is not None
        assert (await sizes(env.store)).behind == 1
    finally:
        await cancel(task)


# --- re-sending ---------------------------------------------------------------------------


async def test_resend_active_with_original_times_and_resolved_for_a_while(env: Env) -> None:
    delivery = await env.start(resolved_resend=900)
    firing = postable(1, ends_in=3600)
    other = postable(2, ends_in=3600)
    await env.enqueue([firing, other], {"issue:1": firing, "issue:2": other})
    env.clock.advance(60)
    resolved = other.model_copy(update={"ends_at": env.clock()})
    await env.enqueue([resolved], {"issue:2": None})
    await delivery.deliver(A)
    env.ams.accepted.clear()

    env.clock.advance(600)
    await delivery.resend(A)
    sent = {a["labels"]["sentry_issue_id"]: a for a in env.ams.accepted["am-a"]}
    assert sent == {"1": firing.wire(), "2": resolved.wire()}  # times untouched

    env.clock.advance(300)  # resolved 900 s ago: Prometheus stops after 15 minutes too
    env.ams.accepted.clear()
    await delivery.resend(A)
    assert env.ams.names("am-a") == ["1"]

    env.clock.advance(3000)  # past the firing alert's endsAt: expired in Alertmanager too
    requests = len(env.ams.requests["am-a"])
    await delivery.resend(A)
    assert len(env.ams.requests["am-a"]) == requests
    assert env.store is not None
    assert (await sizes(env.store)).active == 0


async def test_resend_failure_waits_for_the_next_round(env: Env) -> None:
    delivery = await env.start()
    await env.enqueue([postable(1)], {"issue:1": postable(1)})
    env.ams.default["am-a"] = 503
    await delivery.resend(A)
    assert env.clock.sleeps == []  # no retry loop for re-sends
    assert len(env.ams.requests["am-a"]) == 1


def active_set(alerts: Sequence[PostableAlert]) -> dict[str, PostableAlert | None]:
    return {f"issue:{a.labels['sentry_issue_id']}": a for a in alerts}


async def test_re_send_pages_hold_at_most_resend_page_alerts(env: Env) -> None:
    """A fresh alert queued while a page is posted waits for that post, so pages stay small
    whatever batch_size is (issue 15: 202-to-visible with 100,000 alerts active); the round
    still re-sends every active alert, once."""
    delivery = await env.start(batch_size=256)
    alerts = [postable(n) for n in range(resends.RESEND_PAGE + 10)]
    await env.enqueue(alerts, active_set(alerts))
    await delivery.deliver(A)
    assert [len(b) for b in env.ams.batches["am-a"]] == [len(alerts)]  # the queue: batch_size
    env.ams.batches.clear()
    env.ams.accepted.clear()
    await delivery.resend(A)
    assert [len(b) for b in env.ams.batches["am-a"]] == [resends.RESEND_PAGE, 10]
    assert sorted(env.ams.names("am-a"), key=int) == [str(n) for n in range(len(alerts))]


@pytest.mark.parametrize("position", [0, 5, 9])
async def test_a_refused_resend_page_is_split_and_the_refused_alert_not_resent_to_it(
    env: Env, position: int
) -> None:
    """An alert Alertmanager accepted once (or an older bridge stored) and now refuses:
    the re-send page is split like a first delivery, the neighbours get through, and the
    refused one is that Alertmanager's dead letter, once, not re-sent to it again; it stays
    active, and the other Alertmanager still gets it (issue 15)."""
    delivery = await env.start(batch_size=256)
    alerts = [postable(n) for n in range(9)]
    alerts.insert(position, postable("bad"))
    await env.enqueue(alerts, active_set(alerts))
    await delivery.deliver(A)  # accepted at the time
    assert env.store is not None
    assert (await sizes(env.store)).active == 10
    env.ams.default["am-a"] = lambda batch: 422 if reject_bad(batch) == 400 else 200
    env.ams.accepted.clear()
    requests = len(env.ams.requests["am-a"])

    await delivery.resend(A)
    assert sorted(env.ams.names("am-a"), key=int) == [str(n) for n in range(9)]
    assert len(env.ams.requests["am-a"]) - requests <= 2 * 4 + 1  # bisection
    [(target, reason, alert)] = await dead_letters(env.store)
    assert (target, alert) == (A, postable("bad").wire())
    assert reason.startswith("HTTP 422")
    assert (await sizes(env.store)).active == 10
    assert env.sample("dead_letters_total") == 1
    assert env.sample("alertmanager_alerts_dropped_total", alertmanager=A, reason="rejected") == 1

    # The next round posts one page, accepted whole; nothing is dead-lettered again.
    env.ams.accepted.clear()
    requests = len(env.ams.requests["am-a"])
    await delivery.resend(A)
    assert len(env.ams.requests["am-a"]) - requests == 1
    assert sorted(env.ams.names("am-a"), key=int) == [str(n) for n in range(9)]
    # The other Alertmanager's round posts it: one Alertmanager's refusal is its own.
    await delivery.deliver(B)
    env.ams.accepted.clear()
    await delivery.resend(B)
    assert "bad" in env.ams.names("am-b")
    assert len(await dead_letters(env.store)) == 1


async def test_an_alert_refused_on_first_delivery_is_not_resent(env: Env) -> None:
    delivery = await env.start()
    env.ams.default["am-a"] = reject_bad
    alerts = [postable(1), postable("bad"), postable(2)]
    await env.enqueue(alerts, active_set(alerts))
    await delivery.deliver(A)
    assert env.store is not None
    assert (await sizes(env.store)).active == 3
    env.ams.accepted.clear()
    requests = len(env.ams.requests["am-a"])
    await delivery.resend(A)
    assert len(env.ams.requests["am-a"]) - requests == 1
    assert env.ams.names("am-a") == ["1", "2"]
    assert len(await dead_letters(env.store)) == 1  # once, from the first delivery


async def test_a_refused_alert_is_still_held_by_its_state(env: Env) -> None:
    """One Alertmanager's refusal changes no state (issue 15): the other Alertmanagers
    hold the alert, and the next resolve or re-fire must be computed from it."""
    delivery = await env.start()
    env.ams.default["am-a"] = reject_bad
    alerts = [postable(1), postable("bad")]
    until = START + timedelta(days=1)
    kept = {
        f"issue:{a.labels['sentry_issue_id']}": IdentityState(
            alert=a, severity=Severity.HIGH, posted="f", posted_at=START, firings=(START,)
        )
        for a in alerts
    }
    assert env.store is not None
    await commit(env.store, alerts, {identity: (state, until) for identity, state in kept.items()})
    await delivery.deliver(A)

    assert await stored_state(env.store, "issue:bad") == kept["issue:bad"]
    assert await stored_state(env.store, "issue:1") == kept["issue:1"]


async def test_an_invalid_alert_is_not_resent(env: Env) -> None:
    delivery = await env.start()
    bad = postable("bad", generator_url="not a uri")
    await env.enqueue([postable(1), bad], active_set([postable(1), bad]))
    await delivery.deliver(A)
    assert env.store is not None
    [(_, reason, _)] = await dead_letters(env.store)
    assert reason == "invalid: generatorURL is not an absolute http(s) URI"
    assert (await sizes(env.store)).active == 2
    env.ams.accepted.clear()
    await delivery.resend(A)
    assert env.ams.names("am-a") == ["1"]


@pytest.mark.parametrize("status", [401, 403, 404])
async def test_a_resend_refused_for_the_request_forgets_nothing(env: Env, status: int) -> None:
    delivery = await env.start()
    alerts = [postable(1), postable(2)]
    await env.enqueue(alerts, active_set(alerts))
    await delivery.deliver(A)
    env.ams.default["am-a"] = status
    requests = len(env.ams.requests["am-a"])
    await delivery.resend(A)
    assert len(env.ams.requests["am-a"]) - requests == 1  # not split: it is not the alerts
    assert env.store is not None
    assert (await sizes(env.store)).active == 2
    assert await dead_letters(env.store) == []


async def test_run_resends_at_start_and_every_interval(env: Env) -> None:
    delivery = await env.start(resend_interval=60)
    assert env.store is not None
    await env.enqueue([postable(1)], {"issue:1": postable(1)})
    await delivery.deliver(A)
    await delivery.deliver(B)
    env.ams.accepted.clear()

    # Read before the run starts: under load the first re-send may be seen only after the
    # fake clock moved on, so a time read then would be late.
    started = env.clock()
    task = await running(delivery.run())
    try:
        # A restarted (or newly added) Alertmanager gets the active alerts at once...
        await until(lambda: len(env.ams.accepted["am-a"]) >= 1, "re-sent on start")
        # ...and again every resend_interval of (fake) time.
        await until(lambda: len(env.ams.accepted["am-a"]) >= 3, "re-sent periodically")
    finally:
        await cancel(task)
    assert env.clock() - started >= timedelta(seconds=120)
    assert all(a == postable(1).wire() for a in env.ams.accepted["am-a"])


# --- re-sends and fresh alerts share the lane -------------------------------------------------


def issue_ids(batch: list[dict[str, Any]]) -> list[str]:
    return [a["labels"]["sentry_issue_id"] for a in batch]


async def many_pages(env: Env, pages: int) -> tuple[Delivery, list[PostableAlert]]:
    """``pages`` re-send pages of two active alerts each, delivered once already."""
    delivery = await env.start(batch_size=2)
    alerts = [postable(n) for n in range(2 * pages)]
    await env.enqueue(alerts, active_set(alerts))
    await delivery.deliver(A)
    env.ams.batches.clear()
    env.ams.accepted.clear()
    return delivery, alerts


async def test_a_fresh_alert_queued_during_a_re_send_round_is_posted_before_it_ends(
    env: Env,
) -> None:
    delivery, _ = await many_pages(env, pages=5)
    fresh = postable("fresh")

    async def meanwhile(host: str, batch: list[dict[str, Any]]) -> None:
        if issue_ids(batch) == ["0", "1"]:  # the round's first page is in flight
            assert env.store is not None
            await env.enqueue([fresh], {"issue:fresh": fresh})

    env.ams.meanwhile = meanwhile
    await delivery.resend(A)
    batches = [issue_ids(b) for b in env.ams.batches["am-a"]]
    # Posted right after the page in flight, four pages before the round ends (the
    # round then re-sends it too, as the active alert it now is).
    assert batches == [
        ["0", "1"],
        ["fresh"],
        ["2", "3"],
        ["4", "5"],
        ["6", "7"],
        ["8", "9"],
        ["fresh"],
    ]


async def test_a_steady_stream_of_fresh_alerts_does_not_starve_the_round(env: Env) -> None:
    """A fresh alert arrives during every post (a steady rate): each page still goes out
    after the fresh batch queued before it, not once the stream pauses (issue 15: at 200
    webhooks/s the queue never read empty after a post, and a round crawled)."""
    delivery, _ = await many_pages(env, pages=5)
    fresh = [postable(f"f{n}") for n in range(30)]

    async def meanwhile(host: str, batch: list[dict[str, Any]]) -> None:
        if fresh:
            alert = fresh.pop(0)
            await env.enqueue([alert], {f"issue:{alert.labels['sentry_issue_id']}": alert})

    env.ams.meanwhile = meanwhile
    await delivery.resend(A)
    batches = [issue_ids(b) for b in env.ams.batches["am-a"]]
    pages = [b for b in batches if not b[0].startswith("f")]
    assert pages[:5] == [["0", "1"], ["2", "3"], ["4", "5"], ["6", "7"], ["8", "9"]]
    # Each page after the first waits for what the posts before it let in (a batch or
    # two), not for the stream to end.
    assert batches.index(["8", "9"]) < 3 * 5  # draining until empty first: 34


@pytest.mark.parametrize("between", ["fresh", "resolve"])
async def test_an_alert_queued_while_a_page_is_read_goes_first_and_never_overtakes_it(
    env: Env, monkeypatch: pytest.MonkeyPatch, between: str
) -> None:
    """An alert queued between the queue's reads around a page's is posted at once, before
    the page; when it is of an identity on the page (a resolve of issue 1 while the page
    holding it is read), the page is read again after it, so the stale firing copy is not
    posted after the resolve."""
    delivery, alerts = await many_pages(env, pages=2)
    read = sqlite_queue.Lane.resend_page
    queued: list[PostableAlert] = []

    async def racing(lane: sqlite_queue.Lane, after: Any, limit: int) -> Any:
        page = await read(lane, after, limit)
        if not queued:
            if between == "fresh":
                alert, state = postable("fresh"), postable("fresh")
            else:
                alert, state = alerts[1].model_copy(update={"ends_at": env.clock()}), None
            queued.append(alert)
            await env.enqueue([alert], {f"issue:{alert.labels['sentry_issue_id']}": state})
        return page

    monkeypatch.setattr(sqlite_queue.Lane, "resend_page", racing)
    await delivery.resend(A)
    batches = [issue_ids(b) for b in env.ams.batches["am-a"]]
    if between == "fresh":
        assert batches[:3] == [["fresh"], ["0", "1"], ["2", "3"]]
    else:
        # The page read again: 1 resolved (recently resolved alerts come first), then 0.
        assert batches[:2] == [["1"], ["1", "0"]]
        resolved_at = env.clock().isoformat().replace("+00:00", "Z")
        last = [
            a["endsAt"] for a in env.ams.accepted["am-a"] if a["labels"]["sentry_issue_id"] == "1"
        ]
        assert last[-1] == resolved_at


async def test_fresh_alerts_queued_while_every_page_is_read_are_not_held(
    env: Env, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A fresh alert queued while each page is read (a loaded store) is posted in that same
    hold, before the page, not once the queue holds still."""
    delivery, _ = await many_pages(env, pages=3)
    read = sqlite_queue.Lane.resend_page
    fresh = [postable(f"f{n}") for n in range(5)]

    async def racing(lane: sqlite_queue.Lane, after: Any, limit: int) -> Any:
        page = await read(lane, after, limit)
        if fresh:
            alert = fresh.pop(0)
            await env.enqueue([alert], {f"issue:{alert.labels['sentry_issue_id']}": alert})
        return page

    monkeypatch.setattr(sqlite_queue.Lane, "resend_page", racing)
    await delivery.resend(A)
    batches = [issue_ids(b) for b in env.ams.batches["am-a"]]
    assert batches[:4] == [["f0"], ["0", "1"], ["f1"], ["2", "3"]]


async def test_a_resolve_decided_during_a_re_send_round_is_not_overtaken(env: Env) -> None:
    delivery, alerts = await many_pages(env, pages=4)
    resolves = {n: alerts[n].model_copy(update={"ends_at": env.clock()}) for n in (1, 6)}

    async def meanwhile(host: str, batch: list[dict[str, Any]]) -> None:
        # Page 1 (alerts 0 and 1) has been read and is in flight: Sentry resolves issue 1
        # (on this page) and issue 6 (on a page not read yet).
        if issue_ids(batch) == ["0", "1"]:
            states = {f"issue:{n}": None for n in resolves}
            await env.enqueue(list(resolves.values()), states)  # type: ignore[arg-type]

    env.ams.meanwhile = meanwhile
    await delivery.resend(A)
    posted = [(a["labels"]["sentry_issue_id"], a["endsAt"]) for a in env.ams.accepted["am-a"]]
    resolved_at = env.clock().isoformat().replace("+00:00", "Z")
    for n in (1, 6):
        last = [ends for name, ends in posted if name == str(n)][-1]
        assert last == resolved_at, f"issue {n} fires again after its resolve"
    # The resolves go right after the page in flight, not after the round.
    assert [issue_ids(b) for b in env.ams.batches["am-a"]][:2] == [["0", "1"], ["1", "6"]]
    assert "6" not in [name for name, ends in posted if ends != resolved_at]


@given(
    data=st.data(),
    identities=st.integers(1, 5),
    batch_size=st.integers(1, 3),
)
@settings(max_examples=examples(0.25))  # each example opens a store
def test_what_an_alertmanager_sees_never_goes_back_during_re_sends(
    tmp_path_factory: pytest.TempPathFactory, data: st.DataObject, identities: int, batch_size: int
) -> None:
    """Model: decisions (a refresh, a resolve) happen while any request is in flight during
    a re-send round; each post carries the number of the decision it comes from. Per
    identity, Alertmanager must receive those numbers in order (never an older decision
    after a newer one: a stale firing after its resolve would re-fire it), and end with the
    latest decision."""

    async def scenario() -> None:
        env = Env(tmp_path_factory.mktemp("order"))
        decided: dict[str, int] = {}  # identity -> the number of its latest decision
        count = 0

        def alert(n: int, resolve: bool = False) -> PostableAlert:
            nonlocal count
            count += 1
            decided[str(n)] = count
            ends = env.clock() if resolve else env.clock() + timedelta(hours=1)
            return PostableAlert(
                labels={"alertname": "SentryIssue", "sentry_issue_id": str(n)},
                annotations={"decision": str(count)},
                starts_at=START,
                ends_at=ends,
            )

        async def decide(n: int, resolve: bool) -> None:
            current = alert(n, resolve)
            await env.enqueue([current], {f"issue:{n}": None if resolve else current})

        try:
            delivery = await env.start(batch_size=batch_size)
            for n in range(identities):
                await decide(n, resolve=False)
            await delivery.deliver(A)
            budget = [8]  # decisions left to make meanwhile

            async def meanwhile(host: str, batch: list[dict[str, Any]]) -> None:
                while budget[0] and data.draw(st.booleans(), label="decide now"):
                    budget[0] -= 1
                    n = data.draw(st.integers(0, identities - 1), label="identity")
                    await decide(n, resolve=data.draw(st.booleans(), label="resolve"))

            env.ams.meanwhile = meanwhile
            for _ in range(data.draw(st.integers(1, 3), label="rounds")):
                await delivery.resend(A)
            env.ams.meanwhile = None
            await delivery.deliver(A)
            seen: dict[str, list[int]] = defaultdict(list)
            for posted in env.ams.accepted["am-a"]:
                seen[posted["labels"]["sentry_issue_id"]].append(
                    int(posted["annotations"]["decision"])
                )
            for name, numbers in seen.items():
                assert numbers == sorted(numbers), f"issue {name} went back: {numbers}"
                assert numbers[-1] == decided[name]
        finally:
            await env.stop()

    asyncio.run(scenario())


class BusyLanes(SqliteStore):
    """Another replica holds every lane for the next ``busy`` attempts."""

    busy = 0
    attempts = 0

    @contextlib.asynccontextmanager
    async def lane(self, target: str) -> AsyncIterator[Lane | None]:
        self.attempts += 1
        if self.busy:
            self.busy -= 1
            yield None
            return
        async with super().lane(target) as lane:
            yield lane


async def test_a_lane_another_replica_holds_is_tried_again_shortly(
    env: Env, tmp_path: Path
) -> None:
    cfg = config.Alertmanager(urls=[URL_A], resend_interval=3600)
    box = BusyLanes(tmp_path / "busy", [A], max_queued=10, metrics=env.metrics, clock=env.clock)
    await box.open()
    delivery = Delivery(
        box, cfg, env.metrics, transport=httpx.MockTransport(env.ams), clock=env.clock,
        sleep=env.clock.sleep,
    )  # fmt: skip
    try:
        await commit(box, [postable(1)])
        box.busy = 3
        assert not await delivery.deliver(A)  # busy: the other replica posts
        assert env.ams.requests["am-a"] == []
        task = await running(delivery.run())
        await until(lambda: env.ams.names("am-a") == ["1"], "delivered once the lane is free")
        await cancel(task)
        assert env.clock.sleeps[:2] == [posting.LANE_BUSY_WAIT] * 2
    finally:
        await delivery.aclose()
        await box.close()


# --- the wire and the client -------------------------------------------------------------

RFC3339 = re.compile(r"^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d(\.\d+)?(Z|[+-]\d\d:\d\d)$")


async def test_wire_json_is_the_postable_alerts_shape(env: Env) -> None:
    delivery = await env.start()
    await env.enqueue([postable(1), PostableAlert(labels={"alertname": "Bare"})])
    await delivery.deliver(A)
    [body] = [json.loads(r.content) for r in env.ams.requests["am-a"]]
    assert isinstance(body, list)
    full, bare = body
    # api/v2/openapi.yaml postableAlert: labels required; the rest optional, no nulls.
    assert set(full) == {"labels", "annotations", "startsAt", "endsAt", "generatorURL"}
    assert bare == {"labels": {"alertname": "Bare"}, "annotations": {}}
    assert all(isinstance(v, str) for v in full["labels"].values())
    assert RFC3339.match(full["startsAt"])
    assert RFC3339.match(full["endsAt"])
    assert full["startsAt"] == "2024-05-01T12:00:00Z"


def basic(user: str, password: str) -> str:
    return "Basic " + base64.b64encode(f"{user}:{password}".encode()).decode()


@pytest.mark.parametrize(
    ("settings", "authorization"),
    [
        pytest.param({}, None, id="none"),
        pytest.param(
            {"basic_auth": {"username": "bridge", "password": "s3cret"}},
            basic("bridge", "s3cret"),
            id="basic",
        ),
        pytest.param({"bearer_token": "t0ken"}, "Bearer t0ken", id="bearer"),
    ],
)
async def test_authentication(
    env: Env, settings: dict[str, Any], authorization: str | None
) -> None:
    delivery = await env.start(**settings)
    await env.enqueue([postable(1)])
    await delivery.deliver(A)
    await delivery.deliver(B)
    for host in ("am-a", "am-b"):
        [request] = env.ams.requests[host]
        assert request.headers.get("authorization") == authorization


async def test_alertmanager_series_exist_from_the_start(env: Env) -> None:
    await env.start()
    for name in (A, B):
        assert (
            env.metrics.registry.get_sample_value(
                "sentry_bridge_alertmanager_alerts_dropped_total",
                {"alertmanager": name, "reason": "max_age"},
            )
            == 0
        )


async def test_delivery_needs_the_store_to_know_its_alertmanagers(tmp_path: Path) -> None:
    metrics = Metrics(CollectorRegistry())
    store = SqliteStore(tmp_path, ["other:9093"], max_queued=10, metrics=metrics)
    with pytest.raises(ConfigError, match="am-a:9093"):
        Delivery(store, config.Alertmanager(urls=[URL_A]), metrics)


# --- re-sends against a model -------------------------------------------------------------


@given(
    refused=st.lists(st.booleans(), min_size=1, max_size=40),
    batch_size=st.integers(1, 16),
    status=st.sampled_from([400, 413, 422]),
    rounds=st.integers(1, 3),
)
@settings(max_examples=examples(0.3))  # each example opens a store
def test_resend_rounds_match_a_model(
    tmp_path_factory: pytest.TempPathFactory,
    refused: list[bool],
    batch_size: int,
    status: int,
    rounds: int,
) -> None:
    """Model (from the issue): every round posts each acceptable active alert; an alert
    Alertmanager refuses for its content is dead-lettered exactly once and never posted
    to it again; no alert leaves the active set (a refusal is that Alertmanager's own)."""
    bad = {str(n) for n, is_bad in enumerate(refused) if is_bad}
    good = [str(n) for n, is_bad in enumerate(refused) if not is_bad]

    async def scenario() -> None:
        env = Env(tmp_path_factory.mktemp("resend"))
        try:
            delivery = await env.start(batch_size=batch_size)
            alerts = [postable(n) for n in range(len(refused))]
            await env.enqueue(alerts, active_set(alerts))
            await delivery.deliver(A)  # accepted before Alertmanager changed its mind
            env.ams.default["am-a"] = lambda batch: (
                status if any(a["labels"]["sentry_issue_id"] in bad for a in batch) else 200
            )
            for n in range(rounds):
                env.ams.accepted.clear()
                requests = len(env.ams.requests["am-a"])
                await delivery.resend(A)
                assert sorted(env.ams.names("am-a"), key=int) == good
                assert env.store is not None
                assert (await sizes(env.store)).active == len(refused)
                dead = await dead_letters(env.store)
                assert sorted(a["labels"]["sentry_issue_id"] for _, _, a in dead) == sorted(bad)
                assert all(r.startswith(f"HTTP {status}") for _, r, _ in dead)
                if n:  # after the first round, one accepted request per page with a good one
                    order = sorted(range(len(refused)), key=lambda i: f"issue:{i}")  # pages
                    chunks = [order[i : i + batch_size] for i in range(0, len(order), batch_size)]
                    pages = sum(1 for chunk in chunks if not all(refused[i] for i in chunk))
                    assert len(env.ams.requests["am-a"]) - requests == pages
        finally:
            await env.stop()

    asyncio.run(scenario())

"""Several replicas on one PostgreSQL behave like one bridge (issue 10's tests).

Two complete bridges (``python -m bridge serve`` with ``store.backend: postgres``, a schema
of the test's own, the DSN from ``BRIDGE_DATABASE_URL``) behind a round-robin TCP proxy
(``rr_proxy``: what a Kubernetes Service is to the pods), two real Alertmanagers, the real
PostgreSQL of ``tests/conftest.py``. Every check reads Alertmanager's own
``GET /api/v2/alerts``, the bridges' ``/metrics``, or what a recording proxy in front of an
Alertmanager saw posted.

- the state machine's model-based sequences (tests/model.py, as
  tests/integration/test_state_machine.py sends them), alternately to both pods, end with
  exactly the predicted alerts; repeats split between pods escalate; a resolve via either
  pod resolves what the other fired;
- a pod SIGKILLed mid-storm: every acknowledged webhook reaches both Alertmanagers, no
  resolved alert fires again, the survivor takes over the re-sends within the lease;
- the same signed webhook to both pods at the same instant: one decision;
- PostgreSQL crashed mid-storm (``pg_ctl stop -m immediate``) and started again: every
  answer 2xx or 503 within Sentry's one second, the final state that of the no-fault run.

The first test runs one bridge on SQLite behind the proxy, with a dead second backend: the
harness itself (proxy, storm, two Alertmanagers) on the engine that exists everywhere.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import json
import random
import threading
import time
from collections import Counter
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import httpx
import pytest
from starlette.datastructures import Headers

from bridge import sentry
from bridge.model import SentryAlert
from tests.conftest import PostgresTarget
from tests.integration import procs
from tests.integration.am import start_alertmanager
from tests.integration.am_proxy import FaultProxy
from tests.integration.conftest import CLIENT_SECRET, ENV, Alertmanager, Bridge, sign
from tests.integration.postgres import drop_schema
from tests.integration.rr_proxy import RoundRobin
from tests.integration.test_state_machine import (
    OUTCOMES,
    Run,
    event_alert,
    issue_webhook,
    random_webhook,
    shown,
)
from tests.model import AFTER, SETTINGS, Reference

RESEND = 1.0  # alertmanager.resend_interval for these tests (production: 60 s)
SENTRY_TIMEOUT = 1.0  # Sentry gives a webhook delivery one second
# The periodic jobs' lease on PostgreSQL (bridge/store/pg: PostgresStore's lease_ttl, 15 s):
# a dead holder's re-sends are taken over once it expires.
LEASE = 15.0


# --- the pods ----------------------------------------------------------------------------


def postgres_store(pg: PostgresTarget, schema: str | None = None) -> dict[str, Any]:
    """The store section for pods sharing ``pg`` (the DSN from the environment, as the
    chart's Secret gives it)."""
    postgres = {"dsn": "${BRIDGE_DATABASE_URL}", "schema": schema or pg.schema}
    return {"backend": "postgres", "postgres": postgres}


@dataclass
class Pods:
    """Replicas of one bridge and the proxy in front of them."""

    pods: list[Bridge]
    proxy: RoundRobin
    front: httpx.Client  # through the proxy, one connection per request
    config: Path
    env: dict[str, str]

    def via_proxy(self) -> Bridge:
        # Bridge.post only uses the client; the process is pod 0's, for Bridge's sake.
        return Bridge(self.pods[0].process, self.front)


@contextlib.contextmanager
def replicas(
    tmp_path: Path,
    am_urls: Sequence[str],
    store: dict[str, Any],
    *,
    count: int = 2,
    name: str = "pod",
    env: dict[str, str] | None = None,
    ports: Sequence[int] | None = None,
    **alertmanager: object,
) -> Iterator[Pods]:
    """``count`` bridges on one config (the model's policy, ``store``), each with its own
    data directory (where a PostgreSQL pod keeps its spool), behind a round-robin proxy.
    ``ports``: fixed ports, so a pod can be started later (``start_pod``) behind a proxy
    that already lists it."""
    config = procs.write_config(tmp_path / f"{name}.yaml", list(am_urls), **alertmanager)
    procs.update_config(
        config, store=store, classification=SETTINGS["classification"], dedup=SETTINGS["dedup"]
    )
    ports = list(ports or [procs.free_port() for _ in range(count)])
    urls = [f"http://127.0.0.1:{port}" for port in ports]
    with (
        contextlib.ExitStack() as stack,
        RoundRobin(urls).running() as proxy,
        procs.client(base_url=proxy.url, headers={"Connection": "close"}, timeout=10) as front,
    ):
        pods = Pods([], proxy, front, config, env or {})
        for index, port in enumerate(ports[:count]):
            pods.pods.append(
                stack.enter_context(start_pod(tmp_path, config, f"{name}-{index}", port, env))
            )
        yield pods


@contextlib.contextmanager
def start_pod(
    tmp_path: Path, config: Path, name: str, port: int, env: dict[str, str] | None
) -> Iterator[Bridge]:
    with (
        procs.bridge(
            config, tmp_path / name, tmp_path / f"{name}.log", {**ENV, **(env or {})}, port=port
        ) as process,
        procs.client(base_url=process.url, timeout=10) as client,
    ):
        yield Bridge(process, client)


def database_env(pg: PostgresTarget) -> dict[str, str]:
    return {"BRIDGE_DATABASE_URL": pg.dsn}


@contextlib.contextmanager
def two_alertmanagers(path: Path) -> Iterator[list[Alertmanager]]:
    """Two Alertmanagers (not clustered: each must get every alert from the bridge)."""
    with (
        start_alertmanager(path / "am-a", procs.free_port()) as a,
        start_alertmanager(path / "am-b", procs.free_port()) as b,
    ):
        yield [Alertmanager(a), Alertmanager(b)]


@pytest.fixture
def alertmanagers(tmp_path: Path) -> Iterator[list[Alertmanager]]:
    with two_alertmanagers(tmp_path) as pair:
        yield pair


def counter_sum(pods: Sequence[Bridge], name: str) -> float:
    """A counter summed over every label value and every pod, one scrape each."""
    total = 0.0
    for pod in pods:
        for line in pod.client.get("/metrics").text.splitlines():
            series, _, value = line.rpartition(" ")
            if series == name or series.startswith(name + "{"):
                total += float(value)
    return total


def decisions(pods: Sequence[Bridge]) -> float:
    """Webhooks through the state machine on all pods (whichever pod's pipeline took an
    entry decides it, not the pod that accepted it)."""
    assert set(OUTCOMES) >= {"forwarded", "resolved", "duplicate"}
    return counter_sum(pods, "sentry_bridge_alerts_total")


class ReplicaRun(Run):
    """test_state_machine's Run (send one webhook, wait until it is decided, apply the
    reference model) over several pods: decisions are counted on all of them."""

    def __init__(self, pods: Pods) -> None:
        super().__init__()
        self.replicas = pods
        self.bridge = pods.via_proxy()

    def via(self, bridge: Bridge) -> ReplicaRun:
        self.bridge = bridge
        return self

    def _outcomes(self) -> float:
        return decisions(self.replicas.pods)


def now() -> datetime:
    return datetime.now(UTC)


# --- storms ------------------------------------------------------------------------------

Hook = tuple[bytes, str]  # a signed webhook's raw body and its Sentry-Hook-Resource


def hook(body: dict[str, Any], resource: str) -> Hook:
    return json.dumps(body).encode(), resource


@dataclass
class Answer:
    status: int | None  # None: no HTTP answer (connection refused, reset or cut)
    seconds: float
    at: float  # time.monotonic() when it came


@dataclass
class Storm:
    """Sentry at concurrency: ``chains`` (each an identity's webhooks, in order) sent by
    ``concurrency`` senders, each webhook after the previous one of its chain was
    acknowledged, each retried on 503 or a failed connection until a 2xx, as Sentry
    retries; any other answer fails the storm."""

    url: str
    chains: Sequence[Sequence[Hook]]
    concurrency: int = 32
    within: float = 90.0  # the whole storm, retries included
    answers: list[Answer] = field(default_factory=list)
    acknowledged: list[tuple[Hook, int]] = field(default_factory=list)  # (webhook, 2xx)

    @property
    def size(self) -> int:
        return sum(len(chain) for chain in self.chains)

    async def run(self) -> None:
        queue: asyncio.Queue[Sequence[Hook]] = asyncio.Queue()
        for chain in self.chains:
            queue.put_nowait(chain)
        deadline = time.monotonic() + self.within
        limits = httpx.Limits(max_connections=self.concurrency)
        async with procs.async_client(base_url=self.url, timeout=5, limits=limits) as client:

            async def sender() -> None:
                while not queue.empty():
                    for webhook in queue.get_nowait():
                        await self._deliver(client, webhook, deadline)

            await asyncio.gather(*(sender() for _ in range(self.concurrency)))

    async def _deliver(self, client: httpx.AsyncClient, webhook: Hook, deadline: float) -> None:
        raw, resource = webhook
        headers = {
            "Content-Type": "application/json",
            "Sentry-Hook-Resource": resource,
            "Sentry-Hook-Signature": sign(raw, CLIENT_SECRET),
            "Connection": "close",  # a connection per delivery: the proxy balances each
        }
        while True:
            started = time.monotonic()
            status: int | None
            try:
                response = await client.post("/webhooks/sentry", content=raw, headers=headers)
                status = response.status_code
            except httpx.TransportError:
                status = None
            self.answers.append(Answer(status, time.monotonic() - started, time.monotonic()))
            if status is not None and 200 <= status < 300:
                self.acknowledged.append((webhook, status))
                return
            assert status in (None, 503), f"{status} to {resource}: {response.text}"
            assert time.monotonic() < deadline, "the storm did not get through in time"
            await asyncio.sleep(0.05)  # Sentry retries later; this one soon

    async def until_acknowledged(self, share: float, task: asyncio.Task[None]) -> None:
        """Wait until ``share`` of the webhooks are acknowledged (the storm still running)."""
        while len(self.acknowledged) < share * self.size:
            assert not task.done(), "the storm ended first"
            await asyncio.sleep(0.01)


async def within(seconds: float, predicate: Callable[[], bool]) -> bool:
    """Whether ``predicate`` came true within ``seconds`` (polled)."""
    deadline = time.monotonic() + seconds
    while not predicate():
        if time.monotonic() > deadline:
            return False
        await asyncio.sleep(0.05)
    return True


async def eventually(predicate: Callable[[], bool], seconds: float, what: str) -> None:
    assert await within(seconds, predicate), f"not within {seconds} s: {what}"


def issue_ids(alerts: list[dict[str, Any]]) -> Counter[str]:
    """How many alerts each Sentry issue has (metric alerts count under "")."""
    return Counter(a["labels"].get("sentry_issue_id", "") for a in alerts)


def fire_or_resolve_chains(first: int, count: int) -> tuple[list[list[Hook]], set[str]]:
    """Issues ``first``.. ``first + count - 1``: every third one fired and then resolved,
    the others fired only. Returns the chains and the issues that stay firing."""
    chains: list[list[Hook]] = []
    firing: set[str] = set()
    for n in range(first, first + count):
        issue = str(n)
        chain = [hook(event_alert(issue, "production", now()), "event_alert")]
        if n % 3 == 0:
            chain.append(hook(issue_webhook("issue_resolved.json", issue), "issue"))
        else:
            firing.add(issue)
        chains.append(chain)
    return chains, firing


# --- the harness itself, on SQLite --------------------------------------------------------


def test_the_proxy_routes_around_a_dead_backend(
    tmp_path: Path, alertmanagers: list[Alertmanager]
) -> None:
    """One bridge on SQLite and a backend that refuses every connection, behind the proxy:
    every webhook of a storm is answered by the live one, and each reaches both
    Alertmanagers once."""
    dead = procs.free_port()  # nothing listens there
    live = procs.free_port()
    chains, firing = fire_or_resolve_chains(9_100_000, 60)
    with replicas(
        tmp_path, [am.url for am in alertmanagers], {"backend": "sqlite"}, count=1,
        ports=[live, dead],
    ) as pods:  # fmt: skip
        storm = Storm(pods.proxy.url, chains, concurrency=16)
        asyncio.run(storm.run())
        routed, refused, unrouted = pods.proxy.counts()
        for am in alertmanagers:
            alerts = am.wait_for(lambda alerts: set(issue_ids(alerts)) == firing)
            assert set(issue_ids(alerts).values()) == {1}
    # Every connection went to the live bridge; every other one (its turn was the dead
    # backend's) after a refusal there.
    assert {a.status for a in storm.answers} == {202}
    assert len(storm.answers) == storm.size
    assert routed == {f"http://127.0.0.1:{live}": storm.size}
    assert refused == {f"http://127.0.0.1:{dead}": storm.size // 2}
    assert unrouted == 0


# --- two pods on one PostgreSQL: one bridge -----------------------------------------------


@pytest.mark.parametrize("seed", [1, 2])
def test_sequences_sent_alternately_to_two_pods_end_as_the_model_predicts(
    seed: int, tmp_path: Path, alertmanagers: list[Alertmanager], pg: PostgresTarget
) -> None:
    steps = 24
    rng = random.Random(seed)
    urls = [am.url for am in alertmanagers]
    with replicas(tmp_path, urls, postgres_store(pg), env=database_env(pg)) as pods:
        run = ReplicaRun(pods)
        for _step in range(steps):
            run.send(*random_webhook(rng, run))
        for am in alertmanagers:
            am.wait_for(lambda alerts: shown(alerts) == run.expected())
        routed, _, _ = pods.proxy.counts()
    # The proxy alternated: each pod answered half of the webhooks.
    assert sorted(routed.values()) == [steps // 2, steps // 2]


def test_repeats_split_between_pods_escalate_and_a_resolve_via_either_pod_resolves(
    tmp_path: Path, alertmanagers: list[Alertmanager], pg: PostgresTarget
) -> None:
    urls = [am.url for am in alertmanagers]
    with replicas(tmp_path, urls, postgres_store(pg), env=database_env(pg)) as pods:
        a, b = pods.pods
        run = ReplicaRun(pods)
        # One issue's distinct events, alternately to the two pods: neither pod alone saw
        # escalate_after of them.
        for repeat in range(AFTER):
            event = event_alert("9201", "production", now())
            run.via(pods.pods[repeat % 2]).send(event, "event_alert")
        run.via(a).send(event_alert("9202", "staging", now()), "event_alert")
        run.via(b).send(event_alert("9203", "staging", now()), "event_alert")
        expected = run.expected()
        assert expected["issue:9201"] == [("critical", "production", True)]  # the model agrees
        for am in alertmanagers:
            am.wait_for(lambda alerts: shown(alerts) == expected)
        assert counter_sum(pods.pods, "sentry_bridge_escalations_total") == 1

        # Each resolve reaches the pod that did not fire the alert.
        run.via(b).send(issue_webhook("issue_resolved.json", "9202"), "issue")
        run.via(a).send(issue_webhook("issue_resolved.json", "9203"), "issue")
        expected = run.expected()
        assert set(expected) == {"issue:9201"}
        for am in alertmanagers:
            am.wait_for(lambda alerts: shown(alerts) == expected)


# --- a pod killed mid-storm ---------------------------------------------------------------


class Recording(FaultProxy):
    """A proxy in front of an Alertmanager that keeps every batch it accepted:
    (monotonic time, wall time, the alerts posted)."""

    def __init__(self, upstream: str) -> None:
        super().__init__(upstream)
        self.posts: list[tuple[float, datetime, list[dict[str, Any]]]] = []
        self._posts_lock = threading.Lock()

    def _forward(
        self, method: str, path: str, body: bytes, content_type: str | None
    ) -> httpx.Response:
        # When it arrived: a post that arrives after a sender was reaped is not its own.
        arrived, wall = time.monotonic(), now()
        response = super()._forward(method, path, body, content_type)
        if method == "POST" and path == "/api/v2/alerts" and response.status_code == 200:
            with self._posts_lock:
                self.posts.append((arrived, wall, json.loads(body)))
        return response

    def firing_posts(self, issue: str, after: float = 0.0) -> list[float]:
        """When a firing alert of ``issue`` was posted (endsAt still ahead), after ``after``."""
        with self._posts_lock:
            posts = list(self.posts)
        return [
            at
            for at, wall, alerts in posts
            if at > after
            for alert in alerts
            if alert["labels"].get("sentry_issue_id") == issue
            and datetime.fromisoformat(alert["endsAt"]) > wall
        ]

    def first_resolve(self, issue: str) -> float | None:
        with self._posts_lock:
            posts = list(self.posts)
        for at, wall, alerts in posts:
            for alert in alerts:
                ends = datetime.fromisoformat(alert["endsAt"])
                if alert["labels"].get("sentry_issue_id") == issue and ends <= wall:
                    return at
        return None


async def storm_with_fault(storm: Storm, share: float, fault: Callable[[], None]) -> float:
    """Run ``storm``; once ``share`` of it is acknowledged, run ``fault`` (in a thread: the
    storm goes on meanwhile); wait for the storm's end. Returns when the fault was done."""
    task = asyncio.create_task(storm.run())
    try:
        await storm.until_acknowledged(share, task)
        await asyncio.to_thread(fault)
        done = time.monotonic()
    finally:
        await task
    return done


def test_a_pod_killed_mid_storm_loses_nothing_and_the_survivor_takes_over_the_resends(
    tmp_path: Path, alertmanagers: list[Alertmanager], pg: PostgresTarget
) -> None:
    warm = "9400000"
    chains, firing = fire_or_resolve_chains(9_400_001, 240)
    resolved = {str(n) for n in range(9_400_001, 9_400_241)} - firing
    ports = [procs.free_port(), procs.free_port()]
    with contextlib.ExitStack() as stack:
        recorders = [Recording(am.url) for am in alertmanagers]
        for recorder in recorders:
            stack.enter_context(recorder.running())
        pods = stack.enter_context(
            replicas(
                tmp_path, [r.url for r in recorders], postgres_store(pg), count=1,
                env=database_env(pg), ports=ports, resend_interval=f"{RESEND}s",
            )
        )  # fmt: skip
        doomed = pods.pods[0]
        # Pod 0 alone first, so it holds the re-send lease: its re-sends of one alert arrive.
        body = event_alert(warm, "production", now())
        assert doomed.post(body, resource="event_alert").status_code == 202
        asyncio.run(eventually(lambda: len(recorders[0].firing_posts(warm)) >= 3, 20, "re-sends"))
        survivor = stack.enter_context(
            start_pod(tmp_path, pods.config, "pod-1", ports[1], pods.env)
        )
        pods.pods.append(survivor)
        # One re-sender at a time: with both pods up, the re-sends keep one sender's pace
        # (each round at least RESEND after the one before), not two senders' interleaved.
        both = time.monotonic()
        resent = functools.partial(recorders[0].firing_posts, warm, after=both)
        asyncio.run(eventually(lambda: len(resent()) >= 4, 20, "re-sends with both pods up"))
        first, *_, fourth = resent()[:4]
        assert fourth - first >= 2.5 * RESEND

        storm = Storm(pods.proxy.url, chains, concurrency=32)
        # SIGKILL, and reaped: whatever arrives after this is the survivor's.
        killed = asyncio.run(storm_with_fault(storm, 1 / 3, doomed.process.kill))

        # Every webhook was acknowledged (Storm retried what the kill cut), and every one
        # reached both Alertmanagers: what fires, once; what was resolved, gone.
        assert len(storm.acknowledged) == storm.size
        for am in alertmanagers:
            alerts = am.wait_for(lambda alerts: set(issue_ids(alerts)) == firing | {warm})
            assert set(issue_ids(alerts).values()) == {1}

        # The survivor took over the re-sends: the warm-up alert (not in the storm) is
        # posted again after the kill, then in every round.
        asyncio.run(
            eventually(
                lambda: all(len(r.firing_posts(warm, after=killed)) >= 3 for r in recorders),
                LEASE + 3 * RESEND + 5,  # the lease expires, the survivor takes it, 3 rounds
                "re-sends after the kill",
            )
        )
        takeover = min(recorders[0].firing_posts(warm, after=killed)) - killed
        print(f"re-sends resumed {takeover:.1f} s after the kill")
        _, refused, _ = pods.proxy.counts()
        cut = sum(1 for a in storm.answers if a.status is None)
        print(f"{refused} refusals routed around, {cut} deliveries cut by the kill")
        assert cut + sum(refused.values()) > 0  # the kill did hit the storm

        # No resolved alert fired again: after its first resolve reached an Alertmanager,
        # no firing post of it (neither a late delivery nor a stale re-send).
        for recorder in recorders:
            for issue in resolved:
                gone = recorder.first_resolve(issue)
                assert gone is not None, issue
                assert recorder.firing_posts(issue, after=gone) == [], issue


# --- the same webhook to both pods at once ------------------------------------------------


async def to_both_at_once(pods: Sequence[Bridge], hooks: Sequence[Hook]) -> list[list[Any]]:
    """Each webhook to every pod at the same instant (connections opened beforehand)."""
    clients = [procs.async_client(base_url=pod.url, timeout=10) for pod in pods]
    answers: list[list[Any]] = []
    try:
        for client in clients:
            (await client.get("/-/healthy")).raise_for_status()
        for raw, resource in hooks:
            headers = {
                "Content-Type": "application/json",
                "Sentry-Hook-Resource": resource,
                "Sentry-Hook-Signature": sign(raw, CLIENT_SECRET),
            }
            responses = await asyncio.gather(
                *(c.post("/webhooks/sentry", content=raw, headers=headers) for c in clients)
            )
            answers.append(sorted((r.status_code, r.json()) for r in responses))
    finally:
        for client in clients:
            await client.aclose()
    return answers


def test_the_same_webhook_to_both_pods_at_the_same_instant_is_one_decision(
    tmp_path: Path, alertmanagers: list[Alertmanager], pg: PostgresTarget
) -> None:
    rounds = 40
    issues = {str(9_500_000 + n) for n in range(rounds)}
    hooks = [hook(event_alert(issue, "production", now()), "event_alert") for issue in issues]
    urls = [am.url for am in alertmanagers]
    with replicas(tmp_path, urls, postgres_store(pg), env=database_env(pg)) as pods:
        answers = asyncio.run(to_both_at_once(pods.pods, hooks))
        # The design's answer: PostgreSQL keeps one body per digest across replicas, so one
        # pod accepts (202) and the other finds the body there (200 duplicate), whichever
        # commits first. Only when a pod's accept outlasts store.spool.accept_timeout is its
        # copy spooled and answered 202 too; the spool's drain then meets the digest in
        # PostgreSQL and drops it (bridge/store/spool.py). Either way: one decision.
        accepted, duplicate = (202, {"status": "accepted"}), (200, {"status": "duplicate"})
        for answer in answers:
            assert answer in ([duplicate, accepted], [accepted, accepted])
        split = Counter(answer[0][0] for answer in answers)
        print(f"the other pod answered 200 duplicate {split[200]} times, 202 {split[202]} times")
        for am in alertmanagers:
            alerts = am.wait_for(lambda alerts: set(issue_ids(alerts)) == issues)
            assert set(issue_ids(alerts).values()) == {1}
        # One decision per distinct webhook, summed over both pods. Every round's second
        # copy is a duplicate; under load there can be more: a spooled copy whose move into
        # PostgreSQL committed after the drain's timeout is handed over again and found
        # there (bridge/store/spool.py, "at most a duplicate"), so at least one per round.
        assert decisions(pods.pods) == rounds
        assert counter_sum(pods.pods, "sentry_bridge_webhooks_duplicate_total") >= rounds


# --- PostgreSQL crashed mid-storm ---------------------------------------------------------


def stories(first: int, count: int) -> list[list[Hook]]:
    """Per identity one of issue 8's stories whose end depends on the order of its
    webhooks (so a spool that reordered them would show): severity rising and not
    falling, resolved, escalated by repeats.

    Issue webhooks carry their event's time, so the state machine orders them however the
    pods' spools drain. Metric alerts are left out here: their webhooks carry no time of
    their own, and two status changes of one metric alert spooled by different pods during
    one outage drain in no defined order between the pods (a known limit, docs/scaling.md;
    this test caught it). Their order across pods without an outage is tested above."""
    chains: list[list[Hook]] = []
    for n in range(first, first + count):
        issue = str(n)

        def fire(env: str, issue: str = issue) -> Hook:
            return hook(event_alert(issue, env, now()), "event_alert")

        resolve = hook(issue_webhook("issue_resolved.json", issue), "issue")
        chains.append(
            [
                [fire("staging"), fire("production")],
                [fire("production"), fire("staging")],
                [fire("production"), resolve],
                [fire("dev"), fire("dev"), fire("dev")],
            ][n % 4]
        )
    return chains


def predicted(chains: Sequence[Sequence[Hook]]) -> dict[str, list[Any]]:
    """What the reference model shows at the end, each chain in its order."""
    references: dict[str, Reference] = {}
    for chain in chains:
        for raw, resource in chain:
            alert = sentry.normalise(
                Headers({"sentry-hook-resource": resource}), json.loads(raw),
                base_url="https://sentry.io",
            )  # fmt: skip
            assert isinstance(alert, SentryAlert)
            references.setdefault(alert.identity, Reference()).apply(alert, now())
    at = now()
    return {i: [s] for i, r in references.items() if (s := r.active(at)) is not None}


def wait_shown(am: Alertmanager, expected: dict[str, list[Any]], within: float) -> list[Any]:
    """Alertmanager's alerts once they show ``expected``; else fail naming the difference."""
    try:
        return am.wait_for(lambda alerts: shown(alerts) == expected, within)
    except AssertionError:
        now_shown = shown(am.sentry_alerts())
        diff = {
            identity: (now_shown.get(identity), expected.get(identity))
            for identity in set(now_shown) | set(expected)
            if now_shown.get(identity) != expected.get(identity)
        }
        raise AssertionError(f"{am.url} (shown, expected): {diff}") from None


def final_state(alerts: list[dict[str, Any]]) -> list[str]:
    """What Alertmanager holds, without its own times: each alert's label set, which is
    what pages. Not the annotations: two webhooks of one issue spooled by different pods
    drain in either order, and a lower-severity webhook after a higher one is a duplicate
    within the dedup window (no post), so the ``environments`` annotation Alertmanager
    shows depends on that order (docs/state-machine.md); the state machine's own state
    has both environments either way."""
    return sorted(json.dumps(alert["labels"], sort_keys=True) for alert in alerts)


def test_postgres_crashing_mid_storm_answers_within_a_second_and_ends_as_without_it(
    tmp_path: Path, pg: PostgresTarget
) -> None:
    # Order-dependent stories, and issues each fired (some then resolved) by webhooks of
    # their own, so that every acknowledged webhook lost would show in the end state.
    singles, _ = fire_or_resolve_chains(9_610_000, 90)
    chains = [chain for pair in zip(stories(9_600_000, 90), singles, strict=True) for chain in pair]
    expected = predicted(chains)
    env = database_env(pg)
    finals: list[list[str]] = []

    def run(name: str, schema: str, fault: Callable[[Storm], Any] | None) -> Storm:
        path = tmp_path / name
        path.mkdir()
        with (
            two_alertmanagers(path) as ams,
            replicas(path, [am.url for am in ams], postgres_store(pg, schema), env=env) as pods,
        ):
            storm = Storm(pods.proxy.url, chains, concurrency=24)
            asyncio.run(fault(storm) if fault else storm.run())
            assert len(storm.acknowledged) == storm.size
            for am in ams:
                finals.append(final_state(wait_shown(am, expected, 60)))
        return storm

    baseline = f"{pg.schema}_baseline"
    try:
        run("no-fault", baseline, None)
    finally:
        drop_schema(pg.server, baseline)

    outage: list[float] = []

    async def crash(storm: Storm) -> None:
        def stop() -> None:
            pg.server.stop_immediately()
            outage.append(time.monotonic())

        task = asyncio.create_task(storm_with_fault(storm, 1 / 3, stop))
        # Down while the storm goes on: until another sixth is acknowledged (the spool
        # answers) or for three seconds, whichever first; then up again.
        await eventually(lambda: bool(outage), 30, "PostgreSQL stopped")
        before = len(storm.acknowledged)
        await within(3, lambda: len(storm.acknowledged) >= before + storm.size / 6)
        outage.append(time.monotonic())
        await asyncio.to_thread(pg.server.start)
        outage.append(time.monotonic())
        await task

    storm = run("crash", pg.schema, crash)
    down, _restarting, up = outage
    during = [a for a in storm.answers if down <= a.at <= up]
    slowest = max(a.seconds for a in storm.answers)
    print(
        f"{len(during)} answers while PostgreSQL was down or starting ({up - down:.1f} s), "
        f"{Counter(a.status for a in during)}; slowest answer {slowest * 1000:.0f} ms"
    )
    # Sentry's view: every answer a 2xx, or a 503 it retries, and each within its timeout.
    assert {a.status for a in storm.answers} <= {200, 202, 503}
    assert slowest < SENTRY_TIMEOUT
    assert during  # the storm did run into the outage
    # The same end as without the crash, in both Alertmanagers of both runs.
    assert len(finals) == 4
    for other in finals[1:]:
        differ = sorted(set(finals[0]) ^ set(other))
        assert not differ, (
            f"the end states differ (baseline's first Alertmanager ^ other): {differ}"
        )

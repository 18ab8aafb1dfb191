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
import importlib.util
import json
import time
from collections import Counter
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import httpx
import pytest

from tests.conftest import PostgresTarget
from tests.integration import procs
from tests.integration.am import start_alertmanager
from tests.integration.conftest import CLIENT_SECRET, ENV, Alertmanager, Bridge, sign
from tests.integration.rr_proxy import RoundRobin
from tests.integration.test_state_machine import (
    OUTCOMES,
    Run,
    event_alert,
    issue_webhook,
)
from tests.model import SETTINGS

# Until the PostgreSQL engine (bridge/store/pg/) is in the package, `serve` refuses
# store.backend: postgres, and these tests must fail (strict); with it, they must pass.
ENGINE = importlib.util.find_spec("bridge.store.pg") is not None
needs_engine = pytest.mark.xfail(
    not ENGINE, reason="the PostgreSQL engine is not in this version yet", strict=True
)

RESEND = 1.0  # alertmanager.resend_interval for these tests (production: 60 s)
SENTRY_TIMEOUT = 1.0  # Sentry gives a webhook delivery one second


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
        httpx.Client(base_url=proxy.url, headers={"Connection": "close"}, timeout=10) as front,
    ):
        pods = Pods([], proxy, front)
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
        httpx.Client(base_url=process.url, timeout=10) as client,
    ):
        yield Bridge(process, client)


def database_env(pg: PostgresTarget) -> dict[str, str]:
    return {"BRIDGE_DATABASE_URL": pg.dsn}


@pytest.fixture
def alertmanagers(tmp_path: Path) -> Iterator[list[Alertmanager]]:
    """Two Alertmanagers (not clustered: each must get every alert from the bridge)."""
    with (
        start_alertmanager(tmp_path / "am-a", procs.free_port()) as a,
        start_alertmanager(tmp_path / "am-b", procs.free_port()) as b,
    ):
        yield [Alertmanager(a), Alertmanager(b)]


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
        async with httpx.AsyncClient(base_url=self.url, timeout=5, limits=limits) as client:

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


async def eventually(predicate: Callable[[], bool], within: float, what: str) -> None:
    deadline = time.monotonic() + within
    while not predicate():
        assert time.monotonic() < deadline, f"not within {within} s: {what}"
        await asyncio.sleep(0.05)


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

from __future__ import annotations

import functools
import itertools
import os
import ssl
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import httpx._config
import httpx._transports.default
import pytest
from hypothesis import HealthCheck, settings

from bridge.config import Postgres
from tests.integration.postgres import Server, drop_schema, start_postgres

# Hypothesis: few examples locally, many in CI, where a run must also be reproducible: the
# same examples every run (derandomize), no example database carried between runs, no
# verdict that depends on the machine's speed (no deadline, no too_slow health check), and
# the blob that replays a failure printed. HYPOTHESIS_PROFILE picks one by name (e.g. "ci"
# locally, to run what CI runs). A test that wants more or fewer examples than most asks
# for a share of the profile's (``examples``), so it is quick locally and thorough in CI.
settings.register_profile("dev", max_examples=20, deadline=None)
settings.register_profile(
    "ci",
    max_examples=200,
    deadline=None,
    derandomize=True,
    database=None,
    print_blob=True,
    suppress_health_check=[HealthCheck.too_slow],
)
settings.load_profile(
    os.environ.get("HYPOTHESIS_PROFILE") or ("ci" if os.environ.get("CI") == "true" else "dev")
)


# httpx parses certifi's bundle into a new SSL context for every client made with the default
# ``verify=True`` (50-100 ms of CPU each). The bridge's own clients (Alertmanager, Sentry's API)
# are built that way, and the models build a pipeline, a delivery or an app per example: a
# tenth of a second per example went there (the escalation model: 150 examples in CI). In the
# test process those clients share one context, made by httpx itself from the same bundle; a
# client given its own context (a CA file, a client certificate, no verification) still gets
# exactly that. No client in the bridge or the tests uses HTTP/2, so the one setting httpcore
# writes into a context per connection (ALPN) is always the same.
_create_ssl_context = httpx._config.create_ssl_context


@functools.cache
def _default_ssl_context(trust_env: bool, cafile: str | None, capath: str | None) -> ssl.SSLContext:
    return _create_ssl_context(verify=True, trust_env=trust_env)


def _ssl_context(
    verify: ssl.SSLContext | str | bool = True, cert: Any = None, trust_env: bool = True
) -> ssl.SSLContext:
    if verify is True and cert is None:
        env = os.environ
        return _default_ssl_context(trust_env, env.get("SSL_CERT_FILE"), env.get("SSL_CERT_DIR"))
    return _create_ssl_context(verify=verify, cert=cert, trust_env=trust_env)


httpx._transports.default.create_ssl_context = _ssl_context  # type: ignore[attr-defined]


def examples(share: float) -> int:
    """``share`` of the profile's max_examples: above 1 for a cheap property worth more
    cases, below 1 where each example is costly (a store opened, a model stepped)."""
    base = settings().max_examples
    return max(1, round(base * share))


# Modules whose tests share a costly module fixture: under pytest-xdist (scripts/test runs
# two workers) each runs on one worker, so the image is built once and the wheel once, and
# they are handed out first (the scheduler starts with its largest groups). xdist_group marks
# would say it in the modules, but xdist 3.8 loses them under pytest 9.2's node ids
# (pytest-dev/pytest-xdist#1386), so the scheduler is told by path.
ONE_WORKER = ("tests/integration/test_image.py", "tests/integration/test_package.py")


def pytest_xdist_make_scheduler(config: pytest.Config, log: Any) -> Any:
    """``--dist loadgroup`` (pyproject.toml) with ``ONE_WORKER``'s modules as the groups;
    every other test is handed out on its own."""
    if config.getvalue("dist") != "loadgroup":
        return None
    from xdist.scheduler import LoadGroupScheduling

    class ByModule(LoadGroupScheduling):  # type: ignore[misc]
        def _split_scope(self, nodeid: str) -> str:
            module = nodeid.split("::", 1)[0]
            return module if module in ONE_WORKER else nodeid

    return ByModule(config, log)


# The longest single tests outside tests/integration (which is collected first): the CI
# profile's stateful models, 30-120 s each (the outages model 62-68 s under load). Collected
# last, one of them ended the run alone on one worker while the other sat idle; collected
# first, the short tests fill in after.
LONG = ("tests/test_escalation_model.py", "tests/test_pipeline_model.py", "tests/test_outages.py")


# Tests that bound a latency or a drain time in seconds of wall time (a product claim: an
# answer within a second under a storm, a spool empty within seconds of a stall). Beside a
# second worker's CPU-bound tests on a 2-core machine they measure the neighbour, not the
# bridge; scripts/test runs them after the parallel part, on their own (marked ``alone``).
# Named by test where a module also holds tests that bound no time (the operator routes,
# the model's sequences through two pods, the same webhook to both pods at once): those
# run in the parallel part.
ALONE = (
    *(
        f"tests/integration/test_floods.py::test_{name}"
        for name in (
            "idle_connections_do_not_lock_out_webhooks_or_probes",
            "past_max_connections_the_idle_longest_are_closed_first",
            "a_reload_flood_does_not_slow_webhooks",
            "a_status_flood_does_not_slow_webhooks",
            "slow_unsigned_bodies_are_bounded_in_memory",
        )
    ),
    *(
        f"tests/integration/test_replicas.py::test_{name}"
        for name in (
            "a_pod_killed_mid_storm_loses_nothing_and_the_survivor_takes_over_the_resends",
            "postgres_crashing_mid_storm_answers_within_a_second_and_ends_as_without_it",
        )
    ),
    "tests/integration/test_spool_stall.py",
    "tests/store/test_spool.py",
    "tests/test_reconcile.py::test_a_thousand_issues_take_one_request_per_hundred",
)
# The modules that hold them: scripts/test collects only these for its second part
# (collecting all 2,000 tests to select 43 took 10 s of its wall time).
ALONE_MODULES = sorted({entry.split("::")[0] for entry in ALONE})


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    items.sort(key=lambda item: not item.nodeid.startswith(LONG))  # stable: the rest as found
    for item in items:
        if item.nodeid.startswith(ALONE):
            item.add_marker(pytest.mark.alone)


@pytest.fixture
def anyio_backend() -> str:
    return "asyncio"


@pytest.fixture(scope="session")
def postgres_server() -> Iterator[Server]:
    """One real PostgreSQL for the session (a cluster takes a second or two to make).

    Without fsync: the tests crash the server (``pg_ctl stop -m immediate``), never the
    machine, and a commit's WAL, written before the commit returns (synchronous_commit stays
    on), survives a crashed server in the page cache with or without it. What a test can
    observe is the same; an fsync per commit (8-30 ms on this shared disk) only made the store
    tests slower (the PostgreSQL model and lease tests: 45 -> 28 s)."""
    with start_postgres(fsync=False) as server:
        yield server


@dataclass(frozen=True)
class PostgresTarget:
    server: Server
    settings: Postgres  # the DSN and a schema of the test's own

    @property
    def dsn(self) -> str:
        return self.server.dsn()

    @property
    def schema(self) -> str:
        return self.settings.schema_


_schemas = itertools.count(1)


@pytest.fixture
def pg(postgres_server: Server) -> Iterator[PostgresTarget]:
    """The session's PostgreSQL with a fresh schema name for this test, dropped after it
    (the server is started again first if the test stopped it)."""
    schema = f"test_{next(_schemas)}"
    settings = Postgres.model_validate({"dsn": postgres_server.dsn(), "schema": schema})
    yield PostgresTarget(postgres_server, settings)
    drop_schema(postgres_server, schema)

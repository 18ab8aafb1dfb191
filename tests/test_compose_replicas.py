"""bridge/compose.py with two replicas on one real PostgreSQL: health and the stop measure
this replica's own progress (``Store.idle``), not the shared inbox.

Two ``Bridge`` objects in this process, each with its own pool, spool and pipeline, on one
schema, stand in for two pods (as tests/store/test_pg_replicas.py does for stores). Replica
A's pipeline is stuck in a Sentry look-up that never answers, holding its batch's
identity; replica B accepts the next webhook of that identity, which only A may decide.
The watchdog's clock is moved by hand (``check_progress(now)``), as in test_compose.py."""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import hmac
import time
from pathlib import Path
from typing import Any

import httpx
import pytest
from prometheus_client import CollectorRegistry

from bridge import config
from bridge.app import create_app
from bridge.compose import Bridge, build
from tests.conftest import PostgresTarget
from tests.factories import sizes, until_sizes
from tests.test_compose import SECRET, TIMEOUT, HeldSentry, running, signed, wait_until

pytestmark = pytest.mark.anyio
GRACE = 20.0  # shutdown.grace_period: what the old stop waited out while A held its work
PROMPTLY = 5.0  # a stop with nothing of its own left to do ends well within this

serving = contextlib.asynccontextmanager(running)


def replica(
    tmp_path: Path, pg: PostgresTarget, name: str, sentry: httpx.AsyncBaseTransport | None
) -> Bridge:
    values: dict[str, Any] = {
        "server": {"progress_timeout": f"{TIMEOUT}s"},
        "shutdown": {"grace_period": f"{GRACE}s"},
        "sentry": {
            "client_secrets": SECRET,
            "api_token": "token" if sentry is not None else "",
            "api_timeout": "1h",  # the look-up is held by the test, not cut short
        },
        "store": {
            "backend": "postgres",
            "postgres": {"dsn": pg.dsn, "schema": pg.schema},
            "data_dir": str(tmp_path / name),  # this pod's spool
        },
    }
    transport = httpx.MockTransport(lambda request: httpx.Response(200))
    return build(
        config.parse(values, env={}),
        registry=CollectorRegistry(),
        alertmanager_transport=transport,
        sentry_transport=sentry,
    )


def again(body: bytes) -> tuple[bytes, dict[str, str]]:
    """The same webhook content in other bytes: a new inbox entry of the same identity."""
    body = body + b"\n"
    signature = hmac.new(SECRET.encode(), body, hashlib.sha256).hexdigest()
    return body, {"Sentry-Hook-Resource": "event_alert", "Sentry-Hook-Signature": signature}


async def test_a_replica_waiting_on_anothers_identity_stays_healthy_and_stops_promptly(
    tmp_path: Path, pg: PostgresTarget
) -> None:
    held = HeldSentry()
    a = replica(tmp_path, pg, "pod-a", held)
    b = replica(tmp_path, pg, "pod-b", None)
    async with serving(a) as pod_a:
        body, headers = signed(1)
        assert (await pod_a.post("/webhooks/sentry", content=body, headers=headers)).is_success
        await wait_until(held.asked.is_set, "A's pipeline never took the webhook")
        # A holds the identity (its take's lock) for as long as Sentry does not answer.
        async with serving(b) as pod_b:
            body, headers = again(body)
            answer = await pod_b.post("/webhooks/sentry", content=body, headers=headers)
            assert answer.status_code == 202
            # Two webhooks wait in the shared inbox, and B may take neither.
            await until_sizes(b.store, lambda s: s.inbox == 2, "B never saw the inbox")
            await wait_until(b.store.idle, "B's take never looked")
            t0 = time.monotonic()
            for pod in (a, b):
                pod.check_progress(t0)
                pod.check_progress(t0 + TIMEOUT + 1)
            assert (await pod_b.get("/-/healthy")).json() == {"status": "ok"}
            # A really is stuck: its own watchdog says so.
            health = await pod_a.get("/-/healthy")
            assert health.status_code == 503
            assert "the pipeline completed no batch" in health.json()["status"]

            stopping = time.monotonic()
        # B's stop (the lifespan's end) has nothing of its own to finish: A's identity
        # stays in the database for A, and B does not wait out its grace period for it.
        assert time.monotonic() - stopping < PROMPTLY
        assert (await sizes(a.store)).inbox == 2  # B decided nothing: both still A's to take

        held.released.set()  # Sentry answers: A decides both, in order, and is well again
        await wait_until(lambda: a.pipeline.batches >= 2, "A never decided the second")
        a.check_progress(t0 + TIMEOUT + 2)
        assert (await pod_a.get("/-/healthy")).json() == {"status": "ok"}


async def test_a_stopping_replica_finishes_its_batch_and_leaves_the_rest_to_the_others(
    tmp_path: Path, pg: PostgresTarget
) -> None:
    """B is deciding one webhook (its Sentry look-up held) when it is told to stop, with
    three more waiting that it may take: it finishes its batch and stops, and the three
    stay in the database for the other replica, A, which decides them."""
    held = HeldSentry()
    b = replica(tmp_path, pg, "pod-b", held)
    app = create_app(b)  # the lifespan's start and stop are called by hand here
    await b.start()
    b.ready = True
    async with httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://b") as c:
        for n in range(4):
            body, headers = signed(n)
            assert (await c.post("/webhooks/sentry", content=body, headers=headers)).is_success
            if n == 0:
                await wait_until(held.asked.is_set, "B never took the first webhook")
        stopping = asyncio.create_task(b.stop(GRACE))
        await wait_until(lambda: b.pipeline.finishing, "the stop never began")
        held.released.set()  # Sentry answers: B's batch completes
        await asyncio.wait_for(stopping, PROMPTLY)
    assert b.pipeline.batches == 1  # its own batch, and no other
    a = replica(tmp_path, pg, "pod-a", None)
    async with serving(a):
        await wait_until(lambda: a.pipeline.batches >= 1, "A never took the rest")
        await wait_until(a.store.idle, "A never emptied the inbox")
        assert (
            a.metrics.registry.get_sample_value(
                "sentry_bridge_alerts_total", {"outcome": "forwarded"}
            )
            == 3
        )

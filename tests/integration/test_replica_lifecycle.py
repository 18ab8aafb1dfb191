"""Lifecycle per replica, for real (issue 15): two ``python -m bridge serve`` pods on one
PostgreSQL, a real Alertmanager, and Sentry's API as ``FakeSentryAPI`` holding the look-up
of one issue (an API that never answers).

Pod A takes that issue's first webhook and is stuck in the look-up, holding the issue's
identity; pod B accepts the issue's next webhook, which only A may decide. A goes red (its
watchdog still catches a stuck pipeline), B stays green past ``server.progress_timeout``
(what waits is A's work, not B's), and B's SIGTERM ends in bounded time, the webhook left
in the database for A; once Sentry answers, A decides both and is green again. In-process,
with the watchdog's clock moved by hand: tests/test_compose_replicas.py."""

from __future__ import annotations

import contextlib
import time
from pathlib import Path

import yaml

from tests.conftest import PostgresTarget
from tests.integration import procs
from tests.integration.conftest import Alertmanager
from tests.integration.test_edge_faults import body_for, issue_of, wait_for
from tests.integration.test_replicas import database_env, postgres_store, replicas, start_pod
from tests.sentry_api import FakeSentryAPI

PROGRESS_TIMEOUT = 2.0  # server.progress_timeout
GRACE = 20.0  # shutdown.grace_period: what the old stop waited out for A's webhook
PROMPTLY = 8.0  # B's stop, with nothing of its own left, ends well within the grace
GAUGE = "sentry_bridge_pipeline_last_progress_timestamp_seconds"


def test_a_pod_waiting_on_anothers_identity_stays_healthy_and_stops_promptly(
    tmp_path: Path, alertmanager: Alertmanager, pg: PostgresTarget
) -> None:
    ports = [procs.free_port(), procs.free_port()]
    with contextlib.ExitStack() as stack:
        api = stack.enter_context(FakeSentryAPI())
        api.issue(issue_of(0), users=5, events=9, delay=120.0)
        pods = stack.enter_context(
            replicas(
                tmp_path, [alertmanager.url], postgres_store(pg), count=0,
                env=database_env(pg), ports=ports,
            )
        )  # fmt: skip
        shipped = yaml.safe_load(pods.config.read_text(encoding="utf-8"))
        procs.update_config(
            pods.config,
            server=shipped["server"] | {"progress_timeout": f"{PROGRESS_TIMEOUT}s"},
            shutdown={"grace_period": f"{GRACE}s"},
            sentry=shipped["sentry"]
            | {"base_url": api.url, "api_token": "t0ken", "api_timeout": "120s"},
        )
        a = stack.enter_context(start_pod(tmp_path, pods.config, "pod-a", ports[0], pods.env))
        first = body_for(0)
        assert a.post(first, resource="event_alert").status_code == 202
        assert api.wait_for_requests(1, timeout=10), "pod A never asked Sentry"

        b = stack.enter_context(start_pod(tmp_path, pods.config, "pod-b", ports[1], pods.env))
        accepted = time.time()
        # The same issue in other bytes: a second entry of the identity A holds.
        assert b.post(first + b"\n", resource="event_alert").status_code == 202

        # A is stuck: its own watchdog turns it red.
        wait_for(lambda: a.client.get("/-/healthy").status_code == 503, 20, "A stayed green")
        assert "the pipeline completed no batch" in a.client.get("/-/healthy").json()["status"]
        # B's watchdog, looking after the timeout has passed since the webhook waits, still
        # sees B progress (idle: nothing it may take) and B stays green.
        wait_for(
            lambda: b.metric(GAUGE) > accepted + PROGRESS_TIMEOUT + 1,
            20,
            "B's watchdog saw no progress with A's webhooks waiting",
        )
        assert b.client.get("/-/healthy").json() == {"status": "ok"}

        stopping = time.monotonic()
        assert b.process.terminate(timeout=GRACE + 10) == 0
        stopped = time.monotonic() - stopping
        print(f"\npod B stopped {stopped:.1f}s after SIGTERM (grace {GRACE:g}s)")
        assert stopped < PROMPTLY

        api.stop()  # the held look-up is answered: A decides both webhooks, in order
        wait_for(lambda: a.client.get("/-/healthy").status_code == 200, 30, "A stayed red")
        alertmanager.wait_for(
            lambda alerts: any(x["labels"].get("sentry_issue_id") == issue_of(0) for x in alerts)
        )

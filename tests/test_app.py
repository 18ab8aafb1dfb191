"""The HTTP edge in-process: status codes, JSON reasons, metrics, and that a bad
request never stops the app. Alertmanager is an ``httpx.MockTransport`` here;
tests/integration/ runs the real one."""

from __future__ import annotations

import hashlib
import hmac
import json
import platform
import sqlite3
import time
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import anyio
import httpx
import pytest
from prometheus_client import CollectorRegistry

from bridge import __version__, config
from bridge.app import create_app
from bridge.compose import Bridge, build
from bridge.errors import BadPayload
from bridge.quarantine import reread
from bridge.store.sqlite import SqliteStore
from tests.sentry_payloads import FIXTURES, SENTRY_6_PLUGIN

SECRET = "edge-secret"


def load(name: str) -> bytes:
    return (FIXTURES / name).read_bytes()


def sign(body: bytes, secret: str = SECRET) -> str:
    return hmac.new(secret.encode(), body, hashlib.sha256).hexdigest()


class Recorder:
    """Stands in for Alertmanager: records every alert posted to it."""

    def __init__(self) -> None:
        self.alerts: list[dict[str, Any]] = []

    def __call__(self, request: httpx.Request) -> httpx.Response:
        assert request.url.path == "/api/v2/alerts"
        self.alerts.extend(json.loads(request.content))
        return httpx.Response(200)

    async def wait(self, count: int, timeout: float = 5.0) -> list[dict[str, Any]]:
        with anyio.move_on_after(timeout):
            while len(self.alerts) < count:
                await anyio.sleep(0.01)
        return self.alerts


@pytest.fixture
def recorder() -> Recorder:
    return Recorder()


@pytest.fixture
def registry() -> CollectorRegistry:
    return CollectorRegistry()


pytestmark = pytest.mark.anyio
Client = httpx.AsyncClient


@pytest.fixture
def bridge(tmp_path: Path, recorder: Recorder, registry: CollectorRegistry) -> Bridge:
    cfg = config.parse(
        {
            "server": {"max_body_bytes": 64 * 1024},
            "sentry": {"client_secrets": f"other-secret,{SECRET}", "legacy_token": "tok"},
            "store": {"data_dir": str(tmp_path)},
        },
        env={},
    )
    return build(cfg, registry=registry, alertmanager_transport=httpx.MockTransport(recorder))


def store(bridge: Bridge) -> SqliteStore:
    assert isinstance(bridge.store, SqliteStore)  # the default engine
    return bridge.store


@pytest.fixture
async def client(bridge: Bridge) -> AsyncIterator[Client]:
    app = create_app(bridge)
    async with (
        app.router.lifespan_context(app),
        httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://bridge") as c,
    ):
        yield c


async def post(client: Client, body: bytes, headers: dict[str, str]) -> httpx.Response:
    return await client.post("/webhooks/sentry", content=body, headers=headers)


async def nothing_else_sent(
    client: Client, registry: CollectorRegistry, recorder: Recorder
) -> None:
    """Asserts that what was posted before reached Alertmanager as nothing: a metric alert
    goes in after it, and once the bridge's own counter says Alertmanager took an alert,
    whatever the earlier webhooks made would have been sent (the inbox is taken and the
    queue delivered in order), so the metric alert must be all Alertmanager holds."""
    body = load("metric_alert_critical.json")
    headers = {"Sentry-Hook-Resource": "metric_alert", "Sentry-Hook-Signature": sign(body)}
    assert (await post(client, body, headers)).status_code == 202
    with anyio.fail_after(5):
        while not sent(registry):  # polled: a counter signals nothing
            await anyio.sleep(0.01)
    assert sent(registry) == 1
    assert [alert["labels"]["alertname"] for alert in recorder.alerts] == ["SentryMetricAlert"]


def sent(registry: CollectorRegistry) -> float:
    """``sentry_bridge_alertmanager_alerts_sent_total`` over every Alertmanager."""
    return sum(
        sample.value
        for family in registry.collect()
        if family.name == "sentry_bridge_alertmanager_alerts_sent"
        for sample in family.samples
        if sample.name.endswith("_total")
    )


def rejected(registry: CollectorRegistry, reason: str) -> float:
    value = registry.get_sample_value("sentry_bridge_webhooks_rejected_total", {"reason": reason})
    return value or 0.0


async def test_health_ready_metrics(client: Client) -> None:
    assert (await client.get("/-/healthy")).status_code == 200
    assert (await client.get("/-/ready")).json() == {"status": "ready"}
    text = (await client.get("/metrics")).text
    assert "sentry_bridge_webhooks_received_total" in text
    [build] = [line for line in text.splitlines() if line.startswith("sentry_bridge_build_info")]
    assert f'version="{__version__}"' in build
    assert f'python="{platform.python_version()}"' in build


async def test_the_webhook_path_is_routed_as_before(client: Client) -> None:
    """Only an exact ``POST /webhooks/sentry`` skips Starlette's router (``app._Edge``): other
    methods and spellings of the path are answered as the router answers them."""
    got = await client.get("/webhooks/sentry")
    assert (got.status_code, got.headers["allow"]) == (405, "POST")
    moved = await client.post("/webhooks/sentry/", content=b"{}")
    assert (moved.status_code, moved.headers["location"]) == (
        307,
        "http://bridge/webhooks/sentry",
    )
    assert (await client.post("/webhooks/sentry", content=b"{}")).status_code == 401


async def test_signed_issue_alert_is_accepted_and_delivered(
    client: Client, recorder: Recorder, registry: CollectorRegistry
) -> None:
    body = load("event_alert.json")
    response = await post(
        client, body, {"Sentry-Hook-Resource": "event_alert", "Sentry-Hook-Signature": sign(body)}
    )
    assert response.status_code == 202
    assert response.json() == {"status": "accepted"}
    alerts = await recorder.wait(1)
    assert len(alerts) == 1
    assert alerts[0]["labels"]["alertname"] == "SentryIssue"
    assert alerts[0]["labels"]["source"] == "sentry"
    received = registry.get_sample_value(
        "sentry_bridge_webhooks_received_total", {"resource": "event_alert"}
    )
    assert received == 1.0


@pytest.mark.parametrize(
    ("headers", "status", "reason"),
    [
        pytest.param({"Sentry-Hook-Resource": "event_alert"}, 401, "missing_signature", id="none"),
        pytest.param(
            {"Sentry-Hook-Resource": "event_alert", "Sentry-Hook-Signature": "00" * 32},
            401,
            "bad_signature",
            id="bad",
        ),
    ],
)
async def test_unauthenticated_is_refused(
    client: Client,
    recorder: Recorder,
    registry: CollectorRegistry,
    headers: dict[str, str],
    status: int,
    reason: str,
) -> None:
    response = await post(client, load("event_alert.json"), headers)
    assert response.status_code == status
    assert response.json()["reason"] == reason
    assert SECRET not in response.text
    assert rejected(registry, reason) == 1.0
    await nothing_else_sent(client, registry, recorder)
    # The process keeps serving.
    assert (await client.get("/-/healthy")).status_code == 200


async def test_legacy_token(client: Client) -> None:
    body = load("legacy_webhook.json")
    assert (await client.post("/webhooks/sentry?token=nope", content=body)).status_code == 401
    assert (await client.post("/webhooks/sentry?token=tok", content=body)).status_code == 202


async def test_the_last_webhook_of_each_family_is_timed(
    client: Client, registry: CollectorRegistry
) -> None:
    """Issue 16, item 6: ``sentry_bridge_last_webhook_timestamp_seconds{family}``, set by an
    authenticated webhook only, with no series (not a 1970 zero) before the first."""
    name = "sentry_bridge_last_webhook_timestamp_seconds"

    def last(family: str) -> float | None:
        return registry.get_sample_value(name, {"family": family})

    body = load("legacy_webhook.json")
    assert (await client.post("/webhooks/sentry?token=nope", content=body)).status_code == 401
    issue = load("event_alert.json")
    unsigned = await post(client, issue, {"Sentry-Hook-Resource": "event_alert"})
    assert unsigned.status_code == 401
    assert last("legacy") is None
    assert last("integration") is None
    before = time.time()
    assert (await client.post("/webhooks/sentry?token=tok", content=body)).status_code == 202
    legacy = last("legacy")
    assert legacy is not None
    assert before <= legacy <= time.time()
    assert last("integration") is None
    assert last("service_hook") is None
    signed = {"Sentry-Hook-Resource": "event_alert", "Sentry-Hook-Signature": sign(issue)}
    assert (await post(client, issue, signed)).status_code == 202
    integration = last("integration")
    assert integration is not None
    assert integration >= legacy
    assert last("legacy") == legacy


async def test_not_json_is_400(client: Client, registry: CollectorRegistry) -> None:
    body = b"{not json"
    response = await post(
        client, body, {"Sentry-Hook-Resource": "event_alert", "Sentry-Hook-Signature": sign(body)}
    )
    assert response.status_code == 400
    assert response.json()["reason"] == "invalid_json"
    assert rejected(registry, "invalid_json") == 1.0


async def test_signed_wrong_shape_is_quarantined_not_refused(
    client: Client, bridge: Bridge, registry: CollectorRegistry, recorder: Recorder
) -> None:
    body = json.dumps({"action": "triggered", "data": {"secret_field": "hunter2"}}).encode()
    headers = {
        "Sentry-Hook-Resource": "event_alert",
        "Sentry-Hook-Signature": sign(body),
        "Sentry-Hook-Timestamp": "1700000000",
        "Request-ID": "req-1",
        "Authorization": "Bearer not-kept",
    }
    response = await post(client, body, headers)
    assert response.status_code == 202
    assert response.json() == {"status": "quarantined", "reason": "invalid_payload"}
    assert "hunter2" not in response.text
    assert rejected(registry, "invalid_payload") == 0.0
    quarantined = {"reason": "invalid_payload"}
    assert registry.get_sample_value("sentry_bridge_quarantined_total", quarantined) == 1.0
    assert (await store(bridge).sizes(0)).quarantined == 1
    [entry] = await store(bridge).quarantined()
    assert (entry.body, entry.reason, entry.alert) == (body, "invalid_payload", None)
    # What reading it needs, never a credential.
    assert entry.headers == {
        "sentry-hook-resource": "event_alert",
        "sentry-hook-timestamp": "1700000000",
        "request-id": "req-1",
        "user-agent": f"python-httpx/{httpx.__version__}",
    }
    # Sentry retrying the very body: acknowledged, kept once.
    again = await post(client, body, headers)
    assert (again.status_code, again.json()) == (200, {"status": "duplicate"})
    assert len(await store(bridge).quarantined()) == 1
    await nothing_else_sent(client, registry, recorder)


async def test_unsigned_wrong_shape_is_refused(client: Client, bridge: Bridge) -> None:
    body = json.dumps({"action": "triggered", "data": {}}).encode()
    response = await post(client, body, {"Sentry-Hook-Resource": "event_alert"})
    assert response.status_code == 401
    assert (await store(bridge).sizes(0)).quarantined == 0


@pytest.mark.parametrize(
    "body",
    [
        pytest.param(b'{"action": "triggered", "data": {"event": "\\ud800"}}', id="lone-surrogate"),
        pytest.param(b'{"action": "triggered", "data": NaN}', id="nan"),
        pytest.param(b"[" * 300 + b"]" * 300, id="deep"),
    ],
)
async def test_json_the_typed_parser_refuses_is_quarantined(
    client: Client, bridge: Bridge, body: bytes
) -> None:
    headers = {"Sentry-Hook-Resource": "event_alert", "Sentry-Hook-Signature": sign(body)}
    response = await post(client, body, headers)
    assert (response.status_code, response.json()["status"]) == (202, "quarantined")
    [entry] = await store(bridge).quarantined()
    assert entry.body == body


async def test_the_same_signed_body_twice_has_one_effect(
    client: Client, recorder: Recorder, registry: CollectorRegistry
) -> None:
    body = load("event_alert.json")
    headers = {"Sentry-Hook-Resource": "event_alert", "Sentry-Hook-Signature": sign(body)}
    assert (await post(client, body, headers)).status_code == 202
    again = await post(client, body, headers)
    assert (again.status_code, again.json()) == (200, {"status": "duplicate"})
    assert len(await recorder.wait(1)) == 1
    assert registry.get_sample_value("sentry_bridge_webhooks_duplicate_total") == 1.0
    # A distinct body (another event of the issue) is no duplicate.
    other = body.replace(b'"event_id"', b'"other":1,"event_id"', 1)
    assert other != body
    response = await post(
        client, other, {"Sentry-Hook-Resource": "event_alert", "Sentry-Hook-Signature": sign(other)}
    )
    assert response.status_code == 202


async def test_too_large_is_413(client: Client, registry: CollectorRegistry) -> None:
    body = b"[" + b"0," * 40_000 + b"0]"
    response = await post(
        client, body, {"Sentry-Hook-Resource": "event_alert", "Sentry-Hook-Signature": sign(body)}
    )
    assert response.status_code == 413
    assert response.json()["reason"] == "too_large"
    assert rejected(registry, "too_large") == 1.0


async def test_installation_and_unknown_resources_are_acknowledged(
    client: Client, registry: CollectorRegistry, recorder: Recorder
) -> None:
    body = load("installation_created.json")
    response = await post(
        client, body, {"Sentry-Hook-Resource": "installation", "Sentry-Hook-Signature": sign(body)}
    )
    assert response.status_code == 200
    assert response.json()["status"] == "ignored"
    body = json.dumps({"action": "created", "data": {"comment": "hi"}}).encode()
    response = await post(
        client, body, {"Sentry-Hook-Resource": "comment", "Sentry-Hook-Signature": sign(body)}
    )
    assert response.status_code == 200
    assert registry.get_sample_value("sentry_bridge_alerts_total", {"outcome": "ignored"}) == 2.0
    await nothing_else_sent(client, registry, recorder)


async def test_a_legacy_body_with_the_token_follows_the_same_rule(
    client: Client, bridge: Bridge
) -> None:
    body = json.dumps({"id": {"not": "an id"}, "project": "p", "event": {}})
    response = await client.post("/webhooks/sentry?token=tok", content=body.encode())
    assert (response.status_code, response.json()["status"]) == (202, "quarantined")
    [entry] = await store(bridge).quarantined()
    assert entry.body == body.encode()
    assert "tok" not in json.dumps(entry.headers)  # nor the URL: the token is not kept
    not_json = await client.post("/webhooks/sentry?token=tok", content=b"{")
    assert not_json.status_code == 400


@pytest.mark.parametrize(
    "data",
    [
        pytest.param(
            SENTRY_6_PLUGIN,
            id="sentry-6-plugin",  # the keys Sentry 5/6's plugin sent (no event)
        ),
        pytest.param({"group": {"id": "1"}, "event": {"event_id": "a"}}, id="service-hook-shape"),
        pytest.param({"action": "resolved", "data": {}}, id="integration-shape"),
    ],
)
async def test_the_right_token_with_a_body_the_plugin_does_not_send_is_quarantined(
    client: Client, bridge: Bridge, registry: CollectorRegistry, recorder: Recorder, data: Any
) -> None:
    """Issue 16, item 7: authenticated, so never refused (it was a 401 ``bad_token``); the
    token vouches for the legacy plugin's bodies only, so it is kept unread, and a replay
    reads it only as a legacy body."""
    body = json.dumps(data).encode()
    response = await client.post("/webhooks/sentry?token=tok", content=body)
    assert (response.status_code, response.json()) == (
        202,
        {"status": "quarantined", "reason": "unknown_legacy_body"},
    )
    assert rejected(registry, "bad_token") == 0.0
    reason = {"reason": "unknown_legacy_body"}
    assert registry.get_sample_value("sentry_bridge_quarantined_total", reason) == 1.0
    [entry] = await store(bridge).quarantined()
    assert (entry.body, entry.reason) == (body, "unknown_legacy_body")
    with pytest.raises(BadPayload):
        reread(bridge.config, entry)  # a replay keeps it: never read as another family
    wrong = await client.post("/webhooks/sentry?token=nope", content=body)
    assert (wrong.status_code, wrong.json()["reason"]) == (401, "bad_token")
    await nothing_else_sent(client, registry, recorder)


async def test_a_bug_is_a_503_internal_error_not_a_full_store(
    client: Client, bridge: Bridge, registry: CollectorRegistry, monkeypatch: pytest.MonkeyPatch
) -> None:
    async def broken(*_: object) -> bool:
        raise RuntimeError("a bug")

    monkeypatch.setattr(bridge, "accept", broken)
    body = load("event_alert.json")
    headers = {"Sentry-Hook-Resource": "event_alert", "Sentry-Hook-Signature": sign(body)}
    response = await post(client, body, headers)
    assert (response.status_code, response.json()["reason"]) == (503, "internal_error")
    rejected = "sentry_bridge_webhooks_rejected_total"
    assert registry.get_sample_value(rejected, {"reason": "internal_error"}) == 1
    assert registry.get_sample_value(rejected, {"reason": "store_full"}) == 0


class RefuseCommits:
    """SQLite authorizer refusing COMMIT while ``on``: a COMMIT failing as on a full disk."""

    on = True

    def __call__(self, action: int, arg1: str | None, *_: object) -> int:
        refuse = self.on and action == sqlite3.SQLITE_TRANSACTION and arg1 == "COMMIT"
        return sqlite3.SQLITE_DENY if refuse else sqlite3.SQLITE_OK


async def test_a_store_that_keeps_failing_turns_ready_red_and_recovers(
    client: Client, bridge: Bridge, registry: CollectorRegistry
) -> None:
    box = store(bridge)
    refuse = RefuseCommits()
    await box._file.call(lambda: box._file.db.set_authorizer(refuse))
    body = load("event_alert.json")
    headers = {"Sentry-Hook-Resource": "event_alert", "Sentry-Hook-Signature": sign(body)}
    for _ in range(SqliteStore.failing_after):
        response = await post(client, body, headers)
        assert (response.status_code, response.json()["reason"]) == (503, "store_full")
    assert (
        registry.get_sample_value("sentry_bridge_store_errors_total") == SqliteStore.failing_after
    )
    ready = await client.get("/-/ready")
    assert (ready.status_code, ready.json()) == (503, {"status": "the store cannot be written"})
    assert (await client.get("/-/healthy")).status_code == 200  # a restart would not help
    refuse.on = False
    # Sentry's retry of the refused webhook: the rolled-back attempts left nothing behind.
    assert (await post(client, body, headers)).status_code == 202
    assert (await client.get("/-/ready")).status_code == 200

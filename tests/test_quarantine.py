"""bridge/quarantine.py: the operator endpoints of a running bridge (in-process), and
``sentry-bridge quarantine`` on the SQLite store of a stopped bridge (``--offline``, or
no bridge answering). Against a running bridge on PostgreSQL:
tests/integration/test_quarantine.py."""

from __future__ import annotations

import asyncio
import hashlib
import hmac
import json
from collections.abc import AsyncIterator
from pathlib import Path

import httpx
import pytest
import yaml
from prometheus_client import CollectorRegistry

from bridge import cli, config
from bridge.admin import create_admin_app
from bridge.alertmanager import target_name
from bridge.app import create_app
from bridge.compose import Bridge, build
from bridge.metrics import Metrics
from bridge.model import SentryAlert
from bridge.store.contract import Failed, Store
from bridge.store.sqlite import SqliteStore
from tests.factories import both_listeners, sentry_alert, sizes, until_sizes
from tests.integration.procs import free_port
from tests.sentry_payloads import FIXTURES

SECRET = "s"
GOOD = (FIXTURES / "event_alert.json").read_bytes()  # an older parser refused it
STILL_BAD = json.dumps({"action": "triggered", "data": {}}).encode()
IGNORED = (FIXTURES / "installation_created.json").read_bytes()


def write_config(tmp_path: Path) -> Path:
    path = tmp_path / "config.yaml"
    data = {"sentry": {"client_secrets": SECRET}, "store": {"data_dir": str(tmp_path / "data")}}
    path.write_text(yaml.safe_dump(data), encoding="utf-8")
    return path


def store_at(path: Path) -> SqliteStore:
    cfg = config.load(path, env={})
    targets = [target_name(url) for url in cfg.alertmanager.urls]
    return SqliteStore(
        cfg.store.data_dir, targets, max_queued=1000, metrics=Metrics(CollectorRegistry())
    )


async def fill(store: Store, alert: SentryAlert) -> None:
    """What a bridge leaves behind: three bodies its parser refused, one alert its pipeline
    failed on (taken here: not on a running bridge, whose pipeline takes it)."""
    await quarantine_bodies(store)
    await store.accept(alert)
    taken = await store.take(1)
    [entry] = taken.entries
    await store.complete(taken, [], [Failed(entry.inbox_id, entry.alert, "RuntimeError: boom")])


async def quarantine_bodies(store: Store) -> None:
    """Three bodies an older parser refused: one reads now, one never, one is no alert."""
    for body, resource in (
        (GOOD, "event_alert"),
        (STILL_BAD, "event_alert"),
        (IGNORED, "installation"),
    ):
        headers = {"sentry-hook-resource": resource, "request-id": "r1"}
        digest = hashlib.sha256(body).digest()
        assert await store.quarantine("invalid_payload", "old parser", headers, body, digest)


async def fill_file(path: Path, alert: SentryAlert) -> None:
    store = store_at(path)
    await store.open()
    try:
        await fill(store, alert)
    finally:
        await store.close()


def inbox(path: Path) -> list[SentryAlert]:
    async def read() -> list[SentryAlert]:
        store = store_at(path)
        await store.open()
        try:
            if not (await sizes(store)).inbox:
                return []
            return [entry.alert for entry in (await store.take(100)).entries]
        finally:
            await store.close()

    return asyncio.run(read())


# --- sentry-bridge quarantine on a stopped bridge's store --------------------------------


def run(path: Path, *args: str) -> int:
    action, *rest = args
    return cli.main(["quarantine", action, *rest, "--config", str(path), "--offline"])


def test_list_show_replay_discard_offline(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    path = write_config(tmp_path)
    alert = sentry_alert(identity="issue:42")
    asyncio.run(fill_file(path, alert))

    assert run(path, "list") == 0
    captured = capsys.readouterr()
    assert captured.out.startswith("4 quarantined (invalid_payload: 3, pipeline_error: 1)")
    assert f"store: sqlite {tmp_path / 'data' / 'store.sqlite3'}" in captured.err
    assert f"config: {path}" in captured.err
    assert run(path, "list", "--limit", "1") == 0
    out = capsys.readouterr().out
    first = int(out.splitlines()[1].split()[0])
    assert f"... more: --after {first}" in out

    assert run(path, "replay") == 1  # one entry is still unreadable
    out = capsys.readouterr().out
    assert "2 replayed, 1 ignored, 1 kept, 0 missing" in out
    replayed = inbox(path)
    assert [a.identity for a in replayed] == ["issue:1117540176", "issue:42"]
    assert replayed[0].request_id == "r1"
    assert replayed[1] == alert

    assert run(path, "list") == 0
    out = capsys.readouterr().out
    assert out.startswith("1 quarantined (invalid_payload: 1)")
    [entry_id] = [int(line.split()[0]) for line in out.splitlines()[1:]]
    assert run(path, "show", str(entry_id)) == 0
    shown = capsys.readouterr().out
    assert '"sentry-hook-resource": "event_alert"' in shown
    assert '{"action": "triggered", "data": {}}' in shown
    assert "reason: invalid_payload" in shown
    assert run(path, "show", str(entry_id + 100)) == 1
    assert run(path, "replay", str(entry_id + 100)) == 1
    assert "0 replayed, 0 ignored, 0 kept, 1 missing" in capsys.readouterr().out
    assert run(path, "replay", str(entry_id)) == 1, "still unreadable: kept"

    assert run(path, "discard") == 2, "discard needs an id or --all"
    assert run(path, "discard", str(entry_id), str(entry_id + 100)) == 1
    out = capsys.readouterr().out
    assert f"discarded 1: {entry_id}" in out
    assert f"not found: {entry_id + 100}" in out
    assert run(path, "list") == 0
    assert capsys.readouterr().out.startswith("0 quarantined")


def test_no_bridge_answering_opens_the_store(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    path = write_config(tmp_path)
    asyncio.run(fill_file(path, sentry_alert(identity="issue:42")))
    url = f"http://127.0.0.1:{free_port()}"  # nothing listens there
    assert cli.main(["quarantine", "discard", "--all", "--config", str(path), "--url", url]) == 0
    captured = capsys.readouterr()
    assert f"no bridge answers at {url}: opening the configured store directly" in captured.err
    assert captured.out.startswith("discarded 4")


def test_a_missing_store_is_an_error_not_created(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    path = write_config(tmp_path)
    assert run(path, "list") == 2
    assert "no store at" in capsys.readouterr().err
    assert not (tmp_path / "data").exists()


def test_the_store_at_a_running_bridge_is_refused_offline(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    path = write_config(tmp_path)
    asyncio.run(fill_file(path, sentry_alert(identity="issue:42")))

    async def while_open() -> None:
        running = store_at(path)  # the bridge holds its file's lock
        await running.open()
        try:
            code = await asyncio.to_thread(run, path, "list")
        finally:
            await running.close()
        assert code == 2

    monkeypatch.setattr(SqliteStore, "lock_timeout_ms", 100)  # the command's wait for the lock
    asyncio.run(while_open())
    assert "locked while the bridge runs" in capsys.readouterr().err


# --- the endpoints of a running bridge ------------------------------------------------------


@pytest.fixture
def registry() -> CollectorRegistry:
    return CollectorRegistry()


@pytest.fixture
async def running(
    tmp_path: Path, registry: CollectorRegistry
) -> AsyncIterator[tuple[Bridge, httpx.AsyncClient]]:
    cfg = config.load(write_config(tmp_path), env={})
    am = httpx.MockTransport(lambda request: httpx.Response(200))
    bridge = build(cfg, registry=registry, alertmanager_transport=am)
    app = create_app(bridge)
    transport = httpx.ASGITransport(app=both_listeners(app, create_admin_app(bridge, None)))
    async with (
        app.router.lifespan_context(app),
        httpx.AsyncClient(transport=transport, base_url="http://b") as http,
    ):
        yield bridge, http


@pytest.mark.anyio
async def test_endpoints_list_show_replay_discard(
    running: tuple[Bridge, httpx.AsyncClient], registry: CollectorRegistry
) -> None:
    bridge, http = running
    body = json.dumps({"action": "triggered", "data": {"other": 1}}).encode()
    signed = {
        "Sentry-Hook-Resource": "event_alert",
        "Sentry-Hook-Signature": hmac.new(SECRET.encode(), body, hashlib.sha256).hexdigest(),
        "Request-ID": "req-9",
    }
    response = await http.post("/webhooks/sentry", content=body, headers=signed)
    assert response.json()["status"] == "quarantined"
    await quarantine_bodies(bridge.store)

    listed = (await http.get("/-/quarantine", params={"limit": 2})).json()
    assert listed["count"] == 4
    assert listed["reasons"] == {"invalid_payload": 4}
    assert listed["store"].startswith("sqlite ")
    first = listed["entries"][0]
    assert (first["reason"], first["resource"], first["request_id"]) == (
        "invalid_payload",
        "event_alert",
        "req-9",
    )
    assert len(listed["entries"]) == 2
    shown = (await http.get(f"/-/quarantine/{first['id']}")).json()
    assert shown["body"] == body.decode()
    assert "sentry-hook-signature" not in shown["headers"], "no credentials kept"
    assert (await http.get("/-/quarantine/999999")).status_code == 404
    assert (await http.get("/-/quarantine", params={"limit": "x"})).status_code == 400

    for bad in (b"", b"{}", b'{"ids": []}', b'{"ids": ["1"]}', b'{"ids": [1], "all": true}'):
        assert (await http.post("/-/quarantine/discard", content=bad)).status_code == 400, bad
    assert (await http.post("/-/quarantine/replay", content=b"[")).status_code == 400

    replayed = (await http.post("/-/quarantine/replay", json={"all": True})).json()
    assert replayed["counts"] == {"replayed": 1, "ignored": 1, "kept": 2, "missing": 0}
    # The running pipeline takes what was replayed: nothing waits in the inbox for long.
    await until_sizes(bridge.store, lambda s: s.inbox == 0, "the replayed were never taken")
    kept = [r["id"] for r in replayed["results"] if r["outcome"] == "kept"]
    assert first["id"] in kept

    gone = (await http.post("/-/quarantine/discard", json={"ids": [kept[0], 999999]})).json()
    assert (gone["discarded"], gone["missing"]) == ([kept[0]], [999999])
    assert registry.get_sample_value("sentry_bridge_quarantine_discarded_total") == 1.0
    rest = (await http.post("/-/quarantine/discard", json={"all": True})).json()
    assert rest["discarded"] == kept[1:]
    assert registry.get_sample_value("sentry_bridge_quarantine_discarded_total") == 2.0

    status = (await http.get("/-/status")).json()
    assert (status["quarantined"], status["quarantine_reasons"]) == (0, {})
    assert registry.get_sample_value("sentry_bridge_quarantine_webhooks") == 0.0  # as read
    assert status["quarantine_oldest_age_seconds"] is None

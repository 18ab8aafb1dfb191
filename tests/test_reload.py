"""bridge/reload.py's pure part: which changes a reload applies and which need a restart.
The reload itself (SIGHUP, POST /-/reload, in the one process of serve) runs for real in
tests/integration/test_reload.py."""

from __future__ import annotations

import asyncio
import hashlib
import hmac
import json
import time
from typing import Any

import anyio
import httpx
import pytest
import yaml
from prometheus_client import CollectorRegistry

from bridge import config
from bridge.admin import create_admin_app
from bridge.app import create_app
from bridge.compose import Bridge, build
from bridge.metrics import Metrics
from bridge.reload import Reloader, merge
from tests.factories import both_listeners
from tests.sentry_payloads import FIXTURES

BASE: dict[str, Any] = {"sentry": {"client_secrets": "s"}}


def cfg(**sections: dict[str, Any]) -> config.Config:
    data = {**BASE, **sections}
    return config.parse(data, env={})


@pytest.mark.parametrize(
    ("change", "restart"),
    [
        pytest.param({"server": {"port": 9999}}, ["server.port"], id="port"),
        pytest.param({"server": {"host": "127.0.0.1"}}, ["server.host"], id="host"),
        pytest.param({"store": {"max_queued": 5}}, ["store"], id="store-bound"),
        pytest.param({"store": {"spool": {"accept_timeout": "0.5s"}}}, ["store"], id="store"),
        pytest.param({"dedup": {"window": "1m"}}, ["dedup"], id="dedup"),
        pytest.param(
            {"alertmanager": {"urls": "http://am:9093"}}, ["alertmanager.urls"], id="am-urls"
        ),
        pytest.param(
            {"alertmanager": {"bearer_token": "t"}}, ["alertmanager.bearer_token"], id="am-auth"
        ),
        pytest.param({"sentry": {"client_secrets": "s", "api_token": "t"}}, ["sentry.api_token"]),
        pytest.param({"server": {"max_body_bytes": 4096}}, [], id="body-limit"),
        pytest.param({"server": {"log_level": "debug"}}, [], id="log-level"),
        pytest.param({"sentry": {"client_secrets": "new"}}, [], id="secrets"),
        pytest.param({"alertmanager": {"resend_interval": "5m"}}, [], id="resend"),
        pytest.param(
            {"classification": {"rules": [{"name": "r", "match": {}, "severity": "low"}]}},
            [],
            id="rules",
        ),
    ],
)
def test_restart_only_settings_are_kept_and_named(
    change: dict[str, Any], restart: list[str]
) -> None:
    running = cfg()
    new = cfg(**change)
    merged, kept = merge(running, new)
    assert kept == restart
    for key in restart:
        section, _, name = key.partition(".")
        old_value = (
            getattr(running, section) if not name else getattr(getattr(running, section), name)
        )
        got = getattr(merged, section) if not name else getattr(getattr(merged, section), name)
        assert got == old_value
    # Everything else is the new file's.
    assert merged.classification == new.classification
    assert (merged == new) == (not restart)


def test_several_keys_of_one_section_are_kept_together() -> None:
    running = cfg()
    new = cfg(alertmanager={"urls": "http://am:9093", "timeout": "1s", "batch_size": 5})
    merged, kept = merge(running, new)
    assert kept == ["alertmanager.urls", "alertmanager.timeout"]
    assert merged.alertmanager.urls == running.alertmanager.urls
    assert merged.alertmanager.timeout == running.alertmanager.timeout
    assert merged.alertmanager.batch_size == 5


def test_the_drain_gets_what_is_left_of_the_grace_period(tmp_path: Any) -> None:
    c = cfg(shutdown={"grace_period": "10s"}, store={"data_dir": str(tmp_path)})
    metrics = Metrics(CollectorRegistry())
    bridge = Bridge(c, metrics)
    assert bridge.grace_left() == 10
    bridge.stopping_since = time.monotonic() - 4
    assert 5.9 < bridge.grace_left() <= 6
    bridge.stopping_since = time.monotonic() - 40
    assert bridge.grace_left() == 0


# --- the reload itself, in-process (the real processes: tests/integration/test_reload.py) --


def write(path: Any, rules: list[dict[str, Any]], **extra: Any) -> None:
    data = {
        "sentry": {"client_secrets": "s"},
        "store": {"data_dir": str(path.parent / "data")},
        "classification": {"rules": rules},
        **extra,
    }
    path.write_text(yaml.safe_dump(data), encoding="utf-8")


@pytest.mark.anyio
async def test_reload_applies_refuses_and_counts(tmp_path: Any) -> None:
    path = tmp_path / "config.yaml"
    write(path, [])
    registry = CollectorRegistry()
    posted: list[dict[str, Any]] = []

    def alertmanager(request: httpx.Request) -> httpx.Response:
        if request.url.path == "/api/v2/alerts":
            posted.extend(json.loads(request.content))
        return httpx.Response(200)

    bridge = build(
        config.load(path),
        registry=registry,
        alertmanager_transport=httpx.MockTransport(alertmanager),
    )
    app = create_app(bridge)
    both = both_listeners(app, create_admin_app(bridge, Reloader(path, bridge)))

    def sample(name: str) -> float | None:
        return registry.get_sample_value(name)

    body = (FIXTURES / "metric_alert_critical.json").read_bytes()
    headers = {
        "Sentry-Hook-Resource": "metric_alert",
        "Sentry-Hook-Signature": hmac.new(b"s", body, hashlib.sha256).hexdigest(),
    }
    async with (
        app.router.lifespan_context(app),
        httpx.AsyncClient(transport=httpx.ASGITransport(app=both), base_url="http://b") as c,
    ):
        assert sample("sentry_bridge_config_last_reload_successful") == 1
        write(path, [{"name": "new-rule", "match": {}, "severity": "low"}], server={"port": 1})
        answer = await c.post("/-/reload")
        assert answer.json() == {"status": "reloaded", "restart_required": ["server.port"]}
        assert bridge.config.classification.rules[0].name == "new-rule"
        assert bridge.config.server.port == 8080  # kept: a restart-only setting

        path.write_text("classification: {rules: [{name: x}]}\n", encoding="utf-8")
        refused = await c.post("/-/reload")
        assert refused.status_code == 400
        assert refused.json()["status"] == "refused"
        assert sample("sentry_bridge_config_last_reload_successful") == 0
        assert sample("sentry_bridge_config_reloads_total") == 2
        assert sample("sentry_bridge_config_reloads_failed_total") == 1

        assert (await c.post("/webhooks/sentry", content=body, headers=headers)).status_code == 202
        with anyio.fail_after(5):
            while not posted:
                await anyio.sleep(0.01)
    # The rule of the last good reload decided, though a broken file came after it.
    assert posted[0]["annotations"]["classified_by"] == "new-rule"


@pytest.mark.anyio
async def test_without_a_config_file_there_is_nothing_to_reload(tmp_path: Any) -> None:
    cfg = config.parse({"sentry": {"client_secrets": "s"}, "store": {"data_dir": str(tmp_path)}})
    bridge = build(cfg, alertmanager_transport=httpx.MockTransport(lambda r: httpx.Response(200)))
    app = create_app(bridge)
    both = both_listeners(app, create_admin_app(bridge, None))
    async with (
        app.router.lifespan_context(app),
        httpx.AsyncClient(transport=httpx.ASGITransport(app=both), base_url="http://b") as c,
    ):
        assert (await c.post("/-/reload")).status_code == 404


@pytest.mark.anyio
async def test_concurrent_reloads_share_one_and_an_unchanged_file_is_not_parsed(
    tmp_path: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    path = tmp_path / "config.yaml"
    write(path, [])
    bridge = Bridge(config.load(path), Metrics(CollectorRegistry()))
    reloader = Reloader(path, bridge)
    loads: list[Any] = []
    real_load = config.load

    def counted_load(p: Any) -> config.Config:
        loads.append(p)
        return real_load(p)

    monkeypatch.setattr(config, "load", counted_load)

    results = [await reloader.reload("http") for _ in range(3)]
    assert [r.json() for r in results] == [{"status": "unchanged"}] * 3
    assert loads == []  # the file serve started with: nothing to parse

    write(path, [{"name": "new-rule", "match": {}, "severity": "low"}])
    together = await asyncio.gather(*(reloader.reload("http") for _ in range(64)))
    assert len(loads) == 1  # one reload, its result shared by all 64 callers
    assert {r.json()["status"] for r in together} == {"reloaded"}
    assert bridge.config.classification.rules[0].name == "new-rule"

    path.write_text("classification: {rules: [{name: x}]}\n", encoding="utf-8")
    refused = [await reloader.reload("http") for _ in range(3)]
    assert len(loads) == 2  # refused once; the same file again is refused unparsed
    assert {r.ok for r in refused} == {False}


@pytest.mark.anyio
async def test_a_rotated_secret_file_is_a_change(tmp_path: Any) -> None:
    secret = tmp_path / "secret"
    secret.write_text("one", encoding="utf-8")
    path = tmp_path / "config.yaml"
    data = {"sentry": {"client_secrets": f"${{file:{secret}}}"}, "store": {"data_dir": "d"}}
    path.write_text(yaml.safe_dump(data), encoding="utf-8")
    bridge = Bridge(config.load(path), Metrics(CollectorRegistry()))
    reloader = Reloader(path, bridge)
    assert (await reloader.reload("http")).unchanged
    secret.write_text("two", encoding="utf-8")
    assert (await reloader.reload("http")).json()["status"] == "reloaded"
    assert [s.get_secret_value() for s in bridge.config.sentry.client_secrets] == ["two"]

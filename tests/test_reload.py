"""bridge/reload.py's pure part: which changes a reload applies and which need a restart.
The reload itself (SIGHUP, POST /-/reload, the worker) runs for real in
tests/integration/test_reload.py."""

from __future__ import annotations

import time
from typing import Any

import pytest
from prometheus_client import CollectorRegistry

from bridge import config
from bridge.app import Bridge
from bridge.backend import Backend
from bridge.metrics import Metrics
from bridge.reload import merge

BASE: dict[str, Any] = {"sentry": {"client_secrets": "s"}}


def cfg(**sections: dict[str, Any]) -> config.Config:
    data = {**BASE, **sections}
    return config.parse(data, env={})


@pytest.mark.parametrize(
    ("change", "restart"),
    [
        pytest.param({"server": {"port": 9999}}, ["server.port"], id="port"),
        pytest.param({"server": {"host": "127.0.0.1"}}, ["server.host"], id="host"),
        pytest.param({"outbox": {"max_queued": 5}}, ["outbox"], id="outbox"),
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
    c = cfg(shutdown={"grace_period": "10s"}, outbox={"data_dir": str(tmp_path)})
    metrics = Metrics(CollectorRegistry())
    bridge = Bridge(c, metrics, Backend(c, metrics))
    assert bridge.grace_left() == 10
    bridge.stopping_since = time.monotonic() - 4
    assert 5.9 < bridge.grace_left() <= 6
    bridge.stopping_since = time.monotonic() - 40
    assert bridge.grace_left() == 0

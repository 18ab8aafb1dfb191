"""A real Alertmanager and the real bridge under Uvicorn, on loopback ports.

Without the Alertmanager binary these tests are skipped on a workstation and
fail under ``CI=true``, where a missing Alertmanager is a broken set-up.
"""

from __future__ import annotations

import contextlib
import hashlib
import hmac
import json
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import pytest

from tests.integration import procs
from tests.integration.am import start_alertmanager
from tests.sentry_payloads import load_fixture

CLIENT_SECRET = "integration-client-secret"
HOOK_SECRET = "integration-hook-secret"
LEGACY_TOKEN = "integration-legacy-token"
ENV = {
    "SENTRY_CLIENT_SECRET": CLIENT_SECRET,
    "SENTRY_SERVICE_HOOK_SECRET": HOOK_SECRET,
    "SENTRY_LEGACY_TOKEN": LEGACY_TOKEN,
}


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    for item in items:
        if "integration" in item.nodeid.split("::")[0]:
            item.add_marker(pytest.mark.integration)


@dataclass
class Alertmanager:
    url: str

    def alerts(self, **filters: str) -> list[dict[str, Any]]:
        """Alertmanager's own view: ``GET /api/v2/alerts`` (active, silenced and inhibited)."""
        response = procs.get(f"{self.url}/api/v2/alerts", params=filters, timeout=10)
        response.raise_for_status()
        data: list[dict[str, Any]] = response.json()
        return data

    def sentry_alerts(self) -> list[dict[str, Any]]:
        return [a for a in self.alerts() if a["labels"].get("source") == "sentry"]

    def wait_for(
        self, predicate: Callable[[list[dict[str, Any]]], bool], timeout: float = 20.0
    ) -> list[dict[str, Any]]:
        deadline = time.monotonic() + timeout
        alerts = self.sentry_alerts()
        while not predicate(alerts):
            if time.monotonic() > deadline:
                raise AssertionError(f"Alertmanager never reached the expected state: {alerts}")
            time.sleep(0.1)
            alerts = self.sentry_alerts()
        return alerts


@pytest.fixture
def alertmanager(tmp_path: Path) -> Iterator[Alertmanager]:
    with start_alertmanager(tmp_path / "alertmanager", procs.free_port()) as url:
        yield Alertmanager(url)


@dataclass
class Bridge:
    process: procs.Process
    client: httpx.Client  # the webhook port

    @property
    def url(self) -> str:
        return self.process.url

    def admin(self, method: str, path: str, **kwargs: Any) -> httpx.Response:
        """A request to the admin listener (/-/reload, /-/status, the quarantine)."""
        return procs.request(method, self.process.admin_url + path, timeout=10, **kwargs)

    def post(
        self,
        body: bytes | dict[str, Any],
        *,
        resource: str | None = None,
        secret: str | None = CLIENT_SECRET,
        headers: dict[str, str] | None = None,
        params: dict[str, str] | None = None,
    ) -> httpx.Response:
        """POST a webhook as Sentry's integration platform sends it (signed, with its resource)."""
        raw = body if isinstance(body, bytes) else json.dumps(body).encode()
        sent = {"Content-Type": "application/json", "Request-ID": "test-request"}
        if resource:
            sent["Sentry-Hook-Resource"] = resource
        if secret is not None:
            sent["Sentry-Hook-Signature"] = sign(raw, secret)
        sent.update(headers or {})
        return self.client.post("/webhooks/sentry", content=raw, headers=sent, params=params)

    def metric(self, name: str, labels: dict[str, str] | None = None) -> float:
        text = self.client.get("/metrics").text
        want = ",".join(f'{k}="{v}"' for k, v in sorted((labels or {}).items()))
        for line in text.splitlines():
            series, _, value = line.rpartition(" ")
            if series == (f"{name}{{{want}}}" if want else name):
                return float(value)
        raise KeyError(f"{name}{{{want}}} not exported")

    def until_metric(
        self,
        name: str,
        check: Callable[[float], bool],
        labels: dict[str, str] | None = None,
        timeout: float = 20.0,
    ) -> float:
        """The metric once it passes ``check``: store gauges are read from the store at most
        a second apart (``Store.sizes``), counters move once a batch is committed."""
        deadline = time.monotonic() + timeout
        while not check(value := self.metric(name, labels)):
            assert time.monotonic() < deadline, f"{name}{labels or ''} stayed at {value}"
            time.sleep(0.05)
        return value


def sign(body: bytes, secret: str) -> str:
    return hmac.new(secret.encode(), body, hashlib.sha256).hexdigest()


fixture = load_fixture  # the captured payloads, as dicts


BridgeFactory = Callable[..., contextlib.AbstractContextManager[Bridge]]


@contextlib.contextmanager
def _running_bridge(
    config: Path, data_dir: Path, log: Path, port: int | None, env: dict[str, str]
) -> Iterator[Bridge]:
    with (
        procs.bridge(config, data_dir, log, {**ENV, **env}, port=port) as process,
        procs.client(base_url=process.url, timeout=10) as client,
    ):
        yield Bridge(process, client)


@pytest.fixture
def bridge_factory(tmp_path: Path) -> BridgeFactory:
    """Start the bridge as a real process: ``with bridge_factory([am.url]) as b: ...``;
    the same data dir across starts, so a restart finds its store."""

    def start(
        am_urls: list[str],
        *,
        port: int | None = None,
        sections: dict[str, object] | None = None,
        env: dict[str, str] | None = None,
        **alertmanager: object,
    ) -> contextlib.AbstractContextManager[Bridge]:
        """``sections``: whole top-level sections of the config replaced (``escalation=``);
        ``env``: more of the bridge's environment."""
        config = procs.write_config(tmp_path / "config.yaml", am_urls, **alertmanager)
        procs.update_config(config, **(sections or {}))
        log = tmp_path / "bridge.log"
        return _running_bridge(config, tmp_path / "data", log, port, env or {})

    return start


@pytest.fixture
def bridge(alertmanager: Alertmanager, bridge_factory: BridgeFactory) -> Iterator[Bridge]:
    with bridge_factory([alertmanager.url]) as running:
        yield running

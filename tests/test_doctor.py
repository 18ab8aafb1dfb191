"""bridge/doctor.py and bridge/probe.py (its test alert) without a running bridge: the
secrets it reports (never their values), the test alert's bodies as the bridge reads them,
and a test alert it cannot sign.
tests/integration/test_doctor.py runs the whole command against real processes."""

from __future__ import annotations

import asyncio
from pathlib import Path

import pytest

from bridge import config, doctor, probe, sentry
from bridge.classify import TEST_DECISION, classify
from bridge.model import SentryAlert, State
from tests.sentry_payloads import BASE, hook

CONFIG = """\
sentry:
  client_secrets: ${SENTRY_CLIENT_SECRET:-}
  api_token: ${file:/nonexistent/doctor-token}
  legacy_token: inline-legacy-token
store:
  postgres:
    dsn: ${BRIDGE_DATABASE_URL:-}
"""


def test_secrets_say_set_or_missing_and_from_where_never_the_value(tmp_path: Path) -> None:
    path = tmp_path / "config.yaml"
    path.write_text(CONFIG, encoding="utf-8")
    offline = config.load_offline(path, env={"SENTRY_CLIENT_SECRET": "s3cret-value"})
    check = doctor.secrets(str(path), offline)
    assert not check.ok  # the token's file is missing: serve would fail
    assert "sentry.client_secrets: set (from $SENTRY_CLIENT_SECRET)" in check.detail
    assert "sentry.api_token: not set (from the file /nonexistent/doctor-token)" in check.detail
    assert "sentry.legacy_token: set (in the config file)" in check.detail
    assert "store.postgres.dsn" not in check.detail  # sqlite: not used
    assert "s3cret-value" not in check.detail
    assert "inline-legacy-token" not in check.detail


def test_the_test_alert_is_read_as_a_test_and_its_resolve_as_its_resolve() -> None:
    fire, resolve = probe.bodies("9123456789012345678", 1_700_000_000.0)
    for body, resource in ((fire, "event_alert"), (resolve, "issue")):
        _, fast = sentry.read(hook(resource), body, base_url=BASE)
        slow = sentry.normalise(hook(resource), sentry.loads(body), base_url=BASE)
        assert fast == slow
    _, fired = sentry.read(hook("event_alert"), fire, base_url=BASE)
    _, resolved = sentry.read(hook("issue"), resolve, base_url=BASE)
    assert isinstance(fired, SentryAlert)
    assert isinstance(resolved, SentryAlert)
    assert fired.test
    assert fired.identity == resolved.identity == "issue:9123456789012345678"
    assert resolved.state is State.RESOLVED
    assert fired.rule_settings == ()


def test_an_ordinary_issue_alert_is_not_a_test() -> None:
    fire, _ = probe.bodies("9123456789012345678", 1_700_000_000.0)
    plain = fire.replace(b'"bridge_test": true', b'"bridge_test": false')
    _, alert = sentry.read(hook("event_alert"), plain, base_url=BASE)
    assert isinstance(alert, SentryAlert)
    assert not alert.test
    shipped = config.load_offline(Path(__file__).parents[1] / "config.yaml").config
    assert classify(alert, shipped.classification) != TEST_DECISION


def test_no_client_secret_means_no_test_alert_and_says_why() -> None:
    cfg = config.parse(
        {"sentry": {"service_hook_secrets": "hook"}, "alertmanager": {"urls": "http://x:9093"}}
    )
    check = asyncio.run(probe.test_alert(cfg, "http://127.0.0.1:1/webhooks/sentry", [], 1.0))
    assert not check.ok
    assert "sentry.client_secrets, which is not set here" in check.detail


@pytest.mark.parametrize(
    ("raw", "where"),
    [
        pytest.param("${SENTRY_API_TOKEN}", "from $SENTRY_API_TOKEN", id="variable"),
        pytest.param("${SENTRY_API_TOKEN:-}", "from $SENTRY_API_TOKEN", id="with-default"),
        pytest.param("${file:/run/secrets/t}", "from the file /run/secrets/t", id="file"),
        pytest.param("literal", "in the config file", id="literal"),
    ],
)
def test_where_a_secret_comes_from(raw: str, where: str) -> None:
    assert doctor._where(raw) == where

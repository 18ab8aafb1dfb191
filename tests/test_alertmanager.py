"""The Alertmanager wire model and client settings: pure functions, no network."""

from __future__ import annotations

import json
import ssl
from datetime import datetime
from pathlib import Path

import pytest

from bridge import config
from bridge.alertmanager import (
    PostableAlert,
    check_wire,
    problem,
    ssl_context,
    target_name,
    wire_json,
)
from bridge.errors import ConfigError
from tests.factories import postable


@pytest.mark.parametrize(
    ("url", "name"),
    [
        pytest.param("http://am:9093", "am:9093", id="host-port"),
        pytest.param("http://am", "am:80", id="default-http"),
        pytest.param("https://user:pw@am.example.com", "am.example.com:443", id="no-userinfo"),
        pytest.param("http://[::1]:9093", "[::1]:9093", id="ipv6"),
        pytest.param("http://am:9093/alertmanager", "am:9093/alertmanager", id="path"),
    ],
)
def test_target_name(url: str, name: str) -> None:
    assert target_name(url) == name


@pytest.mark.parametrize(
    ("alert", "reason"),
    [
        pytest.param(postable(1), None, id="valid"),
        pytest.param(postable(1, ends_in=0), None, id="resolved-at-start"),
        pytest.param(postable(1, ends_in=-1), "endsAt is before startsAt", id="backwards"),
        pytest.param(
            PostableAlert(labels={"a": "b"}, ends_at=datetime(2024, 1, 1)),
            "endsAt has no time zone",
            id="naive",
        ),
    ],
)
def test_problem(alert: PostableAlert, reason: str | None) -> None:
    assert problem(alert) == reason


def test_tls_settings(tmp_path: Path) -> None:
    assert ssl_context(config.TLS()) is True
    context = ssl_context(config.TLS(insecure_skip_verify=True))
    assert isinstance(context, ssl.SSLContext)
    assert context.verify_mode == ssl.CERT_NONE
    with pytest.raises(ConfigError, match="tls"):
        ssl_context(config.TLS(ca_file=tmp_path / "missing.pem"))
    with pytest.raises(ConfigError, match="cert_file"):
        ssl_context(config.TLS(key_file=tmp_path / "key.pem"))


@pytest.mark.parametrize(
    ("body", "reason"),
    [
        pytest.param(wire_json(postable(1)), None, id="valid"),
        pytest.param(
            wire_json(postable(1, ends_in=-1)), "endsAt is before startsAt", id="backwards"
        ),
        pytest.param(
            '{"labels": {}}',
            "labels: Value error, an alert needs at least one label",
            id="no-labels",
        ),
        pytest.param(
            '{"labels": {"a": "b"}, "status": "firing"}',
            "status: Extra inputs are not permitted",
            id="unknown-field",
        ),
        pytest.param(
            '{"labels": {"sentry-url": "x"}}',
            "labels: Value error, invalid label or annotation name 'sentry-url'",
            id="bad-name",
        ),
        pytest.param("[", "Invalid JSON", id="not-json"),
    ],
)
def test_check_wire(body: str, reason: str | None) -> None:
    found = check_wire(body)
    if reason is None:
        assert found is None
    else:
        assert found is not None
        assert found.startswith(reason)  # pydantic words the rest


def test_wire_json_is_camel_case_rfc3339_without_nulls() -> None:
    assert json.loads(wire_json(postable(1))) == {
        "labels": {"alertname": "SentryIssue", "sentry_issue_id": "1"},
        "annotations": {"summary": "Error 1"},
        "startsAt": "2024-05-01T12:00:00Z",
        "endsAt": "2024-05-01T13:00:00Z",
        "generatorURL": "https://sentry.example/issues/1/",
    }
    assert json.loads(wire_json(PostableAlert(labels={"a": "b"}))) == {
        "labels": {"a": "b"},
        "annotations": {},
    }

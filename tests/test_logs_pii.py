"""No PII and no credentials in the logs (issue 14): every line is scrubbed by the
formatter with the scrubber labels use (bridge/scrub.py), whatever a call site passes."""

from __future__ import annotations

import io
import json
import logging
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from prometheus_client import CollectorRegistry

from bridge import config
from bridge.app import create_app
from bridge.compose import build
from bridge.logs import JSONFormatter, TextFormatter
from tests.sentry_payloads import patched
from tests.test_app import SECRET, Recorder, sign

EMAIL, ADDRESS = "jane.doe@example.com", "203.0.113.9"
DSN = "postgresql://bridge:Pa55w0rd@db.internal:5432/bridge"


def record(msg: str = "webhook accepted", **extra: object) -> logging.LogRecord:
    rec = logging.makeLogRecord({"name": "bridge.app", "levelno": logging.INFO, "msg": msg})
    rec.levelname = "INFO"
    rec.__dict__.update(extra)
    return rec


def json_line(rec: logging.LogRecord) -> dict[str, Any]:
    line: dict[str, Any] = json.loads(JSONFormatter().format(rec))
    return line


def test_the_webhook_accepted_fields_are_scrubbed_like_labels() -> None:
    """The "webhook accepted" and "alert decided" lines carried raw project and environment."""
    line = json_line(
        record(
            request_id="0f9e8d7c",
            identity="issue:42",
            project=EMAIL,
            environment=f"{ADDRESS}\u202e",
        )
    )
    assert line["project"] == "[email]"
    assert line["environment"] == "[ip]"
    assert (line["request_id"], line["identity"]) == ("0f9e8d7c", "issue:42")


def test_error_text_and_the_message_lose_credentials_and_emails() -> None:
    text = f"cannot connect: {DSN} for {EMAIL}"
    rec = record("store failed: %s", error=text, identities=[f"u:{EMAIL}"], detail={"why": text})
    rec.args = (text,)
    line = json_line(rec)
    expected = "cannot connect: postgresql://[secret]@db.internal:5432/bridge for [email]"
    assert line["msg"] == f"store failed: {expected}"
    assert line["error"] == expected
    assert line["detail"] == {"why": expected}
    assert line["identities"] == ["u:[email]"]


def test_the_operators_addresses_are_kept_but_not_their_credentials() -> None:
    line = json_line(
        record(
            "alertmanager failing",
            alertmanager="10.0.0.5:9093",
            alertmanagers=["http://admin:hunter2@10.0.0.5:9093"],
        )
    )
    assert line["alertmanager"] == "10.0.0.5:9093"
    assert line["alertmanagers"] == ["http://[secret]@10.0.0.5:9093"]


def test_uvicorns_own_lines_keep_the_address_it_listens_on() -> None:
    rec = record("Uvicorn running on %s://%s:%d (Press CTRL+C to quit)")
    rec.name, rec.args = "uvicorn.error", ("http", "0.0.0.0", 8080)
    assert json_line(rec)["msg"] == "Uvicorn running on http://0.0.0.0:8080 (Press CTRL+C to quit)"


def test_tracebacks_are_scrubbed_line_by_line() -> None:
    try:
        raise ValueError(f"bad input {EMAIL!r} from {ADDRESS} with token=abc123def")
    except ValueError:
        rec = record("reading a webhook failed", exc_info=sys.exc_info())
    exc = json_line(rec)["exc"]
    assert exc.startswith("Traceback (most recent call last):\n")
    assert exc.splitlines()[-1] == "ValueError: bad input '[email]' from [ip] with token=[secret]"
    text = TextFormatter().format(rec)
    assert EMAIL not in text
    assert "abc123def" not in text


def test_numbers_flags_and_none_are_left_as_they_are() -> None:
    line = json_line(record(alerts=3, escalated=False, ratio=0.5, rule=None))
    assert (line["alerts"], line["escalated"], line["ratio"]) == (3, False, 0.5)
    assert "rule" not in line


# --- the real edge and pipeline, their lines read as an operator's log pipeline would ------


@pytest.fixture
def log_lines() -> Iterator[io.StringIO]:
    out = io.StringIO()
    handler = logging.StreamHandler(out)
    handler.setFormatter(JSONFormatter())
    root = logging.getLogger()
    level = root.level
    root.addHandler(handler)
    root.setLevel(logging.DEBUG)  # the edge's "webhook accepted" is a debug line
    yield out
    root.removeHandler(handler)
    root.setLevel(level)


@pytest.mark.anyio
async def test_a_webhook_from_a_hostile_environment_leaves_no_pii_in_the_logs(
    tmp_path: Path, log_lines: io.StringIO
) -> None:
    recorder = Recorder()
    cfg = config.parse(
        {"sentry": {"client_secrets": SECRET}, "store": {"data_dir": str(tmp_path)}}, env={}
    )
    bridge = build(
        cfg, registry=CollectorRegistry(), alertmanager_transport=httpx.MockTransport(recorder)
    )
    body = json.dumps(patched("event_alert.json", EMAIL, "data", "event", "environment"))
    headers = {"Sentry-Hook-Resource": "event_alert", "Sentry-Hook-Signature": sign(body.encode())}
    app = create_app(bridge)
    async with (
        app.router.lifespan_context(app),
        httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://b") as client,
    ):
        response = await client.post("/webhooks/sentry", content=body, headers=headers)
        assert response.status_code == 202
        [alert] = await recorder.wait(1)
    assert alert["labels"]["environment"] == "[email]"
    lines = [json.loads(line) for line in log_lines.getvalue().splitlines()]
    accepted = [line for line in lines if line["msg"] == "webhook accepted"]
    decided = [line for line in lines if line["msg"] == "alert decided"]
    assert [line["environment"] for line in accepted + decided] == ["[email]", "[email]"]
    assert EMAIL not in log_lines.getvalue()

"""``sentry-bridge quarantine list|replay`` on the outbox file of a stopped bridge."""

from __future__ import annotations

import asyncio
import hashlib
import json
from pathlib import Path

import pytest
import yaml
from prometheus_client import CollectorRegistry

from bridge import cli, config
from bridge.alertmanager import target_name
from bridge.metrics import Metrics
from bridge.model import SentryAlert
from bridge.store.contract import Failed
from bridge.store.sqlite import Outbox
from tests.factories import sentry_alert
from tests.sentry_payloads import FIXTURES


def write_config(tmp_path: Path) -> Path:
    path = tmp_path / "config.yaml"
    data = {"sentry": {"client_secrets": "s"}, "outbox": {"data_dir": str(tmp_path / "data")}}
    path.write_text(yaml.safe_dump(data), encoding="utf-8")
    return path


def outbox_of(path: Path) -> Outbox:
    cfg = config.load(path, env={})
    targets = [target_name(url) for url in cfg.alertmanager.urls]
    return Outbox(
        cfg.outbox.data_dir, targets, max_queued=1000, metrics=Metrics(CollectorRegistry())
    )


async def fill(path: Path, alert: SentryAlert) -> None:
    """What a bridge left behind: four quarantined entries."""
    outbox = outbox_of(path)
    await outbox.open()
    good = (FIXTURES / "event_alert.json").read_bytes()  # an older parser refused it
    still_bad = json.dumps({"action": "triggered", "data": {}}).encode()
    ignored = (FIXTURES / "installation_created.json").read_bytes()
    for body, resource in (
        (good, "event_alert"),
        (still_bad, "event_alert"),
        (ignored, "installation"),
    ):
        headers = {"sentry-hook-resource": resource, "request-id": "r1"}
        digest = hashlib.sha256(body).digest()
        assert await outbox.quarantine("invalid_payload", "old parser", headers, body, digest)
    await outbox.accept(alert)
    taken = await outbox.take(1)
    [entry] = taken.entries
    await outbox.complete(taken, [], [Failed(entry.inbox_id, entry.alert, "RuntimeError: boom")])
    await outbox.close()


def run(path: Path, *args: str) -> int:
    return cli.main(["quarantine", *args, "--config", str(path)])


def inbox(path: Path) -> list[SentryAlert]:
    async def read() -> list[SentryAlert]:
        outbox = outbox_of(path)
        await outbox.open()
        try:
            if not outbox.inbox_count():
                return []
            return [entry.alert for entry in (await outbox.take(100)).entries]
        finally:
            await outbox.close()

    return asyncio.run(read())


def test_list_then_replay(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    path = write_config(tmp_path)
    alert = sentry_alert(identity="issue:42")
    asyncio.run(fill(path, alert))

    assert run(path, "list") == 0
    out = capsys.readouterr().out
    assert out.startswith("4 quarantined")
    assert out.count("invalid_payload") == 3
    assert "pipeline_error" in out

    assert run(path, "replay") == 1  # one entry is still unreadable
    out = capsys.readouterr().out
    assert "2 replayed, 1 ignored, 1 kept" in out
    replayed = inbox(path)
    assert [a.identity for a in replayed] == ["issue:1117540176", "issue:42"]
    assert replayed[0].request_id == "r1"
    assert replayed[1] == alert

    assert run(path, "list") == 0
    out = capsys.readouterr().out
    assert out.startswith("1 quarantined")
    # Only the chosen entry, and nothing to do for an id that is not there.
    [entry_id] = [int(line.split()[0]) for line in out.splitlines()[1:]]
    assert run(path, "list", "--id", str(entry_id)) == 0
    shown = capsys.readouterr().out
    assert '"sentry-hook-resource": "event_alert"' in shown
    assert '{"action": "triggered", "data": {}}' in shown
    assert run(path, "replay", "--id", str(entry_id + 100)) == 0
    assert run(path, "replay", "--id", str(entry_id)) == 1

"""What an operator reads from the running bridge: the start-up line, one alert's story in
the logs, an outage said once, and the process metrics of both processes."""

from __future__ import annotations

import json
import time
from collections import Counter
from pathlib import Path
from typing import Any

from prometheus_client.parser import text_string_to_metric_families

from bridge import __version__
from tests.integration import procs
from tests.integration.am import start_alertmanager
from tests.integration.conftest import Alertmanager, Bridge, BridgeFactory, fixture


def lines(bridge: Bridge) -> list[dict[str, Any]]:
    out = []
    for raw in bridge.process.logs().splitlines():
        assert "\x1b[" not in raw  # no ANSI colour codes, from uvicorn or anyone
        out.append(json.loads(raw))  # every line is one JSON object
    return out


def one(entries: list[dict[str, Any]], msg: str, **fields: object) -> dict[str, Any]:
    found = [e for e in entries if e["msg"] == msg and e | fields == e]
    assert len(found) == 1, (msg, fields, [e["msg"] for e in entries])
    return found[0]


def wait_log(bridge: Bridge, text: str, timeout: float = 10.0) -> None:
    deadline = time.monotonic() + timeout
    while text not in bridge.process.logs():
        assert time.monotonic() < deadline, f"{text!r} never logged"
        time.sleep(0.05)


def test_start_up_line_and_uvicorn_in_the_same_json(
    bridge: Bridge, alertmanager: Alertmanager
) -> None:
    entries = lines(bridge)
    start = one(entries, "starting sentry-alertmanager-bridge")
    assert start["version"] == __version__
    assert start["config"].endswith("config.yaml")
    assert start["alertmanagers"] == [alertmanager.url]
    assert start["auth"] == ["integration", "service_hook", "legacy_token"]
    assert start["enrichment"] == "off"
    assert "integration-client-secret" not in bridge.process.logs()
    uvicorn = [e for e in entries if e["logger"].startswith("uvicorn")]
    assert uvicorn
    assert all("color_message" not in e for e in uvicorn)


def test_one_alerts_story(bridge: Bridge, alertmanager: Alertmanager) -> None:
    response = bridge.post(
        fixture("event_alert.json"), resource="event_alert", headers={"Request-ID": "story-1"}
    )
    assert response.status_code == 202
    alertmanager.wait_for(lambda alerts: len(alerts) == 1)
    wait_log(bridge, "alerts delivered")
    entries = lines(bridge)
    # One line per webhook outcome: the edge's "webhook accepted" is debug only.
    assert not [e for e in entries if e["msg"] == "webhook accepted"]
    one(
        entries,
        "alert decided",
        request_id="story-1",
        resource="event_alert",
        outcome="forwarded",
        severity="critical",
        escalated=False,
        rule="unhandled-in-production",
        identity="issue:1117540176",
        project="web-frontend",
        environment="production",
    )
    delivered = one(entries, "alerts delivered")
    assert delivered["alertmanager"] == alertmanager.url.removeprefix("http://")
    assert delivered["identities"] == ["issue:1117540176"]


def test_an_outage_is_said_once_and_so_is_its_end(
    tmp_path: Path, bridge_factory: BridgeFactory
) -> None:
    port = procs.free_port()
    am_url = f"http://127.0.0.1:{port}"
    name = f"127.0.0.1:{port}"
    with bridge_factory([am_url]) as bridge:
        # The probe runs beside the start, not before it: a dead Alertmanager delays nothing.
        wait_log(bridge, "does not answer at start")
        assert bridge.metric("sentry_bridge_alertmanager_up", {"alertmanager": name}) == 0
        assert bridge.post(fixture("event_alert.json"), resource="event_alert").status_code == 202
        failed = {"alertmanager": name, "reason": "connect"}
        deadline = time.monotonic() + 20
        while bridge.metric("sentry_bridge_alertmanager_requests_failed_total", failed) < 4:
            assert time.monotonic() < deadline
            time.sleep(0.05)
        with start_alertmanager(tmp_path / "am", port) as url:
            Alertmanager(url).wait_for(lambda alerts: len(alerts) == 1)
            wait_log(bridge, "alertmanager recovered")
            assert bridge.metric("sentry_bridge_alertmanager_up", {"alertmanager": name}) == 1
        warnings = [
            e for e in lines(bridge) if e.get("alertmanager") == name and e["level"] == "warning"
        ]
    # One outage, one warning (at start, where it began), however many retries failed.
    assert [w["msg"] for w in warnings] == [
        "alertmanager does not answer at start; alerts wait in the store until it does"
    ]
    recovered = one(lines(bridge), "alertmanager recovered")
    assert recovered["failed_attempts"] >= 4
    assert recovered["down_seconds"] > 0


def test_process_metrics_of_the_one_process_each_family_once(bridge: Bridge) -> None:
    text = bridge.client.get("/metrics").text
    families = Counter(f.name for f in text_string_to_metric_families(text))
    assert max(families.values()) == 1
    for family in (
        "process_resident_memory_bytes",
        "process_open_fds",
        "process_start_time_seconds",
        "python_info",
        "sentry_bridge_pipeline_last_progress_timestamp_seconds",
    ):
        assert family in families
    assert not [name for name in families if "worker" in name]  # one process, one set
    rss = bridge.metric("process_resident_memory_bytes")
    assert rss > 10_000_000  # a real process's memory, not a zero

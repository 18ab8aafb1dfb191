"""The bridge process killed, stopped and restarted for real, with a real Alertmanager:
once the bridge has answered 202, the alert reaches Alertmanager, exactly once."""

from __future__ import annotations

import json
import time
from collections import Counter
from collections.abc import Callable
from pathlib import Path

from tests.integration import procs
from tests.integration.am import start_alertmanager
from tests.integration.conftest import Alertmanager, Bridge, BridgeFactory, fixture

TEMPLATE = json.dumps(fixture("event_alert.json"))
TEMPLATE_ISSUE = "1117540176"


def distinct_issue_alert(n: int) -> bytes:
    """event_alert.json for issue 7000000000 + n: a distinct Sentry identity each."""
    return TEMPLATE.replace(TEMPLATE_ISSUE, str(7_000_000_000 + n)).encode()


def issue_ids(am: Alertmanager) -> Counter[str]:
    return Counter(a["labels"]["sentry_issue_id"] for a in am.sentry_alerts())


def wait_for_count(am: Alertmanager, count: int, timeout: float = 30.0) -> Counter[str]:
    am.wait_for(lambda alerts: len(alerts) >= count, timeout=timeout)
    return issue_ids(am)


def lose_a_backlog_and_restart(
    tmp_path: Path, bridge_factory: BridgeFactory, count: int, lose: Callable[[Bridge], None]
) -> None:
    """Post ``count`` alerts while Alertmanager is down (everything accepted stays queued
    in the store), ``lose`` the bridge, then start it again with Alertmanager up: every
    alert arrives, each exactly once."""
    am_port = procs.free_port()
    am_url = f"http://127.0.0.1:{am_port}"
    with bridge_factory([am_url]) as bridge:
        for n in range(count):
            assert bridge.post(distinct_issue_alert(n), resource="event_alert").status_code == 202
        lose(bridge)

    with (
        start_alertmanager(tmp_path / "am", am_port) as url,
        bridge_factory([am_url]),  # same data dir: finds its store
    ):
        seen = wait_for_count(Alertmanager(url), count)
        assert len(seen) == count
        assert set(seen.values()) == {1}


def test_sigkill_with_a_backlog_loses_nothing(
    tmp_path: Path, bridge_factory: BridgeFactory
) -> None:
    def sigkill(bridge: Bridge) -> None:
        bridge.process.kill()  # no drain, no shutdown hook

    lose_a_backlog_and_restart(tmp_path, bridge_factory, 40, sigkill)


def test_sigterm_drains_the_backlog_and_exits_0(
    alertmanager: Alertmanager, bridge_factory: BridgeFactory
) -> None:
    count = 100
    with bridge_factory([alertmanager.url]) as bridge:
        for n in range(count):
            assert bridge.post(distinct_issue_alert(n), resource="event_alert").status_code == 202
        assert bridge.process.terminate(timeout=30) == 0
        assert '"shutdown"' in bridge.process.logs()
    # Everything accepted was delivered before the exit; nothing waits for a restart.
    seen = wait_for_count(alertmanager, count, timeout=5)
    assert len(seen) == count


def test_sigterm_with_alertmanager_down_exits_within_grace_and_keeps_the_store(
    tmp_path: Path, bridge_factory: BridgeFactory
) -> None:
    am_port = procs.free_port()
    am_url = f"http://127.0.0.1:{am_port}"
    grace = 5.0  # the shipped 25 s, waited out in full, only made the test slow
    with bridge_factory([am_url], sections={"shutdown": {"grace_period": f"{grace}s"}}) as bridge:
        for n in range(5):
            assert bridge.post(distinct_issue_alert(n), resource="event_alert").status_code == 202
        started = time.monotonic()
        assert bridge.process.terminate(timeout=60) == 0
        # Within the grace (uvicorn's part of it is a fifth), and a margin for a loaded machine.
        assert time.monotonic() - started < grace + 10
    assert any((tmp_path / "data").iterdir())

    with start_alertmanager(tmp_path / "am", am_port) as url, bridge_factory([am_url]):
        assert len(wait_for_count(Alertmanager(url), 5)) == 5


def test_resolve_after_a_restart_resolves_the_alert_fired_before_it(
    alertmanager: Alertmanager, bridge_factory: BridgeFactory
) -> None:
    with bridge_factory([alertmanager.url]) as bridge:
        bridge.post(fixture("event_alert.json"), resource="event_alert")
        alertmanager.wait_for(lambda alerts: len(alerts) == 1)
        bridge.process.kill()
    with bridge_factory([alertmanager.url]) as bridge:
        response = bridge.post(fixture("issue_resolved.json"), resource="issue")
        assert response.status_code == 202
        alertmanager.wait_for(lambda alerts: alerts == [])


def test_restarted_alertmanager_gets_the_active_alerts_back(
    tmp_path: Path, bridge_factory: BridgeFactory
) -> None:
    am_port = procs.free_port()
    am_url = f"http://127.0.0.1:{am_port}"
    with bridge_factory([am_url], resend_interval="1s") as bridge:
        with start_alertmanager(tmp_path / "am1", am_port) as url:
            bridge.post(fixture("event_alert.json"), resource="event_alert")
            [before] = Alertmanager(url).wait_for(lambda alerts: len(alerts) == 1)
        # Alertmanager restarts with nothing in memory (and a fresh data dir).
        with start_alertmanager(tmp_path / "am2", am_port) as url:
            [after] = Alertmanager(url).wait_for(lambda alerts: len(alerts) == 1, timeout=10)
    assert after["labels"] == before["labels"]
    assert after["startsAt"] == before["startsAt"]
    assert after["endsAt"] == before["endsAt"]

"""``sentry-bridge send``, run as a user runs it, against the real bridge and a real
Alertmanager: every family signed as Sentry signs it, and ``--wait`` reading
Alertmanager's own ``GET /api/v2/alerts``."""

from __future__ import annotations

import contextlib
import io
import json
import os
import re
from pathlib import Path
from unittest import mock

from bridge import cli
from tests.integration import procs
from tests.integration.conftest import ENV, Alertmanager, Bridge, BridgeFactory

FRONTEND_ISSUE = "1117540176"
CHECKOUT_ISSUE = "4507718802"


def cli_main(args: list[str], env: dict[str, str] | None = None) -> tuple[int, str]:
    """``sentry-bridge ARGS`` in this process (the entry point itself runs as a subprocess in
    test_walkthrough.py), with ``env`` as the only Sentry credentials set."""
    out = io.StringIO()
    with (
        mock.patch.dict(os.environ),
        contextlib.redirect_stdout(out),
        contextlib.redirect_stderr(out),
    ):
        for name in ENV:
            os.environ.pop(name, None)
        os.environ.update(ENV if env is None else env)
        code = cli.main(args)
    return code, out.getvalue()


def send(
    bridge: Bridge, *args: str, env: dict[str, str] | None = None, timeout: str = "20"
) -> tuple[int, str]:
    config = Path(bridge.process.log).parent / "config.yaml"
    where = ["--config", str(config), "--url", bridge.url, "--timeout", timeout]
    return cli_main(["send", *args, *where], env)


def severities(alertmanager: Alertmanager, label: str, value: str) -> list[str]:
    return sorted(
        a["labels"]["severity"] for a in alertmanager.sentry_alerts() if a["labels"][label] == value
    )


def answers(out: str) -> list[str]:
    """The HTTP statuses ``send`` printed: its answer line starts with one. Not a search of
    the whole output, where a request id or a port can hold "202" by chance."""
    return [line[:3] for line in out.splitlines() if re.match(r"\d{3} ", line)]


def test_issue_alert_then_resolved_with_wait(bridge: Bridge, alertmanager: Alertmanager) -> None:
    code, out = send(bridge, "--example", "issue-alert", "--wait")
    assert code == 0, out
    assert answers(out) == ["202"]
    assert f"sentry_issue_id={FRONTEND_ISSUE}" in out
    # --wait returned, so the alert is there already: no polling in the test.
    assert severities(alertmanager, "sentry_issue_id", FRONTEND_ISSUE) == ["critical"]

    code, out = send(bridge, "--example", "issue-resolved", "--wait")
    assert code == 0, out
    assert severities(alertmanager, "sentry_issue_id", FRONTEND_ISSUE) == []


def test_metric_alert_critical_warning_resolved(bridge: Bridge, alertmanager: Alertmanager) -> None:
    assert send(bridge, "--example", "metric-critical", "--wait")[0] == 0
    assert severities(alertmanager, "sentry_alert_rule_id", "7011") == ["critical"]
    assert send(bridge, "--example", "metric-warning", "--wait")[0] == 0
    # One alert per rule: the warning's label set replaced the critical one.
    alertmanager.wait_for(
        lambda alerts: [a["labels"]["severity"] for a in alerts] == ["medium"], timeout=20
    )
    code, out = send(bridge, "--example", "metric-resolved", "--wait")
    assert code == 0, out
    assert severities(alertmanager, "sentry_alert_rule_id", "7011") == []


def test_service_hook_and_legacy_families(bridge: Bridge, alertmanager: Alertmanager) -> None:
    code, out = send(bridge, "--example", "service-hook", "--wait")
    assert code == 0, out
    assert severities(alertmanager, "sentry_issue_id", CHECKOUT_ISSUE) == ["low"]
    code, out = send(bridge, "--example", "legacy", "--wait")
    assert code == 0, out
    assert severities(alertmanager, "sentry_issue_id", FRONTEND_ISSUE) == ["critical"]


def test_a_saved_payload_file_is_sent_as_it_is(bridge: Bridge, alertmanager: Alertmanager) -> None:
    payload = procs.ROOT / "tests" / "fixtures" / "sentry" / "metric_alert_warning_p95.json"
    code, out = send(bridge, str(payload), "--wait")
    assert code == 0, out
    assert severities(alertmanager, "sentry_alert_rule_id", "7015") == ["medium"]


def test_a_repeat_is_a_new_delivery(bridge: Bridge, alertmanager: Alertmanager) -> None:
    outputs = [send(bridge, "--example", "issue-alert", "--wait")[1] for _ in range(2)]
    request_ids = [re.search(r"request ([0-9a-f-]{36})\)", out) for out in outputs]
    assert [answers(out) for out in outputs] == [["202"], ["202"]]
    ids = {m.group(1) for m in request_ids if m}
    assert len(ids) == 2
    # The bridge decided each one on its own (the second is a repeat within the window).
    decided = [
        json.loads(line)
        for line in bridge.process.logs().splitlines()
        if line.startswith("{") and '"logger": "bridge.pipeline"' in line
    ]
    assert {d["request_id"] for d in decided} == ids
    assert sorted(d["outcome"] for d in decided) == ["duplicate", "forwarded"]


def test_a_wrong_secret_is_refused_and_said(bridge: Bridge, alertmanager: Alertmanager) -> None:
    code, out = send(bridge, "--example", "issue-alert", "--secret", "not-the-secret")
    assert code == 1
    assert answers(out) == ["401"]
    assert alertmanager.sentry_alerts() == []


def test_without_a_secret_it_says_which_to_set(bridge: Bridge) -> None:
    code, out = send(bridge, "--example", "metric-critical", env={})
    assert code == 2
    assert "SENTRY_CLIENT_SECRET" in out


def test_wait_names_the_alertmanager_that_does_not_have_it(
    alertmanager: Alertmanager, bridge_factory: BridgeFactory
) -> None:
    down = f"http://127.0.0.1:{procs.free_port()}"
    # A short grace: the stop at the end cannot deliver to the dead one (it waited 25 s).
    sections = {"shutdown": {"grace_period": "1s"}}
    with bridge_factory([alertmanager.url, down], sections=sections) as bridge:
        code, out = send(bridge, "--example", "metric-critical", "--wait", timeout="3")
    assert code == 1
    lines = {line.split(": ")[0].strip(): line for line in out.splitlines() if ": " in line}
    up_name, down_name = alertmanager.url.removeprefix("http://"), down.removeprefix("http://")
    assert lines[up_name].endswith("yes")
    assert "NO" in lines[down_name]

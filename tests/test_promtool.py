"""The chart's PrometheusRule under Prometheus's own rule engine: ``promtool check rules``
and ``promtool test rules`` (tests/promtool/rules_test.yaml: for every alert, series that
fire it, with the labels and annotations Prometheus gives it, and series that do not).

promtool comes with Debian's ``prometheus`` package (scripts/test installs it when root);
without it these tests are skipped on a workstation and fail under ``CI=true``. Nothing
here needs a Prometheus server: the package may start one on :9090 where an init system
runs, and scripts/test stops it again.
"""

from __future__ import annotations

import os
import shutil
import subprocess
from pathlib import Path
from typing import Any

import helm_python
import pytest
import yaml

from tests.test_helm import CHART_DIR, FULLNAME, NAMESPACE, TOGGLES, WORKING, merged, render

TESTS = Path(__file__).parent / "promtool" / "rules_test.yaml"


def require_promtool() -> str:
    """promtool's path; skips the test without it, or fails under ``CI=true``."""
    path = shutil.which("promtool")
    if path is None:
        message = "promtool is not installed (apt-get install prometheus)"
        if os.environ.get("CI") == "true":
            pytest.fail(message)
        pytest.skip(message)
    return path


def rule_groups() -> list[dict[str, Any]]:
    """The PrometheusRule's groups as the chart renders them (release "prod" in "alerting")."""
    with helm_python.Chart.load(CHART_DIR) as chart:
        rule = render(chart, merged(WORKING, TOGGLES["prometheusRule"])).one("PrometheusRule")
    groups: list[dict[str, Any]] = rule["spec"]["groups"]
    return groups


@pytest.fixture(scope="module")
def rules_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """rules.yaml (the rendered groups) and a copy of the unit tests, side by side."""
    path = tmp_path_factory.mktemp("promtool")
    (path / "rules.yaml").write_text(yaml.safe_dump({"groups": rule_groups()}, sort_keys=False))
    shutil.copy(TESTS, path / TESTS.name)
    return path


def promtool(rules_dir: Path, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [require_promtool(), *args],
        cwd=rules_dir,
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )


def test_the_release_is_the_one_the_unit_tests_name() -> None:
    text = TESTS.read_text(encoding="utf-8")
    assert f'job="{FULLNAME}"' in text
    assert f'namespace="{NAMESPACE}"' in text


def test_promtool_accepts_the_rules(rules_dir: Path) -> None:
    done = promtool(rules_dir, "check", "rules", "rules.yaml")
    assert done.returncode == 0, done.stdout + done.stderr
    alerts = sum(len(group["rules"]) for group in rule_groups())
    assert f"SUCCESS: {alerts} rules found" in done.stdout


def test_every_alert_fires_and_stays_quiet_as_the_unit_tests_say(rules_dir: Path) -> None:
    done = promtool(rules_dir, "test", "rules", TESTS.name)
    assert done.returncode == 0, done.stdout + done.stderr
    assert "SUCCESS" in done.stdout


def test_every_alert_has_a_firing_case_and_a_quiet_case() -> None:
    alerts = {r["alert"] for group in rule_groups() for r in group["rules"] if "alert" in r}
    cases = [
        case
        for group in yaml.safe_load(TESTS.read_text(encoding="utf-8"))["tests"]
        for case in group.get("alert_rule_test", [])
    ]
    fired = {c["alertname"] for c in cases if c["exp_alerts"]}
    quiet = {c["alertname"] for c in cases if not c["exp_alerts"]}
    assert alerts == fired, "alerts without a case that fires them, or cases of no alert"
    assert alerts == quiet, "alerts without a case that leaves them quiet"
    for case in cases:
        for alert in case["exp_alerts"]:
            # Routes in Alertmanager match on these: every alert must keep them.
            assert {"namespace", "job", "severity"} <= alert["exp_labels"].keys(), case


def test_a_wrong_expectation_fails(rules_dir: Path) -> None:
    """The tests can fail: the same file expecting SentryBridgeDown without its labels."""
    broken = TESTS.read_text(encoding="utf-8").replace(
        "              job: prod-sentry-alertmanager-bridge\n", "", 1
    )
    (rules_dir / "broken_test.yaml").write_text(broken)
    done = promtool(rules_dir, "test", "rules", "broken_test.yaml")
    assert done.returncode != 0
    assert "SentryBridgeDown" in done.stdout + done.stderr

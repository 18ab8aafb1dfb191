"""The docs and examples/ as a user copies them: one recommended route tree everywhere,
amtool accepts the Alertmanager files, the multi-team example passes check-config and
classifies the fixtures as its comments say. (The README's walk-through runs for real in
tests/integration/test_walkthrough.py.)"""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
from pathlib import Path
from typing import Any

import pytest
import yaml

from bridge import cli
from tests.sentry_payloads import FIXTURES

ROOT = Path(__file__).resolve().parents[1]
EXAMPLES = ROOT / "examples"
MULTI_TEAM = EXAMPLES / "multi-team"
DOCS = [ROOT / "README.md", *sorted((ROOT / "docs").glob("*.md"))]
CHART_README = ROOT / "helm" / "sentry-alertmanager-bridge" / "README.md"


def yaml_block_after(path: Path, heading: str) -> str:
    text = path.read_text(encoding="utf-8")
    start = text.index("```yaml\n", text.index(heading)) + len("```yaml\n")
    return text[start : text.index("```", start)]


def without_header(path: Path) -> str:
    lines = path.read_text(encoding="utf-8").splitlines(keepends=True)
    return "".join(lines[next(i for i, line in enumerate(lines) if not line.startswith("#")) :])


def test_one_recommended_route_tree_everywhere() -> None:
    readme = yaml_block_after(ROOT / "README.md", "### An Alertmanager route tree for it")
    docs = yaml_block_after(ROOT / "docs" / "alertmanager.md", "## A route tree that pages")
    assert readme == docs == without_header(EXAMPLES / "alertmanager.yml")


def _routes(route: dict[str, Any]) -> list[dict[str, Any]]:
    return [route, *(r for child in route.get("routes", []) for r in _routes(child))]


@pytest.mark.parametrize("path", [EXAMPLES / "alertmanager.yml", MULTI_TEAM / "alertmanager.yml"])
def test_no_route_groups_per_issue(path: Path) -> None:
    """A route grouped by a Sentry identity pages once per issue: 183 notifications for a
    storm of 200 issues (tests/integration/test_storm.py counts what the routes page)."""
    config = yaml.safe_load(path.read_text(encoding="utf-8"))
    for route in _routes(config["route"]):
        assert not {"sentry_issue_id", "sentry_alert_rule_id", "..."} & set(
            route.get("group_by", [])
        ), route


def test_multi_team_uses_the_recommended_inhibitions() -> None:
    recommended = yaml.safe_load((EXAMPLES / "alertmanager.yml").read_text(encoding="utf-8"))
    teams = yaml.safe_load((MULTI_TEAM / "alertmanager.yml").read_text(encoding="utf-8"))
    assert teams["inhibit_rules"] == recommended["inhibit_rules"]


def amtool() -> str:
    path = shutil.which("amtool")
    if path is None:
        if os.environ.get("CI") == "true":
            pytest.fail("amtool is not installed (apt-get install prometheus-alertmanager)")
        pytest.skip("amtool is not installed")
    return path


@pytest.mark.parametrize("path", [EXAMPLES / "alertmanager.yml", MULTI_TEAM / "alertmanager.yml"])
def test_amtool_accepts_the_alertmanager_files(path: Path) -> None:
    out = subprocess.run([amtool(), "check-config", str(path)], capture_output=True, text=True)
    assert out.returncode == 0, out.stdout + out.stderr


@pytest.mark.parametrize(
    ("path", "labels", "receiver"),
    [
        pytest.param(
            EXAMPLES / "alertmanager.yml",
            ["source=sentry", "page=true", "severity=critical", "sentry_issue_id=1"],
            "pager",
            id="pages",
        ),
        pytest.param(
            EXAMPLES / "alertmanager.yml",
            ["source=sentry", "page=false", "severity=low", "project=web"],
            "team-chat",
            id="chat",
        ),
        pytest.param(
            EXAMPLES / "alertmanager.yml",
            ["source=sentry", "page=true", "severity=critical", "escalation_tier=2"],
            "pager-tier-2",
            id="second-tier",
        ),
        pytest.param(
            EXAMPLES / "alertmanager.yml",
            ["source=sentry", "page=true", "severity=critical", "escalation_tier=3"],
            "pager-tier-3",
            id="third-tier",
        ),
        pytest.param(
            EXAMPLES / "alertmanager.yml",
            ["source=sentry", "sentry_test=true", "severity=low", "project=web"],
            "team-chat",
            id="test-notification-never-pages",
        ),
        pytest.param(
            EXAMPLES / "alertmanager.yml",
            ["source=sentry", "sentry_test=true", "page=true", "escalation_tier=2"],
            "team-chat",
            id="test-notification-never-pages-even-labelled-so",
        ),
        pytest.param(
            MULTI_TEAM / "alertmanager.yml",
            ["source=sentry", "team=payments", "page=true"],
            "payments-pager",
            id="payments-pages",
        ),
        pytest.param(
            MULTI_TEAM / "alertmanager.yml",
            ["source=sentry", "team=web", "page=false"],
            "web-chat",
            id="web-chat",
        ),
        pytest.param(
            MULTI_TEAM / "alertmanager.yml",
            ["source=sentry", "project=unclaimed"],
            "default",
            id="unclaimed",
        ),
    ],
)
def test_routes(path: Path, labels: list[str], receiver: str) -> None:
    args = [amtool(), "config", "routes", "test", f"--config.file={path}", *labels]
    out = subprocess.run(args, capture_output=True, text=True)
    assert out.stdout.strip() == receiver, out.stderr


SENTRY_STEPS = [ROOT / "README.md", ROOT / "docs" / "sentry.md", CHART_README]
# Sentry's permission names as its integration form shows them ("Issue & Event: Read").
PERMISSION = re.compile(
    r"(Issue & Event|Project|Team|Release|Organization|Member|Distribution): "
    r"(No Access|Read|Write|Admin)"
)


def sentry_steps(path: Path) -> list[list[str]]:
    """The internal integration's steps, between ``<!-- sentry-steps -->`` markers: for each
    numbered step, the names of Sentry's UI it mentions (``*Alert Action*``), in order."""
    text = path.read_text(encoding="utf-8")
    block = text[text.index("<!-- sentry-steps -->") : text.index("<!-- /sentry-steps -->")]
    steps = re.split(r"\n(?=\d+\. )", block)[1:]
    return [
        list(dict.fromkeys(re.findall(r"(?<![*\w])\*([^*\n]+)\*(?!\*)", step))) for step in steps
    ]


def test_the_sentry_steps_are_the_same_everywhere() -> None:
    """README, docs/sentry.md and the chart's README register the integration the same
    way: the same steps naming the same fields of Sentry's form, the same permissions, the
    same webhook subscriptions."""
    steps = {str(path.relative_to(ROOT)): sentry_steps(path) for path in SENTRY_STEPS}
    readme = steps["README.md"]
    assert all(s == readme for s in steps.values()), steps
    names = [name for step in readme for name in step]
    # Sentry grants the `issue` (and `error`) webhook only with event:read, shown as
    # "Issue & Event: Read" (REQUIRED_EVENT_PERMISSIONS in getsentry/sentry), and calls
    # the toggle that makes the integration an alert rule action "Alert Action".
    assert "Issue & Event: Read" in names
    assert names.index("Alert Action") < names.index("Alert Rule Action")
    for path in SENTRY_STEPS:
        text = path.read_text(encoding="utf-8")
        assert {m.group(0) for m in PERMISSION.finditer(text)} == {"Issue & Event: Read"}, path
        block = text[text.index("<!-- sentry-steps -->") : text.index("<!-- /sentry-steps -->")]
        subscribed = set(re.findall(r"`(issue|error|comment)`:? \**on\b", block))
        assert subscribed == {"issue"}, path


@pytest.mark.parametrize("path", [*DOCS, CHART_README], ids=lambda p: str(p.relative_to(ROOT)))
def test_no_doc_calls_the_issue_permission_optional(path: Path) -> None:
    text = path.read_text(encoding="utf-8").lower()
    assert "only for enrichment" not in text
    assert "alert rule action*:" not in text  # the old name as the step's name


@pytest.fixture
def no_secrets(monkeypatch: pytest.MonkeyPatch) -> None:
    for name in ("SENTRY_CLIENT_SECRET", "SENTRY_SERVICE_HOOK_SECRET", "SENTRY_LEGACY_TOKEN"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.delenv("BRIDGE_CONFIG", raising=False)


def test_classification_doc_lists_the_shipped_rules_in_order() -> None:
    config = yaml.safe_load((ROOT / "config.yaml").read_text(encoding="utf-8"))
    shipped = [rule["name"] for rule in config["classification"]["rules"]]
    text = (ROOT / "docs" / "classification.md").read_text(encoding="utf-8")
    table = text[text.index("## The shipped policy") : text.index("## Testing a change")]
    rows = [line.split("|") for line in table.splitlines() if line.startswith("| ")]
    named = [cells[2] for cells in rows if cells[1].strip().isdigit()]
    assert re.findall(r"`([\w-]+)`", " ".join(named)) == shipped


@pytest.mark.usefixtures("no_secrets")
def test_classification_doc_shows_what_check_config_prints(
    capsys: pytest.CaptureFixture[str],
) -> None:
    assert cli.main(["check-config", str(ROOT / "config.yaml")]) == 0
    printed = capsys.readouterr().out.splitlines()
    text = (ROOT / "docs" / "classification.md").read_text(encoding="utf-8")
    shown = [line for line in text.splitlines() if re.match(r" +\d+\. [\w-]+: ", line)]
    assert shown
    assert shown == printed[printed.index(shown[0]) :][: len(shown)]


@pytest.mark.usefixtures("no_secrets")
def test_multi_team_passes_check_config(capsys: pytest.CaptureFixture[str]) -> None:
    assert cli.main(["check-config", str(MULTI_TEAM / "config.yaml")]) == 0
    out = capsys.readouterr().out
    assert "OK" in out
    assert 'payments-critical: severity critical +labels {"team": "payments"}' in out


@pytest.mark.usefixtures("no_secrets")
@pytest.mark.parametrize(
    ("fixture", "severity", "team", "rule"),
    [
        pytest.param("metric_alert_critical.json", "critical", "payments", "payments-critical"),
        pytest.param("event_alert_python.json", "low", "payments", "payments-outside-production"),
        pytest.param("event_alert.json", "high", "web", "web-high"),
        pytest.param("metric_alert_critical_crash_free.json", "high", "web", "web-high"),
    ],
)
def test_multi_team_explains_the_fixtures(
    capsys: pytest.CaptureFixture[str], fixture: str, severity: str, team: str, rule: str
) -> None:
    args = ["explain", str(FIXTURES / fixture), "--config", str(MULTI_TEAM / "config.yaml")]
    assert cli.main(args) == 0
    out = capsys.readouterr().out
    [sent] = json.loads(out[out.index("[", out.index("would POST")) :])
    assert (sent["labels"]["severity"], sent["labels"]["team"]) == (severity, team)
    assert sent["annotations"]["classified_by"] == rule


@pytest.mark.parametrize("path", DOCS, ids=lambda p: p.name)
def test_offline_commands_in_the_docs_need_no_dummy_secret(path: Path) -> None:
    text = path.read_text(encoding="utf-8")
    assert "=dummy" not in text
    # Debian's yq (a jq wrapper) prints JSON strings quoted without -r; mikefarah's takes it too.
    for command in re.findall(r"\byq [^\n]*", text):
        assert command.startswith("yq -r "), command

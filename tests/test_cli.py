"""The command line, as a user runs it: ``python -m bridge ...`` in a subprocess for the
entry point, ``cli.main`` in-process for the rest."""

from __future__ import annotations

import dataclasses
import json
import re
import subprocess
import sys
from pathlib import Path

import pytest

from bridge import __version__, cli, config
from bridge.alertmanager import PostableAlert
from bridge.context import IssueContext
from bridge.errors import ConfigError
from bridge.model import Severity
from bridge.state import IdentityState
from tests.sentry_payloads import FIXTURES

ROOT = Path(__file__).resolve().parents[1]
SHIPPED = ROOT / "config.yaml"


@pytest.fixture(autouse=True)
def secrets(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("SENTRY_CLIENT_SECRET", "cli-test-secret")
    monkeypatch.delenv("BRIDGE_CONFIG", raising=False)


def test_module_entry_point_and_version() -> None:
    out = subprocess.run(
        [sys.executable, "-m", "bridge", "--version"],
        capture_output=True,
        text=True,
        check=True,
        cwd=ROOT,
    )
    assert out.stdout.startswith("sentry-bridge ")


def test_check_config_lists_rules_in_order(capsys: pytest.CaptureFixture[str]) -> None:
    assert cli.main(["check-config", str(SHIPPED)]) == 0
    out = capsys.readouterr().out
    assert "OK" in out
    lines = [line for line in out.splitlines() if re.match(r"^\s*\d+\. ", line)]
    assert len(lines) >= 5
    assert [int(line.split(".")[0]) for line in lines] == list(range(1, len(lines) + 1))
    assert "users > 10" in out
    assert "default: severity medium" in out
    assert "cli-test-secret" not in out


def test_check_config_names_the_bad_key(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    bad = tmp_path / "bad.yaml"
    bad.write_text(
        "sentry: {client_secrets: x}\n"
        "classification:\n"
        "  rules:\n"
        "    - {name: a, match: {usres: {gt: 1}}, severity: low}\n",
        encoding="utf-8",
    )
    assert cli.main(["check-config", str(bad)]) == 2
    err = capsys.readouterr().err
    assert "classification.rules[0].match.usres: unknown key" in err


def _no_secrets(monkeypatch: pytest.MonkeyPatch) -> None:
    for name in ("SENTRY_CLIENT_SECRET", "SENTRY_SERVICE_HOOK_SECRET", "SENTRY_LEGACY_TOKEN"):
        monkeypatch.delenv(name, raising=False)


def test_check_config_needs_no_secrets_and_says_which_serve_needs(
    capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    _no_secrets(monkeypatch)
    assert cli.main(["check-config", str(SHIPPED)]) == 0
    out = capsys.readouterr().out
    assert "OK" in out
    needed = out[out.index("needed at serve time") :]
    assert "SENTRY_CLIENT_SECRET" in needed
    assert "serve refuses to start" in needed


def test_check_config_with_secrets_needs_nothing_more(
    capsys: pytest.CaptureFixture[str],
) -> None:
    assert cli.main(["check-config", str(SHIPPED)]) == 0
    out = capsys.readouterr().out
    assert "authentication: integration" in out
    assert "needed at serve time" not in out


def test_an_unset_secret_variable_is_noted_not_an_error(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    _no_secrets(monkeypatch)
    monkeypatch.delenv("AM_TOKEN", raising=False)
    cfg = tmp_path / "c.yaml"
    cfg.write_text(
        "sentry: {client_secrets: '${SENTRY_CLIENT_SECRET}', api_token: '${file:/nonexistent}'}\n"
        "alertmanager: {bearer_token: '${AM_TOKEN}'}\n",
        encoding="utf-8",
    )
    assert cli.main(["check-config", str(cfg)]) == 0
    out = capsys.readouterr().out
    assert "sentry.client_secrets: the environment variable SENTRY_CLIENT_SECRET" in out
    assert "sentry.api_token: the file /nonexistent" in out
    assert "alertmanager.bearer_token: the environment variable AM_TOKEN" in out


@pytest.mark.parametrize(
    ("store", "noted"),
    [
        pytest.param(
            "{backend: postgres, postgres: {dsn: '${BRIDGE_DATABASE_URL}'}}",
            "store.postgres.dsn: the environment variable BRIDGE_DATABASE_URL",
            id="unset-variable",
        ),
        pytest.param(
            "{backend: postgres}", "store.postgres.dsn: required with backend: postgres", id="none"
        ),
    ],
)
def test_the_database_url_is_a_secret_check_config_does_without(
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
    monkeypatch: pytest.MonkeyPatch,
    store: str,
    noted: str,
) -> None:
    """The chart's check-config hook runs before the Secret holding the URL exists."""
    monkeypatch.delenv("BRIDGE_DATABASE_URL", raising=False)
    cfg = tmp_path / "c.yaml"
    cfg.write_text(f"store: {store}\n", encoding="utf-8")
    assert cli.main(["check-config", str(cfg)]) == 0
    needed = capsys.readouterr().out.split("needed at serve time")[1]
    assert noted in needed
    assert needed.count("store.postgres.dsn") == 1
    with pytest.raises(ConfigError, match=r"postgres\.dsn: required|BRIDGE_DATABASE_URL"):
        config.load(cfg)  # serve still needs it


def test_offline_checks_still_refuse_a_variable_outside_the_secrets(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delenv("PORT_VAR", raising=False)
    cfg = tmp_path / "c.yaml"
    cfg.write_text("server: {port: '${PORT_VAR}'}\n", encoding="utf-8")
    assert cli.main(["check-config", str(cfg)]) == 2
    assert "server.port: environment variable PORT_VAR is not set" in capsys.readouterr().err


def test_serve_still_refuses_unauthenticated(monkeypatch: pytest.MonkeyPatch) -> None:
    _no_secrets(monkeypatch)
    with pytest.raises(ConfigError, match="unauthenticated"):
        config.load(SHIPPED)


def test_explain_needs_no_secrets(
    capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    _no_secrets(monkeypatch)
    payload = FIXTURES / "metric_alert_critical.json"
    assert cli.main(["explain", str(payload), "--config", str(SHIPPED)]) == 0
    captured = capsys.readouterr()
    assert "would POST" in captured.out
    assert "SENTRY_CLIENT_SECRET" in captured.err


@pytest.mark.parametrize("command", ["serve", "check-config", "explain", "send", "status"])
def test_version_on_every_command(command: str, capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as exited:
        cli.main([command, "--version"])
    assert exited.value.code == 0
    assert capsys.readouterr().out.strip() == f"sentry-bridge {__version__}"


def test_explain_shows_every_rule_tried_and_the_alert(capsys: pytest.CaptureFixture[str]) -> None:
    payload = FIXTURES / "event_alert_python.json"
    assert cli.main(["explain", str(payload), "--config", str(SHIPPED)]) == 0
    out = capsys.readouterr().out
    assert "normalised alert:" in out
    assert '"environment": "staging"' in out
    assert "MATCH" in out
    assert "no " in out or out.count("MATCH") == 1
    sent = json.loads(out[out.index("[", out.index("would POST")) :])
    assert sent[0]["labels"]["severity"] == "low"
    assert sent[0]["labels"]["environment"] == "staging"
    assert "endsAt" in sent[0]


def test_explain_guesses_the_resource_of_a_saved_metric_alert(
    capsys: pytest.CaptureFixture[str],
) -> None:
    payload = FIXTURES / "metric_alert_critical.json"
    assert cli.main(["explain", str(payload), "--config", str(SHIPPED)]) == 0
    out = capsys.readouterr().out
    sent = json.loads(out[out.index("[", out.index("would POST")) :])
    assert sent[0]["labels"]["alertname"] == "SentryMetricAlert"
    assert sent[0]["labels"]["severity"] == "critical"


def test_explain_ignored_payload(capsys: pytest.CaptureFixture[str]) -> None:
    payload = FIXTURES / "installation_created.json"
    assert cli.main(["explain", str(payload), "--config", str(SHIPPED)]) == 0
    assert capsys.readouterr().out.startswith("ignored:")


def test_explain_missing_file_is_a_clear_error(capsys: pytest.CaptureFixture[str]) -> None:
    assert cli.main(["explain", "/nonexistent.json", "--config", str(SHIPPED)]) == 1
    assert "error:" in capsys.readouterr().err


def explain_from(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], fixture: str, state: IdentityState
) -> str:
    """``sentry-bridge explain`` of a captured webhook from ``state``, saved as the store
    keeps it; its output."""
    saved = tmp_path / "state.json"
    saved.write_text(json.dumps(state.to_json()), encoding="utf-8")
    webhook = str(FIXTURES / fixture)
    assert cli.main(["explain", webhook, "--config", str(SHIPPED), "--state", str(saved)]) == 0
    return capsys.readouterr().out


def test_explain_shows_the_step_from_a_given_state_and_says_it_resolves(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    # The state an earlier event_alert of the same issue left, saved as the store keeps it.
    assert cli.main(["explain", str(FIXTURES / "event_alert.json"), "--config", str(SHIPPED)]) == 0
    out = capsys.readouterr().out
    assert "none (nothing known" in out
    fired = json.loads(out[out.index("[", out.index("would POST")) :])[0]
    previous = IdentityState(
        alert=PostableAlert.model_validate(fired),
        severity=Severity(fired["labels"]["severity"]),
    )
    out = explain_from(tmp_path, capsys, "issue_resolved.json", previous)
    assert "this webhook: resolved" in out
    assert "RESOLVES the alert" in out
    # The reconciler's view of the state after: Sentry's API may still undo the resolve.
    assert "Sentry's API saying the issue is unresolved after that undoes the resolve" in out
    (sent,) = json.loads(out[out.index("[", out.index("would POST")) :])
    assert sent["labels"] == fired["labels"]  # the very label set that fired
    # From a state where Sentry's API last said the issue escalates, explain says so.
    escalating = dataclasses.replace(previous, sentry_escalating=True)
    out = explain_from(tmp_path, capsys, "issue_resolved.json", escalating)
    before = out.split("this webhook:")[0]
    assert "Sentry's API last said the issue is escalating" in before


def test_explain_names_what_came_from_the_issues_context(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """Issue 16: an ``issue.created`` webhook (no environment) of an issue whose alert
    fires in staging is classified as staging, and ``explain`` says where that came from."""
    context = IssueContext(environment="staging", release="web@1.2")
    out = explain_from(tmp_path, capsys, "issue_created.json", IdentityState(context=context))
    assert "from the issue's context" in out
    assert "  environment: 'staging'" in out
    assert "  release: 'web@1.2'" in out
    assert "MATCH non-production" in out

"""The settings of Sentry's alert rule in classification: their precedence over the rules
(docs/classification.md), ``override_sentry``, values checked against the config, and
``explain``'s account of them."""

from __future__ import annotations

from typing import Any

import pytest

from bridge import config
from bridge.classify import check_settings, classify, explain, explain_settings
from bridge.config import Classification, RuleSettings
from bridge.errors import ConfigError
from bridge.labels import build_annotations
from bridge.model import Severity
from tests.factories import sentry_alert

CLASSIFICATION = Classification.model_validate(
    {
        "default_severity": "medium",
        "rule_settings": {"teams": ["payments", "search"], "services": ["checkout"]},
        "rules": [
            {
                "name": "non-production-is-low",
                "match": {"environment": {"ne": "production"}},
                "severity": "low",
                "labels": {"team": "sandbox"},
                "override_sentry": True,
            },
            {"name": "drop-health", "match": {"transaction": "/healthz"}, "drop": True},
            {
                "name": "fatal-is-high",
                "match": {"level": "fatal"},
                "severity": "high",
                "labels": {"team": "core"},
            },
        ],
    }
)


def alert(settings: dict[str, str], **fields: Any) -> Any:
    fields.setdefault("environment", "production")
    return sentry_alert(rule_settings=tuple(settings.items()), **fields)


CASES = [
    pytest.param({}, {}, Severity.MEDIUM, {}, {}, id="nothing-chosen-default"),
    pytest.param({}, {"level": "fatal"}, Severity.HIGH, {"team": "core"}, {}, id="no-settings"),
    pytest.param(
        {"severity": "critical"}, {}, Severity.CRITICAL, {}, {}, id="severity-over-default"
    ),
    pytest.param(
        {"severity": "low", "team": "payments"},
        {"level": "fatal"},
        Severity.LOW,
        {"team": "payments"},
        {},
        id="settings-over-a-rule",
    ),
    pytest.param(
        {"severity": "rules", "team": "search"},
        {"level": "fatal"},
        Severity.HIGH,
        {"team": "search"},
        {},
        id="use-the-rules",
    ),
    pytest.param(
        {"severity": "critical", "team": "payments", "service": "checkout"},
        {"environment": "staging"},
        Severity.LOW,
        {"team": "sandbox", "service": "checkout"},
        {},
        id="override_sentry-rule-wins-on-what-it-sets",
    ),
    pytest.param(
        {"severity": "high"},
        {"transaction": "/healthz"},
        Severity.HIGH,
        {},
        {},
        id="a-chosen-severity-beats-a-drop",
    ),
    pytest.param(
        {"team": "payments"}, {"transaction": "/healthz"}, None, {}, {}, id="drop-stays-dropped"
    ),
    pytest.param(
        {"team": "paymnets", "service": "ledger", "severity": "urgent"},
        {},
        Severity.MEDIUM,
        {},
        {},
        id="values-not-in-the-config-are-ignored",
    ),
    pytest.param(
        {"runbook_url": "https://wiki.example.com/rb#pay"},
        {},
        Severity.MEDIUM,
        {},
        {"runbook_url": "https://wiki.example.com/rb#pay"},
        id="runbook",
    ),
    pytest.param(
        {"runbook_url": "javascript:alert(1)"}, {}, Severity.MEDIUM, {}, {}, id="runbook-refused"
    ),
]


@pytest.mark.parametrize(("settings", "fields", "severity", "labels", "annotations"), CASES)
def test_precedence(
    settings: dict[str, str],
    fields: dict[str, Any],
    severity: Severity | None,
    labels: dict[str, str],
    annotations: dict[str, str],
) -> None:
    decision = classify(alert(settings, **fields), CLASSIFICATION)
    assert decision.severity == severity
    assert dict(decision.labels) == labels
    assert dict(decision.annotations) == annotations
    # explain decides exactly as classify does.
    explained, _ = explain(alert(settings, **fields), CLASSIFICATION)
    assert explained == decision


@pytest.mark.parametrize(
    ("chosen", "problem"),
    [
        pytest.param({"team": "paymnets"}, "team 'paymnets' is not one of payments, search"),
        pytest.param({"service": "x"}, "service 'x' is not one of checkout"),
        pytest.param({"severity": "urgent"}, "severity 'urgent' is not one of low, medium"),
        pytest.param({"runbook_url": "wiki/rb"}, "runbook 'wiki/rb' must be an absolute http(s)"),
        pytest.param({"runbook_url": "ftp://h/rb"}, "runbook 'ftp://h/rb' must be an absolute"),
        pytest.param({"runbook_url": "https://"}, "runbook 'https://' must be an absolute"),
        pytest.param({"runbook_url": "https://u@h/"}, "runbook 'https://u@h/' must be an"),
    ],
)
def test_refused_with_a_sentence(chosen: dict[str, str], problem: str) -> None:
    accepted, problems = check_settings(chosen, CLASSIFICATION.rule_settings)
    assert accepted == {}
    [sentence] = problems
    assert sentence.startswith(problem)


def test_no_values_configured_says_which_key() -> None:
    _, [problem] = check_settings({"team": "payments"}, RuleSettings())
    assert "classification.rule_settings.teams is empty" in problem


def test_explain_says_what_each_setting_did() -> None:
    chosen = {"severity": "critical", "team": "payments", "service": "nope"}
    staging = alert(chosen, environment="staging")
    decision, _ = explain(staging, CLASSIFICATION)
    lines = explain_settings(staging, CLASSIFICATION, decision)
    assert lines == [
        "severity = 'critical': not applied (rule 'non-production-is-low' wins)",
        "team = 'payments': not applied (rule 'non-production-is-low' wins)",
        "service = 'nope': ignored: service 'nope' is not one of checkout",
    ]
    production = alert(chosen)
    decision, _ = explain(production, CLASSIFICATION)
    assert explain_settings(production, CLASSIFICATION, decision)[:2] == [
        "severity = 'critical': applied",
        "team = 'payments': applied",
    ]


def test_a_config_without_the_key_keeps_todays_behaviour() -> None:
    plain = Classification.model_validate({"rules": CLASSIFICATION.model_dump()["rules"]})
    decision = classify(alert({"team": "payments", "severity": "critical"}), plain)
    assert decision.severity == Severity.CRITICAL  # severity needs no list
    assert dict(decision.labels) == {}  # but no team can be chosen


def test_the_annotation_says_sentry_decided_the_severity() -> None:
    chosen = classify(alert({"severity": "critical"}, level="fatal"), CLASSIFICATION)
    assert build_annotations(sentry_alert(), chosen)["classified_by"] == "sentry"
    ruled = classify(alert({"severity": "rules"}, level="fatal"), CLASSIFICATION)
    assert build_annotations(sentry_alert(), ruled)["classified_by"] == "fatal-is-high"


@pytest.mark.parametrize(
    ("section", "message"),
    [
        pytest.param(
            {"classification": {"rule_settings": {"teams": ["a", "a"]}}},
            "listed twice",
            id="team-twice",
        ),
        pytest.param(
            {"classification": {"rule_settings": {"services": [" padded"]}}},
            "classification.rule_settings.services",
            id="blank-around",
        ),
        pytest.param(
            {"classification": {"rule_settings": {"team": ["a"]}}},
            "rule_settings.team",
            id="unknown-key",
        ),
        pytest.param(
            {"sentry": {"public_url": "https://example.com/bridge"}},
            "no path",
            id="public-url-with-a-path",
        ),
        pytest.param(
            {"sentry": {"public_url": "bridge.example.com"}}, "no path", id="public-url-no-scheme"
        ),
    ],
)
def test_config_refuses(section: dict[str, Any], message: str) -> None:
    body = {"sentry": {"allow_unauthenticated": True}}
    for key, value in section.items():
        body[key] = {**body.get(key, {}), **value}
    with pytest.raises(ConfigError, match=message):
        config.parse(body, env={})


def test_public_url_keeps_the_origin() -> None:
    body = {"sentry": {"allow_unauthenticated": True, "public_url": "https://b.example.com/"}}
    assert config.parse(body, env={}).sentry.public_url == "https://b.example.com"


@pytest.mark.parametrize(
    ("policies", "chosen", "accepted", "problem"),
    [
        pytest.param(["tiers"], "tiers", True, None, id="a-configured-policy"),
        pytest.param(["tiers"], "none", True, None, id="none-asks-for-no-escalation"),
        pytest.param(
            ["tiers"], "tier", False, "escalation policy 'tier' is not one of tiers, none",
            id="unknown",
        ),
        pytest.param(
            [], "tiers", False,
            "escalation policy 'tiers': the bridge defines none (escalation.policies)",
            id="none-configured",
        ),
    ],
)  # fmt: skip
def test_the_escalation_policy_setting_is_checked_against_the_config(
    policies: list[str], chosen: str, accepted: bool, problem: str | None
) -> None:
    """Issue 17: Sentry's editor refuses a policy the config does not define (on save)."""
    kept, problems = check_settings({"escalation_policy": chosen}, RuleSettings(), policies)
    assert ("escalation_policy" in kept) is accepted
    assert problems == ([problem] if problem else [])

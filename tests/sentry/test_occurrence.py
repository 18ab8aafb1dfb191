"""bridge/sentry/occurrence.py: issue-platform events (uptime, cron, performance, metric
issues) as event_alert with ``data.event.occurrence``, and their evidence in annotations."""

from __future__ import annotations

import json
from typing import Any

import pytest

from bridge.classify import Decision
from bridge.labels import build_annotations
from bridge.sentry import occurrence
from tests.factories import sentry_alert
from tests.sentry_payloads import alert, hook, load_fixture, patched

NO_RULE = Decision(rule=None, severity=None, labels={}, annotations={})


def test_uptime_failure() -> None:
    result = alert(hook("event_alert"), load_fixture("event_alert_uptime.json"))
    assert result.title == "Downtime detected for https://shop.example.com/healthz"
    assert result.message == "Your monitored domain is down"
    assert (result.issue_category, result.issue_type) == ("uptime", "uptime_domain_failure")
    assert result.environment == "production"
    assert result.level == "error"
    assert result.handled is None  # no exception: neither handled nor unhandled
    assert result.culprit is None
    assert result.evidence == (
        ("Failure reason", "timeout - Timed out after 10000ms"),
        ("Duration", "10003ms"),
        ("Method", "GET"),
        ("Status Code", "0"),
    )


def test_cron_failure_without_a_level_is_info() -> None:
    """issue_occurrence.py DEFAULT_LEVEL: an occurrence without a level is ``info``."""
    result = alert(hook("event_alert"), load_fixture("event_alert_cron.json"))
    assert (result.issue_category, result.issue_type) == ("cron", "monitor_check_in_failure")
    assert result.level == "info"
    assert result.title == "Cron failure: nightly-invoices"
    assert result.evidence[0] == ("Failure reason", "1 missed check-in")


def test_snake_case_occurrence_is_read_too() -> None:
    data = load_fixture("event_alert_uptime.json")
    event = data["data"]["event"]
    occ = event["occurrence"]
    event["occurrence"] = {
        "issue_title": occ["issueTitle"],
        "subtitle": occ["subtitle"],
        "evidence_display": occ["evidenceDisplay"][1:],
        "type": 1006,
        "level": "warning",
    }
    del event["title"], event["level"], event["metadata"]
    event["tags"] = [["environment", "production"]]
    result = alert(hook("event_alert"), data)
    assert (result.issue_category, result.issue_type) == (
        "performance",
        "performance_n_plus_one_db_queries",
    )
    assert result.title == occ["issueTitle"]
    assert result.level == "warning"
    assert result.evidence[0] == ("Duration", "10003ms")


@pytest.mark.parametrize(
    ("type_id", "expected"),
    [
        (1, ("error", "error")),
        (1018, ("performance", "performance_p95_endpoint_regression")),
        (2011, ("performance", "profile_function_regression")),
        (4001, ("cron", "monitor_check_in_failure")),
        (4003, ("cron", "monitor_check_in_failure")),
        (6001, ("feedback", "feedback")),
        (7001, ("uptime", "uptime_domain_failure")),
        (8001, ("metric_alert", "metric_issue")),
        ("7001", ("uptime", "uptime_domain_failure")),
        (9999, (None, None)),
        (True, (None, None)),
        (1e300, (None, None)),
        ("9" * 5000, (None, None)),
        (None, (None, None)),
    ],
)
def test_group_types(type_id: Any, expected: tuple[str | None, str | None]) -> None:
    assert occurrence.group_type(type_id) == expected


def test_error_events_are_errors_and_transactions_performance() -> None:
    result = alert(hook("event_alert"), load_fixture("event_alert.json"))
    assert (result.issue_category, result.issue_type, result.evidence) == ("error", "error", ())
    data = patched("event_alert.json", "transaction", "data", "event", "type")
    result = alert(hook("event_alert"), data)
    assert (result.issue_category, result.issue_type) == ("performance", None)


def test_issue_webhooks_carry_the_serializers_category_and_type() -> None:
    data = load_fixture("issue_created.json")
    data["data"]["issue"]["issueCategory"] = "outage"
    data["data"]["issue"]["issueType"] = "monitor_check_in_failure"
    result = alert(hook("issue"), data)
    assert (result.issue_category, result.issue_type) == ("outage", "monitor_check_in_failure")


def _with_evidence(rows: Any) -> dict[str, Any]:
    return patched(
        "event_alert_uptime.json", rows, "data", "event", "occurrence", "evidenceDisplay"
    )


def test_evidence_is_bounded() -> None:
    rows = [{"name": f"n{i}" * 100, "value": "v" * 100_000, "important": False} for i in range(50)]
    rows.append({"name": "Important", "value": 42, "important": True})
    evidence = alert(hook("event_alert"), _with_evidence(rows)).evidence
    assert len(evidence) == occurrence.MAX_EVIDENCE
    for name, value in evidence:
        assert len(name) <= occurrence.MAX_EVIDENCE_NAME
        assert len(value) <= occurrence.MAX_EVIDENCE_VALUE


def test_important_evidence_comes_first() -> None:
    rows = [
        {"name": "Duration", "value": "3ms", "important": False},
        {"name": "Failure reason", "value": "dns_error", "important": True},
    ]
    evidence = alert(hook("event_alert"), _with_evidence(rows)).evidence
    assert evidence == (("Failure reason", "dns_error"), ("Duration", "3ms"))


@pytest.mark.parametrize(
    "rows",
    [
        "not a list",
        [1, None, "x", {"name": 5, "value": "v"}, {"name": "n", "value": {"x": 1}}],
        [{"name": " ", "value": "v"}, {"value": "v"}],
    ],
)
def test_odd_evidence_is_skipped(rows: Any) -> None:
    assert alert(hook("event_alert"), _with_evidence(rows)).evidence == ()


def test_control_characters_in_evidence_become_spaces() -> None:
    rows = [{"name": "Reason\r\n", "value": "a\x00b\x1b[31m\u202ec\nd", "important": True}]
    [(name, value)] = alert(hook("event_alert"), _with_evidence(rows)).evidence
    assert name == "Reason"
    assert "\n" not in value
    assert "\r" not in value


def test_evidence_reaches_annotations_scrubbed() -> None:
    result = sentry_alert(
        evidence=(("Failure reason", "refused by 203.0.113.7"), ("Contact", "ops@example.com"))
    )
    annotations = build_annotations(result, NO_RULE)
    assert annotations["evidence"] == "Failure reason: refused by [ip]\nContact: [email]"
    assert "evidence" not in build_annotations(sentry_alert(), NO_RULE)


def test_uptime_fixture_through_annotations() -> None:
    result = alert(hook("event_alert"), load_fixture("event_alert_uptime.json"))
    annotations = build_annotations(result, NO_RULE)
    assert annotations["evidence"].startswith("Failure reason: timeout - Timed out after 10000ms\n")
    assert json.dumps(annotations)  # plain text only

"""Classification rules: every operator on every kind of field, unknown values, any/not,
first match wins, drop, default, and explain's traces."""

from __future__ import annotations

import dataclasses
import itertools
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st

from bridge.classify import FIELD_TYPES, TEST_DECISION, Decision, classify, explain
from bridge.config import Classification
from bridge.model import Kind, SentryAlert, Severity
from bridge.rules import Match
from tests.factories import sentry_alert as alert


def one_rule(match: dict[str, Any]) -> Classification:
    return Classification.model_validate(
        {"default_severity": "low", "rules": [{"name": "r", "match": match, "severity": "high"}]}
    )


def holds(match: dict[str, Any], **fields: Any) -> bool:
    decision = classify(alert(**fields), one_rule(match))
    return decision.rule == "r"


# --- operators -----------------------------------------------------------------------------

STRING_CASES = [
    pytest.param({"level": {"eq": "error"}}, {"level": "error"}, True, id="eq"),
    pytest.param({"level": {"eq": "error"}}, {"level": "warning"}, False, id="eq-other"),
    pytest.param({"level": {"eq": "error"}}, {"level": "Error"}, False, id="eq-is-case-exact"),
    pytest.param({"level": "error"}, {"level": "error"}, True, id="shorthand-eq"),
    pytest.param({"level": {"ne": "error"}}, {"level": "warning"}, True, id="ne"),
    pytest.param({"level": {"ne": "error"}}, {"level": "error"}, False, id="ne-same"),
    pytest.param({"level": ["error", "fatal"]}, {"level": "fatal"}, True, id="shorthand-in"),
    pytest.param({"level": {"in": ["error", "fatal"]}}, {"level": "info"}, False, id="in-not"),
    pytest.param({"level": {"not_in": ["error", "fatal"]}}, {"level": "info"}, True, id="not_in"),
    pytest.param({"level": {"not_in": ["error"]}}, {"level": "error"}, False, id="not_in-in"),
    pytest.param({"title": {"regex": "Value.*"}}, {}, True, id="regex"),
    pytest.param({"title": {"regex": "Value"}}, {}, False, id="regex-is-anchored-at-end"),
    pytest.param({"title": {"regex": "bad.*"}}, {}, False, id="regex-is-anchored-at-start"),
    pytest.param({"title": {"regex": "(?i)valueerror.*"}}, {}, True, id="regex-inline-flag"),
    pytest.param({"title": {"not_regex": "Key.*"}}, {}, True, id="not_regex"),
    pytest.param({"title": {"not_regex": "Value.*"}}, {}, False, id="not_regex-matching"),
    pytest.param({"release": {"gt": 2}}, {"release": "3"}, True, id="gt-on-numeric-text"),
    pytest.param({"release": {"gt": 2}}, {"release": "v3"}, False, id="gt-on-other-text"),
    pytest.param({"release": {"gte": 3}}, {"release": "3"}, True, id="gte-text"),
    pytest.param({"release": {"lt": 3}}, {"release": "3"}, False, id="lt-text"),
    pytest.param({"release": {"lte": 3}}, {"release": "3.0"}, True, id="lte-text"),
    pytest.param({"release": 2}, {"release": "2"}, True, id="yaml-int-compares-as-text"),
    pytest.param({"release": 2.0}, {"release": "2"}, False, id="yaml-float-is-its-own-text"),
    pytest.param({"kind": "metric_alert"}, {"kind": Kind.METRIC_ALERT}, True, id="enum-field"),
    pytest.param(
        {"level": {"ne": "info", "regex": "e.*"}}, {"level": "error"}, True, id="all-operators"
    ),
    pytest.param({"level": {"ne": "info", "regex": "w.*"}}, {"level": "error"}, False, id="and"),
]

NUMBER_CASES = [
    pytest.param({"users": 10}, {"users": 10}, True, id="eq-shorthand"),
    pytest.param({"users": {"eq": 10.0}}, {"users": 10}, True, id="eq-float-int"),
    pytest.param({"users": {"eq": "10"}}, {"users": 10}, True, id="eq-numeric-text"),
    pytest.param({"users": {"eq": "many"}}, {"users": 10}, False, id="eq-not-a-number"),
    pytest.param({"users": {"eq": True}}, {"users": 1}, False, id="eq-bool-is-not-1"),
    pytest.param({"users": {"ne": 0}}, {"users": 3}, True, id="ne"),
    pytest.param({"users": {"ne": 0}}, {"users": 0}, False, id="ne-same"),
    pytest.param({"users": [1, 2, 3]}, {"users": 2}, True, id="in"),
    pytest.param({"users": [1, 2, 3]}, {"users": 4}, False, id="in-not"),
    pytest.param({"users": {"not_in": [0]}}, {"users": 5}, True, id="not_in"),
    pytest.param({"users": {"not_in": [0]}}, {"users": 0}, False, id="not_in-in"),
    pytest.param({"users": {"gt": 10}}, {"users": 11}, True, id="gt"),
    pytest.param({"users": {"gt": 10}}, {"users": 10}, False, id="gt-boundary"),
    pytest.param({"users": {"gte": 10}}, {"users": 10}, True, id="gte-boundary"),
    pytest.param({"users": {"gte": 10}}, {"users": 9}, False, id="gte-below"),
    pytest.param({"error_rate": {"lt": 0.05}}, {"error_rate": 0.04}, True, id="lt"),
    pytest.param({"error_rate": {"lt": 0.05}}, {"error_rate": 0.05}, False, id="lt-boundary"),
    pytest.param({"error_rate": {"lte": 0.05}}, {"error_rate": 0.05}, True, id="lte-boundary"),
    pytest.param({"error_rate": {"lte": 0.05}}, {"error_rate": 0.06}, False, id="lte-above"),
    pytest.param({"error_rate": {"gt": 0.05}}, {"error_rate": 0.051}, True, id="gt-ratio"),
    pytest.param(
        {"latency_ms": {"gt": 2000, "lte": 5000}}, {"latency_ms": 3000.0}, True, id="in-range"
    ),
    pytest.param(
        {"latency_ms": {"gt": 2000, "lte": 5000}}, {"latency_ms": 6000.0}, False, id="out-of-range"
    ),
    pytest.param({"users": {"regex": "4[0-9]"}}, {"users": 42}, True, id="regex-on-text"),
    pytest.param(
        {"latency_ms": {"regex": "3000"}}, {"latency_ms": 3000.0}, True, id="regex-whole-float"
    ),
    pytest.param({"error_rate": {"regex": "0\\.05"}}, {"error_rate": 0.05}, True, id="regex-ratio"),
    pytest.param({"users": {"not_regex": "4[0-9]"}}, {"users": 42}, False, id="not_regex"),
    pytest.param({"users": {"not_regex": "4[0-9]"}}, {"users": 7}, True, id="not_regex-other"),
    pytest.param({"users": {"gt": 0}}, {"users": 0}, False, id="zero-is-known"),
    pytest.param({"users": 0}, {"users": 0}, True, id="zero-equals-zero"),
]

BOOL_CASES = [
    pytest.param({"handled": False}, {"handled": False}, True, id="eq-shorthand"),
    pytest.param({"handled": False}, {"handled": True}, False, id="eq-other"),
    pytest.param({"handled": {"eq": "false"}}, {"handled": False}, True, id="eq-quoted"),
    pytest.param({"handled": {"eq": "TRUE"}}, {"handled": True}, True, id="eq-quoted-any-case"),
    pytest.param({"handled": {"eq": 1}}, {"handled": True}, False, id="eq-1-is-not-true"),
    pytest.param({"handled": {"eq": "yes"}}, {"handled": True}, False, id="eq-other-word"),
    pytest.param({"handled": {"ne": True}}, {"handled": False}, True, id="ne"),
    pytest.param({"handled": {"ne": True}}, {"handled": True}, False, id="ne-same"),
    pytest.param({"handled": {"in": [True]}}, {"handled": True}, True, id="in"),
    pytest.param({"handled": {"not_in": [True]}}, {"handled": False}, True, id="not_in"),
    pytest.param({"handled": {"not_in": [True]}}, {"handled": True}, False, id="not_in-in"),
    pytest.param({"handled": {"regex": "false"}}, {"handled": False}, True, id="regex"),
    pytest.param({"handled": {"not_regex": "true"}}, {"handled": True}, False, id="not_regex"),
    pytest.param({"handled": {"gt": 0}}, {"handled": True}, False, id="gt-not-a-number"),
    pytest.param({"handled": {"lte": 1}}, {"handled": False}, False, id="lte-not-a-number"),
]

TAGS = (("component", "agent"), ("http.status_code", "503"), ("browser", "Chrome 120"))

TAG_CASES = [
    pytest.param({"tags": {"component": "agent"}}, True, id="eq"),
    pytest.param({"tags": {"component": "ui"}}, False, id="eq-other"),
    pytest.param({"tags": {"component": {"ne": "ui"}}}, True, id="ne"),
    pytest.param({"tags": {"component": {"ne": "agent"}}}, False, id="ne-same"),
    pytest.param({"tags": {"component": ["ui", "agent"]}}, True, id="in"),
    pytest.param({"tags": {"component": {"not_in": ["ui", "agent"]}}}, False, id="not_in"),
    pytest.param({"tags": {"component": {"not_in": ["ui"]}}}, True, id="not_in-other"),
    pytest.param({"tags": {"browser": {"regex": "Chrome .*"}}}, True, id="regex"),
    pytest.param({"tags": {"browser": {"regex": "Chrome"}}}, False, id="regex-anchored"),
    pytest.param({"tags": {"browser": {"not_regex": "Firefox.*"}}}, True, id="not_regex"),
    pytest.param({"tags": {"http.status_code": {"gte": 500}}}, True, id="gte-numeric-tag"),
    pytest.param({"tags": {"http.status_code": {"gt": 503}}}, False, id="gt-numeric-tag"),
    pytest.param({"tags": {"http.status_code": {"lt": 600}}}, True, id="lt-numeric-tag"),
    pytest.param({"tags": {"http.status_code": {"lte": 499}}}, False, id="lte-numeric-tag"),
    pytest.param({"tags": {"http.status_code": 503}}, True, id="yaml-int-vs-tag-text"),
    pytest.param({"tags": {"browser": {"gt": 1}}}, False, id="gt-on-text-tag"),
    pytest.param(
        {"tags": {"component": "agent", "http.status_code": {"gte": 500}}}, True, id="two-tags"
    ),
    pytest.param({"tags": {"component": "agent", "browser": "Safari"}}, False, id="two-tags-and"),
]


@pytest.mark.parametrize(("match", "fields", "expected"), STRING_CASES)
def test_string_fields(match: dict[str, Any], fields: dict[str, Any], expected: bool) -> None:
    assert holds(match, **fields) is expected


@pytest.mark.parametrize(("match", "fields", "expected"), NUMBER_CASES)
def test_number_fields(match: dict[str, Any], fields: dict[str, Any], expected: bool) -> None:
    assert holds(match, **fields) is expected


@pytest.mark.parametrize(("match", "fields", "expected"), BOOL_CASES)
def test_bool_field(match: dict[str, Any], fields: dict[str, Any], expected: bool) -> None:
    assert holds(match, **fields) is expected


@pytest.mark.parametrize(("match", "expected"), TAG_CASES)
def test_tags(match: dict[str, Any], expected: bool) -> None:
    assert holds(match, tags=TAGS) is expected


# --- unknown values ------------------------------------------------------------------------

UNKNOWN_CASES = [
    pytest.param("environment", {"eq": "production"}, id="str-eq"),
    pytest.param("environment", {"ne": "production"}, id="str-ne"),
    pytest.param("environment", {"in": ["production"]}, id="str-in"),
    pytest.param("environment", {"not_in": ["production", "prod"]}, id="str-not_in"),
    pytest.param("environment", {"regex": ".*"}, id="str-regex-anything"),
    pytest.param("environment", {"not_regex": "prod.*"}, id="str-not_regex"),
    pytest.param("release", {"gt": 0}, id="str-gt"),
    pytest.param("users", {"eq": 0}, id="num-eq-zero"),
    pytest.param("users", {"ne": 0}, id="num-ne"),
    pytest.param("users", {"not_in": [0]}, id="num-not_in"),
    pytest.param("users", {"gte": 0}, id="num-gte"),
    pytest.param("users", {"lt": 10}, id="num-lt"),
    pytest.param("users", {"lte": 10}, id="num-lte"),
    pytest.param("users", {"not_regex": "x"}, id="num-not_regex"),
    pytest.param("handled", {"eq": False}, id="bool-eq"),
    pytest.param("handled", {"ne": True}, id="bool-ne"),
    pytest.param("handled", {"not_in": [True]}, id="bool-not_in"),
]


@pytest.mark.parametrize(("field", "condition"), UNKNOWN_CASES)
def test_an_unknown_value_satisfies_no_condition(field: str, condition: dict[str, Any]) -> None:
    assert not holds({field: condition})


@pytest.mark.parametrize(
    "condition",
    [{"eq": "x"}, {"ne": "x"}, {"not_in": ["x"]}, {"not_regex": "x"}, {"lt": 1}],
    ids=["eq", "ne", "not_in", "not_regex", "lt"],
)
def test_a_missing_tag_is_unknown(condition: dict[str, Any]) -> None:
    assert not holds({"tags": {"team": condition}}, tags=TAGS)


# --- any, not, empty -------------------------------------------------------------------------

COMBINATOR_CASES = [
    pytest.param({}, {}, True, id="empty-always-holds"),
    pytest.param(
        {"any": [{"level": "error"}, {"users": {"gt": 10}}]},
        {"level": "info", "users": 20},
        True,
        id="any-second",
    ),
    pytest.param(
        {"any": [{"level": "error"}, {"users": {"gt": 10}}]},
        {"level": "error"},
        True,
        id="any-first",
    ),
    pytest.param(
        {"any": [{"level": "error"}, {"users": {"gt": 10}}]},
        {"level": "info"},
        False,
        id="any-none",
    ),
    pytest.param(
        {"environment": "production", "any": [{"level": "error"}]},
        {"environment": "staging", "level": "error"},
        False,
        id="any-and-sibling",
    ),
    pytest.param(
        {"not": {"environment": "production"}}, {"environment": "staging"}, True, id="not"
    ),
    pytest.param(
        {"not": {"environment": "production"}},
        {"environment": "production"},
        False,
        id="not-matching",
    ),
    # `not` negates the whole block: an unknown environment does not match the block,
    # so `not` holds. Use ne / not_in for "known and not production".
    pytest.param({"not": {"environment": "production"}}, {}, True, id="not-of-unknown"),
    pytest.param(
        {"any": [{"not": {"level": "error"}}, {"users": {"gt": 10}}]},
        {"level": "error", "users": 1},
        False,
        id="nested",
    ),
    pytest.param(
        {"not": {"any": [{"level": "error"}, {"level": "fatal"}]}},
        {"level": "warning"},
        True,
        id="not-any",
    ),
    pytest.param({"level": None}, {}, True, id="explicit-null-field-says-nothing"),
]


@pytest.mark.parametrize(("match", "fields", "expected"), COMBINATOR_CASES)
def test_combinators(match: dict[str, Any], fields: dict[str, Any], expected: bool) -> None:
    assert holds(match, **fields) is expected


# --- rules -------------------------------------------------------------------------------

POLICY = Classification.model_validate(
    {
        "default_severity": "medium",
        "rules": [
            {"name": "health", "match": {"transaction": {"regex": ".*/healthz"}}, "drop": True},
            {"name": "staging", "match": {"environment": "staging"}, "severity": "low"},
            {
                "name": "many-users",
                "match": {"users": {"gt": 10}},
                "severity": "critical",
                "labels": {"team": "core"},
                "annotations": {"runbook": "https://runbooks.example/users"},
            },
            {"name": "also-many-users", "match": {"users": {"gt": 5}}, "severity": "high"},
        ],
    }
)


def test_first_match_wins() -> None:
    decision = classify(alert(users=50), POLICY)
    assert decision == Decision(
        rule="many-users",
        severity=Severity.CRITICAL,
        labels={"team": "core"},
        annotations={"runbook": "https://runbooks.example/users"},
    )
    assert not decision.dropped
    assert classify(alert(users=7), POLICY).rule == "also-many-users"
    assert classify(alert(users=50, environment="staging"), POLICY).severity is Severity.LOW


def test_drop() -> None:
    decision = classify(alert(transaction="/api/healthz", users=50), POLICY)
    assert decision.rule == "health"
    assert decision.severity is None
    assert decision.dropped
    assert decision.labels == {}


def test_default_when_no_rule_holds() -> None:
    decision = classify(alert(users=1), POLICY)
    assert decision == Decision(None, Severity.MEDIUM, {}, {})
    assert not decision.dropped
    assert classify(alert(), Classification()).severity is Severity.MEDIUM


def test_decision_labels_cannot_change_the_config() -> None:
    decision = classify(alert(users=50), POLICY)
    with pytest.raises(TypeError):
        decision.labels["team"] = "other"  # type: ignore[index]
    assert POLICY.rules[2].labels == {"team": "core"}


def test_every_match_field_is_typed_and_on_the_alert() -> None:
    """A field added to config.Match but not to the field lists or SentryAlert would
    otherwise fail only when a rule first uses it."""
    on_alert = {f.name for f in dataclasses.fields(SentryAlert)}
    for name in Match.model_fields:
        if name in ("tags", "any", "not_"):
            continue
        assert name in FIELD_TYPES, name
        assert name in on_alert, name


# --- explain -----------------------------------------------------------------------------


def test_explain_lists_every_rule_in_order_with_reasons() -> None:
    decision, traces = explain(alert(users=42, environment="production"), POLICY)
    assert decision.rule == "many-users"
    assert [t.rule for t in traces] == ["health", "staging", "many-users", "also-many-users"]
    assert [t.matched for t in traces] == [False, False, True, True]
    assert traces[0].reasons == ("transaction: unknown (Sentry did not say): no",)
    assert traces[1].reasons == ("environment 'production' == 'staging': no",)
    assert traces[2].reasons == ("users 42 > 10: yes",)
    assert traces[3].reasons == ("users 42 > 5: yes",)


def test_explain_default() -> None:
    decision, traces = explain(alert(), POLICY)
    assert decision == Decision(None, Severity.MEDIUM, {}, {})
    assert not any(t.matched for t in traces)
    assert traces[2].reasons == ("users: unknown (Sentry did not say): no",)


def test_explain_reasons_for_tags_and_every_operator() -> None:
    classification = one_rule(
        {
            "level": {"in": ["error", "fatal"], "not_regex": "debug"},
            "error_rate": {"gte": 0.05, "lt": 1},
            "handled": False,
            "tags": {"component": "agent", "team": {"ne": "x"}},
        }
    )
    _, [trace] = explain(
        alert(level="error", error_rate=0.25, handled=True, tags=(("component", "ui"),)),
        classification,
    )
    assert not trace.matched
    assert trace.reasons == (
        "level 'error' in ['error', 'fatal']: yes",
        "level 'error' !~ /debug/: yes",
        "handled true == false: no",
        "error_rate 0.25 >= 0.05: yes",
        "error_rate 0.25 < 1: yes",
        "tags.component 'ui' == 'agent': no",
        "tags.team: unknown (the event has no such tag): no",
    )


def test_explain_reasons_for_any_and_not() -> None:
    classification = one_rule(
        {
            "any": [{"tags": {"component": "agent"}}, {"culprit": {"regex": ".*agent.*"}}],
            "not": {"environment": {"ne": "production"}},
        }
    )
    _, [trace] = explain(alert(culprit="app.agent.run", environment="production"), classification)
    assert trace.matched
    assert trace.reasons == (
        "any of 2 blocks: yes",
        "  [1] no",
        "      tags.component: unknown (the event has no such tag): no",
        "  [2] yes",
        "      culprit 'app.agent.run' =~ /.*agent.*/: yes",
        "not (holds when the block below does not): yes",
        "      environment 'production' != 'production': no",
    )


def test_explain_of_an_empty_match() -> None:
    _, [trace] = explain(alert(), one_rule({}))
    assert trace.matched
    assert trace.reasons == ("no conditions: always holds",)


ALERTS = [
    alert(
        **dict(zip(("environment", "users", "handled", "tags", "transaction"), values, strict=True))
    )
    for values in itertools.product(
        (None, "production", "staging"),
        (None, 0, 11),
        (None, True, False),
        ((), (("component", "agent"),)),
        (None, "/healthz"),
    )
]
GRID = Classification.model_validate(
    {
        "rules": [
            {"name": "health", "match": {"transaction": {"regex": ".*/healthz"}}, "drop": True},
            {
                "name": "nonprod",
                "match": {"environment": {"not_in": ["production"]}},
                "severity": "low",
            },
            {"name": "users", "match": {"users": {"gt": 10}}, "severity": "critical"},
            {
                "name": "unhandled",
                "match": {"handled": False, "not": {"tags": {"component": "agent"}}},
                "severity": "critical",
            },
            {
                "name": "agent",
                "match": {"any": [{"tags": {"component": "agent"}}, {"users": 0}]},
                "severity": "high",
            },
        ]
    }
)


def test_explain_decides_as_classify_does() -> None:
    seen = set()
    for a in ALERTS:
        decision, traces = explain(a, GRID)
        assert decision == classify(a, GRID)
        first = next((t.rule for t in traces if t.matched), None)
        assert decision.rule == first
        seen.add(decision.rule)
    assert seen == {"health", "nonprod", "users", "unhandled", "agent", None}


def test_the_doctors_test_alert_is_low_whatever_the_rules_and_settings() -> None:
    """``sentry-bridge doctor``'s test alert must never page: no rule, no setting of
    Sentry's and no override raises it."""
    rules = Classification.model_validate(
        {
            "default_severity": "critical",
            "rules": [{"name": "all", "severity": "critical", "labels": {"page": "true"}}],
        }
    )
    test = alert(test=True, rule_settings=(("severity", "critical"),))
    assert classify(test, rules) == TEST_DECISION
    assert explain(test, rules)[0] == TEST_DECISION
    assert dict(TEST_DECISION.labels) == {"sentry_test": "true"}
    assert TEST_DECISION.severity is Severity.LOW
    assert classify(dataclasses.replace(test, test=False), rules).severity is Severity.CRITICAL


# --- classify's compiled rules against explain's reading of the same rule -------------------

_SCALARS = st.sampled_from(["error", "fatal", "3", 2, 2.0, 0.5, True, False, "production"])
_CONDITIONS = st.one_of(
    _SCALARS,
    st.lists(_SCALARS, min_size=1, max_size=3),
    st.dictionaries(
        st.sampled_from(["eq", "ne", "in", "not_in", "regex", "not_regex", "gt", "gte", "lt"]),
        _SCALARS,
        min_size=1,
        max_size=3,
    ).map(
        lambda ops: (
            {
                op: [v] if op in ("in", "not_in") else str(v) + ".*" if "regex" in op else v
                for op, v in ops.items()
                if not (op in ("gt", "gte", "lt") and isinstance(v, str))
            }
            or {"eq": "error"}
        )
    ),
)
_FIELDS = st.sampled_from(["level", "environment", "release", "users", "error_rate", "handled"])
_MATCHES = st.recursive(
    st.dictionaries(_FIELDS, _CONDITIONS, max_size=3),
    lambda inner: st.one_of(
        st.builds(
            lambda m, any_: {**m, "any": any_}, inner, st.lists(inner, min_size=1, max_size=2)
        ),
        st.builds(lambda m, not_: {**m, "not": not_}, inner, inner),
        st.builds(lambda m, c: {**m, "tags": {"level": c}}, inner, _CONDITIONS),
    ),
    max_leaves=6,
)
_ALERTS = st.fixed_dictionaries(
    {},
    optional={
        "level": st.sampled_from(["error", "fatal", "Error", "3"]),
        "environment": st.sampled_from(["production", "staging"]),
        "release": st.sampled_from(["2", "3", "2.0", "v3"]),
        "users": st.sampled_from([0, 2, 3]),
        "error_rate": st.sampled_from([0.0, 0.5, 2.0]),
        "handled": st.booleans(),
        "tags": st.sampled_from([(("level", "error"),), (("level", "fatal"),), ()]),
    },
)


@given(_MATCHES, _ALERTS)
def test_classify_holds_a_rule_exactly_when_explain_says_it_matched(
    match: dict[str, Any], fields: dict[str, Any]
) -> None:
    try:
        policy = one_rule(match)
    except ValueError:
        return  # not a valid rule (e.g. a bool compared with gt): check-config refuses it
    decision = classify(alert(**fields), policy)
    _, [trace] = explain(alert(**fields), policy)
    assert (decision.rule == "r") is trace.matched

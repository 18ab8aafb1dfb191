"""Classification: the first rule whose ``match`` holds decides; none holding, the default.

Pure: the decision depends on the alert and the rules only. ``classify`` runs for every
webhook and builds no text; ``explain`` evaluates every rule with the same semantics and
says why each held or not, for ``sentry-bridge explain``.

The rule language is defined in ``config.py`` (``Match``, ``Condition``). Its semantics:

* A ``Match`` holds when every field it names holds (AND); ``any`` holds when at least one
  of its blocks holds (an empty ``any`` never does); ``not`` holds when its block does
  not. An empty match always holds.
* A value the alert does not know (``None``, or a tag the event does not carry) satisfies
  no condition, negative ones (``ne``, ``not_in``, ``not_regex``) included: unknown is not
  zero, and an unknown environment is neither production nor "not production".
* ``regex`` / ``not_regex`` are anchored at both ends (``re.fullmatch``), as Alertmanager's
  ``=~`` matchers are; ``(?i)`` at the start makes one case-insensitive.
* Comparisons follow the field's type (``config.STRING_FIELDS`` / ``NUMBER_FIELDS`` /
  ``BOOL_FIELDS``; tags are strings):

  - strings compare exactly; a number or boolean written in YAML (``release: 2``) is
    compared as its text (``"2"``, ``true`` as ``"true"``);
  - numbers compare as floats, ``eq`` / ``in`` included (``users: 10`` matches 10 users);
    ``gt`` & co on a string field or tag hold when its text is a number
    (``tags: {http.status_code: {gte: 500}}``), never otherwise;
  - ``handled`` compares as a boolean: ``true`` / ``false`` (or those words quoted);
  - ``regex`` on a number or boolean matches its text: ``42``, ``0.05``, ``true``.
"""

from __future__ import annotations

import functools
import re
from collections.abc import Callable, Collection, Mapping
from dataclasses import dataclass
from types import MappingProxyType
from typing import Any, Literal

from bridge.config import Classification, RuleSettings
from bridge.model import SentryAlert, Severity
from bridge.rules import (
    BOOL_FIELDS,
    NUMBER_FIELDS,
    STRING_FIELDS,
    Condition,
    Match,
    Rule,
    Scalar,
)
from bridge.sentry import settings as setting

_EMPTY: Mapping[str, str] = MappingProxyType({})


@dataclass(frozen=True, slots=True)
class Decision:
    rule: str | None  # the rule that decided; None when default_severity applied
    severity: Severity | None  # None when the rule dropped the alert
    labels: Mapping[str, str]  # the rule's extra labels
    annotations: Mapping[str, str]
    # The settings from Sentry's alert rule editor that decided something, by name.
    settings: tuple[str, ...] = ()
    # The escalation policy named by the rule or Sentry's setting ("none": no policy);
    # None: escalation.default's for the severity (bridge.state.Policy.escalation_for).
    escalation: str | None = None

    @property
    def dropped(self) -> bool:
        return self.severity is None


# A test: Sentry's "Send Test Notification" (bridge.sentry.issue) or the doctor's test alert
# (bridge.doctor). Low and labelled sentry_test="true" whatever the rules say (issue 16, item
# 5), so it never pages and a route can send it where a test belongs (docs/alertmanager.md).
TEST_LABEL = "sentry_test"
TEST_RULE = "test notification"
TEST_DECISION = Decision(
    TEST_RULE,
    Severity.LOW,
    MappingProxyType({TEST_LABEL: "true"}),
    MappingProxyType({}),
)


@dataclass(frozen=True, slots=True)
class Trace:
    """One rule as ``explain`` tried it: one line per condition checked."""

    rule: str
    matched: bool
    reasons: tuple[str, ...]


def classify(alert: SentryAlert, classification: Classification) -> Decision:
    """Sentry's rule settings, then the first rule whose match holds (first match wins),
    then the default; a rule with ``override_sentry`` wins over the settings. A test
    notification is low and labelled a test whatever the rules say: it must never page."""
    if alert.test:
        return TEST_DECISION
    tags = alert.tag_map
    for rule in classification.rules:
        if _compiled(rule.match)(alert, tags):
            return _settle(_decision(rule), alert, classification, rule)
    default = Decision(None, classification.default_severity, _EMPTY, _EMPTY)
    return _settle(default, alert, classification, None)


def explain(alert: SentryAlert, classification: Classification) -> tuple[Decision, list[Trace]]:
    """Every rule, in order, with why it held or not; the decision is ``classify``'s."""
    if alert.test:
        why = "a test notification (Sentry's or the doctor's): low, sentry_test=true, never pages"
        return TEST_DECISION, [Trace(TEST_RULE, True, (why,))]
    tags = alert.tag_map
    decided: Rule | None = None
    traces: list[Trace] = []
    for rule in classification.rules:
        matched, lines = _explain_match(rule.match, alert, tags)
        traces.append(Trace(rule.name, matched, tuple(lines or ["no conditions: always holds"])))
        if matched and decided is None:
            decided = rule
    if decided is None:
        decision = Decision(None, classification.default_severity, _EMPTY, _EMPTY)
    else:
        decision = _decision(decided)
    return _settle(decision, alert, classification, decided), traces


def _decision(rule: Rule) -> Decision:
    return Decision(
        rule.name,
        None if rule.drop else rule.severity,
        MappingProxyType(rule.labels) if rule.labels else _EMPTY,
        MappingProxyType(rule.annotations) if rule.annotations else _EMPTY,
        escalation=rule.escalation,
    )


# --- settings from Sentry's alert rule editor ------------------------------------------------
# Precedence (docs/classification.md): the settings chosen for the alert rule in Sentry, then
# the first matching rule, then default_severity; a rule with ``override_sentry: true`` keeps
# its severity (or drop) and every label and annotation it sets. Each value is checked against
# the config here too, not only when Sentry saves the rule: the config may have changed since,
# and nothing but a listed value ever becomes a label.

_SEVERITIES = frozenset(s.value for s in Severity)
_LABELS = {setting.TEAM: "team", setting.SERVICE: "service"}


def check_settings(
    chosen: Mapping[str, str],
    allowed: RuleSettings,
    policies: Collection[str] | None = None,
) -> tuple[dict[str, str], list[str]]:
    """The settings that may be applied, and a sentence for each refused one (what Sentry's
    alert rule editor shows the user, through ``bridge.sentry_ui``). ``policies``: the
    escalation policies configured (None: not checked here)."""
    accepted: dict[str, str] = {}
    problems: list[str] = []
    severity = chosen.get(setting.SEVERITY)
    if severity is not None and severity != setting.USE_RULES:
        if severity in _SEVERITIES:
            accepted[setting.SEVERITY] = severity
        else:
            problems.append(
                f"severity {severity!r} is not one of {', '.join(Severity)} "
                f"or {setting.USE_RULES!r} (use the bridge's rules)"
            )
    for name, values, key in (
        (setting.TEAM, allowed.teams, "teams"),
        (setting.SERVICE, allowed.services, "services"),
    ):
        value = chosen.get(name)
        if value is None:
            continue
        if value in values:
            accepted[name] = value
        elif not values:
            problems.append(
                f"{name} {value!r}: the bridge allows no {name} "
                f"(classification.rule_settings.{key} is empty)"
            )
        else:
            problems.append(f"{name} {value!r} is not one of {', '.join(values)}")
    policy = chosen.get(setting.ESCALATION_POLICY)
    if policy is not None:
        # Without the policies (classify: Classification does not hold them) any name is
        # kept here; bridge.state.Policy.escalation_for ignores one the config lacks.
        if policies is None or policy in policies or policy == setting.NO_POLICY:
            accepted[setting.ESCALATION_POLICY] = policy
        elif not policies:
            problems.append(
                f"escalation policy {policy!r}: the bridge defines none (escalation.policies)"
            )
        else:
            problems.append(
                f"escalation policy {policy!r} is not one of "
                f"{', '.join([*policies, setting.NO_POLICY])}"
            )
    runbook = chosen.get(setting.RUNBOOK_URL)
    if runbook is not None:
        if is_web_url(runbook):
            accepted[setting.RUNBOOK_URL] = runbook
        else:
            problems.append(
                f"runbook {runbook!r} must be an absolute http(s) URL, "
                "such as https://wiki.example.com/runbooks/checkout"
            )
    return accepted, problems


_WEB_URL = re.compile(r"^https?://[^\s/?#@]+(?:[/?#][^\s]*)?$")


def is_web_url(text: str) -> bool:
    return _WEB_URL.fullmatch(text) is not None and text.isprintable()


def _settle(
    decision: Decision, alert: SentryAlert, classification: Classification, rule: Rule | None
) -> Decision:
    """``decision`` with the settings of Sentry's alert rule applied (a no-op without)."""
    if not alert.rule_settings:
        return decision
    accepted, _ = check_settings(alert.settings_map, classification.rule_settings)
    if not accepted:
        return decision
    wins = rule is not None and rule.override_sentry
    used: list[str] = []
    severity = decision.severity
    if setting.SEVERITY in accepted and not wins:
        severity = Severity(accepted[setting.SEVERITY])
        used.append(setting.SEVERITY)
    if severity is None:  # dropped, and no setting of Sentry's says otherwise
        return decision
    labels = dict(decision.labels)
    for name, label in _LABELS.items():
        if name in accepted and not (wins and label in labels):
            labels[label] = accepted[name]
            used.append(name)
    annotations = dict(decision.annotations)
    if setting.RUNBOOK_URL in accepted and not (wins and "runbook_url" in annotations):
        annotations["runbook_url"] = accepted[setting.RUNBOOK_URL]
        used.append(setting.RUNBOOK_URL)
    escalation = decision.escalation
    if setting.ESCALATION_POLICY in accepted and not (wins and escalation is not None):
        escalation = accepted[setting.ESCALATION_POLICY]
        used.append(setting.ESCALATION_POLICY)
    return Decision(
        decision.rule,
        severity,
        MappingProxyType(labels),
        MappingProxyType(annotations),
        tuple(used),
        escalation,
    )


_PROBLEM_PREFIX = {setting.RUNBOOK_URL: "runbook", setting.ESCALATION_POLICY: "escalation policy"}


def explain_settings(
    alert: SentryAlert, classification: Classification, decision: Decision
) -> list[str]:
    """``explain``'s lines about Sentry's rule settings: each one, and whether it counted."""
    if not alert.rule_settings:
        return []
    accepted, problems = check_settings(alert.settings_map, classification.rule_settings)
    lines = []
    for name, value in alert.rule_settings:
        if name in decision.settings:
            lines.append(f"{name} = {value!r}: applied")
        elif name == setting.SEVERITY and value == setting.USE_RULES:
            lines.append(f"{name} = {value!r}: the rules decide")
        elif name in accepted:
            lines.append(f"{name} = {value!r}: not applied (rule {decision.rule!r} wins)")
        else:
            prefix = _PROBLEM_PREFIX.get(name, name)
            why = next((p for p in problems if p.startswith(prefix)), "refused")
            lines.append(f"{name} = {value!r}: ignored: {why}")
    return lines


# --- values -------------------------------------------------------------------------------

Type = Literal["str", "num", "bool"]
Value = str | int | float | bool  # what a known field of the alert holds

FIELD_TYPES: Mapping[str, Type] = MappingProxyType(
    {
        **dict.fromkeys(STRING_FIELDS, "str"),
        **dict.fromkeys(NUMBER_FIELDS, "num"),
        **dict.fromkeys(BOOL_FIELDS, "bool"),
    }
)
# Match's own field order, for explain's lines; the rest are combinators.
_FIELD_ORDER = tuple(name for name in Match.model_fields if name in FIELD_TYPES)
_OPERATOR_ORDER = tuple(Condition.model_fields)


@functools.lru_cache(maxsize=1024)
def _compile(pattern: str) -> re.Pattern[str]:
    return re.compile(pattern)


def _number(value: object) -> float | None:
    """A number, or text that reads as one; booleans are not numbers."""
    if isinstance(value, bool):
        return None
    if isinstance(value, int | float):
        return float(value)
    if isinstance(value, str):
        try:
            return float(value)
        except ValueError:
            return None
    return None


def _boolean(value: Scalar) -> bool | None:
    if isinstance(value, bool):
        return value
    if isinstance(value, str):
        return {"true": True, "false": False}.get(value.lower())
    return None


def _text(value: Value) -> str:
    """A value as a regex sees it (and a YAML scalar as a string field compares it)."""
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, float) and value.is_integer():
        return str(int(value))
    return str(value)


def _config_text(value: Scalar) -> str:
    # Not _text: `release: 2.0` in YAML is the float 2.0, and means the text "2.0".
    return ("true" if value else "false") if isinstance(value, bool) else str(value)


def _equal(kind: Type, value: Value, expected: Scalar) -> bool:
    if kind == "num":
        number = _number(expected)
        return number is not None and float(value) == number
    if kind == "bool":
        flag = _boolean(expected)
        return flag is not None and value is flag
    return value == _config_text(expected)


def _ordered(kind: Type, value: Value) -> float | None:
    if kind == "bool":
        return None
    return float(value) if kind == "num" else _number(value)


def _gt(kind: Type, value: Value, bound: float) -> bool:
    n = _ordered(kind, value)
    return n is not None and n > bound


def _gte(kind: Type, value: Value, bound: float) -> bool:
    n = _ordered(kind, value)
    return n is not None and n >= bound


def _lt(kind: Type, value: Value, bound: float) -> bool:
    n = _ordered(kind, value)
    return n is not None and n < bound


def _lte(kind: Type, value: Value, bound: float) -> bool:
    n = _ordered(kind, value)
    return n is not None and n <= bound


# Keyed by Condition's field names (``in_``, not ``in``); ``arg`` is the operator's value.
_OPERATORS: Mapping[str, Callable[[Type, Value, Any], bool]] = MappingProxyType(
    {
        "eq": _equal,
        "ne": lambda kind, value, arg: not _equal(kind, value, arg),
        "in_": lambda kind, value, arg: any(_equal(kind, value, e) for e in arg),
        "not_in": lambda kind, value, arg: not any(_equal(kind, value, e) for e in arg),
        "regex": lambda kind, value, arg: _compile(arg).fullmatch(_text(value)) is not None,
        "not_regex": lambda kind, value, arg: _compile(arg).fullmatch(_text(value)) is None,
        "gt": _gt,
        "gte": _gte,
        "lt": _lt,
        "lte": _lte,
    }
)


# --- classify: booleans only --------------------------------------------------------------
# Each rule's match is turned once into one function of the alert and its tags (a closure
# per condition, operators and their values bound), kept per rule object: the config's
# models are frozen and a reload makes new ones. Interpreting the models per webhook
# (every set field, every operator looked up by name) was a fifth of ``decide`` (issue 15's
# profile). Every default in Match and Condition is None or empty, so the fields set
# explicitly (``model_fields_set``) are the only ones that can say anything.

Predicate = Callable[[SentryAlert, Mapping[str, str]], bool]
_Test = Callable[[Any], bool]


# id(match) -> (match, its predicate); the match is kept so its id is not reused. Bounded:
# a few rules per config, and a reload clears it once it is full.
_PREDICATES: dict[int, tuple[Match, Predicate]] = {}
_PREDICATES_MAX = 4096


def _compiled(match: Match) -> Predicate:
    found = _PREDICATES.get(id(match))
    if found is not None and found[0] is match:
        return found[1]
    predicate = _predicate(match)
    if len(_PREDICATES) >= _PREDICATES_MAX:
        _PREDICATES.clear()
    _PREDICATES[id(match)] = (match, predicate)
    return predicate


def _predicate(match: Match) -> Predicate:
    checks: list[Predicate] = []
    for name in match.model_fields_set:
        if name == "tags":
            checks.extend(_tag_check(key, _test(cond, "str")) for key, cond in match.tags.items())
        elif name == "any":
            if match.any is not None:
                checks.append(_any_check(tuple(_predicate(m) for m in match.any)))
        elif name == "not_":
            if match.not_ is not None:
                checks.append(_not_check(_predicate(match.not_)))
        else:
            cond: Condition | None = getattr(match, name)
            if cond is not None:
                checks.append(_field_check(name, _test(cond, FIELD_TYPES[name])))
    return _all(tuple(checks))


def _all(checks: tuple[Predicate, ...]) -> Predicate:
    if len(checks) == 1:
        return checks[0]

    def holds(alert: SentryAlert, tags: Mapping[str, str]) -> bool:
        for check in checks:  # noqa: SIM110 (no generator per call)
            if not check(alert, tags):
                return False
        return True

    return holds


def _tag_check(key: str, test: _Test) -> Predicate:
    def holds(alert: SentryAlert, tags: Mapping[str, str]) -> bool:
        tag = tags.get(key)
        return tag is not None and test(tag)

    return holds


def _field_check(name: str, test: _Test) -> Predicate:
    def holds(alert: SentryAlert, tags: Mapping[str, str]) -> bool:
        value = getattr(alert, name)
        return value is not None and test(value)

    return holds


def _any_check(options: tuple[Predicate, ...]) -> Predicate:
    def holds(alert: SentryAlert, tags: Mapping[str, str]) -> bool:
        for option in options:  # noqa: SIM110 (no generator per call)
            if option(alert, tags):
                return True
        return False

    return holds


def _not_check(inner: Predicate) -> Predicate:
    return lambda alert, tags: not inner(alert, tags)


def _test(cond: Condition, kind: Type) -> _Test:
    """All of ``cond``'s operators on a known value of type ``kind``."""
    given = (_operator(op, kind, getattr(cond, op)) for op in cond.model_fields_set)
    tests = tuple(test for test in given if test is not None)
    if len(tests) == 1:
        return tests[0]

    def holds(value: Any) -> bool:
        for test in tests:  # noqa: SIM110 (no generator per call)
            if not test(value):
                return False
        return True

    return holds


def _operator(op: str, kind: Type, arg: Any) -> _Test | None:
    """One operator with its argument bound; None for an operator given as null. Text
    equality is a plain comparison with the config's text, the rest ``_OPERATORS``."""
    if arg is None:
        return None
    if kind == "str" and op in ("eq", "ne"):
        text = _config_text(arg)
        return (lambda v: v == text) if op == "eq" else (lambda v: v != text)
    if op in ("regex", "not_regex"):
        pattern = _compile(arg)
        if op == "regex":
            return lambda v: pattern.fullmatch(_text(v)) is not None
        return lambda v: pattern.fullmatch(_text(v)) is None
    operator = _OPERATORS[op]
    return lambda v: operator(kind, v, arg)


# --- explain: the same, evaluated in full, in words ----------------------------------------

# How each operator reads in `explain` and `check-config`.
SYMBOLS = {
    "eq": "==",
    "ne": "!=",
    "in_": "in",
    "not_in": "not in",
    "regex": "=~",
    "not_regex": "!~",
    "gt": ">",
    "gte": ">=",
    "lt": "<",
    "lte": "<=",
}


def _yes(flag: bool) -> str:
    return "yes" if flag else "no"


def _show(value: object) -> str:
    if isinstance(value, str):
        return repr(value)
    if isinstance(value, bool | int | float):
        return _text(value)
    if isinstance(value, list):
        return "[" + ", ".join(_show(v) for v in value) + "]"
    return repr(value)


def _explain_match(
    match: Match, alert: SentryAlert, tags: Mapping[str, str]
) -> tuple[bool, list[str]]:
    held = True
    lines: list[str] = []
    for name in _FIELD_ORDER:
        field: Condition | None = getattr(match, name)
        if field is not None:
            ok, more = _explain_condition(name, field, FIELD_TYPES[name], getattr(alert, name))
            held &= ok
            lines += more
    for key, cond in match.tags.items():
        ok, more = _explain_condition(f"tags.{key}", cond, "str", tags.get(key), tag=True)
        held &= ok
        lines += more
    if match.any is not None:
        results = [_explain_match(block, alert, tags) for block in match.any]
        ok = any(result for result, _ in results)
        held &= ok
        lines.append(f"any of {len(results)} blocks: {_yes(ok)}")
        for index, (result, block_lines) in enumerate(results, 1):
            lines.append(f"  [{index}] {_yes(result)}")
            lines += _indent(block_lines)
    if match.not_ is not None:
        inner, block_lines = _explain_match(match.not_, alert, tags)
        held &= not inner
        lines.append(f"not (holds when the block below does not): {_yes(not inner)}")
        lines += _indent(block_lines)
    return held, lines


def _indent(lines: list[str]) -> list[str]:
    return [f"      {line}" for line in lines or ["no conditions: always holds"]]


def _explain_condition(
    label: str, cond: Condition, kind: Type, value: Value | None, *, tag: bool = False
) -> tuple[bool, list[str]]:
    if value is None:
        why = "the event has no such tag" if tag else "Sentry did not say"
        return False, [f"{label}: unknown ({why}): no"]
    held = True
    lines = []
    for op in _OPERATOR_ORDER:
        arg = getattr(cond, op)
        if arg is None:
            continue
        ok = _OPERATORS[op](kind, value, arg)
        held &= ok
        shown = f"/{arg}/" if op in ("regex", "not_regex") else _show(arg)
        lines.append(f"{label} {_show(value)} {SYMBOLS[op]} {shown}: {_yes(ok)}")
    return held, lines

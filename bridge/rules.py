"""The rule language of ``classification.rules``: conditions on one field, matches, rules.

A rule's ``match`` is an AND of per-field conditions, with ``any`` (OR) and ``not``; the
first rule that matches decides a severity or a drop (``bridge.classify`` evaluates them).
Every model forbids unknown keys, so a typo names its key instead of matching everything.
"""

from __future__ import annotations

import re
from typing import Annotated, Any, Self

from pydantic import BaseModel, BeforeValidator, ConfigDict, Field, field_validator, model_validator

from bridge.model import Severity


class Strict(BaseModel):
    """Config models: unknown keys are errors, values are frozen once loaded."""

    model_config = ConfigDict(extra="forbid", frozen=True)


Scalar = str | int | float | bool


class Condition(Strict):
    """Operators on one field; all given must hold. A field the alert does not
    know (``None``) satisfies no condition, negative ones included."""

    eq: Scalar | None = None
    ne: Scalar | None = None
    in_: list[Scalar] | None = Field(default=None, alias="in")
    not_in: list[Scalar] | None = None
    regex: str | None = None
    not_regex: str | None = None
    gt: float | None = None
    gte: float | None = None
    lt: float | None = None
    lte: float | None = None

    model_config = ConfigDict(extra="forbid", frozen=True, populate_by_name=True)

    @field_validator("regex", "not_regex")
    @classmethod
    def _compiles(cls, value: str | None) -> str | None:
        if value is not None:
            try:
                re.compile(value)
            except re.error as exc:
                raise ValueError(f"invalid regular expression {value!r}: {exc}") from exc
        return value

    def operators(self) -> dict[str, Any]:
        return {name: value for name, value in self if value is not None}

    @model_validator(mode="after")
    def _not_empty(self) -> Self:
        if not self.operators():
            raise ValueError("a condition needs at least one operator (eq, in, regex, gt, ...)")
        return self


def _shorthand(value: Any) -> Any:
    """``level: error`` means eq, ``level: [error, fatal]`` means in."""
    if isinstance(value, list):
        return {"in": value}
    if isinstance(value, str | int | float | bool):
        return {"eq": value}
    return value


Cond = Annotated[Condition, BeforeValidator(_shorthand)]

STRING_FIELDS = (
    "resource",
    "action",
    "kind",
    "project",
    "environment",
    "level",
    "platform",
    "title",
    "culprit",
    "transaction",
    "url",
    "release",
    "metric_aggregate",
    "alert_rule_name",
    # Sentry's group-type registry (sentry/issues/grouptype.py): issue_category "error",
    # "performance", "cron", "uptime", "metric_alert", ...; issue_type the slug, e.g.
    # "uptime_domain_failure", "monitor_check_in_failure" (bridge.sentry.occurrence).
    "issue_category",
    "issue_type",
)
BOOL_FIELDS = ("handled",)
NUMBER_FIELDS = ("users", "events", "error_rate", "latency_ms", "metric_value")


class Match(Strict):
    """All fields given must match (AND); ``any`` holds when one of its blocks
    matches (OR); ``not`` holds when its block does not match."""

    resource: Cond | None = None
    action: Cond | None = None
    kind: Cond | None = None
    project: Cond | None = None
    environment: Cond | None = None
    level: Cond | None = None
    platform: Cond | None = None
    title: Cond | None = None
    culprit: Cond | None = None
    transaction: Cond | None = None
    url: Cond | None = None
    release: Cond | None = None
    metric_aggregate: Cond | None = None
    alert_rule_name: Cond | None = None
    issue_category: Cond | None = None
    issue_type: Cond | None = None
    handled: Cond | None = None
    users: Cond | None = None
    events: Cond | None = None
    error_rate: Cond | None = None
    latency_ms: Cond | None = None
    metric_value: Cond | None = None
    tags: dict[str, Cond] = Field(default_factory=dict)
    any: list[Match] | None = Field(default=None, min_length=1)
    not_: Match | None = Field(default=None, alias="not")

    model_config = ConfigDict(extra="forbid", frozen=True, populate_by_name=True)


LabelName = Annotated[str, Field(pattern=r"^[a-zA-Z_][a-zA-Z0-9_]*$")]


class Rule(Strict):
    name: str = Field(min_length=1)
    match: Match = Field(default_factory=Match)
    severity: Severity | None = None
    drop: bool = False
    labels: dict[LabelName, str] = Field(default_factory=dict)
    annotations: dict[LabelName, str] = Field(default_factory=dict)
    # The rule wins over the settings chosen in Sentry's alert rule editor (severity, and
    # each label or annotation it sets), e.g. "non-production is always low".
    override_sentry: bool = False
    # The escalation policy of what this rule fires (a name under escalation.policies, or
    # "none"); unset: escalation.default's for the severity (docs/alertmanager.md).
    escalation: str | None = Field(default=None, min_length=1)

    @model_validator(mode="after")
    def _one_outcome(self) -> Self:
        if self.drop == (self.severity is not None):
            raise ValueError("a rule sets either `severity` or `drop: true`, exactly one")
        if self.drop and (self.labels or self.annotations):
            raise ValueError("a rule that drops cannot add labels or annotations")
        return self

"""The one internal alert that flows between the stages.

Every Sentry format (``sentry.py``) is normalised into a :class:`SentryAlert`;
classification, dedup and delivery only ever see this type. It is frozen and
hashable so stages can neither change it behind each other's backs nor keep
references to request-scoped objects.

Numbers Sentry did not send are ``None``: unknown is not zero, and a rule
comparing a number only matches a number that is known.
"""

from __future__ import annotations

import collections
import dataclasses
import enum
import itertools
import operator
from collections.abc import Mapping
from datetime import datetime
from typing import Any, TypeVar

_T = TypeVar("_T")
_SET = object.__setattr__  # past a frozen dataclass's own __setattr__, as its __init__ goes
# Per slotted class: its slots, a getter of all of them at once, and each slot's position.
_LAYOUTS: dict[type, tuple[tuple[str, ...], operator.attrgetter[Any], dict[str, int]]] = {}
# Per dataclass kept in its instance dict (``SentryAlert``): its field names.
_NAMES: dict[type, frozenset[str]] = {}


def evolve(obj: _T, **changes: Any) -> _T:
    """``dataclasses.replace`` for the frozen dataclasses of the webhook path (none has
    ``__post_init__`` or an ``init=False`` field), at a fraction of its cost (``replace``
    builds every field's keyword and runs ``__init__``, which sets each field through
    ``object.__setattr__``; issue 15's profile). A class that keeps its fields in the
    instance dict (``SentryAlert``) is copied with two dict updates, in C; a slotted one
    has its slots read and written in C (``attrgetter``, ``map``)."""
    cls = type(obj)
    names = _NAMES.get(cls)
    # A slotted class's cached layout is looked up before it is asked whether it has slots.
    layout = _LAYOUTS.get(cls) if names is None else None
    if names is None and layout is None and "__slots__" not in cls.__dict__:
        names = _NAMES[cls] = frozenset(f.name for f in dataclasses.fields(cls))  # type: ignore[arg-type]
    if names is not None:
        if not changes.keys() <= names:
            unknown = sorted(changes.keys() - names)[0]
            raise TypeError(f"{cls.__name__} has no field {unknown!r}")
        new = object.__new__(cls)
        attrs = new.__dict__
        attrs.update(obj.__dict__)
        attrs.update(changes)
        return new
    if layout is None:
        slots: tuple[str, ...] = tuple(cls.__slots__)  # type: ignore[attr-defined]
        layout = _LAYOUTS[cls] = (
            slots,
            operator.attrgetter(*slots),
            {name: i for i, name in enumerate(slots)},
        )
    slots, read_all, position = layout
    values = list(read_all(obj)) if len(slots) > 1 else [read_all(obj)]  # one: no tuple
    for name, value in changes.items():
        if name not in position:
            raise TypeError(f"{cls.__name__} has no field {name!r}")
        values[position[name]] = value
    new = object.__new__(cls)
    collections.deque(map(_SET, itertools.repeat(new, len(slots)), slots, values), maxlen=0)
    return new


class Kind(enum.StrEnum):
    """What a Sentry identity refers to; resolution works per identity."""

    ISSUE = "issue"
    METRIC_ALERT = "metric_alert"


class State(enum.StrEnum):
    FIRING = "firing"
    RESOLVED = "resolved"


class Severity(enum.StrEnum):
    """Ordered from least to most urgent; ``escalate`` moves one step up."""

    LOW = "low"
    MEDIUM = "medium"
    HIGH = "high"
    CRITICAL = "critical"

    @property
    def rank(self) -> int:
        return _SEVERITY_ORDER.index(self)

    def escalate(self) -> Severity:
        return _SEVERITY_ORDER[min(self.rank + 1, len(_SEVERITY_ORDER) - 1)]


_SEVERITY_ORDER = (Severity.LOW, Severity.MEDIUM, Severity.HIGH, Severity.CRITICAL)


# Not slotted: its 44 fields live in the instance dict, so the webhook path builds it
# (``of``) and copies it (``evolve``) with dict updates in C, where a slotted instance
# takes one ``object.__setattr__`` per field (13 and 12 us of a webhook's CPU; issue 15).
# A few hundred bytes more per alert in flight; states keep no SentryAlert.
@dataclasses.dataclass(frozen=True, kw_only=True)
class SentryAlert:
    """One Sentry webhook, normalised.

    ``resource`` and ``action`` keep Sentry's own words (``event_alert`` /
    ``triggered``, ``metric_alert`` / ``critical``, ``issue`` / ``resolved``,
    ``service_hook`` / ``event.alert``, ``legacy`` / ``triggered``) so rules can
    match on them. ``identity`` names the thing Alertmanager should show one
    alert for: ``issue:<id>`` or ``metric_alert:<alert rule id>``.
    """

    resource: str
    action: str
    kind: Kind
    state: State
    identity: str
    title: str
    # Where it comes from.
    organization: str | None = None
    project: str | None = None  # slug when any part of the payload gives it, else the id
    project_id: str | None = None
    environment: str | None = None
    # What happened.
    issue_id: str | None = None
    short_id: str | None = None
    event_id: str | None = None
    level: str | None = None
    platform: str | None = None
    culprit: str | None = None
    transaction: str | None = None
    url: str | None = None  # the request URL of the event, when the event had one
    release: str | None = None
    handled: bool | None = None
    tags: tuple[tuple[str, str], ...] = ()
    message: str | None = None
    # The issue's category and type from Sentry's group-type registry (issue platform:
    # ``error``, ``performance``, ``cron``, ``uptime``...; ``error``,
    # ``uptime_domain_failure``, ``monitor_check_in_failure``...), when the payload says.
    issue_category: str | None = None
    issue_type: str | None = None
    # An issue-platform occurrence's evidence (name, value), bounded and scrubbed later.
    evidence: tuple[tuple[str, str], ...] = ()
    # Sentry itself says the issue is escalating (``activity_alert`` ``status_escalating``):
    # the state machine raises the severity one step.
    escalating: bool = False
    # Sentry's own alert rule: the issue alert rule that fired or the metric alert rule.
    alert_rule_id: str | None = None
    alert_rule_name: str | None = None
    # Numbers; None when the payload does not carry them (enrichment may fill users/events).
    users: int | None = None
    events: int | None = None
    error_rate: float | None = None  # a ratio, 0.05 is 5 %
    latency_ms: float | None = None
    metric_value: float | None = None  # the metric alert's value, as Sentry displays it
    metric_aggregate: str | None = None  # e.g. "count_unique(user)", "p95(transaction.duration)"
    # Links and times.
    web_url: str | None = None  # the page a human opens in Sentry
    issue_api_url: str | None = None  # Sentry API URL of the issue, for enrichment
    started_at: datetime | None = None
    # When the thing this webhook reports happened (the event's time for event webhooks,
    # the incident's for metric alerts), so a late retry is told from a new firing.
    occurred_at: datetime | None = None
    # When Sentry's server received the event this webhook reports (the event's
    # ``received``, the serialized event's ``dateReceived``): Sentry's clock, not the
    # client's, so it orders the webhook against a resolve (docs/state-machine.md).
    received_at: datetime | None = None
    # When the bridge answered the webhook, set at the edge and carried through the inbox
    # and the spool unchanged: the order of a webhook with no Sentry time of its own.
    answered_at: datetime | None = None
    # Sentry's Request-ID header, carried so every log line about this webhook names it.
    request_id: str | None = None
    # The settings chosen for the bridge's alert rule action in Sentry's alert rule editor
    # (name, value), only the names the bridge knows (bridge.sentry.settings); classify
    # checks each value against the config before it counts.
    rule_settings: tuple[tuple[str, str], ...] = ()
    # A test: Sentry's "Send Test Notification" (bridge.sentry.issue) or ``sentry-bridge
    # doctor``'s test alert (``data.bridge_test``, a key Sentry never sends): classified low
    # with ``sentry_test="true"``, never escalated, ended after bridge.state TEST_LIFETIME.
    test: bool = False
    # The fields the identity's context filled in (bridge.context.fill), for ``explain``
    # and the log; the context never learns them back from this alert.
    from_context: tuple[str, ...] = ()

    @classmethod
    def of(cls, fields: Mapping[str, Any]) -> SentryAlert:
        """``SentryAlert(**fields)``, for the webhook path: every field set at once (the
        defaults, then ``fields``, in the order of the fields). Anything ``__init__``
        would refuse (an unknown field, a required one missing) goes to ``__init__``, so
        the error is its own."""
        if not (fields.keys() <= _FIELD_SET and fields.keys() >= _REQUIRED):
            return cls(**fields)
        new = object.__new__(cls)
        attrs = new.__dict__
        attrs.update(_DEFAULTS)
        attrs.update(fields)
        return new

    @property
    def settings_map(self) -> Mapping[str, str]:
        return dict(self.rule_settings)

    @property
    def tag_map(self) -> Mapping[str, str]:
        return dict(self.tags)

    def with_counts(self, *, users: int | None, events: int | None) -> SentryAlert:
        """Counts from Sentry's API fill in what the payload did not carry."""
        return evolve(
            self,
            users=self.users if self.users is not None else users,
            events=self.events if self.events is not None else events,
        )

    def to_json(self) -> dict[str, Any]:
        """JSON-ready fields, unknowns left out. On every accepted webhook's path, so
        no ``dataclasses.asdict`` (it deep-copies); enums are ``str`` and tags are
        pairs, both already what ``json.dumps`` wants. The instance dict holds exactly
        the fields, in their order (``__init__``, ``of`` and ``evolve`` all keep it so)."""
        data = {
            name: value
            for name, value in self.__dict__.items()
            if value is not None and value != ()
        }
        for name in _TIME_FIELDS:
            value = getattr(self, name)
            if value is not None:
                data[name] = value.isoformat()
        return data

    @classmethod
    def from_json(cls, data: Mapping[str, Any]) -> SentryAlert:
        values = dict(data)
        values["kind"] = Kind(values["kind"])
        values["state"] = State(values["state"])
        values["from_context"] = tuple(values.get("from_context") or ())
        for name in ("tags", "evidence", "rule_settings"):
            values[name] = tuple((str(k), str(v)) for k, v in values.get(name) or ())
        for name in _TIME_FIELDS:
            text = values.get(name)
            values[name] = datetime.fromisoformat(text) if text else None
        return cls.of(values)


_FIELD_NAMES = tuple(field.name for field in dataclasses.fields(SentryAlert))
_FIELD_SET = frozenset(_FIELD_NAMES)
_REQUIRED = frozenset(
    f.name for f in dataclasses.fields(SentryAlert) if f.default is dataclasses.MISSING
)
# Every field in order, the required ones as None until ``of`` sets them (it checks they
# are given); the defaults are all immutable (None, (), False).
_DEFAULTS = {
    f.name: None if f.default is dataclasses.MISSING else f.default
    for f in dataclasses.fields(SentryAlert)
}
_TIME_FIELDS = ("started_at", "occurred_at", "received_at", "answered_at")


@dataclasses.dataclass(frozen=True, slots=True)
class Ignored:
    """A webhook the bridge understood and deliberately turns into no alert
    (``installation``, ``issue`` ``assigned``, a resource it does not know)."""

    resource: str
    action: str
    reason: str


class Outcome(enum.StrEnum):
    """What became of one webhook: the closed set of ``sentry_bridge_alerts_total{outcome}``."""

    FORWARDED = "forwarded"  # posted firing: a new alert, a raised severity or a refresh
    RESOLVED = "resolved"  # Sentry resolved it: the active label set is posted resolved
    DUPLICATE = "duplicate"  # nothing new within the dedup window, or resolved already
    STALE = "stale"  # a late webhook about an event from before the issue was resolved
    DROPPED = "dropped"  # a rule drops it
    IGNORED = "ignored"  # understood, but no alert at all (``Ignored``)
    # The escalation timer (``bridge.state.tick``, not a webhook): a tier fired, or a silence
    # in Alertmanager (an acknowledgement) holds the step due.
    ESCALATED = "escalated"
    ACKNOWLEDGED = "acknowledged"
    # Sentry's API said otherwise than the alert stood (bridge/reconcile.py): resolved,
    # ignored or archived ends it; unresolved keeps it firing, or undoes a replayed resolve.
    RECONCILED = "reconciled"

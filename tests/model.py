"""Issue 8's rules as a reference model, written from the issue's text (not from
bridge/state.py), extended with issue 16's contract items 1 and 2 (the issue's context,
Sentry's clock: the section "issue 16" below), and a small model of Alertmanager's merge
rules; shared by tests/test_pipeline_model.py and its integration twin.

The policy the model assumes is ``CONFIG`` below; the webhooks are built by ``Webhooks``.
"""

from __future__ import annotations

import dataclasses
import itertools
import json
from datetime import datetime, timedelta
from typing import Any

from bridge import config
from bridge.model import Kind, SentryAlert, State
from tests.factories import sentry_alert

WINDOW = timedelta(minutes=5)
LIFETIME = timedelta(hours=1)
PERIOD = timedelta(minutes=30)
AFTER = 3

RULES: list[dict[str, Any]] = [
    {"name": "metric-critical", "match": {"action": "critical"}, "severity": "critical"},
    {"name": "metric-warning", "match": {"action": "warning"}, "severity": "medium"},
    {"name": "many-users", "match": {"users": {"gt": 100}}, "severity": "critical"},
    {"name": "prod", "match": {"environment": "production"}, "severity": "high"},
    {"name": "staging", "match": {"environment": "staging"}, "severity": "low"},
]
SETTINGS: dict[str, Any] = {
    "sentry": {"allow_unauthenticated": True},
    "classification": {"default_severity": "medium", "rules": RULES},
    "dedup": {"window": "5m", "escalate_after": AFTER, "escalate_period": "30m"},
    "alertmanager": {"alert_lifetime": "1h"},
}
CONFIG = config.parse(SETTINGS, env={})

ORDER = ("low", "medium", "high", "critical")


def severity_of(alert: SentryAlert) -> str:
    """The test's policy, read off RULES by hand: first match wins."""
    if alert.test:
        return "low"  # issue 16, item 5: a test notification is low whatever the rules say
    if alert.action == "critical":
        return "critical"
    if alert.action == "warning":
        return "medium"
    if alert.users is not None and alert.users > 100:
        return "critical"
    return {"production": "high", "staging": "low"}.get(alert.environment or "", "medium")


def up(severity: str) -> str:
    return ORDER[min(ORDER.index(severity) + 1, 3)]


# What an identity shows in Alertmanager: (severity, environment, escalated).
Shown = tuple[str, str, bool]


@dataclasses.dataclass
class Reference:
    """One identity as issue 8 says it should be."""

    shown: Shown | None = None
    ends: datetime | None = None
    posted: datetime | None = None
    resolved_at: datetime | None = None
    latest_event: datetime | None = None  # of the current firing
    event_id: str | None = None
    firings: list[datetime] = dataclasses.field(default_factory=list)
    known: Known = dataclasses.field(default_factory=lambda: Known())  # issue 16, item 1
    # Issue 16, Sentry's status (``reconcile`` below): when the label set shown started,
    # what the last resolve ended, and whether Sentry's API last said "escalating".
    started: datetime | None = None
    last_shown: Shown | None = None
    sentry_escalating: bool = False
    # Item 5: what it shows (or showed last) is a test notification's, left to its own
    # webhooks: Sentry's API neither keeps it firing nor fires it again.
    test: bool = False

    def active(self, now: datetime) -> Shown | None:
        return self.shown if self.ends is not None and self.ends > now else None

    def apply(self, w: SentryAlert, now: datetime, accepted: datetime | None = None) -> None:
        """``w`` processed at ``now``, having been accepted at ``accepted``."""
        is_issue = w.kind is Kind.ISSUE
        active = self.active(now)
        # Issue 16, item 2: where the webhook stands on Sentry's clock.
        event_time = sentry_order(w, accepted or now)
        if w.state is State.RESOLVED:
            # A resolve older than the event that fired the issue again is a replay.
            latest = self.latest_event
            if is_issue and active and latest and event_time < latest:
                return
            self.last_shown = self.shown or self.last_shown  # issue 16: for an undo
            self.sentry_escalating = False
            self.shown = self.ends = self.posted = self.latest_event = None
            self.resolved_at = max(self.resolved_at or event_time, event_time)
            if is_issue:
                self.known = self.known.told(w)
            return
        # "An issue-alert webhook whose event happened before the issue was resolved
        # does not fire it again."
        if is_issue and event_time and self.resolved_at and event_time < self.resolved_at:
            return
        # Repeats: N distinct firings within the period; Sentry's escalating signal.
        replay = w.event_id is not None and w.event_id == self.event_id
        self.firings = [t for t in self.firings if t > now - PERIOD]
        if not replay:
            self.firings = [*self.firings, now][-AFTER:]
        if w.event_id:
            self.event_id = w.event_id
        # Issue 16, item 1: classified with its own fields, the context for what it lacks.
        own = w  # the context learns what the webhook says, not what it was given
        if is_issue:
            w = self.known.fill(w, active)
        severity = severity_of(w)
        if w.escalating and active:
            severity = max(severity, active[0], key=ORDER.index)
        escalated = (not replay and len(self.firings) >= AFTER) or w.escalating
        escalated = escalated and severity != "critical" and not w.test  # (issue 16, 5)
        if escalated:
            severity = up(severity)
        if not active:
            self.latest_event = None
        if event_time:
            self.latest_event = max(self.latest_event or event_time, event_time)
        if is_issue and active and ORDER.index(severity) <= ORDER.index(active[0]):
            shown = active  # only gets worse: the most severe label set stays
        else:
            env = w.environment
            if is_issue and env is None and active and active[1] != "unknown":
                env = active[1]
            shown = (severity, env or "unknown", escalated)
        if is_issue:
            self.known = self.known.told(own)
        if shown == active and self.posted and now - self.posted < WINDOW:
            return  # a duplicate within the window: nothing posted, endsAt not moved
        if shown != active:
            self.started = now  # a new alert (label set) in Alertmanager
        self.shown, self.ends, self.posted = shown, now + lifetime(w), now
        self.test = w.test

    # --- issue 16, contract item 3: Sentry's status is the truth -------------------------

    def reconcile(self, status: str, asked: datetime, now: datetime) -> None:
        """Sentry's API said ``status`` at ``asked``; the issue's rules: closed (resolved,
        ignored/archived, being deleted) resolves the alert, no later than what the bridge
        knew happened before (last resolve, last event, the alert's start); open keeps it
        firing past the lifetime (refreshed once half of it passed), fires a lapsed one
        again and undoes a resolve decided before ``asked``; escalating escalates one step,
        as status_escalating does, once while Sentry keeps saying it."""
        active = self.active(now)
        if self.test:
            return
        if status in ("resolved", "ignored", "pending_deletion", "deletion_in_progress"):
            if self.shown is None:
                return
            known = [t for t in (self.resolved_at, self.latest_event, self.started) if t]
            self.resolved_at = max(known) if known else None
            self.last_shown, self.sentry_escalating = self.shown, False
            self.shown = self.ends = self.posted = self.latest_event = None
            return
        if status not in ("unresolved", "escalating"):
            return
        escalating = status == "escalating"
        if active is not None and self.ends is not None:
            if escalating and not self.sentry_escalating and active[0] != "critical":
                self.shown = (up(active[0]), active[1], True)
                self.ends, self.posted, self.started = now + LIFETIME, now, now
            elif self.ends - now <= LIFETIME / 2:
                self.ends = now + LIFETIME
            self.sentry_escalating = escalating
            return
        if self.shown is not None:
            again = self.shown  # lapsed while Sentry held it open
        elif self.last_shown and self.resolved_at and self.resolved_at < asked:
            again, self.latest_event = self.last_shown, None  # a resolve Sentry contradicts
        else:
            return
        self.shown, self.ends, self.posted, self.started = again, now + LIFETIME, now, now
        self.sentry_escalating = escalating


# --- issue 16: the issue's context and Sentry's clock -------------------------------------
# Written from issue 16's contract, items 1 and 2:
# 1. "The identity's state keeps what Sentry has told the bridge about the issue ... A
#    webhook is classified with its own fields first and the known context for what it
#    does not say ... an issue.* webhook of an issue whose alert fires in staging is
#    classified as staging."
# 2. "Staleness and 'newer than the resolve' compare Sentry's server times (received for
#    events ...), never the client's event timestamp ... A webhook with no Sentry time of
#    its own counts from the moment the bridge answered it."


def sentry_order(w: SentryAlert, answered: datetime) -> datetime:
    """Item 2: an event's ``received``; an issue webhook without one, when it was answered
    (accepted); a metric alert, the incident's own time."""
    if w.kind is Kind.ISSUE:
        return w.received_at or answered
    return w.occurred_at or answered


@dataclasses.dataclass(frozen=True)
class Known:
    """Item 1, the fields the test's rules read: the last environment Sentry named for the
    issue and its latest user count (the context outlives a resolve)."""

    environment: str | None = None
    users: int | None = None

    def told(self, w: SentryAlert) -> Known:
        return Known(w.environment or self.environment, _first(w.users, self.users))

    def fill(self, w: SentryAlert, active: Shown | None) -> SentryAlert:
        """The environment a webhook lacks is the one its alert fires in (never
        ``unknown``), else the last one named; users it lacks, the latest known."""
        env = w.environment
        if env is None:
            firing_env = active[1] if active and active[1] != "unknown" else None
            env = firing_env or self.environment
        return dataclasses.replace(w, environment=env, users=_first(w.users, self.users))


def _first(a: int | None, b: int | None) -> int | None:
    return a if a is not None else b


# --- issue 16, item 5: test notifications --------------------------------------------------
# "A webhook recognised as Sentry's test notification goes to Alertmanager with
# sentry_test="true" at the lowest severity, never page="true", and resolves itself after a
# few minutes": the bridge's few minutes are 5. Each press of Sentry's button makes a new
# "Test Issue"; the model sends them all for issue TEST_ISSUE, so repeats are exercised too.
TEST_ISSUE = 9
TEST_LIFETIME = timedelta(minutes=5)


def lifetime(w: SentryAlert) -> timedelta:
    """How long a firing post holds in Alertmanager without another one."""
    return TEST_LIFETIME if w.test else LIFETIME


class Alertmanager:
    """Alertmanager's merge rules, as far as the bridge relies on them
    (prometheus/alertmanager provider/mem Put and types.Alert.Merge): an alert is its
    label set; a later post updates annotations and endsAt (a firing post does not
    shorten a later endsAt); a post with endsAt <= now resolves it."""

    def __init__(self) -> None:
        self.alerts: dict[str, tuple[dict[str, str], datetime, datetime]] = {}

    def post(self, alert: dict[str, Any], now: datetime) -> None:
        labels = alert["labels"]
        key = json.dumps(sorted(labels.items()))
        starts = datetime.fromisoformat(alert["startsAt"])
        ends = datetime.fromisoformat(alert["endsAt"])
        old = self.alerts.get(key)
        if old is not None and old[2] > now and ends > now:
            ends = max(ends, old[2])  # both firing
        self.alerts[key] = (labels, starts, ends)

    def shown(self, now: datetime) -> dict[str, list[Shown]]:
        """Per identity, what fires at ``now``."""
        out: dict[str, list[Shown]] = {}
        for labels, _, ends in self.alerts.values():
            if ends > now:
                out.setdefault(identity_of(labels), []).append(shown_of(labels))
        return out


def identity_of(labels: dict[str, str]) -> str:
    if "sentry_issue_id" in labels:
        return f"issue:{labels['sentry_issue_id']}"
    return f"metric_alert:{labels['sentry_alert_rule_id']}"


def shown_of(labels: dict[str, str]) -> Shown:
    return labels["severity"], labels["environment"], labels.get("escalated") == "true"


class Webhooks:
    """Builds the webhooks the model-based tests send: issues 1..3, metric alerts 7 and 8."""

    def __init__(self) -> None:
        self._ids = itertools.count(1)
        self.sent: dict[str, list[SentryAlert]] = {}  # per identity, for late retries

    def _keep(self, alert: SentryAlert) -> SentryAlert:
        self.sent.setdefault(alert.identity, []).append(alert)
        return alert

    def issue(
        self,
        n: int,
        kind: str,
        now: datetime,
        env: str | None = None,
        skew: timedelta = timedelta(0),
        *,
        test: bool = False,
    ) -> SentryAlert:
        """An event (``fire``, ``users``) that Sentry received ``now`` from a client whose
        clock is ``skew`` off; issue webhooks (``resolve``, ``created``, ``created-users``,
        ``escalating``) carry no Sentry time, and no environment."""
        base: dict[str, Any] = {
            "identity": f"issue:{n}",
            "issue_id": str(n),
            "project": "backend",
            "test": test,
        }
        if kind == "resolve":
            return self._keep(
                sentry_alert(resource="issue", action="resolved", state=State.RESOLVED, **base)
            )
        if kind in ("created", "created-users"):  # issue.created / unresolved: no env, no event
            users = 500 if kind == "created-users" else None
            return self._keep(sentry_alert(resource="issue", action="created", users=users, **base))
        if kind == "escalating":
            return self._keep(
                sentry_alert(resource="activity_alert", action="triggered", escalating=True, **base)
            )
        users = 500 if kind == "users" else None
        event = f"e{next(self._ids)}"
        base |= {"occurred_at": now + skew, "received_at": now}
        return self._keep(sentry_alert(environment=env, users=users, event_id=event, **base))

    def metric(self, n: int, action: str, now: datetime) -> SentryAlert:
        return sentry_alert(
            resource="metric_alert",
            action=action,
            kind=Kind.METRIC_ALERT,
            state=State.RESOLVED if action == "resolved" else State.FIRING,
            identity=f"metric_alert:{n}",
            issue_id=None,
            alert_rule_id=str(n),
            project="backend",
            occurred_at=now,
        )

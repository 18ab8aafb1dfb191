"""One Sentry identity's alert as a pure function: the state machine of docs/state-machine.md.

``step(previous, alert, decision, now, policy)`` takes what the bridge knows about one
identity (``issue:<id>`` or ``metric_alert:<rule id>``), one webhook about it with its
classification, and the time; it returns the new state, what to post to Alertmanager
(in order: a resolve of the old label set before the new one fires) and the outcome.
Nothing here reads a clock, a file or the network; the pipeline persists the state in
the store and queues the posts in the same transaction.

The rules (issue 8, "The state machine"):

* An issue alert only gets worse until Sentry resolves it: while it fires, a webhook can
  raise the severity and refresh annotations and ``endsAt``, never lower it, never move a
  named environment to ``unknown``; the label set changes only when the severity rises.
* A metric alert follows Sentry: its severity is whatever the latest webhook says.
* One label set per identity: a changed label set resolves the old one first.
* A late issue webhook whose event Sentry received before it resolved the issue is stale;
  both sides are Sentry's server times (:func:`sentry_time`), never the client's clock.
* The identity keeps what Sentry told it about the issue (``bridge.context``): the
  pipeline classifies a webhook with that context filling what it lacks.
* ``escalate_after`` firings within ``escalate_period``, or Sentry saying the issue is
  escalating, raise the severity one step (``escalated="true"``).
* The same label set again within ``window`` of the last post is a duplicate.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

from bridge import labels as L
from bridge.alertmanager import PostableAlert
from bridge.classify import Decision
from bridge.config import Config
from bridge.context import EMPTY as NO_CONTEXT
from bridge.context import MAX_ENVIRONMENTS, IssueContext
from bridge.dedup import fingerprint
from bridge.model import Kind, Outcome, SentryAlert, Severity, State

# How long a state outlives its last change once nothing fires: what a late retry of
# Sentry's (minutes to hours later) or a replayed body needs to be recognised as stale.
KEEP = timedelta(hours=24)


@dataclass(frozen=True, slots=True, kw_only=True)
class Policy:
    """The configuration ``step`` needs, from ``dedup``, ``alertmanager`` and classification."""

    window: timedelta
    escalate_after: int
    escalate_period: timedelta
    alert_lifetime: timedelta
    severity_labels: Mapping[Severity, Mapping[str, str]]

    @classmethod
    def from_config(cls, config: Config) -> Policy:
        return cls(
            window=timedelta(seconds=config.dedup.window),
            escalate_after=config.dedup.escalate_after,
            escalate_period=timedelta(seconds=config.dedup.escalate_period),
            alert_lifetime=timedelta(seconds=config.alertmanager.alert_lifetime),
            severity_labels=config.classification.severity_labels,
        )


@dataclass(frozen=True, slots=True, kw_only=True)
class IdentityState:
    """What the bridge knows about one identity between webhooks."""

    # The alert Alertmanager holds firing (its label set is the active one); None when
    # nothing fires. Its endsAt passing (alert_lifetime without a firing) ends it too.
    alert: PostableAlert | None = None
    severity: Severity | None = None  # the severity earned by the firing alert
    environments: tuple[str, ...] = ()  # seen while firing, first first (MAX_ENVIRONMENTS)
    last_event_at: datetime | None = None  # latest sentry_time of a firing webhook
    last_event_id: str | None = None  # its event, so a replay of it is not a repeat
    resolved_at: datetime | None = None  # when Sentry last resolved it
    firings: tuple[datetime, ...] = ()  # recent firing webhooks, for repeat escalation
    posted: str | None = None  # fingerprint of the label set last posted firing...
    posted_at: datetime | None = None  # ...and when, for the dedup window
    # What Sentry has told the bridge about the issue, kept across resolves (issue 16).
    context: IssueContext = NO_CONTEXT

    def firing(self, now: datetime) -> PostableAlert | None:
        """The alert still firing in Alertmanager at ``now``, if any."""
        alert = self.alert
        if alert is None or (alert.ends_at is not None and alert.ends_at <= now):
            return None
        return alert

    def kept_until(self, policy: Policy) -> datetime | None:
        """When the store may forget this state (None: there is nothing to keep): once
        its alert ended and a late retry or a repeat could no longer matter."""
        changed = [t for t in (*self.firings[-1:], self.resolved_at, self.posted_at) if t]
        until = [max(changed) + max(KEEP, policy.escalate_period)] if changed else []
        if self.alert is not None and self.alert.ends_at is not None:
            until.append(self.alert.ends_at)
        return max(until, default=None)

    def to_json(self) -> dict[str, Any]:
        return {
            "alert": self.alert.wire() if self.alert else None,
            "severity": self.severity,
            "environments": list(self.environments),
            "last_event_at": _iso(self.last_event_at),
            "last_event_id": self.last_event_id,
            "resolved_at": _iso(self.resolved_at),
            "firings": [t.isoformat() for t in self.firings],
            "posted": self.posted,
            "posted_at": _iso(self.posted_at),
            "context": self.context.to_json(),
        }

    @classmethod
    def from_json(cls, data: Mapping[str, Any]) -> IdentityState:
        alert = data.get("alert")
        return cls(
            alert=PostableAlert.model_validate(alert) if alert else None,
            severity=Severity(data["severity"]) if data.get("severity") else None,
            environments=tuple(data.get("environments") or ()),
            last_event_at=_time(data.get("last_event_at")),
            last_event_id=data.get("last_event_id"),
            resolved_at=_time(data.get("resolved_at")),
            firings=tuple(datetime.fromisoformat(t) for t in data.get("firings") or ()),
            posted=data.get("posted"),
            posted_at=_time(data.get("posted_at")),
            context=IssueContext.from_json(data.get("context")),
        )


@dataclass(frozen=True, slots=True)
class Step:
    state: IdentityState
    posts: tuple[PostableAlert, ...]  # to every Alertmanager, in this order
    outcome: Outcome
    severity: Severity | None = None  # the severity of the alert firing after the step
    escalated: bool = False  # this webhook escalated it


EMPTY = IdentityState()


def step(
    previous: IdentityState | None,
    alert: SentryAlert,
    decision: Decision,
    now: datetime,
    policy: Policy,
) -> Step:
    """One webhook's effect on its identity (see the module's rules)."""
    prev = previous or EMPTY
    firing = prev.firing(now)
    event_at = sentry_time(alert)

    if alert.state is State.RESOLVED:
        return _resolve(prev, firing, alert, decision, now, policy)

    # Late: Sentry received the event before it resolved the issue (a retry or a replay).
    # Sentry regresses a resolved issue on any event it receives after the resolve, whatever
    # the event's own timestamp (``_handle_regression``, src/sentry/event_manager.py).
    if alert.kind is Kind.ISSUE and _before(event_at, prev.resolved_at):
        return Step(prev, (), Outcome.STALE, prev.severity if firing else None)
    if decision.dropped:
        return Step(prev, (), Outcome.DROPPED, prev.severity if firing else None)
    assert decision.severity is not None

    # Repeats: the webhook's own severity one step up once it keeps firing (the same event
    # again is a replay, not a repeat); Sentry saying it escalates: one step above the
    # alert as it stands.
    horizon = now - policy.escalate_period
    recent = tuple(t for t in prev.firings if t > horizon)
    replay = alert.event_id is not None and alert.event_id == prev.last_event_id
    firings = recent if replay else (*recent, now)[-policy.escalate_after :]
    repeated = not replay and len(firings) >= policy.escalate_after
    severity = decision.severity
    if firing is not None and alert.escalating and prev.severity is not None:
        severity = _worst(severity, prev.severity)
    escalated = (
        (repeated or alert.escalating) and severity is not Severity.CRITICAL and not alert.test
    )
    if escalated:
        severity = severity.escalate()

    keep = (
        firing is not None
        and prev.severity is not None
        and alert.kind is Kind.ISSUE
        and severity.rank <= prev.severity.rank
    )
    if firing is not None and keep:
        # Only gets worse: the label set of the most severe webhook seen stays.
        labels, severity, escalated = firing.labels, prev.severity or severity, False
    else:
        named = firing.labels.get("environment") if firing is not None else None
        labelled = alert
        if alert.kind is Kind.ISSUE and alert.environment is None and named != "unknown":
            labelled = dataclasses.replace(alert, environment=named)  # never to "unknown"
        labels = L.build_labels(
            labelled,
            decision,
            severity,
            escalated=escalated,
            severity_labels=policy.severity_labels,
        )

    seen = prev.environments if firing is not None else ()
    if alert.environment and alert.environment not in seen and len(seen) < MAX_ENVIRONMENTS:
        seen = (*seen, alert.environment)  # bounded: a credential holder cannot grow it
    state = dataclasses.replace(
        prev,
        context=prev.context.learn(alert) if alert.kind is Kind.ISSUE else prev.context,
        severity=severity,
        environments=seen,
        last_event_at=_latest(prev.last_event_at if firing else None, event_at),
        last_event_id=alert.event_id or prev.last_event_id,
        firings=firings,
    )
    label_hash = fingerprint(labels)
    if (
        firing is not None
        and firing.labels == labels
        and prev.posted == label_hash
        and prev.posted_at is not None
        and now - prev.posted_at < policy.window
    ):
        return Step(state, (), Outcome.DUPLICATE, severity, escalated)

    annotations = L.build_annotations(alert, decision)
    if len(seen) > 1:
        # Payload text like the label: scrubbed; sorted, as two pods' spools drain side by side.
        annotations["environments"] = L.environments(seen)
    posts: list[PostableAlert] = []
    starts_at = now
    if firing is not None and firing.labels == labels:
        starts_at = firing.starts_at or now  # the same alert, still firing
    elif firing is not None:
        posts.append(L.resolved(firing, now))  # one label set per identity: old one first
    current = L.firing(
        alert,
        labels,
        annotations,
        starts_at=starts_at,
        now=now,
        lifetime=policy.alert_lifetime.total_seconds(),
    )
    posts.append(current)
    state = dataclasses.replace(state, alert=current, posted=label_hash, posted_at=now)
    return Step(state, tuple(posts), Outcome.FORWARDED, severity, escalated)


def _resolve(
    prev: IdentityState,
    firing: PostableAlert | None,
    alert: SentryAlert,
    decision: Decision,
    now: datetime,
    policy: Policy,
) -> Step:
    resolved_at = sentry_time(alert) or now
    late = _before(sentry_time(alert), prev.last_event_at)
    if firing is not None and alert.kind is Kind.ISSUE and late:
        # A resolve older than the event that fired the issue again: a replay or a retry.
        return Step(prev, (), Outcome.STALE, prev.severity)
    done = dataclasses.replace(
        prev,
        alert=None,
        severity=None,
        environments=(),
        resolved_at=_latest(prev.resolved_at, resolved_at),
        posted=None,
        posted_at=None,
        context=prev.context.learn(alert) if alert.kind is Kind.ISSUE else prev.context,
    )
    if firing is not None:
        return Step(done, (L.resolved(firing, now),), Outcome.RESOLVED)
    if prev.alert is not None:
        return Step(done, (), Outcome.RESOLVED)  # expired in Alertmanager already
    if prev.resolved_at is not None:
        # Resolved before: nothing to post, but it is resolved as of this one too.
        again = dataclasses.replace(prev, resolved_at=done.resolved_at, context=done.context)
        return Step(again, (), Outcome.DUPLICATE)
    if decision.dropped or decision.severity is None:
        return Step(done, (), Outcome.DROPPED)
    # Nothing known to be firing (it fired before the bridge knew it): resolve what this
    # payload classifies as, the best guess.
    labels = L.build_labels(
        alert,
        decision,
        decision.severity,
        escalated=False,
        severity_labels=policy.severity_labels,
    )
    guess = PostableAlert.model_construct(
        labels=labels,
        annotations=L.build_annotations(alert, decision),
        starts_at=now,
        ends_at=now,
        generator_url=alert.web_url,
    )
    return Step(done, (guess,), Outcome.RESOLVED)


def sentry_time(alert: SentryAlert) -> datetime | None:
    """Where the webhook stands in Sentry's order of things (issue 16, "order by Sentry's
    clock"): for an issue, when Sentry received the event (``received_at``), else when the
    bridge answered the webhook (``answered_at``: a resolve or an issue webhook carries no
    Sentry time of its own). Never the event's ``timestamp``: that is the client's clock,
    and a phone an hour behind would make a regression look older than the resolve. A
    metric alert keeps the incident's time (Sentry's clock too)."""
    if alert.kind is Kind.ISSUE:
        return alert.received_at or alert.answered_at
    return alert.occurred_at or alert.answered_at


def _before(time: datetime | None, bound: datetime | None) -> bool:
    return time is not None and bound is not None and time < bound


def _latest(a: datetime | None, b: datetime | None) -> datetime | None:
    return max(a, b) if a is not None and b is not None else a or b


def _worst(a: Severity, b: Severity) -> Severity:
    return a if a.rank >= b.rank else b


def _iso(value: datetime | None) -> str | None:
    return value.isoformat() if value else None


def _time(value: str | None) -> datetime | None:
    return datetime.fromisoformat(value) if value else None


def describe(previous: IdentityState | None, result: Step) -> Sequence[str]:
    """What a step changed, in words, for ``sentry-bridge explain``."""
    lines: list[str] = []
    before = previous.severity if previous and previous.alert else None
    if result.outcome is Outcome.RESOLVED:
        lines.append("this webhook RESOLVES the alert: Sentry says the issue is resolved")
    elif result.outcome is Outcome.STALE:
        lines.append("stale: the event happened before Sentry resolved the issue; no effect")
    elif result.outcome is Outcome.DUPLICATE:
        lines.append("duplicate: the same label set was posted within the dedup window")
    elif result.outcome is Outcome.DROPPED:
        lines.append("dropped: a rule drops it; nothing is posted")
    elif before is None:
        lines.append(f"fires a new alert, severity {result.severity}")
    elif result.severity is not before:
        lines.append(f"severity {before} -> {result.severity}: the old label set is resolved")
    else:
        lines.append(f"still firing at {before}: annotations and endsAt refreshed")
    if result.escalated:
        lines.append("escalated one step (repeats or Sentry's escalating status)")
    return lines

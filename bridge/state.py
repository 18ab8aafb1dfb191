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
* A late issue webhook whose event happened before Sentry resolved the issue is stale.
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
    environments: tuple[str, ...] = ()  # seen while firing, first first
    last_event_at: datetime | None = None  # latest event time of a firing webhook
    last_event_id: str | None = None  # its event, so a replay of it is not a repeat
    resolved_at: datetime | None = None  # when Sentry last resolved it
    firings: tuple[datetime, ...] = ()  # recent firing webhooks, for repeat escalation
    posted: str | None = None  # fingerprint of the label set last posted firing...
    posted_at: datetime | None = None  # ...and when, for the dedup window
    # For the reconciler (``reconcile``): the alert a resolve ended and the severity it had,
    # so a resolve Sentry's API contradicts (a replayed capture) can be undone; and whether
    # Sentry's API last said the issue escalates (it escalates the alert once per spell).
    last_alert: PostableAlert | None = None
    last_severity: Severity | None = None
    sentry_escalating: bool = False

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
            "last_alert": self.last_alert.wire() if self.last_alert else None,
            "last_severity": self.last_severity,
            "sentry_escalating": self.sentry_escalating,
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
            last_alert=PostableAlert.model_validate(last)
            if (last := data.get("last_alert"))
            else None,
            last_severity=Severity(data["last_severity"]) if data.get("last_severity") else None,
            sentry_escalating=bool(data.get("sentry_escalating")),
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
    event_at = _event_time(alert)

    if alert.state is State.RESOLVED:
        return _resolve(prev, firing, alert, decision, now, policy)

    # Late: the event happened before Sentry resolved the issue (a retry or a replay).
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
    if alert.environment and alert.environment not in seen:
        seen = (*seen, alert.environment)
    state = dataclasses.replace(
        prev,
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
    resolved_at = alert.occurred_at or now
    late = _before(alert.occurred_at, prev.last_event_at)
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
        # The reconciler's (see ``reconcile``): what to fire again if Sentry says otherwise.
        last_alert=prev.alert or prev.last_alert,
        last_severity=prev.severity or prev.last_severity,
        sentry_escalating=False,
    )
    if firing is not None:
        return Step(done, (L.resolved(firing, now),), Outcome.RESOLVED)
    if prev.alert is not None:
        return Step(done, (), Outcome.RESOLVED)  # expired in Alertmanager already
    if prev.resolved_at is not None:
        # Resolved before: nothing to post, but it is resolved as of this one too.
        again = dataclasses.replace(prev, resolved_at=done.resolved_at)
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


def _event_time(alert: SentryAlert) -> datetime | None:
    """When the event this webhook reports happened. ``started_at`` stands in only for a
    webhook that carries an event (for ``issue`` webhooks it is the issue's firstSeen)."""
    if alert.occurred_at is not None:
        return alert.occurred_at
    return alert.started_at if alert.event_id is not None else None


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
    elif result.outcome is Outcome.RECONCILED:
        lines.append("reconciled: Sentry's API says otherwise than the alert stood")
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


# --- the reconciler's input: Sentry's API says what the issue's status is -------------------
# Issue 16, contract item 3 (docs/state-machine.md, "Sentry's status"). Sentry's issue
# serializer (src/sentry/api/serializers/models/group.py) sends ``status`` as one of
# resolved, unresolved, ignored (shown as "archived"), pending_deletion,
# deletion_in_progress, pending_merge, reprocessing; ``bridge.reconcile`` turns an
# unresolved issue whose ``substatus`` is ``escalating`` into ESCALATING.
ESCALATING = "escalating"
UNRESOLVED = "unresolved"
# Statuses that end the alert: Sentry will send no further events for it.
CLOSED = frozenset({"resolved", "ignored", "muted", "pending_deletion", "deletion_in_progress"})
OPEN = frozenset({UNRESOLVED, ESCALATING})


def reconcile(
    previous: IdentityState | None,
    status: str,
    observed_at: datetime,
    now: datetime,
    policy: Policy,
) -> Step:
    """Sentry's API said ``status`` for the issue at ``observed_at`` (when the bridge asked):
    Sentry's status is the truth.

    * closed (resolved, ignored/archived, being deleted) ends the alert: ``reconciled``;
    * open keeps a firing alert alive: re-posted with a fresh endsAt once half its lifetime
      has passed, so it never lapses while Sentry holds the issue open; an alert that lapsed
      (the bridge was down) fires again;
    * open after a resolve the bridge saw before ``observed_at`` undoes that resolve (a
      replayed capture, or a regression whose webhook never came): the alert it ended fires
      again;
    * escalating escalates the firing alert one step, once per spell, as Sentry's
      ``status_escalating`` webhook does;
    * anything else (or nothing to change): no effect, ``duplicate``.
    """
    prev = previous or EMPTY
    firing = prev.firing(now)
    current = prev.severity if firing else None
    if status in CLOSED:
        if prev.alert is None:
            return Step(prev, (), Outcome.DUPLICATE)
        # Resolved no earlier than what the bridge knows happened before it; not "now": a
        # regression Sentry received between the resolve and this check must not be stale.
        known = (prev.resolved_at, prev.last_event_at, prev.alert.starts_at)
        done = dataclasses.replace(
            prev,
            alert=None,
            severity=None,
            environments=(),
            resolved_at=max((t for t in known if t is not None), default=None),
            posted=None,
            posted_at=None,
            last_alert=prev.alert,
            last_severity=prev.severity,
            sentry_escalating=False,
        )
        posts = (L.resolved(firing, now),) if firing is not None else ()
        return Step(done, posts, Outcome.RECONCILED)
    if status not in OPEN:
        return Step(prev, (), Outcome.DUPLICATE, current)
    escalating = status == ESCALATING
    if firing is not None and prev.severity is not None:
        if escalating and not prev.sentry_escalating and prev.severity is not Severity.CRITICAL:
            return _escalate(prev, firing, prev.severity, now, policy)
        if firing.ends_at is not None and firing.ends_at - now <= policy.alert_lifetime / 2:
            alive = firing.model_copy(update={"ends_at": now + policy.alert_lifetime})
            state = dataclasses.replace(prev, alert=alive, sentry_escalating=escalating)
            return Step(state, (alive,), Outcome.RECONCILED, prev.severity)
        if prev.sentry_escalating != escalating:
            return Step(
                dataclasses.replace(prev, sentry_escalating=escalating),
                (),
                Outcome.DUPLICATE,
                prev.severity,
            )
        return Step(prev, (), Outcome.DUPLICATE, prev.severity)
    if prev.alert is not None:
        again, severity = prev.alert, prev.severity  # lapsed while Sentry held it open
    elif (
        prev.last_alert is not None
        and prev.resolved_at is not None
        and prev.resolved_at < observed_at
    ):
        again, severity = prev.last_alert, prev.last_severity  # a resolve Sentry contradicts
    else:
        return Step(prev, (), Outcome.DUPLICATE)
    alert = again.model_copy(update={"starts_at": now, "ends_at": now + policy.alert_lifetime})
    state = dataclasses.replace(
        prev,
        alert=alert,
        severity=severity,
        # Undone, the alert was fired by no event: a resolve after it is not a replay.
        last_event_at=prev.last_event_at if prev.alert is not None else None,
        posted=fingerprint(alert.labels),
        posted_at=now,
        sentry_escalating=escalating,
    )
    return Step(state, (alert,), Outcome.RECONCILED, severity)


def _escalate(
    prev: IdentityState, firing: PostableAlert, severity: Severity, now: datetime, policy: Policy
) -> Step:
    """The firing alert one step up (``escalated="true"``): the old label set resolved first."""
    raised = severity.escalate()
    labels = dict(firing.labels)
    for name, value in policy.severity_labels.get(severity, {}).items():
        if labels.get(name) == value:
            del labels[name]  # the old severity's own labels (a rule's stay)
    for name, value in policy.severity_labels.get(raised, {}).items():
        labels.setdefault(name, value)
    labels.update(severity=raised.value, escalated="true")
    alert = firing.model_copy(
        update={"labels": labels, "starts_at": now, "ends_at": now + policy.alert_lifetime}
    )
    state = dataclasses.replace(
        prev,
        alert=alert,
        severity=raised,
        posted=fingerprint(labels),
        posted_at=now,
        sentry_escalating=True,
    )
    return Step(state, (L.resolved(firing, now), alert), Outcome.RECONCILED, raised, True)


def wants(
    state: IdentityState, status: str, observed_at: datetime, now: datetime, policy: Policy
) -> bool:
    """Whether ``reconcile`` would change anything: the reconciler accepts an input for an
    identity only then (the state may move on before it is decided; ``reconcile`` decides
    again from the state it finds)."""
    return reconcile(state, status, observed_at, now, policy).state is not state

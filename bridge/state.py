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
* A test notification is never escalated and ends ``TEST_LIFETIME`` after its last webhook.
* Escalation tiers (issue 16): an alert still firing a policy step's ``after`` past its
  first firing adds one more alert, its labels plus the step's; every tier follows the
  alert (refreshed, relabelled, resolved with it). ``tick`` is the timer's input.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

from bridge import labels as L
from bridge.alertmanager import PostableAlert
from bridge.classify import TEST_LABEL, Decision
from bridge.config import NO_ESCALATION, Config
from bridge.context import EMPTY as NO_CONTEXT
from bridge.context import MAX_ENVIRONMENTS, IssueContext
from bridge.dedup import fingerprint
from bridge.model import Kind, Outcome, SentryAlert, Severity, State, evolve

# How long a state outlives its last change once nothing fires: what a late retry of
# Sentry's (minutes to hours later) or a replayed body needs to be recognised as stale.
KEEP = timedelta(hours=24)
# A test notification (SentryAlert.test) ends by itself this soon after its last webhook, in
# Alertmanager and here, whatever ``alert_lifetime`` says: long enough to see the path work
# end to end, short enough that nothing stays firing for a test (issue 16, item 5).
TEST_LIFETIME = timedelta(minutes=5)


@dataclass(frozen=True, slots=True, kw_only=True)
class Policy:
    """The configuration ``step`` needs, from ``dedup``, ``alertmanager`` and classification."""

    window: timedelta
    escalate_after: int
    escalate_period: timedelta
    alert_lifetime: timedelta
    severity_labels: Mapping[Severity, Mapping[str, str]]
    # escalation.policies (name -> its steps) and escalation.default (severity -> name).
    tiers: Mapping[str, tuple[Tier, ...]] = dataclasses.field(default_factory=dict)
    tier_default: Mapping[Severity, str] = dataclasses.field(default_factory=dict)
    recheck: timedelta = timedelta(seconds=10)  # a step held by a silence: looked at again

    @classmethod
    def from_config(cls, config: Config) -> Policy:
        esc = config.escalation
        return cls(
            window=timedelta(seconds=config.dedup.window),
            escalate_after=config.dedup.escalate_after,
            escalate_period=timedelta(seconds=config.dedup.escalate_period),
            alert_lifetime=timedelta(seconds=config.alertmanager.alert_lifetime),
            severity_labels=config.classification.severity_labels,
            tiers={
                name: tuple(Tier(timedelta(seconds=s.after), s.labels) for s in steps)
                for name, steps in esc.policies.items()
            },
            tier_default=esc.default,
            recheck=timedelta(seconds=esc.interval),
        )

    def escalation_for(self, named: str | None, severity: Severity) -> str | None:
        """The policy of an alert: the one its rule or Sentry's setting names ("none": no
        policy), else (none named, or a name the config no longer has) the default for
        its severity."""
        if named is not None and (named == NO_ESCALATION or named in self.tiers):
            return None if named == NO_ESCALATION else named
        name = self.tier_default.get(severity)
        return name if name is not None and name in self.tiers else None


@dataclass(frozen=True, slots=True)
class Tier:
    """One step of an escalation policy."""

    after: timedelta
    labels: Mapping[str, str]


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
    # Escalation (issue 16): the policy of the firing alert, when its first firing was (the
    # steps count from it), the tier alerts fired so far (step order), the next step's time.
    escalation: str | None = None
    escalation_since: datetime | None = None
    tiers: tuple[PostableAlert, ...] = ()
    due_at: datetime | None = None
    # For the reconciler (``reconcile``): the alert a resolve ended and the severity it had,
    # so a resolve Sentry's API contradicts (a replayed capture) can be undone; and whether
    # Sentry's API last said the issue escalates (it escalates the alert once per spell).
    last_alert: PostableAlert | None = None
    last_severity: Severity | None = None
    sentry_escalating: bool = False
    # What Sentry has told the bridge about the issue, kept across resolves (issue 16).
    context: IssueContext = NO_CONTEXT

    def firing(self, now: datetime) -> PostableAlert | None:
        """The alert still firing in Alertmanager at ``now``, if any."""
        alert = self.alert
        if alert is None or (alert.ends_at is not None and alert.ends_at <= now):
            return None
        return alert

    @property
    def test(self) -> bool:
        """Whether its alert is a test notification's (issue 16, item 5): only its own
        webhooks may keep it firing, never a reconciler's answer or an escalation tier."""
        return self.alert is not None and self.alert.labels.get(TEST_LABEL) == "true"

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
            "escalation": self.escalation,
            "escalation_since": _iso(self.escalation_since),
            "tiers": [t.wire() for t in self.tiers],
            "due_at": _iso(self.due_at),
            "last_alert": self.last_alert.wire() if self.last_alert else None,
            "last_severity": self.last_severity,
            "sentry_escalating": self.sentry_escalating,
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
            escalation=data.get("escalation"),
            escalation_since=_time(data.get("escalation_since")),
            tiers=tuple(PostableAlert.model_validate(t) for t in data.get("tiers") or ()),
            due_at=_time(data.get("due_at")),
            last_alert=PostableAlert.model_validate(last)
            if (last := data.get("last_alert"))
            else None,
            last_severity=Severity(data["last_severity"]) if data.get("last_severity") else None,
            sentry_escalating=bool(data.get("sentry_escalating")),
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
    result = _step(previous, alert, decision, now, policy)
    return _with_tiers(previous or EMPTY, result, decision, now, policy)


def _step(
    previous: IdentityState | None,
    alert: SentryAlert,
    decision: Decision,
    now: datetime,
    policy: Policy,
) -> Step:
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
        labels = L.build_labels(
            alert,
            decision,
            severity,
            escalated=escalated,
            severity_labels=policy.severity_labels,
            # an issue keeps the environment it fires in, never "unknown" (no alert copy)
            environment=named if alert.kind is Kind.ISSUE and named != "unknown" else None,
        )

    seen = prev.environments if firing is not None else ()
    if alert.environment and alert.environment not in seen and len(seen) < MAX_ENVIRONMENTS:
        seen = (*seen, alert.environment)  # bounded: a credential holder cannot grow it
    # The state's new fields, copied into it once (``evolve``) on either path below.
    learnt = dict(
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
        return Step(evolve(prev, **learnt), (), Outcome.DUPLICATE, severity, escalated)

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
        lifetime=(TEST_LIFETIME if alert.test else policy.alert_lifetime).total_seconds(),
    )
    posts.append(current)
    state = evolve(prev, **learnt, alert=current, posted=label_hash, posted_at=now)
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
    done = evolve(
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
        context=prev.context.learn(alert) if alert.kind is Kind.ISSUE else prev.context,
    )
    if firing is not None:
        return Step(done, (L.resolved(firing, now),), Outcome.RESOLVED)
    if prev.alert is not None:
        return Step(done, (), Outcome.RESOLVED)  # expired in Alertmanager already
    if prev.resolved_at is not None:
        # Resolved before: nothing to post, but it is resolved as of this one too.
        again = evolve(prev, resolved_at=done.resolved_at, context=done.context)
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


# --- escalation tiers (issue 16, docs/state-machine.md rule 9) --------------------------


def _with_tiers(
    prev: IdentityState, result: Step, decision: Decision, now: datetime, policy: Policy
) -> Step:
    """``step``'s result with the tier alerts following the alert: resolved with it,
    refreshed with it (endsAt, annotations), relabelled when its label set changes. The
    policy is the one of the webhook that set the label set; a new policy starts afresh."""
    state = result.state
    live = prev.tiers if prev.firing(now) is not None else ()
    current = state.alert
    if result.outcome is Outcome.RESOLVED or current is None:
        ended = tuple(L.resolved(t, now) for t in live)
        done = evolve(state, escalation=None, escalation_since=None, tiers=(), due_at=None)
        return evolve(result, state=done, posts=(*result.posts, *ended))
    if result.outcome is not Outcome.FORWARDED:
        return result  # nothing posted: the tiers stand as they are
    fired = prev.firing(now)
    if fired is not None and fired.labels == current.labels:
        # The same alert refreshed: its tiers too, the timer as it stands (a step a silence
        # holds stays held until its next look).
        steps = policy.tiers.get(prev.escalation or "", ())
        tiers = tuple(
            _tier(current, steps[i], t.starts_at or now) for i, t in enumerate(live[: len(steps)])
        )
        state = evolve(state, tiers=tiers)
        return evolve(result, state=state, posts=(*result.posts, *tiers))
    # A new label set: the policy of the webhook that set it; the tiers carried over to it
    # while the policy stays, else started over.
    assert result.severity is not None
    # A test notification never escalates, whatever policy its severity has (item 5).
    name = None if state.test else policy.escalation_for(decision.escalation, result.severity)
    if (
        name is None
        and not live
        and not state.tiers
        and state.escalation is None
        and state.escalation_since is None
        and state.due_at is None
    ):
        return result  # no policy and no tiers (escalation off): nothing to start or carry
    same = fired is not None and name is not None and name == prev.escalation
    since = (prev.escalation_since or now) if same else now
    kept = live if same else ()
    steps = policy.tiers.get(name, ()) if name else ()
    kept = kept[: len(steps)]  # a reloaded config may have fewer steps
    tiers = tuple(_tier(current, steps[i], t.starts_at or now) for i, t in enumerate(kept))
    gone = tuple(L.resolved(t, now) for t in live if t.labels not in [x.labels for x in tiers])
    # Changed label sets: the old one resolved first (one label set per identity and tier).
    posts = (*gone, *result.posts, *tiers)
    state = evolve(
        state,
        escalation=name,
        escalation_since=since if name else None,
        tiers=tiers,
        due_at=_due(steps, since, len(tiers)),
    )
    return evolve(result, state=state, posts=posts)


def _tier(alert: PostableAlert, tier: Tier, starts_at: datetime) -> PostableAlert:
    """A tier's alert: the alert's labels plus the step's, ending with it."""
    return alert.model_copy(
        update={"labels": {**alert.labels, **tier.labels}, "starts_at": starts_at}
    )


def _due(steps: Sequence[Tier], since: datetime, fired: int) -> datetime | None:
    return since + steps[fired].after if fired < len(steps) else None


def tick(previous: IdentityState | None, now: datetime, policy: Policy, *, silenced: bool) -> Step:
    """The escalation timer for one identity at ``now``: every step due fires its tier
    alert (``escalated``), unless a silence in Alertmanager acknowledges the alert
    (``silenced``): then the step waits and is looked at again ``policy.recheck`` later
    (``acknowledged``). Nothing firing or nothing due: ``ignored``, the timer cleared."""
    prev = previous or EMPTY
    firing = prev.firing(now)
    steps = policy.tiers.get(prev.escalation or "", ())
    since = prev.escalation_since
    if firing is None or not steps or since is None or prev.due_at is None:
        if prev.due_at is None:
            return Step(prev, (), Outcome.IGNORED)
        return Step(evolve(prev, due_at=None), (), Outcome.IGNORED)
    if prev.due_at > now:  # a tick before its time (one more of a lagging inbox)
        return Step(prev, (), Outcome.IGNORED, prev.severity)
    due = _due(steps, since, len(prev.tiers))
    if due is None or due > now:
        return Step(evolve(prev, due_at=due), (), Outcome.IGNORED, prev.severity)
    if silenced:
        held = evolve(prev, due_at=now + policy.recheck)
        return Step(held, (), Outcome.ACKNOWLEDGED, prev.severity)
    tiers = list(prev.tiers)
    while (due := _due(steps, since, len(tiers))) is not None and due <= now:
        tiers.append(_tier(firing, steps[len(tiers)], now))
    fired = tuple(tiers[len(prev.tiers) :])
    state = evolve(prev, tiers=tuple(tiers), due_at=due)
    return Step(state, fired, Outcome.ESCALATED, prev.severity)


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
    lines.extend(describe_reconciler(result.state))
    lines.extend(describe_tiers(result.state))
    return lines


def describe_reconciler(state: IdentityState) -> list[str]:
    """What Sentry's API may still change (``reconcile``), for explain and status: a resolve
    it would undo, and that it last said the issue escalates."""
    lines = []
    if state.alert is None and state.last_alert is not None and state.resolved_at is not None:
        severity = state.last_severity or state.last_alert.labels.get("severity", "?")
        lines.append(
            f"resolved at {state.resolved_at.isoformat()}; with sentry.api_token, Sentry's API "
            f"saying the issue is unresolved after that undoes the resolve: the alert fires "
            f"again at {severity}"
        )
    if state.sentry_escalating:
        lines.append(
            "Sentry's API last said the issue is escalating: the alert was escalated once "
            "for it, and is not again until Sentry says otherwise"
        )
    return lines


def describe_tiers(state: IdentityState) -> list[str]:
    """The escalation policy's tiers fired and the next step, for explain and status."""
    if state.escalation is None:
        return []
    lines = [f"escalation policy {state.escalation!r}: {len(state.tiers)} tier(s) fired"]
    if state.due_at is not None:
        lines.append(f"next escalation step due at {state.due_at.isoformat()}")
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
    """``_reconcile``'s answer, with the escalation tiers following the alert as they do a
    webhook's (``_follow``). A test notification's alert is its own webhooks' alone (item
    5): Sentry's API neither keeps it alive nor fires it again."""
    prev = previous or EMPTY
    if prev.test or (prev.alert is None and _is_test(prev.last_alert)):
        return Step(prev, (), Outcome.DUPLICATE, prev.severity if prev.firing(now) else None)
    return _follow(prev, _reconcile(prev, status, observed_at, now, policy), now, policy)


def _is_test(alert: PostableAlert | None) -> bool:
    return alert is not None and alert.labels.get(TEST_LABEL) == "true"


def _follow(prev: IdentityState, result: Step, now: datetime, policy: Policy) -> Step:
    """The tiers of a reconciled alert: they end with it, are refreshed with it, move to
    its new label set when it escalates (the old ones resolved first), and start over when
    it fires again (a lapsed alert, a resolve undone: the policy for its severity)."""
    state, current = result.state, result.state.alert
    fired = prev.firing(now)
    live = prev.tiers if fired is not None else ()
    if current is None:
        if not prev.tiers and prev.escalation is None:
            return result
        done = evolve(state, escalation=None, escalation_since=None, tiers=(), due_at=None)
        ended = tuple(L.resolved(t, now) for t in live)
        return evolve(result, state=done, posts=(*result.posts, *ended))
    if current is prev.alert or not result.posts:
        return result
    if fired is not None and fired.labels == current.labels:
        tiers = tuple(t.model_copy(update={"ends_at": current.ends_at}) for t in live)
        state = evolve(state, tiers=tiers)
        return evolve(result, state=state, posts=(*result.posts, *tiers))
    if fired is not None:  # escalated one step: the same policy, its tiers carried over
        steps = policy.tiers.get(prev.escalation or "", ())
        tiers = tuple(
            _tier(current, steps[i], t.starts_at or now) for i, t in enumerate(live[: len(steps)])
        )
        gone = tuple(L.resolved(t, now) for t in live)
        state = evolve(state, tiers=tiers)
        return evolve(result, state=state, posts=(*gone, *result.posts, *tiers))
    assert result.severity is not None
    name = policy.escalation_for(None, result.severity)
    steps = policy.tiers.get(name, ()) if name else ()
    state = evolve(
        state,
        escalation=name,
        escalation_since=now if name else None,
        tiers=(),
        due_at=_due(steps, now, 0),
    )
    return evolve(result, state=state)


def _reconcile(
    prev: IdentityState,
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
    firing = prev.firing(now)
    current = prev.severity if firing else None
    if status in CLOSED:
        if prev.alert is None:
            return Step(prev, (), Outcome.DUPLICATE)
        # Resolved no earlier than what the bridge knows happened before it; not "now": a
        # regression Sentry received between the resolve and this check must not be stale.
        known = (prev.resolved_at, prev.last_event_at, prev.alert.starts_at)
        done = evolve(
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
            state = evolve(prev, alert=alive, sentry_escalating=escalating)
            return Step(state, (alive,), Outcome.RECONCILED, prev.severity)
        if prev.sentry_escalating != escalating:
            return Step(
                evolve(prev, sentry_escalating=escalating),
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
    state = evolve(
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
    state = evolve(
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

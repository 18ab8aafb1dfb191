"""Model-based test of issue 16's escalation tiers (contract item 4): random webhooks for two
issues, escalation rounds (the real periodic job: ``Escalator.round`` on the store), silences
in Alertmanager toggled on and off, time passing and restarts, on a fake clock, through the
real store and pipeline. After every step what the bridge queued, replayed into the model of
Alertmanager's merge rules (tests/model.py), shows exactly the alerts and tiers the
reference model predicts; and each round ticks exactly the identities the reference says
have a step due.

The reference model of the tiers is written here from the issue's rules, not from
bridge/state.py:

* an alert still firing a step's ``after`` past its first firing adds one more alert, its
  labels plus the step's; the first alert keeps firing unchanged;
* a rule names its policy, else ``escalation.default`` for the severity (here: critical ->
  ``slow`` (2m, 6m), medium and high -> ``fast`` (1m), low -> none);
* a silence on the alert in Alertmanager is an acknowledgement: the step waits, and is looked
  at again ``escalation.interval`` later;
* resolving the issue resolves every tier at once; the tiers end with the alert (expiry);
* a severity change (new label set) keeps the tiers fired when the policy stays the same,
  on the new label set; a new policy starts over from the change;
* timers survive restarts (the state is in the store).

The base alert follows issue 8's rules: ``tests.model.Reference``.
"""

from __future__ import annotations

import asyncio
import dataclasses
import json
import shutil
import tempfile
from collections import Counter
from collections.abc import Mapping, Sequence
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any, ClassVar

from hypothesis import settings
from hypothesis import strategies as st
from hypothesis.stateful import RuleBasedStateMachine, invariant, precondition, rule
from prometheus_client import CollectorRegistry

from bridge import config
from bridge.enrich import Enricher
from bridge.escalation import Escalator, Silences, tick_alert
from bridge.metrics import Metrics
from bridge.pipeline import Pipeline
from bridge.store.sqlite import SqliteStore
from tests.clock import Clock
from tests.conftest import examples
from tests.model import SETTINGS, Alertmanager, Reference, Shown, Webhooks, identity_of

INTERVAL = timedelta(seconds=30)
STEPS = {
    "slow": [(timedelta(minutes=2), "2"), (timedelta(minutes=6), "3")],
    "fast": [(timedelta(minutes=1), "2")],
}
DEFAULT = {"critical": "slow", "high": "fast", "medium": "fast"}
ESCALATION = {
    "default": DEFAULT,
    "interval": f"{INTERVAL.total_seconds()}s",
    "policies": {
        name: [{"after": f"{a.total_seconds()}s", "labels": {"escalation_tier": t}} for a, t in s]
        for name, s in STEPS.items()
    },
}
CONFIG = config.parse({**SETTINGS, "escalation": ESCALATION}, env={})

ISSUES = st.integers(1, 2)
ENVIRONMENTS = st.sampled_from(["production", "staging", "dev", None])
ISSUE_KINDS = st.sampled_from(["fire", "fire", "users", "created", "resolve", "escalating"])

# What Alertmanager shows of an identity: its alert's (severity, environment, escalated) and
# the tier ("1" for the alert itself).
Seen = tuple[Shown, str]


@dataclasses.dataclass
class Tiers:
    """One identity's escalation, as the issue's rules say."""

    shown: Shown | None = None  # the label set the tiers belong to
    policy: str | None = None
    since: datetime | None = None
    fired: int = 0
    due: datetime | None = None

    def follow(self, before: Shown | None, after: Shown | None, now: datetime) -> None:
        """The alert went from ``before`` to ``after`` (what fires, at ``now``)."""
        if after is None:  # resolved (or never fired): no tiers
            self.shown = self.policy = self.since = self.due = None
            self.fired = 0
            return
        if after == before:
            return  # the same alert refreshed, or a duplicate: the tiers stand
        policy = DEFAULT.get(after[0])
        if before is None or policy != self.policy:
            self.since, self.fired = now, 0  # a first firing, or another policy: start over
        self.shown, self.policy = after, policy
        self.due = self._next()

    def tick(self, now: datetime, active: Shown | None, silenced: bool) -> None:
        if active is None or self.policy is None or self.due is None:
            self.due = None
            return
        if self.due > now:
            return
        if silenced and self._next() is not None and self._next() <= now:  # type: ignore[operator]
            self.due = now + INTERVAL  # acknowledged: looked at again an interval later
            return
        steps = STEPS[self.policy]
        while self.fired < len(steps) and self.since + steps[self.fired][0] <= now:  # type: ignore[operator]
            self.fired += 1
        self.due = self._next()

    def _next(self) -> datetime | None:
        steps = STEPS[self.policy] if self.policy else []
        if self.since is None or self.fired >= len(steps):
            return None
        return self.since + steps[self.fired][0]

    def seen(self, active: Shown | None) -> list[Seen]:
        if active is None:
            return []
        tiers = [t for _, t in STEPS[self.policy][: self.fired]] if self.policy else []
        return sorted([(active, "1"), *((active, t) for t in tiers)])


class FakeSilences(Silences):
    """Alertmanager's silences, as the test sets them: by identity."""

    def __init__(self) -> None:
        self.identities: set[str] = set()

    async def held(self, alerts: Sequence[Mapping[str, str]]) -> list[bool]:
        return [identity_of(dict(labels)) in self.identities for labels in alerts]


class EscalationModel(RuleBasedStateMachine):
    checks = 0  # comparisons made over the whole run (all examples), for the record
    ticks = 0  # escalation ticks processed
    outcomes: ClassVar[Counter[str]] = Counter()  # the ticks' outcomes, over the whole run

    def __init__(self) -> None:
        super().__init__()
        self.loop = asyncio.new_event_loop()
        self.dir = Path(tempfile.mkdtemp(prefix="bridge-escalation-model-"))
        self.clock = Clock()
        self.webhooks = Webhooks()
        self.accepted: list[tuple[Any, datetime]] = []
        self.references: dict[str, Reference] = {}
        self.tiers: dict[str, Tiers] = {}
        self.silences = FakeSilences()
        self.am = Alertmanager()
        self.registry = CollectorRegistry()
        self.metrics = Metrics(self.registry)
        self.enricher = Enricher(CONFIG.sentry, self.metrics)
        self._open()

    def _open(self) -> None:
        self.store = SqliteStore(
            self.dir, ["am"], max_queued=10_000, metrics=self.metrics, clock=self.clock
        )
        self.loop.run_until_complete(self.store.open())
        self.pipeline = Pipeline(
            CONFIG,
            store=self.store,
            enricher=self.enricher,
            metrics=self.metrics,
            silences=self.silences,
        )
        self.escalator = Escalator(self.store, INTERVAL.total_seconds())

    def teardown(self) -> None:
        for outcome in ("escalated", "acknowledged", "ignored"):
            value = self.registry.get_sample_value(
                "sentry_bridge_alerts_total", {"outcome": outcome}
            )
            EscalationModel.outcomes[outcome] += int(value or 0)
        self.loop.run_until_complete(self.store.close())
        self.loop.run_until_complete(self.enricher.aclose())
        self.loop.close()
        shutil.rmtree(self.dir, ignore_errors=True)

    # --- Sentry, the operator, the clock --------------------------------------------------

    @rule(n=ISSUES, kind=ISSUE_KINDS, env=ENVIRONMENTS)
    def issue_webhook(self, n: int, kind: str, env: str | None) -> None:
        alert = self.webhooks.issue(n, kind, self.clock.now, env)
        self.loop.run_until_complete(self.store.accept(alert))
        self.accepted.append((alert, self.clock.now))

    @rule(n=ISSUES)
    def toggle_silence(self, n: int) -> None:
        self.silences.identities ^= {f"issue:{n}"}

    @rule(seconds=st.sampled_from([1, 30, 70, 130, 200, 400, 1900, 3700]))
    def time_passes(self, seconds: int) -> None:
        self.clock.now += timedelta(seconds=seconds)
        self.loop.run_until_complete(self.store.expire(resolved_for=900))

    @rule()
    def restart(self) -> None:
        self.loop.run_until_complete(self.store.close())
        self._open()

    # --- the bridge -----------------------------------------------------------------------

    @rule()
    def escalation_round(self) -> None:
        """The periodic job ticks exactly the identities with a step due (once what waits in
        the inbox is decided; its ticks may then wait behind later webhooks)."""
        while self.accepted:
            self.process_a_batch(6)
        now = self.clock.now
        due = sorted(
            identity
            for identity, tiers in self.tiers.items()
            if tiers.due is not None
            and tiers.due <= now
            and self.references[identity].active(now) is not None
        )
        ticked = self.loop.run_until_complete(self.escalator.round())
        assert sorted(ticked) == due
        self.accepted += [(tick_alert(i), now) for i in ticked]

    @precondition(lambda self: bool(self.accepted))
    @rule(size=st.integers(1, 6))
    def process_a_batch(self, size: int) -> None:
        taken = self.loop.run_until_complete(self.store.take(size))
        n = len(taken.entries)
        assert [e.alert for e in taken.entries] == [alert for alert, _ in self.accepted[:n]]
        self.loop.run_until_complete(self.pipeline.process(taken))
        now = self.clock.now
        for alert, accepted in self.accepted[:n]:
            reference = self.references.setdefault(alert.identity, Reference())
            tiers = self.tiers.setdefault(alert.identity, Tiers())
            before = reference.active(now)
            if alert.resource == "bridge":
                EscalationModel.ticks += 1
                silenced = alert.identity in self.silences.identities
                tiers.tick(now, before, silenced)
                continue
            reference.apply(alert, now, accepted)
            if before is None and tiers.shown is not None:
                tiers.follow(None, None, now)  # expired since: the tiers ended with it
            tiers.follow(before, reference.active(now), now)
        del self.accepted[:n]
        self.loop.run_until_complete(self._deliver())

    async def _deliver(self) -> None:
        async with self.store.lane("am") as lane:
            assert lane is not None
            queued = await lane.pending(10_000)
            for item in queued:
                self.am.post(json.loads(item.body), self.clock.now)
            if queued:
                await lane.advance(queued[-1].id)

    # --- the check ------------------------------------------------------------------------

    @invariant()
    def alertmanager_shows_every_tier_the_rules_predict(self) -> None:
        EscalationModel.checks += 1
        now = self.clock.now
        seen: dict[str, list[Seen]] = {}
        for labels, _, ends in self.am.alerts.values():
            if ends > now:
                shown = (
                    labels["severity"],
                    labels["environment"],
                    labels.get("escalated") == "true",
                )
                tier = labels.get("escalation_tier", "1")
                seen.setdefault(identity_of(labels), []).append((shown, tier))
        expected = {}
        for identity, reference in self.references.items():
            active = reference.active(now)
            if active is not None:
                expected[identity] = self.tiers[identity].seen(active)
        assert {i: sorted(s) for i, s in seen.items()} == expected


EscalationModel.TestCase.settings = settings(max_examples=examples(0.75), stateful_step_count=50)
test_escalation_model = EscalationModel.TestCase

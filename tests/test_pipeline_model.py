"""Model-based test of issue 8's Proof: random webhooks for two issues and a metric
alert (fire, refire, other environment, more users, resolve, regression, escalation,
late retries and duplicates; for issue 16: events from clients whose clocks lag or lead
Sentry's, issue webhooks with no environment, with and without a user count, Sentry's test
notifications, and the reconciler's answers from Sentry's API: resolved, ignored,
unresolved, escalating, another status), processed in random batch splits with restarts
between, on a fake clock. After every step, what the bridge queued for Alertmanager,
replayed into a model of Alertmanager's merge rules, shows exactly what the reference model
(tests/model.py, written from the issues' rules) predicts for every identity."""

from __future__ import annotations

import asyncio
import json
import shutil
import tempfile
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any

from hypothesis import settings
from hypothesis import strategies as st
from hypothesis.stateful import RuleBasedStateMachine, invariant, precondition, rule
from prometheus_client import CollectorRegistry

from bridge.enrich import Enricher
from bridge.metrics import Metrics
from bridge.pipeline import Pipeline
from bridge.reconcile import RESOURCE, answer
from bridge.store.sqlite import SqliteStore
from tests.clock import Clock
from tests.conftest import examples
from tests.model import CONFIG, TEST_ISSUE, Alertmanager, Reference, Webhooks

ISSUES = st.integers(1, 2)
METRICS = st.just(7)
ENVIRONMENTS = st.sampled_from(["production", "staging", "dev", None])
# Issue 16: what Sentry's API may answer about an issue (bridge/reconcile.py).
# Mostly "unresolved", as Sentry answers for the issues behind firing alerts.
SENTRY_STATUS = st.sampled_from(
    ["unresolved", "unresolved", "unresolved", "escalating", "resolved", "ignored", "reprocessing"]
)
ISSUE_KINDS = st.sampled_from(
    ["fire", "fire", "users", "created", "created-users", "resolve", "escalating"]
)
# Issue 16: the client's clock of an event, against Sentry's: behind by an hour (a phone),
# right, or ahead.
SKEWS = st.sampled_from([timedelta(hours=-1), timedelta(0), timedelta(minutes=10)])


class BridgeModel(RuleBasedStateMachine):
    checks = 0  # comparisons made over the whole run (all examples), for the record

    def __init__(self) -> None:
        super().__init__()
        self.loop = asyncio.new_event_loop()
        self.dir = Path(tempfile.mkdtemp(prefix="bridge-model-"))
        self.clock = Clock()
        self.webhooks = Webhooks()
        self.accepted: list[tuple[Any, datetime]] = []  # in the inbox, with when accepted
        self.references: dict[str, Reference] = {}
        self.am = Alertmanager()
        self._open()

    def _open(self) -> None:
        """A bridge process starting on the outbox; the metrics and the (disabled) enricher
        hold nothing the state machine reads, so they are kept across restarts."""
        if not hasattr(self, "enricher"):
            self.metrics = Metrics(CollectorRegistry())
            self.enricher = Enricher(CONFIG.sentry, self.metrics)
        self.outbox = SqliteStore(
            self.dir, ["am"], max_queued=10_000, metrics=self.metrics, clock=self.clock
        )
        self.loop.run_until_complete(self.outbox.open())
        self.pipeline = Pipeline(
            CONFIG, store=self.outbox, enricher=self.enricher, metrics=self.metrics
        )

    def _close(self) -> None:
        self.loop.run_until_complete(self.outbox.close())

    def teardown(self) -> None:
        self._close()
        self.loop.run_until_complete(self.enricher.aclose())
        self.loop.close()
        shutil.rmtree(self.dir, ignore_errors=True)

    def _accept(self, alert: Any) -> None:
        self.loop.run_until_complete(self.outbox.accept(alert))
        self.accepted.append((alert, self.clock.now))

    # --- Sentry sends ---------------------------------------------------------------------

    @rule(n=ISSUES, kind=ISSUE_KINDS, env=ENVIRONMENTS, skew=SKEWS)
    def issue_webhook(self, n: int, kind: str, env: str | None, skew: timedelta) -> None:
        self._accept(self.webhooks.issue(n, kind, self.clock.now, env, skew))

    @rule(kind=st.sampled_from(["fire", "fire", "resolve"]), env=ENVIRONMENTS)
    def sentry_test_notification(self, kind: str, env: str | None) -> None:
        """Sentry's "Send Test Notification" for its Test Issue, or the issue resolved."""
        self._accept(self.webhooks.issue(TEST_ISSUE, kind, self.clock.now, env, test=True))

    @rule(n=METRICS, action=st.sampled_from(["critical", "warning", "resolved"]))
    def metric_webhook(self, n: int, action: str) -> None:
        self._accept(self.webhooks.metric(n, action, self.clock.now))

    @rule(after=st.sampled_from([0, 60, 1900]), statuses=st.tuples(SENTRY_STATUS, SENTRY_STATUS))
    def reconciler_round(self, after: int, statuses: tuple[str, str]) -> None:
        """Issue 16: ``after`` seconds (1900: more than half of alert_lifetime, what the
        reconciler must bridge), a round of the reconciler reads both issues' status from
        Sentry's API."""
        if after:
            self.time_passes(after)
        for n, status in enumerate(statuses, 1):
            self._accept(answer(f"issue:{n}", str(n), status, self.clock.now))

    @precondition(lambda self: bool(self.webhooks.sent))
    @rule(data=st.data())
    def late_retry(self, data: st.DataObject) -> None:
        """Sentry retries (or someone replays) a body it sent before, unchanged."""
        identity = data.draw(st.sampled_from(sorted(self.webhooks.sent)))
        self._accept(data.draw(st.sampled_from(self.webhooks.sent[identity])))

    # --- the bridge -----------------------------------------------------------------------

    @precondition(lambda self: bool(self.accepted))
    @rule(size=st.integers(1, 6))
    def process_a_batch(self, size: int) -> None:
        taken = self.loop.run_until_complete(self.outbox.take(size))
        n = len(taken.entries)
        assert [e.alert for e in taken.entries] == [alert for alert, _ in self.accepted[:n]]
        self.loop.run_until_complete(self.pipeline.process(taken))
        for alert, accepted in self.accepted[:n]:
            reference = self.references.setdefault(alert.identity, Reference())
            if alert.resource == RESOURCE:
                reference.reconcile(alert.action, alert.occurred_at, self.clock.now)
            else:
                reference.apply(alert, self.clock.now, accepted)
        del self.accepted[:n]
        self._deliver()

    def _deliver(self) -> None:
        """Post what was queued to the Alertmanager model, as delivery would, in order."""
        self.loop.run_until_complete(self._deliver_in_lane())

    async def _deliver_in_lane(self) -> None:
        async with self.outbox.lane("am") as lane:
            assert lane is not None
            queued = await lane.pending(10_000)
            for item in queued:
                self.am.post(_json(item.body), self.clock.now)
            if queued:
                await lane.advance(queued[-1].id)

    @rule(seconds=st.sampled_from([1, 30, 200, 400, 1900, 3700]))
    def time_passes(self, seconds: int) -> None:
        self.clock.now += timedelta(seconds=seconds)
        self.loop.run_until_complete(self.outbox.expire(resolved_for=900))

    @rule()
    def restart(self) -> None:
        self._close()
        self._open()

    # --- the check ------------------------------------------------------------------------

    @invariant()
    def alertmanager_shows_what_the_rules_predict(self) -> None:
        BridgeModel.checks += 1
        now = self.clock.now
        shown = self.am.shown(now)
        expected = {
            identity: [active]
            for identity, reference in self.references.items()
            if (active := reference.active(now)) is not None
        }
        assert shown == expected, (shown, expected)


def _json(body: str) -> dict[str, Any]:
    data: dict[str, Any] = json.loads(body)
    return data


BridgeModel.TestCase.settings = settings(max_examples=examples(0.75), stateful_step_count=40)
test_pipeline_model = BridgeModel.TestCase

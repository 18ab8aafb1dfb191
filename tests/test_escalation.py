"""Escalation tiers (issue 16, contract item 4): ``bridge.state.tick`` and how ``step`` carries
the tier alerts, table-driven: a sequence of webhooks and ticks, and what each one posts."""

from __future__ import annotations

import json
import re
from collections.abc import Mapping
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any

import httpx
import pytest
from prometheus_client import CollectorRegistry

from bridge import config
from bridge.alertmanager import PostableAlert
from bridge.classify import classify
from bridge.enrich import Enricher
from bridge.errors import ConfigError, StoreFull
from bridge.escalation import Escalator, Silences, filters, is_tick
from bridge.metrics import Metrics
from bridge.model import Outcome, SentryAlert, State
from bridge.pipeline import BATCH as PIPELINE_BATCH
from bridge.pipeline import Pipeline
from bridge.state import (
    IdentityState,
    Policy,
    Step,
    describe,
    describe_tiers,
    reconcile,
    step,
    tick,
)
from bridge.store.sqlite import SqliteStore
from tests.clock import Clock
from tests.factories import START, issue, sentry_alert, sizes

RAW: dict[str, Any] = {
    "sentry": {"allow_unauthenticated": True},
    "classification": {
        "rules": [
            {
                "name": "quiet",
                "match": {"environment": "dev"},
                "severity": "critical",
                "escalation": "none",
            },
            {
                "name": "web",
                "match": {"environment": "web"},
                "severity": "critical",
                "escalation": "fast",
            },
            {"name": "prod", "match": {"environment": "production"}, "severity": "critical"},
            {"name": "staging", "match": {"environment": "staging"}, "severity": "high"},
        ],
    },
    "dedup": {"window": "5m"},
    "alertmanager": {"alert_lifetime": "1h"},
    "escalation": {
        "default": {"critical": "critical-default", "high": "critical-default"},
        "interval": "30s",
        "policies": {
            "critical-default": [
                {"after": "15m", "labels": {"escalation_tier": "2"}},
                {"after": "45m", "labels": {"escalation_tier": "3"}},
            ],
            "fast": [{"after": "1m", "labels": {"escalation_tier": "2"}}],
        },
    },
}
CONFIG = config.parse(RAW, env={})
POLICY = Policy.from_config(CONFIG)


def at(seconds: float) -> datetime:
    return START + timedelta(seconds=seconds)


def event(env: str = "production", t: float = 0, **overrides: Any) -> SentryAlert:
    values: dict[str, Any] = {"environment": env, "event_id": f"ev-{t}", "occurred_at": at(t)}
    return sentry_alert(**(values | overrides))


def resolve(t: float) -> SentryAlert:
    return sentry_alert(
        resource="issue", action="resolved", state=State.RESOLVED, occurred_at=at(t)
    )


# A tick: (seconds, TICK or SILENCED); Sentry's API (the reconciler): (seconds, "api:STATUS");
# a webhook: (seconds, SentryAlert).
TICK, SILENCED = "tick", "silenced"
Input = tuple[float, SentryAlert | str]


def run(inputs: list[Input]) -> list[tuple[Step, datetime]]:
    state: IdentityState | None = None
    out = []
    for seconds, what in inputs:
        now = at(seconds)
        if isinstance(what, str) and what.startswith("api:"):
            result = reconcile(state, what[4:], now, now, POLICY)
        elif isinstance(what, str):
            result = tick(state, now, POLICY, silenced=what == SILENCED)
        else:
            result = step(state, what, classify(what, CONFIG.classification), now, POLICY)
        state = result.state
        out.append((result, now))
    return out


def show(alert: PostableAlert, now: datetime) -> str:
    verb = "resolve" if alert.ends_at is not None and alert.ends_at <= now else "fire"
    tier = alert.labels.get("escalation_tier", "1")
    return f"{verb} {alert.labels['severity']}/{alert.labels['environment']}#{tier}"


C = Outcome.RECONCILED
F, R, D, E, A, N = (
    Outcome.FORWARDED,
    Outcome.RESOLVED,
    Outcome.DUPLICATE,
    Outcome.ESCALATED,
    Outcome.ACKNOWLEDGED,
    Outcome.IGNORED,
)
M = 60

CASES = [
    # The tiers follow an alert Sentry's API speaks for (docs/state-machine.md rule 10).
    pytest.param(
        [(0, event()), (15 * M, TICK), (20 * M, "api:resolved")],
        [
            (F, ["fire critical/production#1"]),
            (E, ["fire critical/production#2"]),
            (C, ["resolve critical/production#1", "resolve critical/production#2"]),
        ],
        id="sentry-resolving-the-issue-ends-every-tier",
    ),
    pytest.param(
        [(0, event()), (15 * M, TICK), (45 * M, "api:unresolved")],
        [
            (F, ["fire critical/production#1"]),
            (E, ["fire critical/production#2"]),
            (C, ["fire critical/production#1", "fire critical/production#2"]),
        ],
        id="sentry-holding-the-issue-open-keeps-every-tier-alive",
    ),
    pytest.param(
        [(0, event("staging")), (15 * M, TICK), (20 * M, "api:escalating")],
        [
            (F, ["fire high/staging#1"]),
            (E, ["fire high/staging#2"]),
            (
                C,
                [
                    "resolve high/staging#2",
                    "resolve high/staging#1",
                    "fire critical/staging#1",
                    "fire critical/staging#2",
                ],
            ),
        ],
        id="sentry-escalating-moves-the-tiers-to-the-new-label-set",
    ),
    pytest.param(
        [(0, event(test=True)), (2 * M, "api:unresolved"), (4 * M, "api:unresolved")],
        [(F, ["fire low/production#1"]), (D, []), (D, [])],
        id="sentry-api-leaves-a-test-notification-to-its-own-webhooks",
    ),
    pytest.param(
        [(0, event()), (14 * M, TICK), (15 * M, TICK)],
        [(F, ["fire critical/production#1"]), (N, []), (E, ["fire critical/production#2"])],
        id="a-tier-fires-after-its-delay-not-before",
    ),
    pytest.param(
        [(0, event()), (15 * M, SILENCED), (16 * M, TICK)],
        [(F, ["fire critical/production#1"]), (A, []), (E, ["fire critical/production#2"])],
        id="a-silence-holds-the-step-until-it-is-lifted",
    ),
    pytest.param(
        [(0, event()), (15 * M, TICK), (20 * M, resolve(20 * M))],
        [
            (F, ["fire critical/production#1"]),
            (E, ["fire critical/production#2"]),
            (R, ["resolve critical/production#1", "resolve critical/production#2"]),
        ],
        id="a-resolve-ends-every-tier-at-once",
    ),
    pytest.param(
        [(0, event()), (50 * M, TICK)],
        [
            (F, ["fire critical/production#1"]),
            (E, ["fire critical/production#2", "fire critical/production#3"]),
        ],
        id="after-downtime-every-step-due-fires",
    ),
    pytest.param(
        [(0, event()), (15 * M, TICK), (20 * M, event(t=20 * M))],
        [
            (F, ["fire critical/production#1"]),
            (E, ["fire critical/production#2"]),
            (F, ["fire critical/production#1", "fire critical/production#2"]),
        ],
        id="a-refresh-keeps-every-tier-alive",
    ),
    pytest.param(
        [(0, event("staging")), (15 * M, TICK), (16 * M, event(t=16 * M))],
        [
            (F, ["fire high/staging#1"]),
            (E, ["fire high/staging#2"]),
            # The same policy: the tier is carried to the new label set, old one first.
            (
                F,
                [
                    "resolve high/staging#2",
                    "resolve high/staging#1",
                    "fire critical/production#1",
                    "fire critical/production#2",
                ],
            ),
        ],
        id="a-severity-change-carries-the-tiers-to-the-new-label-set",
    ),
    pytest.param(
        [(0, event("dev")), (60 * M, TICK)],
        [(F, ["fire critical/dev#1"]), (N, [])],
        id="a-rule-with-escalation-none-never-escalates",
    ),
    pytest.param(
        [(0, event("web")), (M, TICK)],
        [(F, ["fire critical/web#1"]), (E, ["fire critical/web#2"])],
        id="a-rule-names-its-own-policy",
    ),
    pytest.param(
        [(0, event()), (61 * M, TICK)],
        [(F, ["fire critical/production#1"]), (N, [])],
        id="an-expired-alert-does-not-escalate",
    ),
    pytest.param(
        [(0, event()), (M, resolve(M)), (15 * M, TICK)],
        [(F, ["fire critical/production#1"]), (R, ["resolve critical/production#1"]), (N, [])],
        id="a-resolved-alert-does-not-escalate",
    ),
]


@pytest.mark.parametrize(("inputs", "expected"), CASES)
def test_escalation(inputs: list[Input], expected: list[tuple[Outcome, list[str]]]) -> None:
    got = [(r.outcome, [show(p, now) for p in r.posts]) for r, now in run(inputs)]
    assert got == expected


def test_the_tier_alert_is_the_alert_plus_the_step_labels_and_ends_with_it() -> None:
    (first, _), (second, _) = run([(0, event()), (15 * M, TICK)])
    alert, (tier,) = first.state.alert, second.posts
    assert alert is not None
    assert tier.labels == {**alert.labels, "escalation_tier": "2"}
    assert tier.ends_at == alert.ends_at
    assert tier.annotations == alert.annotations
    assert second.state.alert == alert  # the first tier is never touched


def test_the_next_step_is_kept_and_survives_a_restart() -> None:
    (first, _), (second, _), (held, _) = run([(0, event()), (15 * M, TICK), (45 * M, SILENCED)])
    assert first.state.due_at == at(15 * M)
    assert second.state.due_at == at(45 * M)
    assert held.state.due_at == at(45 * M + 30)  # looked at again escalation.interval later
    again = IdentityState.from_json(second.state.to_json())
    assert again == second.state
    assert (
        tick(again, at(45 * M), POLICY, silenced=False).state.tiers[1].labels["escalation_tier"]
        == "3"
    )


def test_explain_shows_the_policy_and_the_next_step() -> None:
    (first, _), (second, _) = run([(0, event()), (15 * M, TICK)])
    assert describe(None, first)[-2:] == [
        "escalation policy 'critical-default': 0 tier(s) fired",
        f"next escalation step due at {at(15 * M).isoformat()}",
    ]
    assert describe_tiers(second.state)[0].endswith("1 tier(s) fired")


def test_old_state_json_without_escalation_loads() -> None:
    (first, _), *_ = run([(0, event())])
    data = first.state.to_json()
    for key in ("escalation", "escalation_since", "tiers", "due_at"):
        del data[key]
    assert IdentityState.from_json(data).tiers == ()


@pytest.mark.parametrize(
    ("change", "message"),
    [
        pytest.param(
            {"classification": {"rules": [{"name": "r", "severity": "low", "escalation": "x"}]}},
            "rule 'r' names escalation policy 'x'",
            id="unknown-policy-named-by-a-rule",
        ),
        pytest.param(
            {"escalation": {"default": {"critical": "x"}}},
            "escalation: default.critical: no policy named 'x'",
            id="unknown-default-policy",
        ),
        pytest.param(
            {
                "escalation": {
                    "policies": {
                        "p": [
                            {"after": "5m", "labels": {"t": "2"}},
                            {"after": "1m", "labels": {"t": "3"}},
                        ]
                    }
                }
            },
            "each step's `after` must exceed the last",
            id="steps-out-of-order",
        ),
        pytest.param(
            {"escalation": {"policies": {"p": [{"after": "5m", "labels": {"severity": "x"}}]}}},
            "reserved",
            id="a-step-sets-a-reserved-label",
        ),
        pytest.param(
            {"escalation": {"policies": {"p": [{"after": "5m", "labels": {"t": "2"}}]}, "typo": 1}},
            "escalation.typo: unknown key",
            id="unknown-key",
        ),
    ],
)
def test_config_errors_name_the_key(change: dict[str, Any], message: str) -> None:
    with pytest.raises(ConfigError, match=message.replace("(", r"\(").replace(".", r"\.")):
        config.parse({"sentry": {"allow_unauthenticated": True}, **change}, env={})


def test_sentrys_escalation_policy_setting_chooses_a_configured_policy() -> None:
    def policy_of(value: str) -> str | None:
        alert = event("staging", rule_settings=(("escalation_policy", value),))
        decision = classify(alert, CONFIG.classification)
        return step(None, alert, decision, at(0), POLICY).state.escalation

    assert policy_of("fast") == "fast"
    assert policy_of("none") is None
    assert policy_of("gone") == "critical-default"  # not configured: the default, for high


# --- asking Alertmanager about silences (bridge.escalation.Silences) ---------------------


def parse(matcher: str) -> tuple[str, str, str]:
    """``name="value"`` or ``name=~"regex"`` as Alertmanager's matcher syntax reads it
    (``\\\\``, ``\\"``, ``\\n`` inside the quotes): name, operator, value."""
    found = re.fullmatch(r'(\w+)(=~?)"(.*)"', matcher, flags=re.DOTALL)
    assert found is not None, matcher
    name, op, quoted = found.groups()
    return name, op, re.sub(r"\\(.)", lambda m: "\n" if m[1] == "n" else m[1], quoted)


def matches(labels: Mapping[str, str], matcher: tuple[str, str, str]) -> bool:
    name, op, value = matcher
    if op == "=":
        return labels.get(name, "") == value
    return re.fullmatch(value, labels.get(name, "")) is not None  # anchored, as Alertmanager


class Alertmanagers:
    """Alertmanagers over one MockTransport, by host: each holds ``alerts`` (label sets),
    mutes the issues its entry in ``silenced`` names (or answers it, a status code), and
    answers ``GET /api/v2/alerts`` as api/v2/api.go's ``alertFilter`` does for ``=`` and
    ``=~`` matchers and ``active`` (false: only what is suppressed). Every request is kept."""

    def __init__(self, silenced: Mapping[str, set[str] | int]) -> None:
        self.silenced = dict(silenced)
        self.alerts: list[dict[str, str]] = []
        self.requests: list[httpx.Request] = []
        self.urls = [f"http://{host}:9093" for host in silenced]

    def handle(self, request: httpx.Request) -> httpx.Response:
        self.requests.append(request)
        muting = self.silenced[request.url.host]
        if isinstance(muting, int):
            return httpx.Response(muting)
        wanted = [parse(m) for m in request.url.params.get_list("filter")]
        active = request.url.params.get("active", "true") == "true"
        answer = []
        for labels in self.alerts:
            muted = labels.get("sentry_issue_id") in muting
            if (muted or active) and all(matches(labels, m) for m in wanted):
                status: dict[str, Any] = {
                    "state": "suppressed" if muted else "active",
                    "inhibitedBy": [],
                }
                answer.append({"labels": labels, "status": status | {"silencedBy": ["s"] * muted}})
        return httpx.Response(200, json=answer)

    def silences(self) -> Silences:
        return Silences(httpx.AsyncClient(transport=httpx.MockTransport(self.handle)), self.urls)


ALERT = {
    "alertname": "SentryIssue",
    "source": "sentry",
    "sentry_issue_id": "42",
    "title": 'say "hi"\\n',
}
OTHER = {**ALERT, "sentry_issue_id": "43"}
TIER = {**ALERT, "escalation_tier": "2"}


@pytest.mark.parametrize(
    ("held", "silenced", "expected"),
    [
        pytest.param([ALERT, OTHER], {"a": set(), "b": set()}, [False, False], id="active"),
        pytest.param([ALERT, OTHER], {"a": set(), "b": {"42"}}, [True, False], id="one-is-enough"),
        pytest.param([OTHER], {"a": {"42"}}, [False], id="another-issues-silence"),
        pytest.param([TIER], {"a": {"42"}}, [True], id="a-silenced-tier-holds-the-next"),
        pytest.param([ALERT], {"a": 503, "b": set()}, [False], id="an-outage-never-holds-a-page"),
        pytest.param([ALERT], {"a": 503, "b": {"42"}}, [True], id="silenced-where-it-answers"),
    ],
)
@pytest.mark.anyio
async def test_a_silence_in_any_alertmanager_holds_the_step(
    held: list[dict[str, str]], silenced: dict[str, set[str] | int], expected: list[bool]
) -> None:
    ams = Alertmanagers(silenced)
    ams.alerts = [ALERT, TIER, OTHER]
    silences = ams.silences()
    asked = [{k: v for k, v in labels.items() if k != "escalation_tier"} for labels in held]
    assert await silences.held(asked) == expected
    assert await silences.held([]) == []  # nothing to ask: no request
    await silences.client.aclose()
    # One request per Alertmanager, for the batch's alerts that something mutes.
    assert len(ams.requests) == len(silenced)
    ids = "|".join(sorted(a["sentry_issue_id"] for a in held))
    for request in ams.requests:
        assert request.url.path == "/api/v2/alerts"
        assert request.url.params.get("active") == "false"
        assert request.url.params.get_list("filter") == [
            'source="sentry"',
            f'sentry_issue_id=~"{ids}"',
        ]


METRIC = {"alertname": "SentryMetricAlert", "source": "sentry", "sentry_alert_rule_id": "7.1"}


@pytest.mark.parametrize(
    ("alerts", "expected"),
    [
        pytest.param(
            [ALERT, OTHER, ALERT],
            [['source="sentry"', 'sentry_issue_id=~"42|43"']],
            id="the-batchs-issues",
        ),
        pytest.param(
            [METRIC, ALERT],
            [
                ['source="sentry"', 'sentry_alert_rule_id=~"7\\\\.1"'],
                ['source="sentry"', 'sentry_issue_id=~"42"'],
            ],
            id="issues-and-metric-alerts-ask-once-each",
        ),
        pytest.param(
            [ALERT, {"alertname": "SentryIssue", "source": "sentry"}],
            [['source="sentry"']],
            id="an-alert-without-an-id-asks-for-all",
        ),
    ],
)
def test_the_filters_select_the_batchs_alerts(
    alerts: list[dict[str, str]], expected: list[list[str]]
) -> None:
    assert filters(alerts) == expected
    # Alertmanager reads them back as selecting each of the batch's alerts...
    for labels in alerts:
        assert any(all(matches(labels, parse(m)) for m in f) for f in expected), labels
    # ...and, the ids escaped, no other id.
    near = {**METRIC, "sentry_alert_rule_id": "701"}
    assert not any(all(matches(near, parse(m)) for m in f) for f in filters([METRIC]))


class Batch:
    """The real store, pipeline and periodic job on a fake clock, asking ``Alertmanagers``."""

    def __init__(self, path: Path, ams: Alertmanagers, clock: Clock) -> None:
        self.ams = ams
        self.registry = CollectorRegistry()
        self.metrics = Metrics(self.registry)
        self.store = store = SqliteStore(
            path, ["am"], max_queued=10_000, metrics=self.metrics, clock=clock
        )
        self.enricher = Enricher(CONFIG.sentry, self.metrics)
        self.silences = ams.silences()
        self.pipeline = Pipeline(
            CONFIG,
            store=store,
            enricher=self.enricher,
            metrics=self.metrics,
            silences=self.silences,
        )

    async def close(self) -> None:
        await self.silences.client.aclose()
        await self.enricher.aclose()
        await self.store.close()

    async def fire(self, issues: int) -> None:
        """Issues 1..``issues`` fire, and Alertmanager holds what the bridge queued."""
        for n in range(1, issues + 1):
            await self.store.accept(issue(n, environment="production"))
        await self.pipeline.process(await self.store.take(issues))
        async with self.store.lane("am") as lane:
            assert lane is not None
            queued = await lane.pending(10_000)
            self.ams.alerts = [json.loads(item.body)["labels"] for item in queued]
            await lane.advance(queued[-1].id)

    async def round(self) -> int:
        """One escalation round (every identity due ticked) and the batches that decide its
        ticks; returns how many batches."""
        assert await Escalator(self.store, 30).round()
        batches = 0
        while (await sizes(self.store)).inbox:
            await self.pipeline.process(await self.store.take(PIPELINE_BATCH))
            batches += 1
        return batches

    def outcome(self, name: str) -> int:
        value = self.registry.get_sample_value("sentry_bridge_alerts_total", {"outcome": name})
        return int(value or 0)


def test_a_rule_that_overrides_sentry_keeps_its_own_policy() -> None:
    raw = {**RAW, "classification": {"rules": [
        {"name": "dev", "match": {"environment": "dev"}, "severity": "critical",
         "escalation": "none", "override_sentry": True},
        {"name": "web", "match": {"environment": "web"}, "severity": "critical",
         "override_sentry": True},
    ]}}  # fmt: skip
    cfg = config.parse(raw, env={})
    policy = Policy.from_config(cfg)

    def policy_of(env: str) -> str | None:
        alert = event(env, rule_settings=(("escalation_policy", "fast"),))
        decision = classify(alert, cfg.classification)
        return step(None, alert, decision, at(0), policy).state.escalation

    assert policy_of("dev") is None  # the rule's "none" wins over Sentry's "fast"
    assert policy_of("web") == "fast"  # the rule names none: Sentry's setting applies


# --- the periodic job (bridge.escalation.Escalator) -----------------------------------------


class DueStore:
    """What the periodic job uses of a store: the lease, ``due``, ``accept``."""

    def __init__(self, *, lease: bool, full_after: int = 99) -> None:
        self.lease, self.full_after = lease, full_after
        self.accepted: list[SentryAlert] = []

    async def periodic(self) -> bool:
        return self.lease

    async def due(self, limit: int) -> list[tuple[str, datetime]]:
        return [("issue:1", at(0)), ("metric_alert:7", at(1)), ("issue:2", at(2))][:limit]

    async def accept(self, alert: SentryAlert, digest: bytes | None = None) -> bool:
        if len(self.accepted) >= self.full_after:
            raise StoreFull()
        self.accepted.append(alert)
        return True


@pytest.mark.parametrize(
    ("store", "ticked"),
    [
        pytest.param(DueStore(lease=True), ["issue:1", "metric_alert:7", "issue:2"], id="due"),
        pytest.param(DueStore(lease=False), [], id="another-replica-holds-the-lease"),
        pytest.param(DueStore(lease=True, full_after=1), ["issue:1"], id="a-full-store"),
    ],
)
@pytest.mark.anyio
async def test_a_round_ticks_each_due_identity_once(store: DueStore, ticked: list[str]) -> None:
    assert await Escalator(store, 10).round() == ticked  # type: ignore[arg-type]
    assert [a.identity for a in store.accepted] == ticked
    assert all(is_tick(a) and a.state is State.FIRING for a in store.accepted)
    assert all(a.kind.value == a.identity.split(":")[0] for a in store.accepted)


@pytest.mark.parametrize("issues", [2, 40, PIPELINE_BATCH + 4])
@pytest.mark.anyio
async def test_a_batch_of_ticks_asks_each_alertmanager_once(tmp_path: Path, issues: int) -> None:
    """Requests per round: one per Alertmanager per batch of ticks, whatever the number of
    steps due (before: one per step due per Alertmanager: 4, 80 and 520 here)."""
    clock = Clock(START)
    odd = {str(n) for n in range(1, issues + 1, 2)}
    ams = Alertmanagers({"a": set(), "b": odd})  # b: the odd issues acknowledged
    batch = Batch(tmp_path, ams, clock)
    await batch.store.open()
    try:
        await batch.fire(issues)
        assert not ams.requests  # the webhook path asks nothing
        clock.advance(minutes=15)  # critical-default's first step is due for every issue
        batches = await batch.round()
    finally:
        await batch.close()
    assert batches == -(-issues // PIPELINE_BATCH)
    assert len(ams.requests) == 2 * batches
    # The same semantics: silenced in any Alertmanager holds the step, else it fires.
    assert batch.outcome("acknowledged") == len(odd)
    assert batch.outcome("escalated") == issues - len(odd)

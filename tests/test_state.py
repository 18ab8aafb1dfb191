"""The state machine of one Sentry identity (bridge/state.py), table-driven: each rule of
issue 8 and each bug it reproduced, as a sequence of webhooks and what each one posts."""

from __future__ import annotations

import dataclasses
from datetime import datetime, timedelta
from typing import Any

import pytest

from bridge import config
from bridge.alertmanager import PostableAlert
from bridge.classify import classify
from bridge.model import Kind, Outcome, SentryAlert, State
from bridge.state import TEST_LIFETIME, IdentityState, Policy, Step, describe, step
from tests.factories import START, sentry_alert

CONFIG = config.parse(
    {
        "sentry": {"allow_unauthenticated": True},
        "classification": {
            "default_severity": "medium",
            "severity_labels": {"critical": {"page": "true"}},
            "rules": [
                {"name": "health", "match": {"transaction": {"regex": ".*/healthz"}}, "drop": True},
                {
                    "name": "metric-critical",
                    "match": {"action": "critical"},
                    "severity": "critical",
                },
                {"name": "metric-warning", "match": {"action": "warning"}, "severity": "medium"},
                {"name": "many-users", "match": {"users": {"gt": 100}}, "severity": "critical"},
                {"name": "prod", "match": {"environment": "production"}, "severity": "high"},
                {"name": "staging", "match": {"environment": "staging"}, "severity": "low"},
            ],
        },
        "dedup": {"window": "5m", "escalate_after": 3, "escalate_period": "30m"},
        "alertmanager": {"alert_lifetime": "1h"},
    },
    env={},
)
POLICY = Policy.from_config(CONFIG)


def at(seconds: float) -> datetime:
    return START + timedelta(seconds=seconds)


def event(env: str | None = "production", t: float = 0, **overrides: Any) -> SentryAlert:
    """An ``event_alert`` of issue 42 whose event Sentry received at ``t`` seconds (its
    client timestamp the same, unless ``occurred_at`` says otherwise)."""
    values: dict[str, Any] = {
        "environment": env,
        "event_id": f"ev-{t}",
        "occurred_at": at(t),
        "received_at": at(t),
    }
    return sentry_alert(**(values | overrides))


def created(**overrides: Any) -> SentryAlert:
    """``issue`` ``created`` / ``unresolved``: no environment, no event."""
    return sentry_alert(**({"resource": "issue", "action": "created"} | overrides))


def resolve(t: float | None = None, **overrides: Any) -> SentryAlert:
    return sentry_alert(
        resource="issue",
        action="resolved",
        state=State.RESOLVED,
        answered_at=None if t is None else at(t),  # an issue webhook has no time of its own
        **overrides,
    )


def escalating(**overrides: Any) -> SentryAlert:
    return sentry_alert(resource="activity_alert", action="triggered", escalating=True, **overrides)


def metric(action: str, **overrides: Any) -> SentryAlert:
    return sentry_alert(
        resource="metric_alert",
        action=action,
        kind=Kind.METRIC_ALERT,
        identity="metric_alert:7",
        issue_id=None,
        alert_rule_id="7",
        state=State.RESOLVED if action == "resolved" else State.FIRING,
        **overrides,
    )


def post(alert: PostableAlert, now: datetime) -> str:
    """A post as ``fire severity/environment`` or ``resolve severity/environment``."""
    verb = "resolve" if alert.ends_at is not None and alert.ends_at <= now else "fire"
    escalated = "+esc" if alert.labels.get("escalated") == "true" else ""
    return f"{verb} {alert.labels['severity']}/{alert.labels['environment']}{escalated}"


Webhook = tuple[float, SentryAlert]  # (seconds since START it is processed, the webhook)
Expected = tuple[Outcome, list[str]]


def run(webhooks: list[Webhook]) -> list[tuple[Step, datetime]]:
    state: IdentityState | None = None
    steps = []
    for seconds, alert in webhooks:
        now = at(seconds)
        result = step(state, alert, classify(alert, CONFIG.classification), now, POLICY)
        state = result.state
        steps.append((result, now))
    return steps


F, R, D, S, X = (Outcome.FORWARDED, Outcome.RESOLVED, Outcome.DUPLICATE, Outcome.STALE,
                 Outcome.DROPPED)  # fmt: skip

CASES = [
    pytest.param([(0, event())], [(F, ["fire high/production"])], id="first-firing"),
    pytest.param(
        [(0, event()), (10, event("staging", 10))],
        [(F, ["fire high/production"]), (D, [])],
        id="bug-staging-event-does-not-replace-a-production-page",
    ),
    pytest.param(
        [(0, event()), (400, event("staging", 400))],
        [(F, ["fire high/production"]), (F, ["fire high/production"])],
        id="a-lower-environment-refreshes-the-page-after-the-window",
    ),
    pytest.param(
        [(0, event()), (10, created()), (400, created(action="unresolved"))],
        [(F, ["fire high/production"]), (D, []), (F, ["fire high/production"])],
        id="bug-issue-created-or-unresolved-does-not-move-it-to-unknown",
    ),
    pytest.param(
        [(0, event()), (1, event("staging", 1)), (2, event(t=2)), (3, event("staging", 3))],
        [
            (F, ["fire high/production"]),
            (D, []),
            (F, ["resolve high/production", "fire critical/production+esc"]),
            (D, []),
        ],
        id="bug-four-alternating-environments-only-the-third-repeat-escalates",
    ),
    pytest.param(
        [(0, event("dev")), (10, event(t=10))],
        [(F, ["fire medium/dev"]), (F, ["resolve medium/dev", "fire high/production"])],
        id="severity-rises-old-label-set-resolved-first",
    ),
    pytest.param(
        [(0, event()), (10, created(users=500))],
        [
            (F, ["fire high/production"]),
            (F, ["resolve high/production", "fire critical/production"]),
        ],
        id="rise-from-a-webhook-without-environment-keeps-the-named-one",
    ),
    pytest.param(
        [(0, event(users=500)), (10, event(t=10)), (400, event(t=400))],
        [(F, ["fire critical/production"]), (D, []), (F, ["fire critical/production"])],
        id="never-lowers-the-severity",
    ),
    pytest.param(
        [(0, created()), (10, event(t=10))],
        [(F, ["fire medium/unknown"]), (F, ["resolve medium/unknown", "fire high/production"])],
        id="unknown-environment-gets-named-when-severity-rises",
    ),
    pytest.param(
        [(0, event()), (60, resolve(60)), (120, event(t=120))],
        [
            (F, ["fire high/production"]),
            (R, ["resolve high/production"]),
            (F, ["fire high/production"]),
        ],
        id="resolve-then-a-regression-starts-fresh",
    ),
    pytest.param(
        [(0, event(users=500)), (60, resolve(60)), (120, event("staging", 120))],
        [
            (F, ["fire critical/production"]),
            (R, ["resolve critical/production"]),
            (F, ["fire low/staging"]),
        ],
        id="after-a-resolve-the-severity-is-not-remembered",
    ),
    pytest.param(
        [(0, event()), (60, resolve(60)), (600, event(t=0))],
        [(F, ["fire high/production"]), (R, ["resolve high/production"]), (S, [])],
        id="bug-late-retry-does-not-reopen-a-resolved-issue",
    ),
    pytest.param(
        [(0, event()), (60, resolve(60)), (120, event(t=120)), (130, event("staging", 30))],
        [
            (F, ["fire high/production"]),
            (R, ["resolve high/production"]),
            (F, ["fire high/production"]),
            (S, []),
        ],
        id="late-retry-from-before-the-resolve-is-stale-while-firing-again",
    ),
    pytest.param(
        [(0, event()), (60, resolve(60)), (120, event(t=120)), (180, resolve(60))],
        [
            (F, ["fire high/production"]),
            (R, ["resolve high/production"]),
            (F, ["fire high/production"]),
            (S, []),
        ],
        id="bug-replayed-resolve-after-a-re-fire-is-stale",
    ),
    pytest.param(
        [(0, event()), (60, resolve()), (70, resolve())],
        [(F, ["fire high/production"]), (R, ["resolve high/production"]), (D, [])],
        id="second-resolve-is-a-duplicate",
    ),
    pytest.param(
        [(0, resolve())],
        [(R, ["resolve medium/unknown"])],
        id="resolve-of-an-unknown-identity-resolves-its-classification",
    ),
    pytest.param(
        [(0, event("staging", 0)), (60, event("staging", 60)), (120, event("staging", 120))],
        [
            (F, ["fire low/staging"]),
            (D, []),
            (F, ["resolve low/staging", "fire medium/staging+esc"]),
        ],
        id="third-repeat-within-the-period-escalates",
    ),
    pytest.param(
        [(0, event("staging", 0)), (1000, event("staging", 1000)), (2000, event("staging", 2000))],
        [(F, ["fire low/staging"]), (F, ["fire low/staging"]), (F, ["fire low/staging"])],
        id="repeats-spread-beyond-the-period-do-not-escalate",
    ),
    pytest.param(
        [(0, event("staging", 0)), (60, event("staging", 0)), (120, event("staging", 0))],
        [(F, ["fire low/staging"]), (D, []), (D, [])],
        id="bug-a-replayed-event-is-not-a-repeat",
    ),
    pytest.param(
        [
            (0, event("staging", 0)),
            (60, resolve(60)),
            (120, event("staging", 120)),
            (180, event("staging", 180)),
        ],
        [
            (F, ["fire low/staging"]),
            (R, ["resolve low/staging"]),
            (F, ["fire low/staging"]),
            (F, ["resolve low/staging", "fire medium/staging+esc"]),
        ],
        id="repeats-keep-counting-across-a-resolve",
    ),
    pytest.param(
        [(0, event("dev")), (60, escalating())],
        [(F, ["fire medium/dev"]), (F, ["resolve medium/dev", "fire high/dev+esc"])],
        id="sentry-escalating-raises-one-step-and-keeps-the-environment",
    ),
    pytest.param(
        [(0, event(users=500)), (60, escalating())],
        [(F, ["fire critical/production"]), (D, [])],
        id="escalating-at-critical-stays",
    ),
    pytest.param(
        [(0, event()), (3700, event("staging", 3700))],
        [(F, ["fire high/production"]), (F, ["fire low/staging"])],
        id="expired-after-alert-lifetime-the-next-firing-starts-fresh",
    ),
    pytest.param(
        [(0, event(transaction="/healthz"))], [(X, [])], id="dropped-by-a-rule-posts-nothing"
    ),
    pytest.param(
        [(0, metric("critical")), (60, metric("warning")), (120, metric("resolved"))],
        [
            (F, ["fire critical/unknown"]),
            (F, ["resolve critical/unknown", "fire medium/unknown"]),
            (R, ["resolve medium/unknown"]),
        ],
        id="metric-alert-follows-sentry-down-and-resolves-the-active-label-set",
    ),
    pytest.param(
        [(0, metric("critical")), (1, metric("resolved"))],
        [(F, ["fire critical/unknown"]), (R, ["resolve critical/unknown"])],
        id="bug-metric-critical-then-resolved-resolves-the-critical-one",
    ),
    pytest.param(
        [(0, metric("critical", occurred_at=at(100))), (10, metric("resolved", occurred_at=at(0)))],
        [(F, ["fire critical/unknown"]), (R, ["resolve critical/unknown"])],
        id="a-metric-resolve-is-sentrys-decision-whatever-its-incident-time",
    ),
]


@pytest.mark.parametrize(("webhooks", "expected"), CASES)
def test_transitions(webhooks: list[Webhook], expected: list[Expected]) -> None:
    got = [(r.outcome, [post(p, now) for p in r.posts]) for r, now in run(webhooks)]
    assert got == expected


def test_a_refresh_keeps_the_start_and_moves_the_end() -> None:
    (first, _), (refresh, now) = run([(0, event()), (400, event(t=400))])
    (posted,) = refresh.posts
    assert posted.starts_at == START
    assert posted.ends_at == now + timedelta(hours=1)
    assert posted.labels == first.posts[0].labels


def test_other_environments_go_into_an_annotation() -> None:
    *_, (refresh, _) = run([(0, event()), (10, event("staging", 10)), (400, created())])
    (posted,) = refresh.posts
    assert posted.labels["environment"] == "production"
    assert posted.annotations["environments"] == "production,staging"


def test_the_environments_annotation_does_not_depend_on_the_order_seen() -> None:
    *_, (refresh, _) = run([(0, event("staging")), (10, event("production", 10)), (400, created())])
    (posted,) = refresh.posts
    assert posted.annotations["environments"] == "production,staging"


def test_the_environments_annotation_is_scrubbed_like_the_label() -> None:
    """Issue 14: the label was scrubbed, the annotation listing every environment was not."""
    envs = ["jane.doe@example.com", "10.20.30.40\u202e", "staging"]
    webhooks = [(n * 10, event(env, n * 10)) for n, env in enumerate(envs)]
    *_, (refresh, _) = run([*webhooks, (400, created())])
    posted = refresh.posts[-1]  # after a resolve, when the repeats escalated it
    assert posted.labels["environment"] == "[email]"
    assert posted.annotations["environments"] == "[email],[ip],staging"


def test_the_first_of_equal_severities_keeps_its_label_set() -> None:
    # Both production and "eu-prod" are high with this rule: the first stays.
    *_, (last, _) = run([(0, event()), (400, event("prod", 400, users=None, level="x"))])
    assert last.state.alert is not None
    assert last.state.alert.labels["environment"] == "production"


def test_a_resolve_ends_the_state_and_a_refire_starts_at_its_own_time() -> None:
    *_, (fired, now) = run([(0, event()), (60, resolve(60)), (61, event(t=61))])
    assert fired.state.alert is not None
    assert fired.state.alert.starts_at == now
    assert fired.state.resolved_at == at(60)


@pytest.mark.parametrize(
    "webhooks",
    [
        pytest.param([(0, event()), (10, created(users=500)), (20, escalating())], id="rising"),
        pytest.param([(0, event("staging", 0)), (60, resolve(60)), (61, event(t=0))], id="stale"),
        pytest.param([(0, metric("critical")), (5, metric("warning"))], id="metric"),
    ],
)
def test_the_state_survives_json(webhooks: list[Webhook]) -> None:
    for result, _ in run(webhooks):
        assert IdentityState.from_json(result.state.to_json()) == result.state


def test_kept_until_covers_the_alert_and_the_stale_horizon() -> None:
    (fired, _), (resolved, _) = run([(0, event()), (60, resolve(60))])
    assert fired.state.alert is not None
    kept = fired.state.kept_until(POLICY)
    assert kept is not None
    assert fired.state.alert.ends_at is not None
    assert kept >= fired.state.alert.ends_at
    kept = resolved.state.kept_until(POLICY)
    assert kept is not None
    assert kept >= at(60) + timedelta(hours=24)
    assert IdentityState().kept_until(POLICY) is None


def test_step_is_a_function_of_its_inputs() -> None:
    alert = event()
    decision = classify(alert, CONFIG.classification)
    first = step(None, alert, decision, START, POLICY)
    assert step(None, alert, decision, START, POLICY) == first
    again = step(first.state, dataclasses.replace(alert, event_id="x"), decision, START, POLICY)
    assert first.state.firings == (START,)  # the previous state was not changed
    assert again.state.firings == (START, START)


@pytest.mark.parametrize(
    ("webhooks", "words"),
    [
        pytest.param([(0, event())], "fires a new alert, severity high", id="fires"),
        pytest.param([(0, event()), (1, resolve())], "RESOLVES", id="resolves"),
        pytest.param([(0, event()), (1, resolve(1)), (2, event(t=0))], "stale", id="stale"),
        pytest.param([(0, event("dev")), (1, event(t=1))], "medium -> high", id="rises"),
    ],
)
def test_describe_says_what_a_step_did(webhooks: list[Webhook], words: str) -> None:
    steps = run(webhooks)
    previous = steps[-2][0].state if len(steps) > 1 else None
    assert words in " ".join(describe(previous, steps[-1][0]))


def test_the_doctors_test_alert_never_escalates() -> None:
    """Repeats within the period escalate an ordinary alert; the test alert of
    ``sentry-bridge doctor`` stays low, labelled a test, whatever the repeats."""
    repeats: list[Webhook] = [(t, event(t=t, test=True)) for t in (0, 60, 120, 180)]
    for result, _ in run(repeats):
        assert result.severity is not None
        assert result.severity.value == "low"
        assert not result.escalated
        for alert in result.posts:
            assert alert.labels["sentry_test"] == "true"
            assert "escalated" not in alert.labels
    ordinary = run([(float(t), event(t=t)) for t in (0, 60, 120)])
    assert ordinary[-1][0].escalated  # the same repeats escalate an ordinary alert


def test_a_test_notification_ends_by_itself_soon() -> None:
    """Issue 16, item 5: Sentry's "Send Test Notification", pressed twice (more than the
    dedup window apart) for a production issue: low, never ``page``, and gone from
    Alertmanager and from the state ``TEST_LIFETIME`` after the last one, not after
    ``alert_lifetime``."""
    steps = run([(0, event(test=True)), (400, event(t=400, test=True))])
    for result, now in steps:
        (posted,) = result.posts
        assert posted.labels["severity"] == "low"
        assert "page" not in posted.labels
        assert posted.ends_at == now + TEST_LIFETIME
    last, now = steps[-1]
    assert last.state.test
    assert not run([(0, event())])[0][0].state.test
    assert last.state.firing(now + TEST_LIFETIME - timedelta(seconds=1)) is not None
    assert last.state.firing(now + TEST_LIFETIME) is None
    ordinary, _ = run([(0, event())])[0]
    assert ordinary.posts[0].ends_at == START + timedelta(hours=1)  # alert_lifetime

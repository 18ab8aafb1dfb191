"""The issue's context (bridge/context.py) and its use by the state machine and the
pipeline (issue 16, contract items 1 and 2), table-driven where the rule is a table."""

from __future__ import annotations

from typing import Any

import pytest

from bridge.classify import classify
from bridge.context import EMPTY, MAX_ENVIRONMENTS, MAX_TAGS, IssueContext, fill
from bridge.model import Kind, SentryAlert
from bridge.pipeline import read_in_context
from bridge.state import IdentityState, step
from bridge.store.contract import Entry
from tests.factories import START, sentry_alert
from tests.test_state import CONFIG, POLICY, at, created, event, resolve, run

LINK = "https://acme.sentry.io/issues/42/"


def context_after(*alerts: SentryAlert) -> IssueContext:
    context = EMPTY
    for alert in alerts:
        context = context.learn(alert)
    return context


@pytest.mark.parametrize(
    ("webhook", "firing_env", "expected"),
    [
        pytest.param(
            {"resource": "issue", "action": "created", "environment": None},
            "staging",
            {"environment": "staging", "web_url": LINK, "release": "1.2"},
            id="issue-webhook-takes-the-environment-its-alert-fires-in",
        ),
        pytest.param(
            {"resource": "issue", "action": "created", "environment": None},
            None,
            {"environment": "dev", "web_url": LINK, "release": "1.2"},
            id="nothing-firing-the-last-environment-named",
        ),
        pytest.param(
            {"resource": "issue", "action": "created", "environment": None},
            "unknown",
            {"environment": "dev", "web_url": LINK, "release": "1.2"},
            id="never-unknown-while-one-is-known",
        ),
        pytest.param(
            {"environment": "production", "web_url": "https://other/x", "release": "2.0"},
            "staging",
            {},
            id="its-own-fields-always-win",
        ),
    ],
)
def test_fill_gives_a_webhook_the_context_it_lacks(
    webhook: dict[str, Any], firing_env: str | None, expected: dict[str, Any]
) -> None:
    context = context_after(
        sentry_alert(environment="staging", web_url=LINK, release="1.2"),
        sentry_alert(environment="dev", web_url=None, release=None),
    )
    alert = sentry_alert(**({"web_url": None, "release": None} | webhook))
    filled, names = fill(alert, context, firing_env)
    assert {name: getattr(filled, name) for name in names} == expected
    assert filled.from_context == names


def test_what_was_filled_is_not_learned_back() -> None:
    """The environment an issue webhook was given (its alert's) is not one Sentry named."""
    context = context_after(sentry_alert(environment="dev"))
    filled, _ = fill(created(environment=None), context, "production")
    assert context.learn(filled).environment == "dev"


def test_a_metric_alert_is_never_filled() -> None:
    alert = sentry_alert(kind=Kind.METRIC_ALERT, identity="metric_alert:7", environment=None)
    assert fill(alert, context_after(sentry_alert()), "production") == (alert, ())


def test_the_context_is_scrubbed_and_bounded() -> None:
    tags = tuple((f"t{n}", "jane.doe@example.com") for n in range(MAX_TAGS + 5))
    context = context_after(sentry_alert(environment="x" * 500, tags=tags, web_url="h" * 5000))
    assert context.environment is not None
    assert len(context.environment) <= 128
    assert len(context.tags) == MAX_TAGS
    assert {value for _, value in context.tags} == {"[email]"}
    assert context.web_url is None  # too long to be a link Alertmanager keeps


def test_the_context_survives_json_and_old_states_load_without_it() -> None:
    context = context_after(sentry_alert(environment="staging", users=7, tags=(("a", "b"),)))
    state = IdentityState(context=context)
    assert IdentityState.from_json(state.to_json()).context == context
    old = state.to_json()
    del old["context"]
    assert IdentityState.from_json(old).context == EMPTY


def test_an_unchanged_context_is_the_same_object() -> None:
    """So a webhook that says nothing new leaves the state as it was."""
    alert = sentry_alert(environment="staging", users=3)
    context = context_after(alert)
    assert context.learn(alert) is context


def test_the_environments_kept_while_firing_are_bounded() -> None:
    """Issue 16: any credential holder could grow one identity's state and annotation."""
    names = [f"env-{n:02}" for n in range(MAX_ENVIRONMENTS + 15)]
    steps = run([(n, event(name, n)) for n, name in enumerate(names)])
    state = steps[-1][0].state
    assert state.environments == tuple(names[:MAX_ENVIRONMENTS])


# --- the pipeline reads a webhook in its identity's context -----------------------------


def entry(alert: SentryAlert, accepted_after: float = 0) -> Entry:
    return Entry(inbox_id=1, accepted_at=at(accepted_after), alert=alert)


def test_an_issue_webhook_of_a_staging_alert_is_classified_as_staging() -> None:
    """The issue's first bullet: ``issue.created`` names no environment and (some Sentry
    versions) no link; alone it falls past the staging rule to the default."""
    staging = event("staging", web_url=LINK)
    fired = step(None, staging, classify(staging, CONFIG.classification), START, POLICY)
    webhook = created(environment=None, web_url=None)
    alone = classify(webhook, CONFIG.classification)
    assert (alone.rule, alone.severity) == (None, "medium")  # the default: a raise
    alert, names = read_in_context(entry(webhook), fired.state, at(10))
    assert {"environment", "web_url"} <= set(names)
    decision = classify(alert, CONFIG.classification)
    assert (decision.rule, decision.severity) == ("staging", "low")
    result = step(fired.state, alert, decision, at(400), POLICY)
    (posted,) = result.posts
    assert posted.labels == fired.posts[0].labels
    assert posted.generator_url == fired.posts[0].generator_url


def test_an_answer_time_is_the_stores_acceptance_when_the_edge_did_not_stamp_it() -> None:
    alert, _ = read_in_context(entry(resolve(), accepted_after=30), None, at(600))
    assert alert.answered_at == at(30)
    stamped = resolve(5)
    alert, _ = read_in_context(entry(stamped, accepted_after=30), None, at(600))
    assert alert.answered_at == at(5)  # spooled: the time it was answered, carried through


# --- Sentry's clock ------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("client_offset", "received_offset", "outcome"),
    [
        pytest.param(-3600, 60, "forwarded", id="client-an-hour-behind-received-after-resolve"),
        pytest.param(600, -60, "stale", id="client-ahead-received-before-resolve"),
        pytest.param(0, 60, "forwarded", id="clocks-agree-after"),
        pytest.param(0, -60, "stale", id="clocks-agree-before"),
    ],
)
def test_staleness_compares_sentrys_received_time_never_the_clients(
    client_offset: float, received_offset: float, outcome: str
) -> None:
    resolved_at = 1000.0
    late = event(
        "production",
        t=5,
        occurred_at=at(resolved_at + client_offset),
        received_at=at(resolved_at + received_offset),
    )
    steps = run([(0, event()), (resolved_at, resolve(resolved_at)), (resolved_at + 120, late)])
    assert steps[-1][0].outcome.value == outcome


def test_a_resolve_answered_before_the_event_sentry_received_last_is_stale() -> None:
    steps = run([(0, event(t=100)), (200, resolve(50))])
    assert steps[-1][0].outcome.value == "stale"
    assert steps[-1][0].state.alert is not None

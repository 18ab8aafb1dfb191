"""``bridge.state.reconcile``: Sentry's API says the issue's status (issue 16, contract item
3); each rule of docs/state-machine.md's "Sentry's status", from a state the webhooks of
tests/test_state.py leave."""

from __future__ import annotations

from datetime import datetime

import pytest

from bridge.classify import classify
from bridge.model import Outcome, SentryAlert, Severity
from bridge.state import IdentityState, Step, reconcile, step, wants
from tests.test_state import CONFIG, POLICY, at, event, resolve

HOUR = 3600


def fed(*webhooks: tuple[SentryAlert, float]) -> IdentityState | None:
    """The state after these webhooks, each at its time (seconds)."""
    state: IdentityState | None = None
    for alert, t in webhooks:
        state = step(state, alert, classify(alert, CONFIG.classification), at(t), POLICY).state
    return state


def check(state: IdentityState | None, status: str, t: float, observed: float = -1) -> Step:
    """Sentry's API answered ``status`` at ``observed`` (default: just before ``t``)."""
    seen = at(t - 1 if observed < 0 else observed)
    return reconcile(state, status, seen, at(t), POLICY)


def firing_at(result: Step, now: datetime) -> list[str]:
    return [p.labels["severity"] for p in result.posts if p.ends_at is not None and p.ends_at > now]


@pytest.mark.parametrize("status", ["resolved", "ignored", "pending_deletion"])
def test_a_closed_issue_resolves_its_alert(status: str) -> None:
    # "Resolves that never come": Sentry resolved (or archived) it, no webhook said so.
    state = fed((event(), 0))
    result = check(state, status, 60)
    assert result.outcome is Outcome.RECONCILED
    assert [p.ends_at for p in result.posts] == [at(60)]
    assert result.state.alert is None
    assert result.state.resolved_at == at(0)


def test_an_open_issue_keeps_its_alert_past_the_lifetime() -> None:
    # "Pages end that Sentry never resolved": checks every 10 minutes for 3 hours.
    state = fed((event(), 0))
    assert state is not None
    refreshed = 0
    for minute in range(10, 181, 10):
        result = check(state, "unresolved", minute * 60)
        state = result.state
        refreshed += bool(result.posts)
        assert state.firing(at(minute * 60 + 600)) is not None, f"lapses after {minute} min"
    assert refreshed == 6  # once half the lifetime passed: at 30, 60, ... 180 minutes
    assert state.alert is not None
    assert state.alert.starts_at == at(0)


def test_an_open_issue_needs_nothing_while_its_alert_is_fresh() -> None:
    state = fed((event(), 0))
    assert state is not None
    result = check(state, "unresolved", 600)
    assert (result.state, result.posts, result.outcome) == (state, (), Outcome.DUPLICATE)
    assert not wants(state, "unresolved", at(599), at(600), POLICY)


def test_a_lapsed_alert_fires_again_while_sentry_holds_the_issue_open() -> None:
    # The bridge was down longer than the lifetime: the start-up round brings it back.
    state = fed((event(), 0))
    result = check(state, "unresolved", 2 * HOUR)
    assert firing_at(result, at(2 * HOUR)) == ["high"]
    assert result.outcome is Outcome.RECONCILED


def test_a_resolve_sentry_contradicts_is_undone() -> None:
    # "A captured resolve clears a live alert": a replayed resolve (no time of its own:
    # accepted now) is contradicted by the next check.
    state = fed((event(), 0), (resolve(), 100))
    assert state is not None
    assert state.alert is None
    result = check(state, "unresolved", 160)
    assert result.outcome is Outcome.RECONCILED
    assert firing_at(result, at(160)) == ["high"]
    assert result.state.severity is Severity.HIGH


def test_a_check_made_before_the_resolve_does_not_undo_it() -> None:
    # Sentry answered "unresolved" at 90, then resolved the issue; the answer is decided
    # after the resolve's webhook (accepted at 100): it is older, so the resolve stands.
    state = fed((event(), 0), (resolve(), 100))
    result = check(state, "unresolved", 120, observed=90)
    assert (result.posts, result.outcome) == ((), Outcome.DUPLICATE)


def test_a_closed_issue_that_reopens_fires_again() -> None:
    # Resolved by the reconciler, then regressed in Sentry with no webhook coming.
    state = fed((event(), 0))
    closed = check(state, "resolved", 60).state
    result = check(closed, "unresolved", 120)
    assert firing_at(result, at(120)) == ["high"]


def test_escalating_raises_the_alert_one_step_once() -> None:
    state = fed((event(env="staging"), 0))
    result = check(state, "escalating", 60)
    assert result.escalated
    assert result.outcome is Outcome.RECONCILED
    assert [p.ends_at == at(60) for p in result.posts] == [True, False]  # resolve old first
    assert result.posts[1].labels["severity"] == "medium"
    assert result.posts[1].labels["escalated"] == "true"
    again = check(result.state, "escalating", 120)
    assert again.posts == ()
    assert not again.escalated


def test_escalating_to_critical_takes_the_severity_labels() -> None:
    state = fed((event(), 0))  # production: high
    result = check(state, "escalating", 60)
    assert result.posts[1].labels["severity"] == "critical"
    assert result.posts[1].labels["page"] == "true"


def test_unknown_status_and_unknown_issue_change_nothing() -> None:
    state = fed((event(), 0))
    assert check(state, "reprocessing", 60).state is state
    assert check(None, "resolved", 60).posts == ()
    assert check(None, "unresolved", 60).posts == ()


def test_the_reconcilers_fields_survive_json() -> None:
    state = fed((event(), 0), (resolve(), 100))
    assert state is not None
    assert state.last_alert is not None
    escalating = check(fed((event(), 0)), "escalating", 60).state
    for kept in (state, escalating):
        assert IdentityState.from_json(kept.to_json()) == kept
    assert IdentityState.from_json({}).last_alert is None  # old JSON loads

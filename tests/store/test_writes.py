"""The batch rules as pure code (bridge/store/writes.py): what one batch writes, for every
engine."""

from __future__ import annotations

import json
from datetime import timedelta

import pytest

from bridge.alertmanager import wire_json
from bridge.state import IdentityState
from bridge.store.contract import Entry, Failed, Processed, Taken
from bridge.store.writes import label_key, plan
from tests.factories import KEPT_UNTIL, START, issue, postable

NOW = START + timedelta(minutes=5)


def taken(*ids: int, states: dict[str, IdentityState] | None = None) -> Taken:
    entries = [Entry(i, START + timedelta(seconds=i), issue(i)) for i in ids]
    return Taken(entries=entries, states=states or {}, now=NOW)


def test_every_entry_once_or_nothing() -> None:
    with pytest.raises(ValueError, match="every taken entry"):
        plan(taken(1, 2), [Processed(1, ())], [], NOW)
    with pytest.raises(ValueError, match="every taken entry"):
        plan(taken(1), [Processed(1, ())], [Failed(1, issue(1), "x")], NOW)


def test_posts_in_order_aged_from_acceptance() -> None:
    a, b = postable(1), postable(2)
    writes = plan(taken(1, 2), [Processed(1, [a]), Processed(2, [b, a])], [], NOW)
    assert writes.done == (1, 2)
    assert [(p.queued_at, p.body) for p in writes.posts] == [
        (START + timedelta(seconds=1), wire_json(a)),
        (START + timedelta(seconds=2), wire_json(b)),
        (START + timedelta(seconds=2), wire_json(a)),
    ]


@pytest.mark.parametrize(
    ("sends", "started", "ended"),
    [
        pytest.param(["resolve"], ["1"], [], id="a-resolve-starts-re-sends"),
        pytest.param(["fire"], [], ["1"], id="firing-ends-them"),
        pytest.param(["resolve", "fire"], [], ["1"], id="the-last-decision-counts-fire"),
        pytest.param(["fire", "resolve"], ["1"], [], id="the-last-decision-counts-resolve"),
    ],
)
def test_a_resolve_starts_re_sends_firing_again_ends_them(
    sends: list[str], started: list[str], ended: list[str]
) -> None:
    alerts = {"resolve": postable(1).model_copy(update={"ends_at": NOW}), "fire": postable(1)}
    results = [Processed(1, [alerts[s]]) for s in sends[:1]]
    results += [Processed(2, [alerts[s]]) for s in sends[1:]]
    writes = plan(taken(*range(1, len(sends) + 1)), results, [], NOW)
    key = label_key(postable(1).labels)
    assert [k for k, _ in writes.resends_started] == [key] * len(started)
    assert list(writes.resends_ended) == [key] * len(ended)
    if started:
        assert writes.resends_started[0][1] == wire_json(alerts["resolve"])
        assert writes.resolved_at == NOW


def test_the_last_state_counts_and_forgotten_ones_go() -> None:
    a = postable(1)
    first = IdentityState(alert=a)
    results = [
        Processed(1, [a], {"issue:1": (first, KEPT_UNTIL), "issue:2": (IdentityState(), None)}),
        Processed(2, (), {"issue:1": (IdentityState(), KEPT_UNTIL)}),
    ]
    writes = plan(taken(1, 2, states={"issue:1": first}), results, [], NOW)
    [row] = writes.states
    assert (row.identity, row.state, row.alert) == ("issue:1", IdentityState(), None)
    assert writes.forgotten == ("issue:2",)


def test_the_active_alert_is_the_states() -> None:
    a = postable(1)
    state = IdentityState(alert=a, last_event_id="e")
    writes = plan(
        taken(1, states={"issue:1": IdentityState(alert=a)}),
        [Processed(1, (), {"issue:1": (state, KEPT_UNTIL)})],
        [],
        NOW,
    )
    [row] = writes.states
    assert (row.alert, row.ends_at) == (wire_json(a), a.ends_at)


def test_failed_entries_go_to_quarantine_with_their_alert() -> None:
    writes = plan(taken(1), [], [Failed(1, issue(1), "boom " * 500)], NOW)
    [(reason, detail, headers, body, alert)] = writes.quarantined
    assert (reason, headers, body) == ("pipeline_error", "{}", b"")
    assert detail == ("boom " * 500)[:1000]
    assert alert is not None
    assert json.loads(alert) == issue(1).to_json()
    assert writes.done == (1,)

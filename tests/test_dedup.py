"""Dedup windows and repeat escalation on a fake clock; bounds and sizes."""

from __future__ import annotations

import subprocess
import sys

import pytest

from bridge.dedup import Repeats, fingerprint

WINDOW = 300.0
PERIOD = 1800.0


class FakeClock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


@pytest.fixture
def clock() -> FakeClock:
    return FakeClock()


def repeats(clock: FakeClock, *, max_tracked: int = 1000, escalate_after: int = 3) -> Repeats:
    return Repeats(
        window=WINDOW,
        escalate_after=escalate_after,
        escalate_period=PERIOD,
        max_tracked=max_tracked,
        clock=clock,
    )


# --- fingerprint ---------------------------------------------------------------------------


def test_fingerprint_is_stable_and_order_independent() -> None:
    a = fingerprint({"alertname": "SentryIssue", "severity": "low", "project": "web"})
    b = fingerprint({"project": "web", "severity": "low", "alertname": "SentryIssue"})
    assert a == b
    assert len(a) == 16
    int(a, 16)  # hex


@pytest.mark.parametrize(
    ("one", "other"),
    [
        pytest.param({"severity": "low"}, {"severity": "medium"}, id="value"),
        pytest.param({"severity": "low"}, {"severity": "low", "escalated": "true"}, id="extra"),
        pytest.param({"a": "b,c"}, {"a,b": "c"}, id="no-ambiguous-joins"),
        pytest.param({"a": "b", "c": "d"}, {"a": "b\nc", "": "d"}, id="no-ambiguous-lines"),
    ],
)
def test_fingerprint_tells_label_sets_apart(one: dict[str, str], other: dict[str, str]) -> None:
    assert fingerprint(one) != fingerprint(other)


def test_fingerprint_is_the_same_in_another_process() -> None:
    """Logged fingerprints must mean the same after a restart: no per-process hash seed."""
    code = "from bridge.dedup import fingerprint; print(fingerprint({'a': 'b', 'c': 'd'}))"
    out = subprocess.run(
        [sys.executable, "-c", code],
        capture_output=True,
        text=True,
        check=True,
        env={"PYTHONHASHSEED": "123"},
    )
    assert out.stdout.strip() == fingerprint({"c": "d", "a": "b"})


# --- dedup window --------------------------------------------------------------------------


def test_duplicate_within_window(clock: FakeClock) -> None:
    r = repeats(clock)
    assert not r.is_duplicate("issue:1", "aaaa")
    clock.now += WINDOW - 1
    assert r.is_duplicate("issue:1", "aaaa")


def test_not_a_duplicate_once_the_window_has_passed(clock: FakeClock) -> None:
    r = repeats(clock)
    assert not r.is_duplicate("issue:1", "aaaa")
    clock.now += WINDOW
    assert not r.is_duplicate("issue:1", "aaaa")
    # ...and that forward starts a new window.
    clock.now += 1
    assert r.is_duplicate("issue:1", "aaaa")


def test_suppressed_duplicates_do_not_extend_the_window(clock: FakeClock) -> None:
    """The window counts from the last forward, so a steadily firing alert is re-sent
    (and its endsAt refreshed) once per window."""
    r = repeats(clock)
    assert not r.is_duplicate("issue:1", "aaaa")
    for _ in range(4):
        clock.now += 60
        assert r.is_duplicate("issue:1", "aaaa")
    clock.now += 60  # WINDOW after the forward
    assert not r.is_duplicate("issue:1", "aaaa")


def test_a_different_fingerprint_is_never_a_duplicate(clock: FakeClock) -> None:
    r = repeats(clock)
    assert not r.is_duplicate("issue:1", "low")
    clock.now += 1
    assert not r.is_duplicate("issue:1", "critical")
    clock.now += 1
    assert r.is_duplicate("issue:1", "critical")
    # The new fingerprint replaced the old: going back is a change too.
    assert not r.is_duplicate("issue:1", "low")


def test_identities_are_independent(clock: FakeClock) -> None:
    r = repeats(clock)
    assert not r.is_duplicate("issue:1", "aaaa")
    assert not r.is_duplicate("issue:2", "aaaa")
    assert r.is_duplicate("issue:1", "aaaa")


def test_forget_forwards_the_next_firing(clock: FakeClock) -> None:
    r = repeats(clock)
    assert not r.is_duplicate("issue:1", "aaaa")
    r.forget("issue:1")
    assert not r.is_duplicate("issue:1", "aaaa")
    r.forget("issue:unknown")  # forgetting what was never seen is fine


# --- escalation ----------------------------------------------------------------------------


def test_escalates_on_the_nth_firing_within_the_period(clock: FakeClock) -> None:
    r = repeats(clock)
    assert not r.record("issue:1")
    clock.now += 600
    assert not r.record("issue:1")
    clock.now += 600
    assert r.record("issue:1")
    clock.now += 60
    assert r.record("issue:1"), "still firing often: stays escalated"


def test_firings_spread_beyond_the_period_do_not_escalate(clock: FakeClock) -> None:
    r = repeats(clock)
    for _ in range(10):
        assert not r.record("issue:1")
        clock.now += PERIOD / 2  # the one a period ago has left it: never three within it


def test_the_period_is_trailing(clock: FakeClock) -> None:
    r = repeats(clock)
    assert not r.record("issue:1")  # t=0
    clock.now += 1000
    assert not r.record("issue:1")  # t=1000
    clock.now += 800
    assert not r.record("issue:1"), "t=1800: the first firing is exactly a period old"
    clock.now += 100
    assert r.record("issue:1"), "t=1900: 1000, 1800, 1900 are within 1800 s"


def test_escalation_counts_per_identity(clock: FakeClock) -> None:
    r = repeats(clock)
    assert not r.record("issue:1")
    assert not r.record("issue:2")
    assert not r.record("issue:1")
    assert not r.record("issue:2")
    assert r.record("issue:1")


def test_a_resolve_in_between_does_not_reset_the_count(clock: FakeClock) -> None:
    """An alert that keeps coming back is what escalation is for."""
    r = repeats(clock)
    assert not r.record("issue:1")
    r.forget("issue:1")
    assert not r.record("issue:1")
    r.forget("issue:1")
    assert r.record("issue:1")


def test_escalate_after_two(clock: FakeClock) -> None:
    r = repeats(clock, escalate_after=2)
    assert not r.record("issue:1")
    assert r.record("issue:1")


# --- bounds --------------------------------------------------------------------------------


def test_sizes(clock: FakeClock) -> None:
    r = repeats(clock)
    assert r.sizes() == {"dedup": 0, "repeats": 0}
    r.record("issue:1")
    r.is_duplicate("issue:1", "aaaa")
    r.record("issue:2")
    assert r.sizes() == {"dedup": 1, "repeats": 2}
    clock.now += WINDOW
    assert r.sizes() == {"dedup": 0, "repeats": 2}
    clock.now += PERIOD
    assert r.sizes() == {"dedup": 0, "repeats": 0}


def test_bounded_by_max_tracked(clock: FakeClock) -> None:
    r = repeats(clock, max_tracked=10)
    for i in range(100):
        clock.now += 1
        r.record(f"issue:{i}")
        r.is_duplicate(f"issue:{i}", "aaaa")
    assert r.sizes() == {"dedup": 10, "repeats": 10}
    # The most recent are kept, the oldest went first.
    assert r.is_duplicate("issue:99", "aaaa")
    assert not r.is_duplicate("issue:0", "aaaa")


def test_an_identity_keeps_at_most_escalate_after_timestamps(clock: FakeClock) -> None:
    """Memory per identity stays constant however often it fires."""
    r = repeats(clock)
    for _ in range(1000):
        clock.now += 1
        r.record("issue:1")
    stored = r._fired["issue:1"]
    assert len(stored) == 3 * 8  # three packed doubles


@pytest.mark.parametrize(
    "kwargs",
    [
        pytest.param({"window": 0}, id="window"),
        pytest.param({"escalate_period": -1}, id="period"),
        pytest.param({"escalate_after": 0}, id="after"),
        pytest.param({"max_tracked": 0}, id="max_tracked"),
    ],
)
def test_nonsense_parameters_are_refused(clock: FakeClock, kwargs: dict[str, float]) -> None:
    params: dict[str, float] = {
        "window": WINDOW,
        "escalate_after": 3,
        "escalate_period": PERIOD,
        "max_tracked": 10,
    }
    params.update(kwargs)
    with pytest.raises(ValueError, match="must be"):
        Repeats(
            window=params["window"],
            escalate_after=int(params["escalate_after"]),
            escalate_period=params["escalate_period"],
            max_tracked=int(params["max_tracked"]),
            clock=clock,
        )

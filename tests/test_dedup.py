"""The label-set fingerprint the state machine keeps (window and escalation: test_state.py)."""

from __future__ import annotations

import hashlib
import json
import subprocess
import sys

import pytest
from hypothesis import example, given, settings
from hypothesis import strategies as st

from bridge.dedup import fingerprint
from tests.conftest import examples

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


def test_fingerprint_is_the_one_stored_states_hold() -> None:
    """States keep the fingerprint of what they posted (``IdentityState.posted``): the
    hash of a label set must not change from one version to the next, or every alert
    would be posted again as changed. The value is the one the JSON text of the sorted
    pairs gives (non-ASCII kept as is, no spaces)."""
    labels = {"alertname": "SentryIssue", "project": "wéb", "title": 'a "quoted" \u2028 line'}
    assert fingerprint(labels) == "c41a28cd14ae5f52"


@given(st.dictionaries(st.text(), st.text(), max_size=12))
@settings(max_examples=examples(3))
@example({"alertname": "SentryIssue", "project": "wéb", "title": 'a "quoted" \u2028 line'})
@example({"a\\": "\x00\x1f\x7f", "\u2029": "é\n"})
def test_fingerprint_hashes_the_json_of_the_sorted_pairs(labels: dict[str, str]) -> None:
    # What states hold was hashed from this text (json.dumps); the text is built without
    # an encoder per call now, and must stay the same for every label set.
    text = json.dumps(sorted(labels.items()), ensure_ascii=False, separators=(",", ":"))
    digest = hashlib.blake2b(text.encode(), digest_size=8).hexdigest()
    assert fingerprint(labels) == digest

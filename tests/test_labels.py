from __future__ import annotations

import ipaddress
import re
import unicodedata
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from bridge import labels as L
from bridge.alertmanager import LABEL_NAME
from bridge.classify import Decision
from bridge.model import Kind, SentryAlert, Severity
from tests.conftest import examples
from tests.factories import sentry_alert

NOW = datetime(2026, 11, 23, 8, 0, tzinfo=UTC)
SEVERITY_LABELS = {
    Severity.CRITICAL: {"priority": "P1", "page": "true"},
    Severity.LOW: {"priority": "P4", "page": "false"},
}


def issue(**overrides: Any) -> SentryAlert:
    """Issue 42 of project ``backend`` (id 7) in production."""
    return sentry_alert(
        **({"project": "backend", "project_id": "7", "environment": "production"} | overrides)
    )


DEFAULT = Decision(rule=None, severity=Severity.CRITICAL, labels={}, annotations={})


def test_required_labels_for_an_issue() -> None:
    labels = L.build_labels(
        issue(), DEFAULT, Severity.CRITICAL, escalated=False, severity_labels=SEVERITY_LABELS
    )
    assert labels == {
        "alertname": "SentryIssue",
        "severity": "critical",
        "source": "sentry",
        "project": "backend",
        "environment": "production",
        "sentry_issue_id": "42",
        "priority": "P1",
        "page": "true",
    }


def test_metric_alert_identity_label_and_unknowns() -> None:
    alert = issue(
        resource="metric_alert",
        action="critical",
        kind=Kind.METRIC_ALERT,
        identity="metric_alert:99",
        issue_id=None,
        alert_rule_id="99",
        project=None,
        project_id=None,
        environment=None,
    )
    labels = L.build_labels(
        alert, DEFAULT, Severity.LOW, escalated=True, severity_labels=SEVERITY_LABELS
    )
    assert labels["alertname"] == "SentryMetricAlert"
    assert labels["sentry_alert_rule_id"] == "99"
    assert "sentry_issue_id" not in labels
    assert labels["project"] == "unknown"
    assert labels["environment"] == "unknown"
    assert labels["escalated"] == "true"
    assert labels["priority"] == "P4"


def test_project_falls_back_to_id() -> None:
    labels = L.build_labels(
        issue(project=None), DEFAULT, Severity.LOW, escalated=False, severity_labels={}
    )
    assert labels["project"] == "7"


def test_rule_labels_added_and_no_empty_values() -> None:
    decision = Decision(
        rule="agent", severity=Severity.HIGH, labels={"team": "agents", "x": ""}, annotations={}
    )
    labels = L.build_labels(
        issue(), decision, Severity.HIGH, escalated=False, severity_labels=SEVERITY_LABELS
    )
    assert labels["team"] == "agents"
    assert "x" not in labels
    assert all(value for value in labels.values())


@pytest.mark.parametrize(
    ("name", "expected"),
    [
        pytest.param("sentry_url", "sentry_url", id="valid"),
        pytest.param("sentry-url", "sentry_url", id="dash"),
        pytest.param("tags.component", "tags_component", id="dot"),
        pytest.param("9lives", "_9lives", id="leading-digit"),
        pytest.param("", "_", id="empty"),
    ],
)
def test_sanitize_name(name: str, expected: str) -> None:
    assert L.sanitize_name(name) == expected
    assert LABEL_NAME.match(L.sanitize_name(name))


def test_annotations_carry_links_counts_and_rule_without_pii() -> None:
    alert = issue(
        title="Login failed for alice@example.com from 203.0.113.9",
        culprit="auth.views in login",
        web_url="https://sentry.io/organizations/acme/issues/42/",
        users=12,
        events=340,
    )
    decision = Decision(
        rule="many-users",
        severity=Severity.CRITICAL,
        labels={},
        annotations={"runbook_url": "https://runbooks/x"},
    )
    annotations = L.build_annotations(alert, decision)
    assert annotations["summary"] == "Login failed for [email] from [ip]"
    assert annotations["sentry_url"] == "https://sentry.io/organizations/acme/issues/42/"
    assert annotations["users"] == "12"
    assert annotations["events"] == "340"
    assert annotations["classified_by"] == "many-users"
    assert annotations["runbook_url"] == "https://runbooks/x"
    assert "alice" not in " ".join(annotations.values())
    assert all(LABEL_NAME.match(name) for name in annotations)


def test_unknown_counts_are_not_annotated_and_default_rule_named() -> None:
    annotations = L.build_annotations(issue(), DEFAULT)
    assert "users" not in annotations
    assert "events" not in annotations
    assert annotations["classified_by"] == "default"


def test_scrub_caps_length() -> None:
    assert len(L.scrub("x" * 5000)) == L.ANNOTATION_MAX


def test_firing_and_resolved_keep_the_label_set() -> None:
    alert = issue(web_url="https://sentry.io/organizations/acme/issues/42/")
    fired = L.firing(
        alert, {"alertname": "SentryIssue"}, {"summary": "s"}, starts_at=NOW, now=NOW, lifetime=3600
    )
    assert fired.ends_at == NOW + timedelta(hours=1)
    assert fired.generator_url == alert.web_url
    later = NOW + timedelta(minutes=5)
    done = L.resolved(fired, later)
    assert done.labels == fired.labels
    assert done.starts_at == NOW
    assert done.ends_at == later
    assert done.wire()["endsAt"] == "2026-11-23T08:05:00Z"


# --- hostile text: what reaches Alertmanager is valid and bounded ---------------------------

# Every code point of these categories is a control as far as a label is concerned
# (Cc C0/C1/DEL, Cf format incl. bidi overrides and zero-width, Cs lone surrogates, Zl/Zp).
_CONTROL_CATEGORIES = {"Cc", "Cf", "Cs", "Zl", "Zp"}


def is_control(char: str) -> bool:
    return unicodedata.category(char) in _CONTROL_CATEGORIES


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        pytest.param("mail jane.doe+x@example.com.", "mail [email].", id="email-sentence"),
        pytest.param("<o.brien+x@mail.example.co.uk>", "<[email]>", id="email-subdomains"),
        pytest.param("user@exämple.com", "[email]", id="email-unicode"),
        pytest.param("a@b.c@d.com", "a@[email]", id="at-chain"),
        pytest.param("from 203.0.113.9:8080", "from [ip]:8080", id="ipv4-port"),
        pytest.param("2001:db8::1 down", "[ip] down", id="ipv6-compressed"),
        pytest.param("peer ::1.", "peer [ip].", id="ipv6-loopback"),
        pytest.param("link fe80::1%eth0 lost", "link [ip] lost", id="ipv6-zone"),
        pytest.param("mapped ::ffff:192.0.2.1", "mapped [ip]", id="ipv6-mapped"),
        pytest.param("[2001:db8:0:0:0:0:0:1]:443", "[[ip]]:443", id="ipv6-full-bracketed"),
        pytest.param("ip:2001:db8::1", "ip:[ip]", id="ipv6-after-colon"),
        pytest.param("std::vector Foo::Bad", "std::vector Foo::Bad", id="paths-kept"),
        pytest.param("at 12:30:45 on aa:bb:cc", "at 12:30:45 on aa:bb:cc", id="times-kept"),
        pytest.param("a\r\nb\tc", "a b c", id="line-breaks"),
        pytest.param("NUL\x00ESC\x1b[31mred", "NULESC[31mred", id="nul-esc"),
        pytest.param("evil\u202etxt.exe\u2066x\u2069", "eviltxt.exex", id="bidi"),
        pytest.param("zero\u200bwidth\ufeff", "zerowidth", id="zero-width"),
        pytest.param("al\u200bice@exa\u200cmple.com", "[email]", id="email-split-by-zw"),
        pytest.param("lone \ud800 surrogate", "lone  surrogate", id="surrogate"),
        pytest.param("c1 \x85 \x9b", "c1", id="c1"),
    ],
)
def test_scrub(text: str, expected: str) -> None:
    assert L.scrub(text) == expected
    assert L.scrub(expected) == expected


def test_every_control_code_point_is_removed() -> None:
    """The hard-coded table covers every Cc/Cf/Cs/Zl/Zp code point this Python knows."""
    controls = [chr(c) for c in range(0x110000) if is_control(chr(c))]
    assert len(controls) > 2000  # surrogates alone are 2048
    kept = {c for c in controls if L.scrub(f"a{c}b") not in ("ab", "a b")}
    assert kept == set()


def test_scrubbing_only_ever_sees_capped_input(monkeypatch: pytest.MonkeyPatch) -> None:
    """Truncation comes before any pattern: a 200,000-character title never reaches one."""
    seen: list[int] = []

    class Recording:
        def __init__(self, pattern: re.Pattern[str]) -> None:
            self.pattern = pattern

        def sub(self, repl: Any, text: str) -> str:
            seen.append(len(text))
            return self.pattern.sub(repl, text)

    for name in ("_EMAIL", "_IPV4", "_IPV6", "_BREAKS", "_CONTROLS"):
        monkeypatch.setattr(L, name, Recording(getattr(L, name)))
    unit = "jane.doe@example.com 2001:db8::1 10.0.0.1 \r\n\u202e "
    hostile = (unit * (200_000 // len(unit) + 1))[:200_000]
    alert = issue(title=hostile, message=hostile, environment=hostile, project=hostile)
    L.build_labels(alert, DEFAULT, Severity.LOW, escalated=False, severity_labels={})
    annotations = L.build_annotations(alert, DEFAULT)
    assert seen
    assert max(seen) <= L.ANNOTATION_MAX + L._MARGIN
    assert len(annotations["summary"]) <= L.ANNOTATION_MAX
    assert "jane" not in annotations["summary"]


def test_hostile_labels_are_scrubbed_and_short() -> None:
    alert = issue(
        environment="prod-jane@example.com\r\n\u202e" + "x" * 600_000,
        project="web\x00\x1b" + "y" * 100_000,
    )
    labels = L.build_labels(alert, DEFAULT, Severity.LOW, escalated=False, severity_labels={})
    assert labels["environment"].startswith("[email] xxx")
    assert labels["project"].startswith("webyyy")
    assert all(len(value) <= L.LABEL_MAX for value in labels.values())
    assert not any(is_control(c) for value in labels.values() for c in value)


def test_an_environment_that_scrubs_to_nothing_is_unknown() -> None:
    alert = issue(environment="\u200b\u202e", project="\x00")
    labels = L.build_labels(alert, DEFAULT, Severity.LOW, escalated=False, severity_labels={})
    assert (labels["environment"], labels["project"]) == ("unknown", "unknown")


def test_sentry_ids_stay_distinct_and_safe() -> None:
    def label(issue_id: str) -> str:
        alert = issue(issue_id=issue_id, identity=f"issue:{issue_id}")
        labels = L.build_labels(alert, DEFAULT, Severity.LOW, escalated=False, severity_labels={})
        return labels["sentry_issue_id"]

    assert label("42") == "42"
    odd = {label("1.2.3.4"), label("5.6.7.8"), label("a@b.com"), label("x" * 500)}
    assert len(odd) == 4  # scrubbing would have merged the first two
    assert all(len(v) <= L.LABEL_MAX and re.fullmatch(r"[A-Za-z0-9_.-]+", v) for v in odd)


def test_configured_labels_are_cleaned_not_scrubbed() -> None:
    decision = Decision(
        rule="r\u202e",
        severity=Severity.HIGH,
        labels={"team": "db@corp.example\r\n"},
        annotations={"runbook_url": "https://10.0.0.1/runbook\x00"},
    )
    labels = L.build_labels(issue(), decision, Severity.HIGH, escalated=False, severity_labels={})
    annotations = L.build_annotations(issue(), decision)
    assert labels["team"] == "db@corp.example"  # the operator's own text
    assert annotations["runbook_url"] == "https://10.0.0.1/runbook"
    assert annotations["classified_by"] == "r"


@pytest.mark.parametrize(
    "url",
    [
        pytest.param("not a uri", id="words"),
        pytest.param("javascript:alert(1)", id="scheme"),
        pytest.param("/organizations/acme/issues/1/", id="relative"),
        pytest.param("https://user:secret@sentry.io/x", id="userinfo"),
        pytest.param("https://sentry.io/a b", id="space"),
        pytest.param("https://sentry.io/\r\nx", id="crlf"),
        pytest.param("https://sentry.io/%zz", id="bad-escape"),
        pytest.param("https://sentry.io:http/", id="port"),
        pytest.param("https://sentry.io/" + "x" * 3000, id="too-long"),
    ],
)
def test_links_that_are_not_absolute_http_uris_are_dropped(url: str) -> None:
    alert = issue(web_url=url)
    assert "sentry_url" not in L.build_annotations(alert, DEFAULT)
    fired = L.firing(alert, {"alertname": "A"}, {}, starts_at=NOW, now=NOW, lifetime=60)
    assert fired.generator_url is None


def test_evidence_is_bounded_and_scrubbed() -> None:
    evidence = tuple((f"name{n}", f"value {n} from 2001:db8::{n}") for n in range(40))
    annotations = L.build_annotations(issue(evidence=evidence), DEFAULT)
    lines = annotations["evidence"].split("\n")
    assert lines[0] == "name0: value 0 from [ip]"
    assert len(lines) == L.EVIDENCE_MAX + 1
    assert lines[-1] == "…"


def test_all_annotations_together_are_bounded() -> None:
    decision = Decision(
        rule=None,
        severity=Severity.LOW,
        labels={},
        annotations={f"extra{n}": "z" * 5000 for n in range(10)},
    )
    annotations = L.build_annotations(issue(title="t" * 9000, message="m" * 9000), decision)
    assert sum(map(len, annotations.values())) <= L.ANNOTATIONS_MAX
    assert annotations["summary"].startswith("ttt")  # the first ones are kept
    fired = L.firing(
        issue(),
        {"alertname": "A"},
        annotations | {"late\u202e": "\x00" * 10 + "v"},
        starts_at=NOW,
        now=NOW,
        lifetime=60,
    )
    assert sum(map(len, fired.annotations.values())) <= L.ANNOTATIONS_MAX


# --- properties -----------------------------------------------------------------------------

ANY_TEXT = st.text(st.characters(exclude_categories=[]), max_size=300)
HOSTILE_PIECES = st.sampled_from(
    [
        "jane@example.com",
        "2001:db8::1",
        "::1",
        "fe80::1%eth0",
        "::ffff:192.0.2.1",
        "10.0.0.1",
        "\r\n",
        "\x00",
        "\x1b",
        "\u202e",
        "\u2066",
        "\u200b",
        "\ud800",
        "\x85",
        "x" * 300,
        ":",
        "@",
        ".",
        "a.",
        "a@",
    ]
)
HOSTILE_TEXT = st.one_of(
    ANY_TEXT, st.lists(st.one_of(HOSTILE_PIECES, ANY_TEXT), max_size=20).map("".join)
)


@given(text=HOSTILE_TEXT, limit=st.integers(2, 600))
@settings(max_examples=examples(2))
def test_scrub_output_is_bounded_clean_and_stable(text: str, limit: int) -> None:
    out = L.scrub(text, limit)
    assert len(out) <= limit
    assert not any(is_control(c) for c in out)
    out.encode("utf-8")  # valid UTF-8: no lone surrogate
    # Stable, except where a cut or an ``[ip]`` next to leftover colons makes a new
    # candidate (``::0000`` cut to ``::``; ``::00.0.0.0`` to ``::[ip]``): none of it PII.
    if not out.endswith("…") and "[ip]" not in out:
        assert L.scrub(out, limit) == out


# A reference tokenizer, written from what the issue asks and not from the patterns:
# text is made of words and addresses joined by separators; every address planted must be
# gone from the output, every plain word must still be there.
_WORDS = st.text("ghijklmnopqrstuvwxyzGHIJKLMNOPQRSTUVWXYZ_", min_size=1, max_size=12)
_LABEL = st.text("abcdefghijklmnopqrstuvwxyz0123456789-", min_size=1, max_size=10)
_EMAILS = st.builds(
    lambda local, labels, tld: f"{local}@{'.'.join(labels)}.{tld}",
    st.text("abcdef0123456789._%+-", min_size=1, max_size=20),
    st.lists(_LABEL, min_size=1, max_size=3),
    st.text("abcdefghijklmnopqrstuvwxyz", min_size=2, max_size=6),
)
_V6 = st.integers(0, 2**128 - 1).map(ipaddress.IPv6Address)
_IPV6S = st.one_of(
    _V6.map(str),  # compressed
    _V6.map(lambda a: a.exploded),
    st.integers(0, 2**32 - 1).map(lambda n: f"::ffff:{ipaddress.IPv4Address(n)}"),
    _V6.map(lambda a: f"{a}%eth0"),
)
_IPV4S = st.integers(0, 2**32 - 1).map(lambda n: str(ipaddress.IPv4Address(n)))
_SEPARATORS = st.sampled_from(
    [" ", ", ", "; ", "(", ")", "<", ">", "[", "]", "\n", "\t", "'", '"', "=", "/", "|", ". ", ": "]
)


@given(
    st.lists(
        st.tuples(
            st.one_of(
                _WORDS.map(lambda w: ("word", w)),
                _EMAILS.map(lambda e: ("pii", e)),
                _IPV6S.map(lambda a: ("pii", a)),
                _IPV4S.map(lambda a: ("pii", a)),
            ),
            _SEPARATORS,
        ),
        min_size=1,
        max_size=12,
    )
)
@settings(max_examples=examples(2))
def test_planted_addresses_never_survive(tokens: list[tuple[tuple[str, str], str]]) -> None:
    text = "".join(f"{sep}{value}" for (_, value), sep in tokens) + " "
    out = L.scrub(text, limit=len(text) + 10)
    for (kind, value), _ in tokens:
        if kind == "pii":
            assert value not in out
            local = value.partition("@")[0]
            if "@" in value and len(local) > 3:
                assert local not in out
        else:
            assert value in out


def test_an_address_the_cut_goes_through_does_not_leak() -> None:
    """The cut comes before scrubbing, and replacements shorten the text: the address
    the cut went through must not survive as a fragment (``2001:d``)."""
    for shift in range(0, 40):
        text = "x" * shift + "jane.doe@example.com from 2001:db8::1 " * 400
        out = L.scrub(text, limit=L.ANNOTATION_MAX)
        assert out.endswith("…")
        tail = out.rstrip("…").rsplit(" ", 1)[-1]
        assert tail in {"", "from", "[email]", "[ip]"} or tail.strip("x") == ""

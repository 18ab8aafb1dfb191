"""The Alertmanager wire model and client settings: pure functions, no network."""

from __future__ import annotations

import json
import re
import ssl
from datetime import UTC, datetime, timedelta, timezone, tzinfo
from pathlib import Path
from typing import Any

import pytest
from hypothesis import example, given, settings
from hypothesis import strategies as st

from bridge import config
from bridge import labels as L
from bridge.alertmanager import (
    PostableAlert,
    built,
    check_wire,
    ended,
    is_link,
    problem,
    ssl_context,
    target_name,
    wire_json,
)
from bridge.classify import Decision
from bridge.errors import ConfigError
from bridge.model import Severity
from tests.conftest import examples
from tests.factories import START, postable, sentry_alert


@pytest.mark.parametrize(
    ("url", "name"),
    [
        pytest.param("http://am:9093", "am:9093", id="host-port"),
        pytest.param("http://am", "am:80", id="default-http"),
        pytest.param("https://user:pw@am.example.com", "am.example.com:443", id="no-userinfo"),
        pytest.param("http://[::1]:9093", "[::1]:9093", id="ipv6"),
        pytest.param("http://am:9093/alertmanager", "am:9093/alertmanager", id="path"),
    ],
)
def test_target_name(url: str, name: str) -> None:
    assert target_name(url) == name


@pytest.mark.parametrize(
    ("alert", "reason"),
    [
        pytest.param(postable(1), None, id="valid"),
        pytest.param(postable(1, ends_in=0), None, id="resolved-at-start"),
        pytest.param(postable(1, ends_in=-1), "endsAt is before startsAt", id="backwards"),
        pytest.param(
            PostableAlert(labels={"a": "b"}, ends_at=datetime(2024, 1, 1)),
            "endsAt has no time zone",
            id="naive",
        ),
        pytest.param(
            postable(1, generator_url="not a uri"),
            "generatorURL is not an absolute http(s) URI",
            id="generator-url",
        ),
    ],
)
def test_problem(alert: PostableAlert, reason: str | None) -> None:
    assert problem(alert) == reason


def test_tls_settings(tmp_path: Path) -> None:
    assert ssl_context(config.TLS()) is True
    context = ssl_context(config.TLS(insecure_skip_verify=True))
    assert isinstance(context, ssl.SSLContext)
    assert context.verify_mode == ssl.CERT_NONE
    with pytest.raises(ConfigError, match="tls"):
        ssl_context(config.TLS(ca_file=tmp_path / "missing.pem"))
    with pytest.raises(ConfigError, match="cert_file"):
        ssl_context(config.TLS(key_file=tmp_path / "key.pem"))


@pytest.mark.parametrize(
    ("body", "reason"),
    [
        pytest.param(wire_json(postable(1)), None, id="valid"),
        pytest.param(
            wire_json(postable(1, ends_in=-1)), "endsAt is before startsAt", id="backwards"
        ),
        pytest.param(
            '{"labels": {}}',
            "labels: Value error, an alert needs at least one label",
            id="no-labels",
        ),
        pytest.param(
            '{"labels": {"a": "b"}, "status": "firing"}',
            "status: Extra inputs are not permitted",
            id="unknown-field",
        ),
        pytest.param(
            '{"labels": {"sentry-url": "x"}}',
            "labels: Value error, invalid label or annotation name 'sentry-url'",
            id="bad-name",
        ),
        pytest.param("[", "Invalid JSON", id="not-json"),
    ],
)
def test_check_wire(body: str, reason: str | None) -> None:
    found = check_wire(body)
    if reason is None:
        assert found is None
    else:
        assert found is not None
        assert found.startswith(reason)  # pydantic words the rest


def test_wire_json_is_camel_case_rfc3339_without_nulls() -> None:
    assert json.loads(wire_json(postable(1))) == {
        "labels": {"alertname": "SentryIssue", "sentry_issue_id": "1"},
        "annotations": {"summary": "Error 1"},
        "startsAt": "2024-05-01T12:00:00Z",
        "endsAt": "2024-05-01T13:00:00Z",
        "generatorURL": "https://sentry.example/issues/1/",
    }
    assert json.loads(wire_json(PostableAlert(labels={"a": "b"}))) == {
        "labels": {"a": "b"},
        "annotations": {},
    }


def _whole(alert: PostableAlert) -> tuple[object, ...]:
    """Everything a pydantic model instance holds: its fields, which were set, extra, private."""
    return (
        alert.__dict__,
        alert.model_fields_set,
        alert.__pydantic_extra__,
        alert.__pydantic_private__,
    )


@pytest.mark.parametrize("link", ["https://sentry.example/issues/1/", None])
def test_built_is_model_construct_and_ended_is_model_copy(link: str | None) -> None:
    """The webhook path's constructors are pydantic's, without their walk over each field."""
    fields: dict[str, Any] = {
        "labels": {"alertname": "SentryIssue"},
        "annotations": {"summary": "Error"},
        "starts_at": START,
        "ends_at": START + timedelta(hours=1),
        "generator_url": link,
    }
    alert = built(**fields)
    assert _whole(alert) == _whole(PostableAlert.model_construct(**fields))
    assert alert == PostableAlert(**fields)
    # A state read back from the store sets fewer fields (None ones are not in its JSON).
    for before in (alert, PostableAlert.model_validate_json(wire_json(alert))):
        after = ended(before, START)
        assert _whole(after) == _whole(before.model_copy(update={"ends_at": START}))
        assert wire_json(after) == before.model_copy(update={"ends_at": START}).model_dump_json(
            by_alias=True, exclude_none=True
        )


_ZONES: st.SearchStrategy[tzinfo | None] = st.one_of(
    st.none(),
    st.just(UTC),
    st.integers(-14 * 60, 14 * 60).map(lambda m: timezone(timedelta(minutes=m))),
)


@given(
    st.builds(
        lambda when, zone: when.replace(tzinfo=zone),
        st.datetimes(min_value=datetime(1, 1, 2), max_value=datetime(9999, 12, 30)),
        _ZONES,
    )
)
@settings(max_examples=examples(2))
@example(datetime(2024, 5, 1, 12, 0, tzinfo=UTC))
@example(datetime(2024, 5, 1, 12, 0, 0, 1, tzinfo=UTC))
@example(datetime(2024, 5, 1, 12, 0, 0, 412000, tzinfo=timezone(timedelta(hours=-7))))
def test_times_go_out_as_isoformat_with_z_for_utc(when: datetime) -> None:
    # The wire's times are pydantic-core's own (no Python serializer per field): the form
    # Alertmanager always got, ``isoformat()`` with a UTC offset written ``Z``, in both dumps.
    rfc3339 = when.isoformat().replace("+00:00", "Z")
    alert = PostableAlert(labels={"a": "b"}, starts_at=when, ends_at=when)
    assert json.loads(wire_json(alert))["startsAt"] == rfc3339
    assert alert.wire()["endsAt"] == rfc3339


# --- a model of what Alertmanager 0.25 validates ------------------------------------------
# Written from Alertmanager's and Go's code, not from ours: api/v2/models/alert.go
# (generatorURL, format uri -> strfmt v0.21.3 govalidator.IsRequestURI -> Go's
# url.ParseRequestURI), api/v2/api.go postAlertsHandler (removeEmptyLabels, then
# prometheus/common v0.38.0 model.Alert.Validate: LabelName.IsValid, LabelValue.IsValid =
# utf8.ValidString, at least one label, end not before start).

_GO_SCHEME = re.compile(r"[A-Za-z][A-Za-z0-9+.-]*:")
_GO_HOST_OK = set(
    "abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789-_.~!$&'()*+,;=:[]<>\""
)
_GO_USERINFO_OK = set(
    "abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789-._:~!$&'()*+,;=%@"
)
_GO_ESCAPES = re.compile(r"%(?![0-9A-Fa-f]{2})")


def go_parse_request_uri_ok(url: str) -> bool:
    """Go's ``net/url.ParseRequestURI`` (``parse(rawURL, viaRequest=true)``), as a model."""
    if url == "" or any(ord(c) < 0x20 or ord(c) == 0x7F for c in url):
        return False
    if url == "*":
        return True
    scheme = _GO_SCHEME.match(url)
    if url.startswith(":"):
        return False  # missing protocol scheme
    rest = url[scheme.end() :] if scheme else url
    rest = rest.partition("?")[0]
    if not rest.startswith("/"):
        return scheme is not None  # opaque: accepted when there is a scheme
    if scheme and rest.startswith("//"):
        authority, slash, rest = rest[2:].partition("/")
        rest = slash + rest
        userinfo, at, host = authority.rpartition("@")
        if at and not set(userinfo) <= _GO_USERINFO_OK:
            return False
        if host.startswith("["):
            close = host.find("]")
            if close < 0:
                return False
            port = host[close + 1 :]
        else:
            colon = host.rfind(":")
            port = host[colon:] if colon >= 0 else ""
        if port and not ((port[0] == ":" and port[1:].isdigit()) or port == ":"):
            return False
        if _GO_ESCAPES.search(host) or any(
            c < "\x80" and c not in _GO_HOST_OK for c in host if c != "%"
        ):
            return False
    return not _GO_ESCAPES.search(rest)


def _label_name_ok(name: str) -> bool:
    return bool(name) and all(
        c.isascii() and (c.isalpha() or c == "_" or (c.isdigit() and i > 0))
        for i, c in enumerate(name)
    )


def _utf8(text: str) -> bool:
    try:
        text.encode("utf-8")
    except UnicodeEncodeError:
        return False
    return True


def alertmanager_refuses(alert: dict[str, Any]) -> str | None:
    """Why Alertmanager 0.25 would refuse one element of ``POST /api/v2/alerts``, or None."""
    url = alert.get("generatorURL")
    if url is not None and not go_parse_request_uri_ok(url):
        return "422 generatorURL"
    for field in ("labels", "annotations"):
        values = {k: v for k, v in alert.get(field, {}).items() if v != ""}
        for name, value in values.items():
            if not _label_name_ok(name) or not _utf8(value):
                return f"400 {field}"
        if field == "labels" and not values:
            return "400 no labels"
    starts, ends = alert.get("startsAt"), alert.get("endsAt")
    if starts and ends and datetime.fromisoformat(ends) < datetime.fromisoformat(starts):
        return "400 times"
    return None


@pytest.mark.parametrize(
    ("url", "accepted"),
    [
        pytest.param("https://sentry.io/organizations/acme/issues/1/", True, id="sentry"),
        pytest.param("not a uri", False, id="words"),
        pytest.param("/relative/path", True, id="absolute-path"),
        pytest.param("mailto:x", True, id="opaque"),
        pytest.param("https://x/a\r\nb", False, id="crlf"),
        pytest.param("https://x/%zz", False, id="bad-escape"),
        pytest.param("https://x:80a/", False, id="port"),
        pytest.param("https://x y/", False, id="host-space"),
    ],
)
def test_the_go_model_agrees_with_what_alertmanager_answered(url: str, accepted: bool) -> None:
    # "not a uri" is the case Alertmanager 0.25 answers 422 in tests/integration/test_faults.py.
    assert go_parse_request_uri_ok(url) is accepted


URL_PIECES = st.sampled_from(
    [*"hts:/[]@%?#.-_~!$&'()*+,;= aZ09\r\x7f\u00e9", "http://", "https://", "%2F", "::1"]
)
URLISH = st.lists(URL_PIECES, max_size=30).map("".join)


@given(URLISH)
@example("https://a.Z/%2F?x=[::1]#y")
@example("http://h#")
@settings(max_examples=examples(2.5))
def test_every_link_we_send_is_one_alertmanager_accepts(url: str) -> None:
    if is_link(url):
        assert go_parse_request_uri_ok(url)
        assert url.lower().startswith(("http://", "https://"))


HOSTILE = st.one_of(
    st.text(st.characters(exclude_categories=[]), max_size=200),
    st.sampled_from(
        [
            "jane@example.com\r\n\u202e" + "x" * 5000,
            "not a uri",
            "https://sentry.io/x y",
            "2001:db8::1",
            "\x00\x1b[2J",
            "\ud800",
        ]
    ),
)
OPTIONAL = st.one_of(st.none(), HOSTILE)


@given(
    title=HOSTILE,
    message=OPTIONAL,
    environment=OPTIONAL,
    project=OPTIONAL,
    web_url=st.one_of(OPTIONAL, st.just("https://sentry.io/organizations/acme/issues/42/")),
    short_id=OPTIONAL,
    level=OPTIONAL,
    rule_name=OPTIONAL,
    issue_id=st.one_of(st.just("42"), HOSTILE.filter(bool)),
    evidence=st.lists(st.tuples(HOSTILE, HOSTILE), max_size=20),
)
@settings(max_examples=examples(1.5))
def test_any_payload_text_becomes_an_alert_alertmanager_accepts(
    title: str,
    message: str | None,
    environment: str | None,
    project: str | None,
    web_url: str | None,
    short_id: str | None,
    level: str | None,
    rule_name: str | None,
    issue_id: str,
    evidence: list[tuple[str, str]],
) -> None:
    alert = sentry_alert(
        title=title,
        message=message,
        environment=environment,
        project=project,
        web_url=web_url,
        short_id=short_id,
        level=level,
        alert_rule_name=rule_name,
        issue_id=issue_id,
        identity=f"issue:{issue_id}",
        evidence=tuple(evidence),
    )
    decision = Decision(rule="r", severity=Severity.HIGH, labels={"team": "t"}, annotations={})
    labels = L.build_labels(alert, decision, Severity.HIGH, escalated=False, severity_labels={})
    annotations = L.build_annotations(alert, decision)
    fired = L.firing(alert, labels, annotations, starts_at=START, now=START, lifetime=60)
    body = wire_json(fired)
    assert check_wire(body) is None
    sent = json.loads(body)
    assert alertmanager_refuses(sent) is None
    assert all(len(v) <= L.LABEL_MAX for v in sent["labels"].values())
    assert all(len(v) <= L.ANNOTATION_MAX for v in sent["annotations"].values())
    assert sum(map(len, sent["annotations"].values())) <= L.ANNOTATIONS_MAX
    assert len(body.encode()) < 80_000  # the whole alert is bounded
    text = " ".join([*sent["labels"].values(), *sent["annotations"].values()])
    assert "jane@example.com" not in text
    assert "2001:db8::1" not in text

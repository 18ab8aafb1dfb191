"""``bridge.send``'s pure parts: the examples, the headers per family, the URL.

The requests are checked by the bridge's own reading of a webhook (``sentry.authenticate``
and ``sentry.read``), so what ``send`` posts is what the bridge accepts from Sentry; the
HTTP round trip is in tests/integration/test_send.py."""

from __future__ import annotations

import json

import pytest
from pydantic import SecretStr

from bridge import config, send, sentry
from bridge.errors import Unauthorized
from bridge.model import SentryAlert, State

NOW = 1_780_000_000.0
SECRETS = config.Sentry(
    client_secrets=[SecretStr("client")],
    service_hook_secrets=[SecretStr("hook")],
    legacy_token=SecretStr("token"),
)


def prepared(name: str, secret: str | None = None) -> send.Prepared:
    spec = send.EXAMPLES[name]
    return send.prepare(
        send.example_body(name, NOW),
        family=spec.family,
        resource=spec.resource,
        url="http://127.0.0.1:8080/webhooks/sentry",
        secret=secret or send.configured_secret(spec.family, SECRETS),
        now=NOW,
    )


def read(p: send.Prepared) -> tuple[str, SentryAlert]:
    headers = {k.lower(): v for k, v in p.headers.items()}
    method = sentry.authenticate(headers, p.body, p.params.get("token"), SECRETS)
    _, result = sentry.read(headers, p.body, base_url="https://sentry.io")
    assert isinstance(result, SentryAlert), result
    return method, result


@pytest.mark.parametrize(
    ("name", "method", "identity", "state", "action"),
    [
        pytest.param(
            "issue-alert", "integration", "issue:1117540176", State.FIRING, "triggered", id="issue"
        ),
        pytest.param(
            "issue-resolved",
            "integration",
            "issue:1117540176",
            State.RESOLVED,
            "resolved",
            id="issue-resolved",
        ),
        pytest.param(
            "metric-critical",
            "integration",
            "metric_alert:7011",
            State.FIRING,
            "critical",
            id="critical",
        ),
        pytest.param(
            "metric-warning",
            "integration",
            "metric_alert:7011",
            State.FIRING,
            "warning",
            id="warning",
        ),
        pytest.param(
            "metric-resolved",
            "integration",
            "metric_alert:7011",
            State.RESOLVED,
            "resolved",
            id="metric-resolved",
        ),
        pytest.param(
            "service-hook", "service_hook", "issue:4507718802", State.FIRING, "event", id="hook"
        ),
        pytest.param(
            "legacy", "legacy_token", "issue:1117540176", State.FIRING, "triggered", id="legacy"
        ),
    ],
)
def test_every_example_is_accepted_as_sentry_sends_it(
    name: str, method: str, identity: str, state: State, action: str
) -> None:
    assert set(send.EXAMPLES) >= {name}
    got_method, alert = read(prepared(name))
    assert (got_method, alert.identity, alert.state, alert.action) == (
        method,
        identity,
        state,
        action,
    )


def test_the_examples_are_pairs_that_fire_and_resolve() -> None:
    """Each resolve example resolves the identity a firing example fired."""
    firing = {read(prepared(n))[1].identity for n in send.EXAMPLES if "resolved" not in n}
    resolved = {read(prepared(n))[1].identity for n in send.EXAMPLES if "resolved" in n}
    assert resolved <= firing
    assert resolved == {"issue:1117540176", "metric_alert:7011"}


def test_a_repeat_is_a_new_body_and_request() -> None:
    first, second = prepared("issue-alert"), prepared("issue-alert")
    assert first.request_id != second.request_id
    assert first.body != second.body
    ids = [json.loads(p.body)["data"]["event"]["event_id"] for p in (first, second)]
    assert ids[0] != ids[1]
    assert all(len(i) == 32 for i in ids)
    # The event is from now, never older than what it follows.
    assert json.loads(first.body)["data"]["event"]["timestamp"] == NOW
    metric = [prepared("metric-critical").body for _ in range(2)]
    assert metric[0] != metric[1]


@pytest.mark.parametrize(
    ("family", "present", "absent"),
    [
        pytest.param(
            "integration",
            {
                "Sentry-Hook-Signature",
                "Sentry-Hook-Resource",
                "Sentry-Hook-Timestamp",
                "Request-ID",
            },
            {"X-ServiceHook-Signature"},
            id="integration",
        ),
        pytest.param(
            "service_hook",
            {"X-ServiceHook-Signature", "X-ServiceHook-Timestamp", "X-ServiceHook-GUID"},
            {"Sentry-Hook-Signature", "Sentry-Hook-Resource"},
            id="service-hook",
        ),
        pytest.param(
            "legacy",
            {"User-Agent", "Content-Type"},
            {"Sentry-Hook-Signature", "X-ServiceHook-Signature"},
            id="legacy",
        ),
    ],
)
def test_headers_per_family(family: send.Family, present: set[str], absent: set[str]) -> None:
    p = send.prepare(b"{}", family=family, resource="issue", url="u", secret="s", now=NOW)
    assert present <= set(p.headers)
    assert not absent & set(p.headers)
    assert p.headers["Content-Type"] == "application/json"
    assert (p.params == {"token": "s"}) == (family == "legacy")


def test_the_timestamp_is_whole_seconds_as_sentry_sends_it() -> None:
    p = send.prepare(
        b"{}", family="integration", resource=None, url="u", secret=None, now=NOW + 0.7
    )
    assert p.headers["Sentry-Hook-Timestamp"] == str(int(NOW))
    assert "Sentry-Hook-Signature" not in p.headers  # no secret: unsigned


def test_a_wrong_secret_is_what_the_bridge_refuses() -> None:
    with pytest.raises(Unauthorized):
        read(prepared("metric-critical", secret="wrong"))


def test_guess_family_of_saved_bodies() -> None:
    for name, spec in send.EXAMPLES.items():
        body = json.loads(send.example_body(name, NOW))
        assert send.guess_family(body) == spec.family, name
        if spec.resource is not None:
            assert send.guess_resource(body) == spec.resource, name


@pytest.mark.parametrize(
    ("given", "host", "expected"),
    [
        pytest.param(None, "0.0.0.0", "http://127.0.0.1:8080/webhooks/sentry", id="default"),
        pytest.param(None, "::", "http://127.0.0.1:8080/webhooks/sentry", id="any-v6"),
        pytest.param(None, "10.1.2.3", "http://10.1.2.3:8080/webhooks/sentry", id="host"),
        pytest.param("http://b:9", "0.0.0.0", "http://b:9/webhooks/sentry", id="bare-url"),
        pytest.param("http://b:9/x?token=1", "0.0.0.0", "http://b:9/x?token=1", id="full-url"),
    ],
)
def test_webhook_url(given: str | None, host: str, expected: str) -> None:
    cfg = config.Config(server=config.Server(host=host), sentry=SECRETS)
    assert send.webhook_url(given, cfg) == expected


def test_expected_says_when_a_rule_drops_it() -> None:
    rules = config.Classification.model_validate(
        {"rules": [{"name": "quiet", "match": {"kind": "metric_alert"}, "drop": True}]}
    )
    cfg = config.Config(sentry=SECRETS, classification=rules)
    assert "quiet" in str(send.expected(prepared("metric-critical"), cfg))
    # A resolve is sent whatever the rules say: it resolves what fired.
    want = send.expected(prepared("metric-resolved"), cfg)
    assert want == send.Expected("sentry_alert_rule_id", "7011", firing=False)

"""The requests of Sentry's alert rule editor, in the shapes and with the headers Sentry
sends them (getsentry/sentry sentry_apps/external_requests/alert_rule_action_requester.py and
select_requester.py, tests/sentry/sentry_apps/external_requests/), in-process; and the schema
``sentry-bridge sentry-schema`` prints, against the rules of sentry_apps/api/parsers/schema.py.
tests/integration/test_rule_settings.py runs them against the real process."""

from __future__ import annotations

import hashlib
import hmac
import json
from collections.abc import AsyncIterator
from pathlib import Path

import anyio
import httpx
import pytest
from prometheus_client import CollectorRegistry

from bridge import cli, config, sentry_ui
from bridge.app import create_app
from bridge.compose import Bridge, build

pytestmark = pytest.mark.anyio
SECRET = "ui-client-secret"
INSTALLATION = "a4c1c1a5-5d3c-4e7a-9c52-0d7a3f2b6c11"
AM_CONFIG = """
route: {receiver: default}
receivers:
  - name: default
  - name: payments-pager
"""


def app_signature(body: str, secret: str = SECRET) -> str:
    """SentryApp.build_signature: hex HMAC-SHA256 of the body, keyed with the client secret."""
    return hmac.new(secret.encode(), body.encode(), hashlib.sha256).hexdigest()


def alertmanager(request: httpx.Request) -> httpx.Response:
    if request.url.path == "/api/v2/status":
        return httpx.Response(200, json={"config": {"original": AM_CONFIG}})
    return httpx.Response(200)


@pytest.fixture
def bridge(tmp_path: Path) -> Bridge:
    cfg = config.parse(
        {
            "sentry": {"client_secrets": f"older-secret,{SECRET}"},
            "store": {"data_dir": str(tmp_path)},
            "classification": {
                "rule_settings": {"teams": ["payments", "search"], "services": ["checkout"]}
            },
            "escalation": {
                "policies": {"tiers": [{"after": "15m", "labels": {"escalation_tier": "2"}}]}
            },
        },
        env={},
    )
    return build(
        cfg, registry=CollectorRegistry(), alertmanager_transport=httpx.MockTransport(alertmanager)
    )


@pytest.fixture
async def client(bridge: Bridge) -> AsyncIterator[httpx.AsyncClient]:
    app = create_app(bridge)
    app.state.receivers.transport = httpx.MockTransport(alertmanager)
    async with (
        app.router.lifespan_context(app),
        httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://bridge") as c,
    ):
        yield c


def save_request(fields: list[dict[str, str]]) -> tuple[bytes, dict[str, str]]:
    """What SentryAppAlertRuleActionRequester POSTs: its body and headers."""
    body = json.dumps({"fields": fields, "installationId": INSTALLATION})
    headers = {
        "Content-Type": "application/json",
        "Request-ID": "5f1c0e2b9a8d4c7e",
        "Sentry-App-Signature": app_signature(body),
    }
    return body.encode(), headers


async def test_valid_settings_are_accepted(client: httpx.AsyncClient) -> None:
    body, headers = save_request(
        [
            {"name": "severity", "value": "critical"},
            {"name": "team", "value": "payments"},
            {"name": "runbook_url", "value": "https://wiki.example.com/rb"},
        ]
    )
    response = await client.post(sentry_ui.ACTION_URI, content=body, headers=headers)
    assert response.status_code == 200
    assert response.json() == {"message": "settings accepted"}


def counted(bridge: Bridge, request: str, outcome: str) -> float | None:
    labels = {"request": request, "outcome": outcome}
    return bridge.metrics.registry.get_sample_value("sentry_bridge_editor_requests_total", labels)


async def test_a_bad_setting_is_refused_with_a_message_for_the_user(
    client: httpx.AsyncClient, bridge: Bridge
) -> None:
    body, headers = save_request(
        [
            {"name": "severity", "value": "rules"},
            {"name": "team", "value": "paymnets"},
            {"name": "runbook_url", "value": "wiki/runbooks/pay"},
        ]
    )
    response = await client.post(sentry_ui.ACTION_URI, content=body, headers=headers)
    # >= 400 refuses the save; Sentry shows response.json()["message"] in the editor.
    assert response.status_code == 400
    message = response.json()["message"]
    assert "team 'paymnets' is not one of payments, search" in message
    assert "runbook 'wiki/runbooks/pay' must be an absolute http(s) URL" in message
    assert counted(bridge, "save", "refused") == 1
    assert counted(bridge, "save", "accepted") == 0


@pytest.mark.parametrize(
    "signature",
    [
        pytest.param(None, id="unsigned"),
        pytest.param("0" * 64, id="forged"),
        pytest.param(app_signature("{}", "another-secret"), id="another-key"),
        pytest.param(app_signature(""), id="the-GET-signature-replayed"),
    ],
)
async def test_a_request_not_signed_by_sentry_is_refused(
    client: httpx.AsyncClient, bridge: Bridge, signature: str | None
) -> None:
    body, headers = save_request([{"name": "team", "value": "payments"}])
    del headers["Sentry-App-Signature"]
    if signature is not None:
        headers["Sentry-App-Signature"] = signature
    response = await client.post(sentry_ui.ACTION_URI, content=body, headers=headers)
    assert response.status_code == 401
    options = await client.get("/sentry/options/team", headers=headers)
    assert options.status_code == (200 if signature == app_signature("") else 401)
    assert counted(bridge, "save", "unauthorized") == 1


async def test_the_webhook_signature_does_not_vouch_for_it(client: httpx.AsyncClient) -> None:
    body, headers = save_request([{"name": "team", "value": "payments"}])
    headers["Sentry-Hook-Signature"] = headers.pop("Sentry-App-Signature")
    assert (
        await client.post(sentry_ui.ACTION_URI, content=body, headers=headers)
    ).status_code == 401


async def test_too_large_is_refused(client: httpx.AsyncClient) -> None:
    body = b"x" * (sentry_ui.MAX_BODY + 1)
    headers = {"Sentry-App-Signature": app_signature(body.decode())}
    assert (
        await client.post(sentry_ui.ACTION_URI, content=body, headers=headers)
    ).status_code == 413


def options_headers() -> dict[str, str]:
    # SelectRequester signs the empty string: build_signature("").
    return {"Content-Type": "application/json", "Sentry-App-Signature": app_signature("")}


@pytest.mark.parametrize(
    ("field", "query", "values"),
    [
        pytest.param("team", "", ["payments", "search"], id="teams"),
        pytest.param("team", "PAY", ["payments"], id="teams-as-the-user-types"),
        pytest.param("service", "", ["checkout"], id="services"),
        pytest.param("receiver", "", ["default", "payments-pager"], id="receivers"),
        pytest.param("escalation_policy", "", ["tiers", "none"], id="escalation-policies"),
    ],
)
async def test_options(
    client: httpx.AsyncClient, field: str, query: str, values: list[str]
) -> None:
    params = {"installationId": INSTALLATION, "projectSlug": "web-frontend"}
    if query:
        params["query"] = query
    response = await client.get(
        f"/sentry/options/{field}", params=params, headers=options_headers()
    )
    assert response.status_code == 200
    # select_requester.py: a list of {"label", "value"} (utils.py SELECT_OPTIONS_SCHEMA).
    assert response.json() == [{"label": v, "value": v} for v in values]


async def test_unknown_options_field(client: httpx.AsyncClient) -> None:
    response = await client.get("/sentry/options/labels", headers=options_headers())
    assert response.status_code == 404


async def test_unreachable_alertmanager_gives_no_receivers_in_bounded_time(
    bridge: Bridge,
) -> None:
    def dead(request: httpx.Request) -> httpx.Response:
        raise httpx.ConnectError("refused", request=request)

    receivers = sentry_ui.Receivers(bridge.config, httpx.MockTransport(dead))
    assert await receivers.first() == ()
    assert receivers.fetched_at is not None  # tried, and will try again after the TTL


async def test_a_hanging_alertmanager_delays_the_first_options_by_the_bound_only(
    bridge: Bridge,
) -> None:
    never = anyio.Event()

    async def hangs(request: httpx.Request) -> httpx.Response:
        await never.wait()
        return httpx.Response(200)

    receivers = sentry_ui.Receivers(bridge.config, httpx.MockTransport(hangs))
    with anyio.fail_after(sentry_ui.RECEIVERS_TIMEOUT * 4):
        assert await receivers.first() == ()


# --- the schema ---------------------------------------------------------------------------


def test_schema_follows_sentrys_rules_for_an_alert_rule_action() -> None:
    """The constraints of sentry_apps/api/parsers/schema.py SCHEMA, checked one by one."""
    schema = sentry_ui.schema()
    [element] = schema["elements"]
    assert element["type"] == "alert-rule-action"
    assert element["title"]
    settings = element["settings"]
    assert settings["type"] == "alert-rule-settings"
    assert settings["uri"].startswith("/")
    assert 1 <= len(settings["description"]) <= 140
    assert len(settings["required_fields"]) >= 1
    fields = settings["required_fields"] + settings["optional_fields"]
    for field in fields:
        assert {"type", "label", "name"} <= field.keys()
        assert field["type"] in ("select", "text", "textarea")
        if field["type"] == "select":
            assert ("uri" in field) != ("options" in field)  # oneOf
            if "uri" in field:
                assert field["uri"].startswith("/")
            else:
                assert all(len(o) == 2 and isinstance(o[0], str) for o in field["options"])
        else:
            assert "default" not in field
    names = [f["name"] for f in fields]
    assert names == ["severity", "team", "service", "runbook_url", "escalation_policy"]


def test_schemas_uris_are_the_routes_served(bridge: Bridge) -> None:
    app = create_app(bridge)
    paths = {getattr(route, "path", "") for route in app.routes}
    fields = sentry_ui.schema()["elements"][0]["settings"]
    assert fields["uri"] in paths
    for field in fields["optional_fields"]:
        if "uri" in field:
            assert sentry_ui.OPTIONS_URI in paths
            assert field["uri"].rpartition("/")[2] in sentry_ui.FIELDS


def test_sentry_schema_command(capsys: pytest.CaptureFixture[str], tmp_path: Path) -> None:
    missing = str(tmp_path / "none.yaml")
    assert (
        cli.main(["sentry-schema", "--config", missing, "--public-url", "https://b.example/"]) == 0
    )
    out, err = capsys.readouterr()
    assert json.loads(out) == sentry_ui.schema()
    assert "Webhook URL: https://b.example/webhooks/sentry" in err
    assert cli.main(["sentry-schema", "--public-url", "https://b.example/bridge"]) == 2
    assert "no path" in capsys.readouterr().err


def test_docs_show_the_schema_the_command_prints() -> None:
    text = (Path(__file__).parents[1] / "docs" / "sentry.md").read_text(encoding="utf-8")
    block = text[text.index("<!-- sentry-schema -->") : text.index("<!-- /sentry-schema -->")]
    shown = block.split("```json", 1)[1].rsplit("```", 1)[0]
    assert json.loads(shown) == sentry_ui.schema()


async def test_bodies_being_received_are_bounded(bridge: Bridge) -> None:
    """Unauthenticated bodies in memory stay within MAX_READING x MAX_BODY: past it, 503."""
    app = create_app(bridge)
    started = anyio.Event()
    release = anyio.Event()
    held = 0

    async def slow_body() -> AsyncIterator[bytes]:
        nonlocal held
        held += 1
        if held == sentry_ui.MAX_READING:
            started.set()
        await release.wait()
        yield b"{}"

    transport = httpx.ASGITransport(app=app)
    async with (
        app.router.lifespan_context(app),
        httpx.AsyncClient(transport=transport, base_url="http://bridge") as client,
        anyio.create_task_group() as tasks,
    ):
        answers: list[int] = []

        async def send() -> None:
            response = await client.post(sentry_ui.ACTION_URI, content=slow_body())
            answers.append(response.status_code)

        for _ in range(sentry_ui.MAX_READING):
            tasks.start_soon(send)
        await started.wait()
        extra = await client.post(sentry_ui.ACTION_URI, content=b"{}")
        assert extra.status_code == 503
        release.set()
    assert answers == [401] * sentry_ui.MAX_READING  # received, then refused: not signed

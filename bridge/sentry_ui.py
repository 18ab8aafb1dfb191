"""The requests Sentry makes for the bridge's alert rule action (``sentry-bridge sentry-schema``),
served on the webhook port since Sentry must reach them.

Sentry calls them on the integration's Webhook URL's scheme and host with the path replaced by
the schema's ``uri`` (getsentry/sentry, sentry_apps/external_requests/):

* ``POST /sentry/alert-rule-action`` when a user saves an alert rule with the action
  (``alert_rule_action_requester.py``): body ``{"fields": [{"name", "value"}],
  "installationId"}``. A 4xx refuses the save; Sentry shows the answer's ``message`` in the
  alert rule editor, prefixed with the integration's name (``_get_response_message``).
* ``GET /sentry/options/<field>?installationId=&projectSlug=&query=`` for a select field's
  options (``select_requester.py``): the answer is ``[{"label", "value"}]``
  (``utils.py`` ``SELECT_OPTIONS_SCHEMA``).

Both carry ``Sentry-App-Signature``: the hex HMAC-SHA256, keyed with the client secret, of the
body for the POST and of the empty string for the GET (``build_signature("")``). The GET's
signature is therefore the same for every request of one secret: it proves the caller holds a
signature Sentry made, not that the request is fresh; options reveal only what the schema
offers anyway. Anything unsigned or signed with another key is a 401.

Sentry's ``safe_urlopen`` waits up to 30 s for these (sentry/http.py), but the user waits in
the editor, so every answer here is computed from memory: the receivers of each Alertmanager
(``GET /api/v2/status`` ``config.original``) are fetched in the background at most every
minute, each fetch bounded by ``RECEIVERS_TIMEOUT``.
"""

from __future__ import annotations

import asyncio
import contextlib
import hmac
import json
import logging
import time
from collections.abc import Mapping, Sequence
from typing import Any

import httpx
import yaml
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route

from bridge import alertmanager
from bridge.classify import check_settings
from bridge.config import Config
from bridge.model import Severity
from bridge.sentry import settings as setting

log = logging.getLogger("bridge.sentry_ui")

ACTION_URI = "/sentry/alert-rule-action"
OPTIONS_URI = "/sentry/options/{field}"
FIELDS = ("team", "service", "receiver", setting.ESCALATION_POLICY)
MAX_BODY = 64 * 1024  # a save request holds a handful of fields
# Save requests receiving their body at once; past it 503. With MAX_BODY, at most 1 MiB of
# unauthenticated bodies in memory, whoever floods the port (issue 14's bound for webhooks).
MAX_READING = 16
RECEIVERS_TTL = 60.0
RECEIVERS_TIMEOUT = 0.5
MAX_OPTIONS = 500


def _signed(headers: Mapping[str, str], body: bytes, config: Config) -> bool:
    given = headers.get("sentry-app-signature", "").strip().lower().encode("ascii", "replace")
    if not given:
        return False
    return any(
        hmac.compare_digest(hmac.digest(key, body, "sha256").hex().encode(), given)
        for key in (s.get_secret_value().encode() for s in config.sentry.client_secrets)
        if key
    )


def _message(text: str, status: int = 200) -> JSONResponse:
    return JSONResponse({"message": text}, status_code=status)


_UNSIGNED = {"message": "not signed by Sentry with this bridge's client secret"}


async def _bounded_body(request: Request) -> bytes | None:
    chunks, size = [], 0
    async for chunk in request.stream():
        size += len(chunk)
        if size > MAX_BODY:
            return None
        chunks.append(chunk)
    return b"".join(chunks)


def validate_fields(fields: object, config: Config) -> list[str]:
    """The problems with a saved action's fields, as sentences for the user."""
    if not isinstance(fields, list):
        return ["the request has no list of fields"]
    chosen = dict(setting.read(fields))
    _, problems = check_settings(
        chosen, config.classification.rule_settings, list(config.escalation.policies)
    )
    return problems


class Receivers:
    """The receiver names of every reachable Alertmanager, refreshed in the background."""

    def __init__(self, config: Config, transport: httpx.AsyncBaseTransport | None = None):
        self.config = config
        self.transport = transport
        self.names: tuple[str, ...] = ()
        self.fetched_at: float | None = None
        self._task: asyncio.Task[None] | None = None

    def current(self) -> tuple[str, ...]:
        """What is known now; starts a refresh when stale, never waits for it."""
        stale = self.fetched_at is None or time.monotonic() - self.fetched_at > RECEIVERS_TTL
        if stale and (self._task is None or self._task.done()):
            self._task = asyncio.create_task(self.refresh())
        return self.names

    async def first(self) -> tuple[str, ...]:
        """The first answer may wait for the first fetch, at most ``RECEIVERS_TIMEOUT``."""
        self.current()
        if self.fetched_at is None and self._task is not None:
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(asyncio.shield(self._task), RECEIVERS_TIMEOUT)
        return self.names

    async def refresh(self) -> None:
        found: set[str] = set()
        cfg = self.config.alertmanager
        async with alertmanager.build_client(cfg, self.transport) as client:
            results = await asyncio.gather(
                *(self._one(client, url) for url in cfg.urls), return_exceptions=True
            )
        for result in results:
            if isinstance(result, BaseException):
                continue
            found.update(result)
        self.names = tuple(sorted(found))[:MAX_OPTIONS]
        self.fetched_at = time.monotonic()

    async def _one(self, client: httpx.AsyncClient, url: str) -> list[str]:
        try:
            async with asyncio.timeout(RECEIVERS_TIMEOUT):
                response = await client.get(f"{url}/api/v2/status")
            response.raise_for_status()
            original = response.json()["config"]["original"]
            receivers = yaml.safe_load(original).get("receivers") or []
        except (httpx.HTTPError, TimeoutError, KeyError, TypeError, ValueError, yaml.YAMLError):
            log.info("alertmanager receivers not read", extra={"alertmanager": url})
            return []
        return [str(r["name"]) for r in receivers if isinstance(r, dict) and r.get("name")]


def _options(values: Sequence[str], query: str) -> list[dict[str, str]]:
    needle = query.strip().lower()
    return [{"label": v, "value": v} for v in values if needle in v.lower()][:MAX_OPTIONS]


def severity_options() -> list[tuple[str, str]]:
    """The severity select's static options, [value, label] as the schema wants them."""
    return [(setting.USE_RULES, "Use the bridge's rules")] + [(s.value, s.value) for s in Severity]


# A refused save is a 400 with the message the user sees; anything else 4xx is the request's.
_OUTCOMES = {200: "accepted", 400: "refused", 401: "unauthorized", 503: "busy"}


def _count(request: Request, kind: str, status: int) -> None:
    metrics = request.app.state.bridge.metrics
    metrics.editor_requests.labels(kind, _OUTCOMES.get(status, "bad_request")).inc()


def _config(request: Request) -> Config:
    config: Config = request.app.state.bridge.config  # as reloaded
    return config


def routes() -> list[Route]:
    """The routes, for ``bridge.app.create_app``; it sets ``app.state.receivers``."""

    reading = 0

    async def action(request: Request) -> Response:
        response = await _save(request)
        _count(request, "save", response.status_code)
        return response

    async def _save(request: Request) -> Response:
        nonlocal reading
        config = _config(request)
        if reading >= MAX_READING:
            return _message("busy; save again in a moment", 503)
        reading += 1
        try:
            async with asyncio.timeout(config.server.read_timeout):
                body = await _bounded_body(request)
        except TimeoutError:
            return _message("the request body did not arrive in time", 408)
        finally:
            reading -= 1
        if body is None:
            return _message("the request is too large", 413)
        if not _signed(request.headers, body, config):
            return JSONResponse(_UNSIGNED, status_code=401)
        try:
            data = json.loads(body)
        except ValueError:
            return _message("the request is not JSON", 422)
        problems = validate_fields(data.get("fields") if isinstance(data, dict) else None, config)
        if problems:
            return _message("; ".join(problems), 400)
        return _message("settings accepted")

    async def options(request: Request) -> Response:
        response = await _options_of(request)
        _count(request, "options", response.status_code)
        return response

    async def _options_of(request: Request) -> Response:
        config = _config(request)
        if not _signed(request.headers, b"", config):
            return JSONResponse(_UNSIGNED, status_code=401)
        field = request.path_params["field"]
        query = request.query_params.get("query", "")[:128]
        allowed = config.classification.rule_settings
        if field == "team":
            return JSONResponse(_options(allowed.teams, query))
        if field == "service":
            return JSONResponse(_options(allowed.services, query))
        if field == setting.ESCALATION_POLICY:
            return JSONResponse(_options([*config.escalation.policies, setting.NO_POLICY], query))
        if field == "receiver":
            receivers: Receivers = request.app.state.receivers
            receivers.config = config
            names = await receivers.first()
            return JSONResponse(_options(names, query))
        return _message(f"no options for {field!r}; one of {', '.join(FIELDS)}", 404)

    return [
        Route(ACTION_URI, action, methods=["POST"]),
        Route(OPTIONS_URI, options, methods=["GET"]),
    ]


# --- the schema `sentry-bridge sentry-schema` prints ----------------------------------------

TITLE = "Page through Alertmanager"
DESCRIPTION = (
    "How the bridge pages for this alert rule. Severity overrides the bridge's rules; team "
    "and service become routing labels."
)


def schema() -> dict[str, Any]:
    """The integration's UI schema (the Schema field of the integration in Sentry): one
    ``alert-rule-action`` whose settings form sends the names of ``bridge.sentry.settings``.
    The shapes are sentry_apps/api/parsers/schema.py's (``alert-rule-action``,
    ``alert-rule-settings``, ``select`` with ``uri`` or ``options``, ``text``)."""

    def select(name: str, label: str) -> dict[str, object]:
        uri = OPTIONS_URI.format(field=name)
        return {"type": "select", "label": label, "name": name, "uri": uri, "async": False}

    return {
        "elements": [
            {
                "type": "alert-rule-action",
                "title": TITLE,
                "settings": {
                    "type": "alert-rule-settings",
                    "uri": ACTION_URI,
                    "description": DESCRIPTION,
                    "required_fields": [
                        {
                            "type": "select",
                            "label": "Severity",
                            "name": setting.SEVERITY,
                            "options": [list(option) for option in severity_options()],
                        }
                    ],
                    "optional_fields": [
                        select(setting.TEAM, "Team"),
                        select(setting.SERVICE, "Service"),
                        {"type": "text", "label": "Runbook URL", "name": setting.RUNBOOK_URL},
                        select(setting.ESCALATION_POLICY, "Escalation policy"),
                    ],
                },
            }
        ]
    }

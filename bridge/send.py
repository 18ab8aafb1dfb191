"""``sentry-bridge send``: post a webhook to a running bridge exactly as Sentry would.

The ``amtool alert add`` of this project: a first alert end to end without Sentry. The
body is a saved payload or a built-in example (``bridge/examples/``), signed per family
as getsentry/sentry signs it:

* integration platform: ``Sentry-Hook-Resource``, ``Sentry-Hook-Timestamp``, ``Request-ID``
  and ``Sentry-Hook-Signature``, the hex HMAC-SHA256 of the body keyed with the client
  secret (sentry_apps/api/serializers/app_platform_event.py);
* project service hook: ``X-ServiceHook-Signature`` (the same scheme, the hook's secret),
  ``X-ServiceHook-Timestamp``, ``X-ServiceHook-GUID`` (sentry_apps/tasks/service_hooks.py);
* the legacy WebHooks plugin: no signature, ``?token=`` in the URL, as the bridge asks.

With ``--wait`` it then polls ``GET /api/v2/alerts`` (openapi ``getAlerts``; it lists
active alerts only, so a resolved one disappears) of every Alertmanager the running bridge
reports in ``/-/status`` (this shell's config only when the bridge does not say:
``bridge.client``) until the alert, found by its identity label, is there (or gone, for a
resolve). It needs the signing secret, and nothing else secret (not the database URL).
"""

from __future__ import annotations

import asyncio
import hashlib
import hmac
import json
import time
import uuid
from dataclasses import dataclass
from importlib import resources
from pathlib import Path
from typing import Any, Literal

import httpx

from bridge import __version__, client, config, labels, sentry
from bridge.alertmanager import build_client, target_name
from bridge.classify import Decision, classify
from bridge.errors import ConfigError
from bridge.model import Ignored, Kind, SentryAlert, Severity, State
from bridge.status import base_url as status_base_url

Family = Literal["integration", "service_hook", "legacy"]
WEBHOOK_PATH = "/webhooks/sentry"
POLL_INTERVAL = 0.25


@dataclass(frozen=True)
class Example:
    file: str
    family: Family
    resource: str | None
    about: str


# One Sentry issue fires and resolves; one metric alert rule goes critical, warning, resolved.
EXAMPLES = {
    "issue-alert": Example(
        "issue-alert.json", "integration", "event_alert", "an issue alert fires (issue 1117540176)"
    ),
    "issue-resolved": Example(
        "issue-resolved.json", "integration", "issue", "issue 1117540176 is resolved"
    ),
    "metric-critical": Example(
        "metric-critical.json", "integration", "metric_alert", "metric alert rule 7011: critical"
    ),
    "metric-warning": Example(
        "metric-warning.json", "integration", "metric_alert", "metric alert rule 7011: warning"
    ),
    "metric-resolved": Example(
        "metric-resolved.json", "integration", "metric_alert", "metric alert rule 7011 resolves"
    ),
    "service-hook": Example(
        "service-hook.json",
        "service_hook",
        None,
        "a project service hook's event (issue 4507718802)",
    ),
    "legacy": Example(
        "legacy.json", "legacy", None, "the legacy WebHooks plugin (issue 1117540176)"
    ),
}

_RESOURCE_KEYS = (
    ("metric_alert", "metric_alert"),
    ("triggered_rule", "event_alert"),
    ("activity", "activity_alert"),  # its data also holds "issue"
    ("issue", "issue"),
    ("error", "error"),
    ("installation", "installation"),
)


def guess_resource(data: Any) -> str | None:
    """An integration webhook names its resource only in a header; a saved
    payload has lost it, so read it off the keys of ``data``."""
    inner = data.get("data") if isinstance(data, dict) else None
    if isinstance(inner, dict):
        for key, resource in _RESOURCE_KEYS:
            if key in inner:
                return resource
    return None


def guess_family(data: Any) -> Family:
    if guess_resource(data) is not None:
        return "integration"
    kind = sentry.detect_resource({}, data)  # from the body's shape, without headers
    if kind == "service_hook":
        return "service_hook"
    return "legacy" if kind == "legacy" else "integration"


def example_body(name: str, now: float) -> bytes:
    """The example, made a new webhook: a new event id and the event's time now, so a
    repeat is a new delivery (not the same body again) and never older than what it follows."""
    text = resources.files("bridge.examples").joinpath(EXAMPLES[name].file).read_text("utf-8")
    data = json.loads(text)
    for old in {str(v) for v in _values(data, "event_id")}:
        text = text.replace(old, uuid.uuid4().hex)
    for old in {str(v).rpartition("notification_uuid=")[2] for v in _values(data, "web_url")}:
        if old:
            text = text.replace(old, str(uuid.uuid4()))
    data = json.loads(text)
    _set_times(data, now)
    return json.dumps(data).encode()


def _values(node: Any, key: str) -> list[Any]:
    if isinstance(node, dict):
        found = [node[key]] if key in node else []
        return found + [v for child in node.values() for v in _values(child, key)]
    if isinstance(node, list):
        return [v for child in node for v in _values(child, key)]
    return []


def _set_times(node: Any, now: float) -> None:
    """Events carry ``timestamp`` (seconds) and ``datetime`` (ISO 8601)."""
    if isinstance(node, dict):
        if "event_id" in node:
            if "timestamp" in node:
                node["timestamp"] = round(now, 3)
            if "datetime" in node:
                node["datetime"] = time.strftime("%Y-%m-%dT%H:%M:%S.000000Z", time.gmtime(now))
        for child in node.values():
            _set_times(child, now)
    elif isinstance(node, list):
        for child in node:
            _set_times(child, now)


def signature(body: bytes, secret: str) -> str:
    return hmac.new(secret.encode("utf-8"), body, hashlib.sha256).hexdigest()


@dataclass(frozen=True)
class Prepared:
    """One webhook as Sentry would send it."""

    url: str
    body: bytes
    headers: dict[str, str]
    params: dict[str, str]
    request_id: str
    family: Family


def prepare(
    body: bytes,
    *,
    family: Family,
    resource: str | None,
    url: str,
    secret: str | None,
    now: float,
) -> Prepared:
    request_id = str(uuid.uuid4())
    timestamp = str(int(now))
    headers = {"Content-Type": "application/json"}
    params: dict[str, str] = {}
    if family == "integration":
        headers.update({"Request-ID": request_id, "Sentry-Hook-Timestamp": timestamp})
        if resource:
            headers["Sentry-Hook-Resource"] = resource
        if secret:
            headers["Sentry-Hook-Signature"] = signature(body, secret)
    elif family == "service_hook":
        headers.update({"X-ServiceHook-Timestamp": timestamp, "X-ServiceHook-GUID": request_id})
        if secret:
            headers["X-ServiceHook-Signature"] = signature(body, secret)
    else:
        headers["User-Agent"] = f"sentry-webhooks/{__version__}"
        if secret:
            params["token"] = secret
    return Prepared(url, body, headers, params, request_id, family)


def webhook_url(url: str | None, cfg: config.Config) -> str:
    """``--url`` (a bare ``http://host:port`` gets the webhook path), or the config's
    listener on loopback."""
    if url is None:
        host = cfg.server.host
        host = "127.0.0.1" if host in {"0.0.0.0", "::", ""} else host
        host = f"[{host}]" if ":" in host else host
        return f"http://{host}:{cfg.server.port}{WEBHOOK_PATH}"
    parsed = httpx.URL(url)
    return url.rstrip("/") + WEBHOOK_PATH if parsed.path in {"", "/"} else url


def configured_secret(family: Family, cfg: config.Sentry) -> str | None:
    secrets: list[Any] = {
        "integration": cfg.client_secrets,
        "service_hook": cfg.service_hook_secrets,
        "legacy": [cfg.legacy_token] if cfg.legacy_token else [],
    }[family]
    return secrets[0].get_secret_value() if secrets else None


@dataclass(frozen=True)
class Expected:
    """What ``--wait`` looks for: the identity label, and whether the alert should be
    active (firing) or gone (resolved)."""

    label: str
    value: str
    firing: bool


def expected(prepared: Prepared, cfg: config.Config) -> Expected | str:
    """The alert the bridge will make of the webhook (the same reading and rules as the
    bridge, from the same config), or why there is nothing to wait for."""
    headers = {k.lower(): v for k, v in prepared.headers.items()}
    _, result = sentry.read(headers, prepared.body, base_url=cfg.sentry.base_url)
    if isinstance(result, Ignored):
        return f"the bridge ignores it ({result.reason}): nothing reaches Alertmanager"
    alert: SentryAlert = result
    firing = alert.state is not State.RESOLVED
    if firing:
        decision = classify(alert, cfg.classification)
        if decision.dropped:
            return f"rule {decision.rule!r} drops it: nothing reaches Alertmanager"
    label = "sentry_issue_id" if alert.kind is Kind.ISSUE else "sentry_alert_rule_id"
    # The identity label as the bridge writes it (labels.build_labels), whatever the rest.
    blank = Decision(rule=None, severity=None, labels={}, annotations={})
    built = labels.build_labels(alert, blank, Severity.MEDIUM, escalated=False, severity_labels={})
    return Expected(label, built[label], firing)


async def post(prepared: Prepared, timeout: float) -> httpx.Response:  # noqa: ASYNC109
    async with httpx.AsyncClient(timeout=timeout) as client:
        return await client.post(
            prepared.url, content=prepared.body, headers=prepared.headers, params=prepared.params
        )


async def wait(cfg: config.Alertmanager, want: Expected, timeout: float) -> dict[str, bool]:  # noqa: ASYNC109
    """Poll every Alertmanager until each shows ``want``; per Alertmanager, whether it did."""
    deadline = time.monotonic() + timeout
    matcher = f'{want.label}="{want.value}"'
    status = {target_name(url): False for url in cfg.urls}
    async with build_client(cfg) as client:

        async def one(url: str) -> None:
            name = target_name(url)
            while True:
                try:
                    response = await client.get(
                        f"{url}/api/v2/alerts", params={"filter": ['source="sentry"', matcher]}
                    )
                    response.raise_for_status()
                    present = bool(response.json())
                    if present == want.firing:
                        status[name] = True
                        return
                except (httpx.HTTPError, ValueError):
                    pass  # not up (yet): keep trying until the deadline
                if time.monotonic() >= deadline:
                    return
                await asyncio.sleep(POLL_INTERVAL)

        await asyncio.gather(*(one(url) for url in cfg.urls))
    return status


def run(
    *,
    payload: str | None,
    example: str | None,
    config_path: str,
    url: str | None,
    admin_url: str | None,
    secret: str | None,
    family: Family | None,
    resource: str | None,
    wait_for: bool,
    timeout: float,
) -> int:
    offline = client.load(config_path)
    cfg = offline.config
    now = time.time()
    if example is not None:
        spec = EXAMPLES[example]
        body = example_body(example, now)
        family = family or spec.family
        resource = resource or spec.resource
        what = f"example {example}: {spec.about}"
    else:
        assert payload is not None
        body = Path(payload).read_bytes()
        data = json.loads(body)
        family = family or guess_family(data)
        resource = resource or (guess_resource(data) if family == "integration" else None)
        what = payload
    key = secret or configured_secret(family, cfg.sentry)
    if key is None and not cfg.sentry.allow_unauthenticated:
        needs = {
            "integration": "SENTRY_CLIENT_SECRET",
            "service_hook": "SENTRY_SERVICE_HOOK_SECRET",
            "legacy": "SENTRY_LEGACY_TOKEN",
        }[family]
        raise ConfigError(
            f"nothing to sign a {family} webhook with: set {needs} as the bridge has it, "
            "or pass --secret"
        )
    prepared = prepare(
        body, family=family, resource=resource, url=webhook_url(url, cfg), secret=key, now=now
    )
    print(f"POST {prepared.url} ({what}; {family}, request {prepared.request_id})")
    response = asyncio.run(post(prepared, timeout=10.0))
    print(f"{response.status_code} {response.text.strip()}")
    if not response.is_success:
        return 1
    if not wait_for:
        return 0
    want = expected(prepared, cfg)
    if isinstance(want, str):
        print(want)
        return 0
    # The Alertmanagers the running bridge posts to, not this shell's defaults.
    # /-/status is on the admin listener (bridge.admin), not the webhook port of --url.
    found = client.bridge_status(status_base_url(admin_url, cfg))
    urls = client.alertmanagers(cfg, found)
    for item in offline.needed:
        if item.startswith("alertmanager."):
            client.say(f"  note: not set here, so polled without it: {item}")
    goal = "active" if want.firing else "resolved (no longer listed)"
    print(f"waiting up to {timeout:g}s for {want.label}={want.value} to be {goal} in:")
    targets = cfg.alertmanager.model_copy(update={"urls": urls})
    status = asyncio.run(wait(targets, want, timeout))
    for name, ok in status.items():
        print(f"  {name}: {'yes' if ok else f'NO, not after {timeout:g}s'}")
    return 0 if all(status.values()) else 1

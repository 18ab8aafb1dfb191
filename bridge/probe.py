"""The test alert of ``sentry-bridge doctor``: sent through the running bridge as Sentry
sends an issue alert, read back from every Alertmanager, resolved.

The body is ``send``'s ``issue-alert`` example marked ``data.bridge_test`` (a key Sentry
never sends, in a body signed with the client secret), which the bridge classifies low with
``sentry_test="true"`` whatever the rules and settings, never escalates and never enriches
(bridge.classify ``TEST_DECISION``, the path Sentry's own "Send Test Notification" takes
too; it ends by itself, bridge.state ``TEST_LIFETIME``). Each Alertmanager's ``GET
/api/v2/alerts`` (openapi ``getAlerts``, ``gettableAlert.receivers``) says where it was
routed; then ``issue-resolved`` for the same issue, until no Alertmanager lists it. Its
issue id is above 9·10^18, which Sentry's 64-bit issue ids will not reach, so it never
meets a real issue.
"""

from __future__ import annotations

import asyncio
import json
import random
import time
from dataclasses import dataclass
from typing import Any

import httpx

from bridge import config, send
from bridge.alertmanager import build_client, target_name

CHECK_TIMEOUT = 5.0  # each request
TEST_RULE = "sentry-bridge doctor test alert"
# What the test alert must show in Alertmanager (and never page="true").
TEST_LABELS = {"sentry_test": "true", "severity": "low"}


@dataclass(frozen=True)
class Check:
    """One of doctor's checks: what it checked, whether it passed, and in words what was
    found or what to do."""

    name: str
    ok: bool
    detail: str


def bodies(issue: str, now: float) -> tuple[bytes, bytes]:
    """The test alert, firing and resolved: the examples with their issue replaced."""
    fire = json.loads(send.example_body("issue-alert", now).replace(b"1117540176", issue.encode()))
    fire["data"]["bridge_test"] = True
    fire["data"]["triggered_rule"] = TEST_RULE
    fire["data"]["event"]["title"] = "sentry-bridge doctor: a test alert, not a real issue"
    fire["data"].pop("issue_alert", None)  # no settings of a real rule
    resolve = send.example_body("issue-resolved", now).replace(b"1117540176", issue.encode())
    return json.dumps(fire).encode(), resolve


async def _post(cfg: config.Config, url: str, body: bytes, resource: str) -> str | None:
    secret = send.configured_secret("integration", cfg.sentry)
    prepared = send.prepare(
        body, family="integration", resource=resource, url=url, secret=secret, now=time.time()
    )
    try:
        response = await send.post(prepared, timeout=CHECK_TIMEOUT)
    except httpx.HTTPError as exc:
        return f"POST {url}: no answer ({type(exc).__name__}): is the bridge running there?"
    if not response.is_success:
        return f"POST {url}: {response.status_code} {response.text.strip()[:200]}"
    return None


async def _seen(
    cfg: config.Alertmanager, urls: list[str], issue: str, firing: bool, wait: float
) -> dict[str, str | None]:
    """Per Alertmanager, once the test alert is there (``firing``) or gone: what it shows
    (the receivers it was routed to, or labels it should not have); None when not so
    within ``wait`` seconds."""
    deadline = time.monotonic() + wait
    found: dict[str, str | None] = {}
    async with build_client(cfg) as http:

        async def one(url: str) -> None:
            while True:
                try:
                    response = await http.get(
                        f"{url}/api/v2/alerts",
                        params={"filter": [f'sentry_issue_id="{issue}"']},
                        timeout=CHECK_TIMEOUT,
                    )
                    response.raise_for_status()
                    alerts = response.json()
                    if bool(alerts) == firing:
                        found[target_name(url)] = _shown(alerts)
                        return
                except (httpx.HTTPError, ValueError, KeyError, TypeError, AttributeError):
                    pass  # not up (yet): keep trying until the deadline
                if time.monotonic() >= deadline:
                    found[target_name(url)] = None
                    return
                await asyncio.sleep(send.POLL_INTERVAL)

        await asyncio.gather(*(one(url) for url in urls))
    return found


def _shown(alerts: list[dict[str, Any]]) -> str:
    """The receivers of the test alert as Alertmanager lists them (``receivers[].name`` of
    openapi ``gettableAlert``), and any label that says it could page."""
    receivers = sorted({r["name"] for a in alerts for r in a["receivers"]})
    shown = "received by " + (", ".join(receivers) or "no receiver")
    for alert in alerts:
        labels = alert["labels"]
        wrong = {k: v for k, v in TEST_LABELS.items() if labels.get(k) != v}
        if wrong or labels.get("page") == "true":
            shown += f" BUT labelled {labels}"
    return shown


async def test_alert(cfg: config.Config, webhook: str, urls: list[str], wait: float) -> Check:
    # Not a secret, only unlikely to repeat.
    if not cfg.sentry.client_secrets and not cfg.sentry.allow_unauthenticated:
        return Check(
            "test alert",
            False,
            "not sent: it is signed as Sentry's integration platform signs (Sentry-Hook-"
            "Signature), with sentry.client_secrets, which is not set here",
        )
    issue = str(9_000_000_000_000_000_000 + random.randrange(10**17))  # noqa: S311
    fire, resolve = bodies(issue, time.time())
    label = f'sentry_issue_id="{issue}"'
    failed = await _post(cfg, webhook, fire, "event_alert")
    if failed:
        return Check("test alert", False, f"{label}: {failed}")
    targets = cfg.alertmanager.model_copy(update={"urls": urls})
    fired = await _seen(targets, urls, issue, True, wait)
    parts = [f"{name}: {shown or 'NOT seen'}" for name, shown in sorted(fired.items())]
    failed = await _post(cfg, webhook, resolve, "issue")
    if failed:
        return Check("test alert", False, f"{label}: {'; '.join(parts)}; resolve: {failed}")
    gone = await _seen(targets, urls, issue, False, wait)
    parts += [
        f"{name}: {'resolved' if shown is not None else 'NOT resolved'}"
        for name, shown in sorted(gone.items())
    ]
    ok = all(s is not None and "BUT" not in s for s in (*fired.values(), *gone.values()))
    detail = f"{label}: " + "; ".join(parts)
    if not ok:
        detail += f" (waited {wait:g}s): see the bridge's log and sentry-bridge status for why"
    return Check("test alert", ok, detail)

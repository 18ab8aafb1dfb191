"""What the bridge holds, for an operator: ``GET /-/status`` and ``sentry-bridge status``.

The answer (JSON) lists the active alerts by Sentry identity (their label sets, the
first ``limit`` of them, and how many in all), the queue depth per Alertmanager, the
Alertmanagers failing now, the newest dead letters with Alertmanager's reason, and how
many webhooks are quarantined (per reason, and the oldest one's age), which store and
Alertmanagers the bridge uses, and when this replica's reconciler last finished a round
(bridge/reconcile.py); per alert, whether Sentry's API last said its issue escalates.
Labels only: no annotations, which carry Sentry's text.

``POST /-/status/requeue-dead-letters`` queues the dead letters again, after the cause
was fixed (Alertmanager's credentials, a proxy's limit): resolves as they were, firing
alerts only if they are still the active alert of their identity
(``SqliteStore.requeue_dead_letters``). Both are on the admin listener (``bridge.admin``,
``server.admin_host``/``admin_port``, loopback by default), never on the webhook port.
The admin listener handles one request at a time, and the answer is encoded off the event
loop, so a caller looping on ``?limit=10000`` cannot slow the webhooks down.
"""

from __future__ import annotations

import asyncio
import json
import sys
import time
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import httpx
from starlette.requests import Request
from starlette.responses import JSONResponse, Response

from bridge import client, config
from bridge.errors import StoreError

DEFAULT_LIMIT = 100


def _encode(data: object) -> bytes:
    return json.dumps(data, ensure_ascii=False, separators=(",", ":")).encode()


async def endpoint(request: Request) -> Response:
    bridge = request.app.state.bridge
    try:
        limit = max(1, min(10_000, int(request.query_params.get("limit", DEFAULT_LIMIT))))
    except ValueError:
        return JSONResponse({"error": "limit: not a number"}, status_code=400)
    # Read from the store: available even while the pipeline is stuck (/-/healthy red).
    try:
        data = await bridge.status(limit)
    except StoreError as exc:  # e.g. PostgreSQL not reachable since the start (the spool)
        return JSONResponse({"error": str(exc)}, status_code=503)
    return Response(await asyncio.to_thread(_encode, data), media_type="application/json")


async def requeue_endpoint(request: Request) -> Response:
    bridge = request.app.state.bridge
    try:
        return JSONResponse(await bridge.requeue_dead_letters())
    except StoreError as exc:
        return JSONResponse({"error": str(exc)}, status_code=503)


def base_url(url: str | None, cfg: config.Config) -> str:
    """The admin listener (``server.admin_host``/``admin_port``), where ``status`` and
    ``quarantine`` talk to a running bridge; ``url`` overrides it."""
    if url is not None:
        return url.rstrip("/")
    host = cfg.server.admin_host
    host = "127.0.0.1" if host in {"0.0.0.0", "::", ""} else host
    host = f"[{host}]" if ":" in host else host
    return f"http://{host}:{cfg.server.admin_port}"


def _when(ts: float | None) -> str:
    if ts is None:
        return "-"
    return datetime.fromtimestamp(ts, UTC).strftime("%Y-%m-%d %H:%M:%SZ")


def render(status: dict[str, Any]) -> str:
    """The answer as a human reads it."""
    out = [f"active alerts: {status['active_count']}"]
    for alert in status["active"]:
        labels = alert["labels"]
        extra = ",".join(
            f"{k}={v}"
            for k, v in sorted(labels.items())
            if k not in {"alertname", "source", "sentry_issue_id", "sentry_alert_rule_id"}
        )
        out.append(f"  {alert['identity']:<28} until {_when(alert['ends_at'])}  {extra}")
        if alert.get("tiers") or alert.get("next_step_at"):
            step = alert.get("next_step_at")
            due = f"; next step due {_when(step)}" if step else ""
            out.append(f"  {'':<28} escalation: {alert.get('tiers', 0)} tier(s) firing{due}")
        if alert.get("sentry_escalating"):
            out.append(f"  {'':<28} Sentry's API last said: escalating")
    if status["active_count"] > len(status["active"]):
        out.append(f"  ... {status['active_count'] - len(status['active'])} more (--limit)")
    out.extend(_reconciler(status.get("reconciler"), time.time()))
    out.append(f"inbox (accepted, not decided yet): {status['inbox']}")
    out.append("queue per Alertmanager:")
    down = set(status["alertmanager_down"])
    for name, depth in status["queue_depth"].items():
        out.append(f"  {name}: {depth} queued{'  (failing now)' if name in down else ''}")
    out.append(f"dead letters: {status['dead_letter_count']}")
    for dead in status["dead_letters"]:
        identity = dead["labels"].get("sentry_issue_id") or dead["labels"].get(
            "sentry_alert_rule_id", "?"
        )
        out.append(f"  {_when(dead['at'])} {dead['alertmanager']} {identity}: {dead['reason']}")
    if status["dead_letter_count"]:
        out.append("  (fix the cause, then: sentry-bridge status --requeue-dead-letters)")
    out.append(f"quarantined webhooks: {status['quarantined']}")
    reasons = status.get("quarantine_reasons") or {}
    for reason, count in sorted(reasons.items()):
        out.append(f"  {reason}: {count}")
    age = status.get("quarantine_oldest_age_seconds")
    if age is not None:
        out.append(f"  oldest: {_age(age)} ago (sentry-bridge quarantine list)")
    return "\n".join(out)


def _reconciler(view: dict[str, Any] | None, now: float) -> list[str]:
    """When this replica's reconciler (bridge/reconcile.py) last finished a round."""
    if not view:  # a bridge older than the field
        return []
    if not view["enabled"]:
        return ["reconciler: off (no sentry.api_token): pages end alert_lifetime after a webhook"]
    last = view["last_round_at"]
    if last is None:
        return [
            "reconciler: no round completed on this replica yet (only the replica holding "
            "the periodic lease runs them)"
        ]
    ago, every = _age(max(0.0, now - last)), _age(view["interval_seconds"])
    return [f"reconciler: last round {_when(last)} ({ago} ago; every {every})"]


def _age(seconds: float) -> str:
    for unit, size in (("d", 86400), ("h", 3600), ("m", 60)):
        if seconds >= size:
            return f"{seconds / size:.1f}{unit}"
    return f"{seconds:.0f}s"


def run(*, url: str | None, config_path: str, limit: int, requeue: bool, as_json: bool) -> int:
    # Only where the bridge listens is read: no secret is needed (bridge/client.py).
    if url is None or Path(config_path).exists():
        url = base_url(url, client.load(config_path).config)
    else:
        client.say(f"config: not read ({config_path} is not there; --url given)")
    client.say(f"bridge: {url}")
    with httpx.Client(base_url=url.rstrip("/"), timeout=30.0) as http:
        if requeue:
            response = http.post("/-/status/requeue-dead-letters")
            if response.status_code != 200:
                print(f"{response.status_code} {response.text}", file=sys.stderr)
                return 1
            counts = response.json()
            print(
                f"re-queued {counts['requeued']} dead letter(s); dropped "
                f"{counts['superseded']} firing alert(s) resolved or replaced since"
            )
        response = http.get("/-/status", params={"limit": limit})
    if response.status_code != 200:
        print(f"{response.status_code} {response.text}", file=sys.stderr)
        return 1
    status = response.json()
    client.say(f"store: {status.get('store', '?')}")
    client.say(f"alertmanagers: {', '.join(status.get('alertmanagers', [])) or '?'}")
    print(json.dumps(status, indent=2) if as_json else render(status))
    return 0

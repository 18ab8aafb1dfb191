"""A recording proxy in front of Alertmanager: when did it get each alert?

The bridge is pointed at the proxy; the proxy forwards every request to Alertmanager as it
came and, for every ``POST /api/v2/alerts`` (Alertmanager's openapi ``postAlerts``: a JSON
list of postable alerts), writes one line to a file: when the body was in, when
Alertmanager answered, its status, and which Sentry identities the body carried (the
``sentry_issue_id`` / ``sentry_alert_rule_id`` labels), firing or resolved. An alert is
visible in Alertmanager's API once Alertmanager has answered 2xx to a post carrying it, so
the benchmark reads "visible" off the file instead of polling Alertmanager's filtered GET,
which itself takes about 230 ms at 30,000 alerts.

Times are ``time.monotonic()``: CLOCK_MONOTONIC, the same clock in every process of the
machine, so they compare with the load generator's 202 times.

Run: ``python -m uvicorn --factory bench.recorder:create_app`` with ``RECORDER_UPSTREAM``
(Alertmanager's URL) and ``RECORDER_FILE`` in the environment (``bench/servers.py`` does).
"""

from __future__ import annotations

import contextlib
import json
import os
import time
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import IO, Any

import httpx
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route

ALERTS_PATH = "/api/v2/alerts"
IDENTITY_LABELS = (("sentry_issue_id", "issue"), ("sentry_alert_rule_id", "metric_alert"))
# Hop-by-hop headers (RFC 9110 7.6.1) and the ones httpx sets itself.
_DROPPED = {"connection", "keep-alive", "transfer-encoding", "content-length", "host"}


def identities(body: bytes, now: datetime) -> list[tuple[str, bool]]:
    """(identity, firing) of every alert in a ``postAlerts`` body; an alert whose
    ``endsAt`` is not after ``now`` is resolved. Alerts with neither identity label are
    named by their sorted labels."""
    found = []
    for alert in json.loads(body):
        labels = alert.get("labels", {})
        name = next(
            (f"{kind}:{labels[key]}" for key, kind in IDENTITY_LABELS if key in labels),
            json.dumps(labels, sort_keys=True),
        )
        ends = alert.get("endsAt")
        firing = not ends or datetime.fromisoformat(ends.replace("Z", "+00:00")) > now
        found.append((name, firing))
    return found


@dataclass(frozen=True)
class Post:
    """One ``POST /api/v2/alerts`` as the proxy forwarded it."""

    received: float  # body read (monotonic seconds)
    answered: float  # Alertmanager's answer read
    status: int
    alerts: tuple[tuple[str, bool], ...]


def record_line(post: Post) -> str:
    return json.dumps(
        {"in": post.received, "out": post.answered, "status": post.status, "alerts": post.alerts}
    )


class Recording:
    """Reads the proxy's file as it grows: ``poll()`` returns the posts recorded since the
    last call (a line still being written waits for the next call)."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self._offset = 0

    def poll(self) -> list[Post]:
        with self.path.open("rb") as data:
            data.seek(self._offset)
            chunk = data.read()
        complete = chunk[: chunk.rfind(b"\n") + 1]
        self._offset += len(complete)
        posts = []
        for line in complete.splitlines():
            record = json.loads(line)
            posts.append(
                Post(
                    record["in"],
                    record["out"],
                    record["status"],
                    tuple((name, firing) for name, firing in record["alerts"]),
                )
            )
        return posts


class _Proxy:
    def __init__(self, upstream: str, out: IO[str]) -> None:
        self.upstream = upstream.rstrip("/")
        self.out = out
        self.client = httpx.AsyncClient(
            timeout=30, limits=httpx.Limits(max_connections=64, max_keepalive_connections=64)
        )

    async def forward(self, request: Request) -> Response:
        body = await request.body()
        received = time.monotonic()
        headers = {k: v for k, v in request.headers.items() if k.lower() not in _DROPPED}
        try:
            upstream = await self.client.request(
                request.method,
                self.upstream + request.url.path,
                params=request.url.query,
                content=body,
                headers=headers,
            )
        except httpx.HTTPError as exc:
            return JSONResponse({"error": f"upstream: {exc!r}"}, status_code=502)
        answered = time.monotonic()
        if request.method == "POST" and request.url.path == ALERTS_PATH:
            alerts: tuple[tuple[str, bool], ...] = ()
            # Not a list of alerts: Alertmanager's answer says so; no alerts recorded.
            with contextlib.suppress(ValueError, TypeError, AttributeError):
                alerts = tuple(identities(body, datetime.now().astimezone()))
            self.out.write(record_line(Post(received, answered, upstream.status_code, alerts)))
            self.out.write("\n")
            self.out.flush()
        kept = {k: v for k, v in upstream.headers.items() if k.lower() not in _DROPPED}
        kept.pop("content-encoding", None)  # httpx has decoded the body
        return Response(upstream.content, status_code=upstream.status_code, headers=kept)


def create_app(environ: dict[str, Any] | None = None) -> Starlette:
    env = os.environ if environ is None else environ
    out = Path(env["RECORDER_FILE"]).open("a", encoding="utf-8")  # noqa: SIM115 - app lifetime
    proxy = _Proxy(env["RECORDER_UPSTREAM"], out)

    async def healthy(request: Request) -> Response:
        return Response("ok")

    methods = ["GET", "POST", "PUT", "DELETE"]
    return Starlette(
        routes=[
            Route("/-/recorder", healthy),
            Route("/{path:path}", proxy.forward, methods=methods),
        ]
    )

"""The HTTP edge: the webhook port's routes, the webhook handler, and the lifespan that
runs the bridge.

The webhook port serves only what Sentry and Prometheus need: ``POST /webhooks/sentry``,
``GET /-/healthy``, ``GET /-/ready``, ``GET /metrics`` and the two requests of Sentry's alert
rule editor (``bridge.sentry_ui``). The operator's routes (reload,
status, re-queue, quarantine) are on the admin listener (``bridge.admin``, loopback by
default). Webhooks in flight and the bytes of their bodies are bounded
(``bridge.admission``); open connections are bounded in ``bridge.protocol``.

``POST /webhooks/sentry`` answers fast: limit the body, authenticate, parse,
normalise, commit it to the store (``Bridge.accept``), 202. Everything slow
(classification, Sentry's API, Alertmanager) happens in the bridge's tasks, behind the
store (``bridge.compose``), on the same event loop.

Status codes tell Sentry the truth, and Sentry never retries a 4xx, so a 4xx is only for
what Sentry itself never sends: 401 bad credentials, 400 not JSON, 413 too large (and 408
for a body that trickles in slower than ``server.read_timeout``). A body that
authenticates but cannot be read as an alert, or whose reading raises, is never refused:
it is quarantined with the reason (202 ``quarantined``) for ``sentry-bridge quarantine
replay``; so is a body the legacy token vouches for that the legacy plugin does not
send. The same body again within ``store.body_retention`` is a 200 ``duplicate`` with no
effect. 503 (retried by Sentry) when nothing can be made durable in time: the store
full, failing, or slower than ``server.store_timeout``; and 503 ``busy`` or ``evicted``
past ``server.max_concurrency`` or ``server.max_pending_body_bytes``. Never a 500.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import json
import logging
import time
from collections.abc import AsyncIterator, Mapping
from typing import TYPE_CHECKING

from prometheus_client import CONTENT_TYPE_LATEST
from starlette.applications import Starlette
from starlette.requests import ClientDisconnect, Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route
from starlette.types import Receive, Scope, Send

from bridge import sentry, sentry_ui
from bridge.admission import Gate, Ticket
from bridge.errors import BadPayload, SlowBody, StoreFull, TooLarge, Unavailable, WebhookError
from bridge.model import Ignored
from bridge.protocol import body_in_memory, one_write
from bridge.replay import check_timestamp
from bridge.store.group_commit import commit_deadline

if TYPE_CHECKING:
    from bridge.compose import Bridge

log = logging.getLogger("bridge.app")


async def _read_body(
    request: Request, headers: Mapping[str, str], limit: int, gate: Gate, ticket: Ticket
) -> bytes:
    """The body, at most ``limit`` bytes, each byte accounted in ``gate`` as it arrives
    (the declared length at once, so a body that will not fit makes room first)."""
    declared = headers.get("content-length")
    size = 0
    if declared is not None and declared.isdigit():
        if int(declared) > limit:
            raise TooLarge("too_large", f"body over {limit} bytes")
        size = int(declared)
        gate.hold(ticket, size)
    chunks: list[bytes] = []
    received = 0
    async for chunk in request.stream():
        received += len(chunk)
        if received > limit:
            raise TooLarge("too_large", f"body over {limit} bytes")
        if received > size:
            gate.hold(ticket, received - size)
            size = received
        chunks.append(chunk)
    return b"".join(chunks)


# A 503 that makes room closes its connection: the client reconnects when it retries.
_CLOSE = {"connection": "close"}


def _reject(bridge: Bridge, request_id: str | None, exc: WebhookError) -> Response:
    bridge.metrics.webhooks_rejected.labels(exc.reason).inc()
    log.warning(
        "webhook rejected",
        extra={
            "request_id": request_id,
            "outcome": "rejected",
            "reason": exc.reason,
            "detail": exc.detail,
            "status": exc.status_code,
        },
    )
    return JSONResponse(
        {"status": "rejected", "reason": exc.reason, "detail": exc.detail},
        status_code=exc.status_code,
        headers=_CLOSE if exc.reason in {"busy", "evicted"} else None,
    )


# The answers that carry no detail are rendered once.
_ACCEPTED = Response(b'{"status":"accepted"}', 202, media_type="application/json")
_DUPLICATE = Response(b'{"status":"duplicate"}', 200, media_type="application/json")

# The request headers a quarantined body keeps: what reading it may need, no credentials
# (signatures and the token are dropped; Sentry's names from
# sentry_apps/api/serializers/app_platform_event.py and sentry_apps/tasks/service_hooks.py).
_KEPT_HEADERS = frozenset(
    ("content-type", "request-id", "sentry-hook-resource", "sentry-hook-timestamp", "user-agent")
)


def kept_headers(headers: Mapping[str, str]) -> dict[str, str]:
    return {
        name: value
        for name, value in headers.items()
        if name in _KEPT_HEADERS
        or (name.startswith("x-servicehook-") and name != "x-servicehook-signature")
    }


def _is_json(body: bytes) -> bool:
    """Whether ``body`` is JSON at all, as Python's parser reads it (lone surrogates, NaN
    and nesting too deep for the typed path included): Sentry serialises with it."""
    try:
        json.loads(body)
    except RecursionError:
        return True
    except ValueError:  # UnicodeDecodeError included
        return False
    return True


async def _quarantine(
    bridge: Bridge,
    headers: Mapping[str, str],
    body: bytes,
    digest: bytes,
    reason: str,
    detail: str,
    request_id: str | None,
) -> Response:
    async with commit_deadline(bridge.config.server.store_timeout):  # not after the commit
        kept = await bridge.quarantine(reason, detail, kept_headers(headers), body, digest)
    if not kept:
        return _DUPLICATE
    log.warning(
        "webhook quarantined",
        extra={"request_id": request_id, "outcome": "quarantined", "reason": reason},
    )
    return JSONResponse({"status": "quarantined", "reason": reason}, status_code=202)


async def webhook(request: Request) -> Response:
    bridge: Bridge = request.app.state.bridge
    started = time.perf_counter()
    # ASGI headers as one dict with lower-case names, read by every step below.
    headers = sentry.LowerHeaders(
        (name.decode("latin-1").lower(), value.decode("latin-1"))
        for name, value in reversed(request.scope["headers"])  # the first of repeats wins
    )
    request_id = headers.get("request-id")
    resource = "other"
    server = bridge.config.server
    gate: Gate = request.app.state.gate
    gate.max_in_flight = server.max_concurrency  # as reloaded
    gate.max_pending_bytes = server.max_pending_body_bytes
    ticket: Ticket | None = None
    try:
        ticket = gate.enter()
        # A body that came whole with its head is in memory: its read cannot wait, so no
        # timer is armed and cancelled for it (uvloop makes and closes a handle per timer;
        # issue 15's profile: this timeout and the commit's were some 4 % of a webhook's
        # CPU). The timeout is there all the same, for the gate to cut it off
        # (bridge.admission).
        deadline = None if body_in_memory(request.receive) else server.read_timeout
        try:
            async with asyncio.timeout(deadline) as ticket.read:
                body = await _read_body(request, headers, server.max_body_bytes, gate, ticket)
        except TimeoutError:
            if ticket.evicted:
                raise Unavailable(
                    "evicted",
                    "cut off to make room for other webhooks (server.max_concurrency or "
                    "server.max_pending_body_bytes); retry",
                ) from None
            raise SlowBody(
                "body_timeout", f"body not received within {server.read_timeout}s"
            ) from None
        gate.received(ticket)
        token = request.query_params.get("token") if request.scope["query_string"] else None
        method = sentry.authenticate(headers, body, token, bridge.config.sentry)
        now = time.time()
        check_timestamp(headers, bridge.config.sentry.max_timestamp_skew, now)
        bridge.metrics.spoke(sentry.family(headers)).set(now)  # Sentry spoke
        # Authenticated: from here on the body is never refused for what it says.
        digest = hashlib.sha256(body).digest()
        if method == sentry.UNKNOWN_LEGACY_BODY:
            # The token vouches for the legacy plugin's bodies only: kept, never read.
            detail = "the legacy token came with a body the legacy WebHooks plugin does not send"
            return await _quarantine(
                bridge, headers, body, digest, "unknown_legacy_body", detail, request_id
            )
        try:
            resource, result = sentry.read(
                headers,
                body,
                base_url=bridge.config.sentry.base_url,
                organization=bridge.config.sentry.organization,
                request_id=request_id,
            )
        except BadPayload as exc:
            if exc.reason == "invalid_json" and not _is_json(body):
                raise
            return await _quarantine(
                bridge, headers, body, digest, "invalid_payload", exc.detail, request_id
            )
        except Exception as exc:
            log.exception("reading a webhook failed", extra={"request_id": request_id})
            detail = f"{type(exc).__name__}: {exc}"
            return await _quarantine(
                bridge, headers, body, digest, "parse_error", detail, request_id
            )
        if isinstance(result, Ignored):
            bridge.ignored()
            log.info(
                "webhook ignored",
                extra={
                    "request_id": request_id,
                    "resource": result.resource,
                    "action": result.action,
                    "outcome": "ignored",
                    "reason": result.reason,
                },
            )
            return JSONResponse({"status": "ignored", "reason": result.reason})
        # A timeout, not wait_for: no task per webhook; it ends the wait for the commit to
        # start, never a commit that went through (a 503 is then true).
        async with commit_deadline(server.store_timeout):
            stored = await bridge.accept(result, digest)
        if not stored:
            return _DUPLICATE
        # Debug only: the pipeline's "alert decided" line is the webhook's outcome and
        # carries the same fields; a second info line per webhook cost some 3 % of its CPU
        # (issue 15's profile).
        log.debug(
            "webhook accepted",
            extra={
                "request_id": request_id,
                "resource": resource,
                "action": result.action,
                "identity": result.identity,
                "project": result.project,
                "environment": result.environment,
            },
        )
        return _ACCEPTED
    except WebhookError as exc:
        return _reject(bridge, request_id, exc)
    except StoreFull as exc:  # the store's own refusal, answered here: Sentry retries a 503
        return _reject(bridge, request_id, Unavailable("store_full", f"{exc.detail}; retry later"))
    except TimeoutError:
        detail = f"the store did not answer within {server.store_timeout}s; retry later"
        return _reject(bridge, request_id, Unavailable("store_timeout", detail))
    except ClientDisconnect:
        return Response(status_code=400)  # nobody is listening for it
    except Exception:
        # A bug, not the body's fault: 503 so Sentry retries it (never a 500).
        log.exception("webhook failed", extra={"request_id": request_id})
        return _reject(
            bridge, request_id, Unavailable("internal_error", "internal error; retry later")
        )
    finally:
        if ticket is not None:
            gate.leave(ticket)
        bridge.metrics.received(resource).inc()
        bridge.metrics.request_duration.observe(time.perf_counter() - started)


async def healthy(request: Request) -> Response:
    """Liveness: the pipeline and delivery run and make progress (bridge.compose)."""
    bridge: Bridge = request.app.state.bridge
    problem = bridge.healthy()
    if problem is None:
        return JSONResponse({"status": "ok"})
    return JSONResponse({"status": problem}, status_code=503)


async def ready(request: Request) -> Response:
    bridge: Bridge = request.app.state.bridge
    if not bridge.ready or bridge.failure is not None:
        return JSONResponse({"status": "not ready"}, status_code=503)
    if not bridge.store_ok():
        return JSONResponse({"status": "the store cannot be written"}, status_code=503)
    return JSONResponse({"status": "ready"})


async def metrics(request: Request) -> Response:
    bridge: Bridge = request.app.state.bridge
    # A store that cannot be read (in time) keeps its last sizes: the scrape still answers.
    with contextlib.suppress(Exception):
        async with asyncio.timeout(1.0):
            await bridge.sizes()
    return Response(bridge.metrics.exposition(), media_type=CONTENT_TYPE_LATEST)


WEBHOOK_PATH = "/webhooks/sentry"


class _Edge(Starlette):
    """The webhook port's app: ``POST /webhooks/sentry`` goes straight to :func:`webhook`,
    past Starlette's error and exception middleware and its router, which cost some 10 %
    of a webhook's CPU on the edge (issue 15's profile) and do nothing for it: the handler
    answers every outcome itself, never raises an ``HTTPException``, and turns any other
    exception into a 503. Every other request (and a mounted ``root_path``) takes the
    ordinary route."""

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if (
            scope["type"] == "http"
            and scope["path"] == WEBHOOK_PATH
            and scope["method"] == "POST"
            and not scope.get("root_path")
        ):
            scope["app"] = self  # as Starlette sets it: the handler reads its state
            response = await webhook(Request(scope, receive, send))
            with one_write(receive):  # its head and its body in one send
                await response(scope, receive, send)
            return
        await super().__call__(scope, receive, send)


def create_app(bridge: Bridge) -> Starlette:
    @contextlib.asynccontextmanager
    async def lifespan(app: Starlette) -> AsyncIterator[None]:
        await bridge.start()
        bridge.ready = True
        log.info("ready", extra={"alertmanagers": len(bridge.config.alertmanager.urls)})
        try:
            yield
        finally:
            bridge.ready = False
            await bridge.stop(bridge.grace_left())

    app = _Edge(
        routes=[
            Route(WEBHOOK_PATH, webhook, methods=["POST"]),  # taken by _Edge directly
            Route("/-/healthy", healthy, methods=["GET"]),
            Route("/-/ready", ready, methods=["GET"]),
            Route("/metrics", metrics, methods=["GET"]),
            *sentry_ui.routes(),  # what Sentry's alert rule editor asks (docs/sentry.md)
        ],
        lifespan=lifespan,
    )
    app.state.bridge = bridge
    app.state.receivers = sentry_ui.Receivers(bridge.config)
    server = bridge.config.server
    gate = app.state.gate = Gate(server.max_concurrency, server.max_pending_body_bytes)
    # Read at scrape time: nothing to update per webhook.
    bridge.metrics.webhooks_in_flight.set_function(lambda: gate.in_flight)
    bridge.metrics.pending_body_bytes.set_function(lambda: gate.pending_bytes)
    return app

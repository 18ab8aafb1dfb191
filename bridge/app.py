"""The HTTP edge: routes, the webhook handler, and the lifespan that runs the pipeline.

``POST /webhooks/sentry`` answers fast: limit the body, authenticate, parse,
normalise, store durably, 202. Everything slow (Sentry's API, Alertmanager)
happens in background tasks started by the lifespan. Status codes tell Sentry
the truth: 401 bad credentials, 413 too large, 400 not a Sentry payload,
503 outbox full, 2xx accepted or deliberately ignored.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import logging
import time
from collections.abc import AsyncIterator, Mapping

import httpx
from prometheus_client import CONTENT_TYPE_LATEST, CollectorRegistry, generate_latest
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route

from bridge import sentry
from bridge.alertmanager import target_name
from bridge.config import Config
from bridge.dedup import Repeats
from bridge.delivery import Delivery
from bridge.enrich import Enricher
from bridge.errors import TooLarge, WebhookError
from bridge.metrics import Metrics
from bridge.model import Ignored
from bridge.outbox import Outbox
from bridge.pipeline import Pipeline

log = logging.getLogger("bridge.app")


@dataclasses.dataclass
class Bridge:
    """Everything the routes and the lifespan share; one per app."""

    config: Config
    metrics: Metrics
    outbox: Outbox
    pipeline: Pipeline
    delivery: Delivery
    enricher: Enricher
    ready: bool = False


def build(
    config: Config,
    *,
    registry: CollectorRegistry | None = None,
    alertmanager_transport: httpx.AsyncBaseTransport | None = None,
    sentry_transport: httpx.AsyncBaseTransport | None = None,
) -> Bridge:
    metrics = Metrics(registry if registry is not None else CollectorRegistry())
    targets = [target_name(url) for url in config.alertmanager.urls]
    outbox = Outbox(
        config.outbox.data_dir,
        targets,
        max_queued=config.outbox.max_queued,
        metrics=metrics,
    )
    enricher = Enricher(config.sentry, metrics, transport=sentry_transport)
    repeats = Repeats(
        window=config.dedup.window,
        escalate_after=config.dedup.escalate_after,
        escalate_period=config.dedup.escalate_period,
        max_tracked=config.dedup.max_tracked,
        clock=time.monotonic,
    )
    pipeline = Pipeline(config, outbox=outbox, enricher=enricher, repeats=repeats, metrics=metrics)
    delivery = Delivery(outbox, config.alertmanager, metrics, transport=alertmanager_transport)
    return Bridge(config, metrics, outbox, pipeline, delivery, enricher)


async def _read_body(request: Request, headers: Mapping[str, str], limit: int) -> bytes:
    declared = headers.get("content-length")
    if declared is not None and declared.isdigit() and int(declared) > limit:
        raise TooLarge("too_large", f"body over {limit} bytes")
    chunks: list[bytes] = []
    size = 0
    async for chunk in request.stream():
        size += len(chunk)
        if size > limit:
            raise TooLarge("too_large", f"body over {limit} bytes")
        chunks.append(chunk)
    return b"".join(chunks)


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
    )


# The answers that carry no detail are rendered once.
_ACCEPTED = Response(b'{"status":"accepted"}', 202, media_type="application/json")


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
    try:
        body = await _read_body(request, headers, bridge.config.server.max_body_bytes)
        token = request.query_params.get("token") if request.scope["query_string"] else None
        sentry.authenticate(headers, body, token, bridge.config.sentry)
        resource, result = sentry.read(
            headers, body, base_url=bridge.config.sentry.base_url, request_id=request_id
        )
        if isinstance(result, Ignored):
            bridge.metrics.alerts.labels("ignored").inc()
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
        await bridge.pipeline.accept(result)
        return _ACCEPTED
    except WebhookError as exc:
        return _reject(bridge, request_id, exc)
    finally:
        bridge.metrics.webhooks_received.labels(resource).inc()
        bridge.metrics.request_duration.observe(time.perf_counter() - started)


async def healthy(request: Request) -> Response:
    return JSONResponse({"status": "ok"})


async def ready(request: Request) -> Response:
    bridge: Bridge = request.app.state.bridge
    if bridge.ready:
        return JSONResponse({"status": "ready"})
    return JSONResponse({"status": "not ready"}, status_code=503)


async def metrics(request: Request) -> Response:
    bridge: Bridge = request.app.state.bridge
    return Response(generate_latest(bridge.metrics.registry), media_type=CONTENT_TYPE_LATEST)


async def _drain(bridge: Bridge, grace: float) -> None:
    """SIGTERM: finish what was accepted, within the grace period; the rest stays on disk."""
    deadline = time.monotonic() + grace
    # Polled: the pipeline empties the inbox in batches and signals nothing per batch.
    while bridge.outbox.inbox_count() and time.monotonic() < deadline:  # noqa: ASYNC110
        await asyncio.sleep(0.05)
    flushed = await bridge.delivery.drain(max(0.0, deadline - time.monotonic()))
    log.info("shutdown", extra={"flushed": flushed, "inbox": bridge.outbox.inbox_count()})


def create_app(bridge: Bridge) -> Starlette:
    @contextlib.asynccontextmanager
    async def lifespan(app: Starlette) -> AsyncIterator[None]:
        await bridge.outbox.open()
        tasks = [
            asyncio.create_task(bridge.pipeline.run(), name="pipeline"),
            asyncio.create_task(bridge.delivery.run(), name="delivery"),
        ]
        bridge.ready = True
        log.info("ready", extra={"alertmanagers": len(bridge.config.alertmanager.urls)})
        try:
            yield
        finally:
            bridge.ready = False
            await _drain(bridge, bridge.config.shutdown.grace_period)
            for task in tasks:
                task.cancel()
            await asyncio.gather(*tasks, return_exceptions=True)
            await bridge.delivery.aclose()
            await bridge.enricher.aclose()
            await bridge.outbox.close()

    app = Starlette(
        routes=[
            Route("/webhooks/sentry", webhook, methods=["POST"]),
            Route("/-/healthy", healthy, methods=["GET"]),
            Route("/-/ready", ready, methods=["GET"]),
            Route("/metrics", metrics, methods=["GET"]),
        ],
        lifespan=lifespan,
    )
    app.state.bridge = bridge
    return app

"""The baseline for the ingest benchmark: Starlette on Uvicorn that only parses the JSON."""

from __future__ import annotations

import json

from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse
from starlette.routing import Route

from bridge.serve import tune_gc


async def webhook(request: Request) -> JSONResponse:
    json.loads(await request.body())
    return JSONResponse({"status": "accepted"}, status_code=202)


async def healthy(request: Request) -> JSONResponse:
    return JSONResponse({"status": "ok"})


app = Starlette(
    routes=[
        Route("/webhooks/sentry", webhook, methods=["POST"]),
        Route("/-/healthy", healthy, methods=["GET"]),
    ]
)

# The bridge tunes the cyclic GC as it serves; the baseline gets the same settings, so the
# comparison measures the webhook's work, not a GC setting.
tune_gc()

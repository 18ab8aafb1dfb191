"""The operator's listener: what changes or reveals the bridge's state, kept off the port
Sentry and Prometheus reach.

- ``POST /-/reload``: re-read the config (as ``SIGHUP``; ``bridge.reload``);
- ``GET /-/status``: what the bridge holds (``bridge.status``; ``sentry-bridge status``);
- ``POST /-/status/requeue-dead-letters``: queue the dead letters again;
- ``GET /-/quarantine``, ``GET /-/quarantine/{id}``, ``POST /-/quarantine/replay`` and
  ``POST /-/quarantine/discard``: the quarantined webhooks (``bridge.quarantine``).

``server.admin_host``/``server.admin_port``: 127.0.0.1:8081 by default, so only a process
in the same network namespace (the pod: ``kubectl exec``, ``kubectl port-forward``)
reaches it. It runs as a second Uvicorn server in the bridge's process and event loop
(``bridge.serve``), without a lifespan: the webhook server's lifespan starts and stops
the bridge.
"""

from __future__ import annotations

import asyncio
from typing import TYPE_CHECKING

from starlette.applications import Starlette
from starlette.middleware import Middleware
from starlette.routing import Route
from starlette.types import ASGIApp, Receive, Scope, Send

from bridge import quarantine, reload, status

if TYPE_CHECKING:
    from bridge.compose import Bridge
    from bridge.reload import Reloader


# At most this many operator requests a second: far more than an operator sends, and a
# small share of the event loop the webhooks run on, however many callers loop on it.
MAX_RATE = 200.0


class OneAtATime:
    """One operator request handled at a time, and the next one no sooner than
    ``1 / MAX_RATE`` seconds after it ended, nor sooner than it took (a ``/-/status`` of
    10,000 alerts waits as long as it ran): callers looping on the admin listener (64 in
    the test) then use at most half of the event loop, the store's thread and the GIL, and
    cannot crowd out the webhooks that share them."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app
        self._lock = asyncio.Lock()
        self._next = 0.0  # loop time the next request may start

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        async with self._lock:
            loop = asyncio.get_running_loop()
            if (wait := self._next - loop.time()) > 0:
                await asyncio.sleep(wait)  # the rate limit itself, not a wait for an event
            started = loop.time()
            try:
                await self.app(scope, receive, send)
            finally:
                ended = loop.time()
                self._next = ended + max(1 / MAX_RATE, ended - started)


def create_admin_app(bridge: Bridge, reloader: Reloader | None) -> Starlette:
    app = Starlette(
        routes=[
            Route("/-/reload", reload.endpoint, methods=["POST"]),
            Route("/-/status", status.endpoint, methods=["GET"]),
            Route("/-/status/requeue-dead-letters", status.requeue_endpoint, methods=["POST"]),
            Route("/-/quarantine", quarantine.list_endpoint, methods=["GET"]),
            Route("/-/quarantine/{entry_id:int}", quarantine.show_endpoint, methods=["GET"]),
            Route("/-/quarantine/replay", quarantine.replay_endpoint, methods=["POST"]),
            Route("/-/quarantine/discard", quarantine.discard_endpoint, methods=["POST"]),
        ],
        middleware=[Middleware(OneAtATime)],
    )
    app.state.bridge = bridge
    app.state.reloader = reloader
    return app

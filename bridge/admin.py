"""The operator's listener: what changes or reveals the bridge's state, kept off the port
Sentry and Prometheus reach.

- ``POST /-/reload``: re-read the config (as ``SIGHUP``; ``bridge.reload``);
- ``GET /-/status``: what the bridge holds (``bridge.status``; ``sentry-bridge status``);
- ``POST /-/status/requeue-dead-letters``: queue the dead letters again;
- the quarantine's routes (``bridge.quarantine``), passed in by ``bridge.serve``.

``server.admin_host``/``server.admin_port``: 127.0.0.1:8081 by default, so only a process
in the same network namespace (the pod: ``kubectl exec``, ``kubectl port-forward``)
reaches it. It runs as a second Uvicorn server in the bridge's process and event loop
(``bridge.serve``), without a lifespan: the webhook server's lifespan starts and stops
the bridge.
"""

from __future__ import annotations

import asyncio
from collections.abc import Sequence
from typing import TYPE_CHECKING

from starlette.applications import Starlette
from starlette.routing import BaseRoute, Route

from bridge import reload, status

if TYPE_CHECKING:
    from bridge.compose import Bridge
    from bridge.reload import Reloader


def create_admin_app(
    bridge: Bridge, reloader: Reloader | None, extra: Sequence[BaseRoute] = ()
) -> Starlette:
    """The admin app; ``extra``: more operator routes (the quarantine's)."""
    app = Starlette(
        routes=[
            Route("/-/reload", reload.endpoint, methods=["POST"]),
            Route("/-/status", status.endpoint, methods=["GET"]),
            Route("/-/status/requeue-dead-letters", status.requeue_endpoint, methods=["POST"]),
            *extra,
        ]
    )
    app.state.bridge = bridge
    app.state.reloader = reloader
    app.state.status_lock = asyncio.Lock()
    return app

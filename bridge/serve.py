"""Run the app under Uvicorn, with a SIGTERM that first stops being ready."""

from __future__ import annotations

import gc
import logging
import signal
from types import FrameType

import uvicorn
from prometheus_client import CollectorRegistry

from bridge import logs
from bridge.app import Bridge, create_app
from bridge.config import Config
from bridge.metrics import Metrics
from bridge.protocol import with_deadline
from bridge.worker import WorkerIntake

log = logging.getLogger("bridge.serve")


class _Server(uvicorn.Server):
    def __init__(self, config: uvicorn.Config, bridge: Bridge) -> None:
        super().__init__(config)
        self.bridge = bridge

    def handle_exit(self, sig: int, frame: FrameType | None) -> None:
        # Readiness goes first, so a load balancer stops sending before we stop listening.
        self.bridge.ready = False
        log.info("signal received, draining", extra={"signal": sig})
        super().handle_exit(sig, frame)
        if sig == signal.SIGTERM:
            # Uvicorn re-raises a captured signal after its graceful shutdown, so the
            # process would die of SIGTERM (exit 143). A SIGTERM we drained for is a
            # clean stop: exit 0, which is what Kubernetes and systemd expect.
            self._captured_signals.remove(sig)


def serve(config: Config, *, host: str | None = None, port: int | None = None) -> int:
    """Run until SIGTERM or SIGINT (exit 0 after draining), or until the pipeline worker
    dies (exit 1, for the supervisor to restart the bridge)."""
    logs.setup(config.server.log_level)
    intake = WorkerIntake(config)
    bridge = Bridge(config, Metrics(CollectorRegistry()), intake)
    server_config = uvicorn.Config(
        create_app(bridge),
        host=host or config.server.host,
        port=port or config.server.port,
        log_config=None,
        access_log=False,
        proxy_headers=True,
        server_header=False,
        # Bounded: requests at once (then 503), and the time to send a request's head.
        http=with_deadline(config.server.read_timeout),
        limit_concurrency=config.server.max_concurrency,
        # In-flight webhooks get part of the grace; the lifespan's drain gets the rest.
        timeout_graceful_shutdown=max(1, int(config.shutdown.grace_period // 5)),
        lifespan="on",
    )
    server = _Server(server_config, bridge)
    intake.on_failure = lambda: setattr(server, "should_exit", True)
    # What exists now (modules, pydantic schemas, the config) lives as long as the process:
    # frozen, the cyclic GC stops re-scanning it in every full collection under load.
    gc.freeze()
    server.run()
    return 1 if intake.crashed else 0

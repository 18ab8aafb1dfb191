"""Run the bridge under Uvicorn, in one process: SIGTERM first stops being ready, SIGHUP
reloads the config, a second SIGINT/SIGTERM stops at once. The bridge is composed in
``bridge.compose``; this only runs it.

Two listeners share the process and its event loop: the webhook port (``bridge.app``,
what Sentry and Prometheus reach) and the admin listener (``bridge.admin``, loopback by
default). The webhook server owns the lifespan and the signals; the admin server starts
once the bridge has and stops before it does. The admin socket is bound before anything
starts, so a port in use fails the start with the address in the message.
"""

from __future__ import annotations

import asyncio
import contextlib
import gc
import logging
import platform
import resource
import signal
import socket
import time
from collections.abc import Iterator
from pathlib import Path
from types import FrameType

import uvicorn
from uvicorn.lifespan.on import LifespanOn

from bridge import __version__, compose, logs
from bridge.admin import create_admin_app
from bridge.alertmanager import public_url
from bridge.app import create_app
from bridge.compose import Bridge
from bridge.config import Config
from bridge.errors import ConfigError
from bridge.protocol import with_deadline
from bridge.reload import Reloader

log = logging.getLogger("bridge.serve")


class _AdminServer(uvicorn.Server):
    """The admin listener: the webhook server handles the signals for both."""

    @contextlib.contextmanager
    def capture_signals(self) -> Iterator[None]:
        yield


class _Server(uvicorn.Server):
    def __init__(
        self,
        config: uvicorn.Config,
        bridge: Bridge,
        reloader: Reloader,
        admin: tuple[_AdminServer, socket.socket] | None = None,
    ) -> None:
        super().__init__(config)
        self.bridge = bridge
        self.reloader = reloader
        self.admin = admin
        self._admin_task: asyncio.Task[None] | None = None
        self._loop: asyncio.AbstractEventLoop | None = None
        self._reloads: set[asyncio.Task[object]] = set()

    async def startup(self, sockets: list[socket.socket] | None = None) -> None:
        await super().startup(sockets)  # the lifespan: the bridge is started
        if self.admin is not None and not self.should_exit:
            server, sock = self.admin
            self._admin_task = asyncio.create_task(server.serve([sock]))

    async def serve(self, sockets: list[socket.socket] | None = None) -> None:
        self._loop = asyncio.get_running_loop()
        # Prometheus and Alertmanager reload on SIGHUP; its default action would kill us.
        self._loop.add_signal_handler(signal.SIGHUP, self._sighup)
        try:
            await super().serve(sockets)
        finally:
            self._loop.remove_signal_handler(signal.SIGHUP)

    async def shutdown(self, sockets: list[socket.socket] | None = None) -> None:
        if self.admin is not None and self._admin_task is not None:
            server = self.admin[0]
            server.should_exit = True
            server.force_exit = self.force_exit
            await asyncio.gather(self._admin_task, return_exceptions=True)
        await super().shutdown(sockets)
        lifespan = self.lifespan
        if isinstance(lifespan, LifespanOn) and not lifespan.shutdown_event.is_set():
            # Uvicorn skips the lifespan's shutdown on a forced exit. Ours is quick then
            # (the bridge was told to hurry) and closes the store cleanly, which
            # cancelling it at the loop's end would not.
            await lifespan.shutdown()

    def _sighup(self) -> None:
        task = asyncio.ensure_future(self.reloader.reload("SIGHUP"))
        self._reloads.add(task)
        task.add_done_callback(self._reloads.discard)

    def handle_exit(self, sig: int, frame: FrameType | None) -> None:
        if self.should_exit:
            # A second Ctrl+C (or SIGTERM during the drain): stop at once. What is not
            # delivered yet stays in the store for the next start.
            log.warning("second signal: stopping now", extra={"signal": sig})
            self.force_exit = True
            if self._loop is not None:
                self._loop.call_soon_threadsafe(self.bridge.hurry)
            return
        # Readiness goes first, so a load balancer stops sending before we stop listening.
        self.bridge.ready = False
        self.bridge.stopping_since = time.monotonic()
        log.info("signal received, draining", extra={"signal": sig})
        super().handle_exit(sig, frame)
        if sig == signal.SIGTERM:
            # Uvicorn re-raises a captured signal after its graceful shutdown, so the
            # process would die of SIGTERM (exit 143). A SIGTERM we drained for is a
            # clean stop: exit 0, which is what Kubernetes and systemd expect.
            self._captured_signals.remove(sig)


def startup_line(config: Config, config_path: str | Path | None) -> None:
    """What an operator checks first: which build, which file, where alerts go (no
    credentials: host:port only), how webhooks authenticate, whether Sentry's API is used."""
    log.info(
        "starting sentry-alertmanager-bridge",
        extra={
            "version": __version__,
            "python": platform.python_version(),
            "config": str(config_path) if config_path is not None else None,
            "alertmanagers": [public_url(url) for url in config.alertmanager.urls],
            "auth": config.sentry.auth_modes(),
            "enrichment": "on" if config.sentry.api_token is not None else "off",
            "max_timestamp_skew": config.sentry.max_timestamp_skew,
            "data_dir": str(config.store.data_dir),
        },
    )


def bind_admin(host: str, port: int) -> socket.socket:
    """The admin listener's socket, bound now: a port in use stops the start here."""
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    try:
        return socket.create_server((host, port), family=family, backlog=64)
    except OSError as exc:
        raise ConfigError(
            f"server.admin_host/admin_port: cannot listen on {host}:{port}: {exc.strerror}"
        ) from None


# The cyclic GC's thresholds (Python's are 700, 10, 10). It collects the young generation
# once allocations of containers outnumber deallocations by the first: at 700, under the
# ingest load, 37 collections a second of 0.75 ms each, 4 % of the process's CPU; at
# 10,000, 0.5 % (issue 15, perf round 6: the bench's bridge with gc.callbacks timing each
# collection). What a webhook allocates is freed by reference counting; the few cycles
# (an exception's traceback, a task's) wait a little longer for a collection.
GC_THRESHOLDS = (10_000, 10, 10)


def tune_gc() -> None:
    """What exists now (modules, pydantic schemas, the config) lives as long as the process:
    frozen, the cyclic GC stops re-scanning it in every full collection under load; and
    the young generation is collected less often (``GC_THRESHOLDS``)."""
    gc.freeze()
    gc.set_threshold(*GC_THRESHOLDS)


def _open_files(needed: int) -> None:
    """Raise the soft limit of open files to the hard one: every connection is a file, and
    past the limit the listener stops accepting for a second at a time."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft != resource.RLIM_INFINITY and (hard == resource.RLIM_INFINITY or soft < hard):
        soft = hard
        resource.setrlimit(resource.RLIMIT_NOFILE, (soft, hard))
    if soft != resource.RLIM_INFINITY and soft < needed:
        log.warning(
            "the open-files limit is below server.max_connections; lower it, or raise the "
            "limit (ulimit -n)",
            extra={"open_files_limit": soft, "needed": needed},
        )


def serve(
    config: Config,
    *,
    host: str | None = None,
    port: int | None = None,
    admin_port: int | None = None,
    config_path: str | Path | None = None,
) -> int:
    """Run until SIGTERM or SIGINT (exit 0 after draining), or until the pipeline or
    delivery task ends unasked (exit 1, for the supervisor to restart the bridge)."""
    logs.setup(config.server.log_level, config.server.log_format)
    startup_line(config, config_path)
    server_cfg = config.server
    admin_socket = bind_admin(server_cfg.admin_host, admin_port or server_cfg.admin_port)
    # Connections on both listeners, the store's files and sockets, Alertmanager's.
    _open_files(server_cfg.max_connections + 256)
    bridge = compose.build(config)
    bridge.metrics.add_process_collectors()
    app = create_app(bridge)
    reloader = Reloader(config_path or "config.yaml", bridge)
    admin = _AdminServer(
        uvicorn.Config(
            create_admin_app(bridge, reloader),
            log_config=None,
            access_log=False,
            server_header=False,
            http=with_deadline(server_cfg.read_timeout, max_connections=64),
            timeout_graceful_shutdown=max(1, int(config.shutdown.grace_period // 5)),
            lifespan="off",
            loop="uvloop",
        )
    )
    server_config = uvicorn.Config(
        app,
        host=host or server_cfg.host,
        port=port or server_cfg.port,
        log_config=None,
        access_log=False,
        proxy_headers=True,
        server_header=False,
        # Bounded: open connections (idle ones closed first) and the time to send a
        # request's head; webhooks in flight and their bodies in bridge.admission.
        http=with_deadline(
            server_cfg.read_timeout,
            server_cfg.max_connections,
            bridge.metrics.connections_closed_by_reason,
        ),
        # In-flight webhooks get part of the grace; the lifespan's drain gets the rest.
        timeout_graceful_shutdown=max(1, int(config.shutdown.grace_period // 5)),
        lifespan="on",
        # uvloop, as ``uvicorn[standard]`` runs: the event loop's own work per webhook
        # (callbacks, the SQLite thread's wake-ups, sockets) in C (issue 15's bench).
        loop="uvloop",
    )
    server = _Server(server_config, bridge, reloader, (admin, admin_socket))
    bridge.on_failure = lambda: setattr(server, "should_exit", True)
    tune_gc()
    server.run()
    return 1 if bridge.failure is not None else 0

"""Reloading the config while running, as Prometheus and Alertmanager do.

``SIGHUP`` or ``POST /-/reload`` re-reads the config file. A file that does not validate
is refused: the running config stays, the error is logged and counted, and
``sentry_bridge_config_last_reload_successful`` drops to 0 (Prometheus's
``prometheus_config_last_reload_successful``; Alertmanager's ``alertmanager_config_...``).

Some settings are held by what was built from them at start and cannot change without a
restart: the listener, the store (its whole section: engine, file, bounds), the set of
Alertmanagers and how the bridge connects to them, Sentry's API client, the dedup tables.
A reload that changes them applies everything else, keeps their running values, and says
so (a warning line and the ``restart_required`` list of the answer). Everything else takes
effect for the next webhook: classification, authentication, body limit, log level and
format, alert lifetime, re-send and retry timing, the shutdown grace.

The edge, the pipeline and delivery run in one process (``bridge.compose``): the new
config replaces the running one in all of them at once (``Bridge.reload``).

Reloads are cheap and one at a time, so a caller looping on ``/-/reload`` (on the admin
listener, ``bridge.admin``) cannot slow the webhooks down: callers that arrive while one
runs share its result; the file (and every ``${file:...}`` it reads, as mounted secrets
rotate) is read and hashed in a thread, and when nothing changed since the last reload,
applied or refused, nothing is parsed; when it did change, it is parsed and validated in
a thread, and only the swap of the running config happens on the event loop.
"""

from __future__ import annotations

import asyncio
import hashlib
import logging
import re
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING

from pydantic import BaseModel
from starlette.requests import Request
from starlette.responses import JSONResponse, Response

from bridge import config, logs
from bridge.errors import ConfigError

if TYPE_CHECKING:
    from bridge.compose import Bridge

log = logging.getLogger("bridge.reload")

# (section, key): key None means the whole section.
RESTART_ONLY: tuple[tuple[str, str | None], ...] = (
    ("server", "host"),
    ("server", "port"),
    ("server", "admin_host"),
    ("server", "admin_port"),
    ("server", "max_connections"),
    ("store", None),
    ("dedup", None),
    ("escalation", "interval"),
    ("alertmanager", "urls"),
    ("alertmanager", "timeout"),
    ("alertmanager", "basic_auth"),
    ("alertmanager", "bearer_token"),
    ("alertmanager", "tls"),
    ("sentry", "base_url"),
    ("sentry", "api_token"),
    ("sentry", "api_timeout"),
    ("sentry", "api_cache_ttl"),
    ("sentry", "api_cache_size"),
    ("sentry", "reconcile_interval"),  # the reconciler's task reads it once (bridge/reconcile.py)
)


def merge(running: config.Config, new: config.Config) -> tuple[config.Config, list[str]]:
    """``new`` with the restart-only settings kept from ``running``; and the keys whose
    change was not applied (for the operator)."""
    kept: list[str] = []
    sections: dict[str, BaseModel] = {}
    for section, key in RESTART_ONLY:
        old_section = getattr(running, section)
        new_section = sections.get(section, getattr(new, section))
        if key is None:
            if old_section != new_section:
                kept.append(section)
                sections[section] = old_section
        elif getattr(old_section, key) != getattr(new_section, key):
            kept.append(f"{section}.{key}")
            sections[section] = new_section.model_copy(update={key: getattr(old_section, key)})
    return new.model_copy(update=sections), kept


@dataclass
class Result:
    ok: bool
    error: str | None = None
    restart_required: list[str] = field(default_factory=list)
    unchanged: bool = False

    def json(self) -> dict[str, object]:
        if not self.ok:
            return {"status": "refused", "error": self.error, "running": "the previous config"}
        if self.unchanged:
            return {"status": "unchanged"}
        return {"status": "reloaded", "restart_required": self.restart_required}


_FILE_REF = re.compile(r"\$\{file:([^}]+)\}")


def fingerprint(path: Path) -> bytes | None:
    """A digest of what a reload of ``path`` would read: the file and the files its
    ``${file:...}`` references name. None when the file cannot be read."""
    try:
        text = path.read_bytes()
    except OSError:
        return None
    digest = hashlib.sha256(text)
    for ref in sorted(set(_FILE_REF.findall(text.decode("utf-8", "replace")))):
        digest.update(b"\0" + ref.encode())
        try:
            digest.update(b"\0" + hashlib.sha256(Path(ref).read_bytes()).digest())
        except OSError as exc:
            digest.update(b"\0" + str(exc.errno).encode())
    return digest.digest()


class Reloader:
    """Re-reads ``path`` into ``bridge``; one reload at a time, shared by the callers
    that arrive while it runs."""

    def __init__(self, path: str | Path, bridge: Bridge) -> None:
        self.path = Path(path)
        self.bridge = bridge
        self._running: asyncio.Future[Result] | None = None
        # What the last reload read, and its result: the same again is not parsed again.
        # At start: the file serve loaded, as applied.
        self._last: tuple[bytes | None, Result] = (fingerprint(self.path), Result(ok=True))
        metrics = bridge.metrics
        metrics.config_last_reload_successful.set(1)
        metrics.config_last_reload_success_timestamp.set(time.time())

    async def reload(self, trigger: str) -> Result:
        if self._running is None:
            running = asyncio.ensure_future(self._counted(trigger))
            self._running = running
            running.add_done_callback(self._done)
        # Shielded: a caller that goes away does not cancel the others' reload.
        return await asyncio.shield(self._running)

    def _done(self, running: asyncio.Future[Result]) -> None:
        if self._running is running:
            self._running = None

    async def _counted(self, trigger: str) -> Result:
        result = await self._reload()
        metrics = self.bridge.metrics
        metrics.config_reloads.inc()
        if not result.ok:
            metrics.config_reloads_failed.inc()
            metrics.config_last_reload_successful.set(0)
            log.error(
                "config reload refused; the running config stays",
                extra={"trigger": trigger, "config": str(self.path), "error": result.error},
            )
            return result
        metrics.config_last_reload_successful.set(1)
        metrics.config_last_reload_success_timestamp.set(time.time())
        if result.unchanged:
            log.debug("config reload: nothing changed", extra={"trigger": trigger})
            return result
        log.info(
            "config reloaded",
            extra={
                "trigger": trigger,
                "config": str(self.path),
                "rules": len(self.bridge.config.classification.rules),
            },
        )
        if result.restart_required:
            log.warning(
                "config reload: these changes take effect only after a restart",
                extra={"restart_required": result.restart_required},
            )
        return result

    async def _reload(self) -> Result:
        digest = await asyncio.to_thread(fingerprint, self.path)
        last_digest, last = self._last
        if digest is not None and digest == last_digest:
            return last if not last.ok else Result(ok=True, unchanged=True)
        try:
            new = await asyncio.to_thread(config.load, self.path)
        except ConfigError as exc:
            self._last = (digest, Result(ok=False, error=str(exc)))
            return self._last[1]
        merged, kept = merge(self.bridge.config, new)
        self._last = (digest, Result(ok=True))
        before = self.bridge.config.server
        self.bridge.reload(merged)
        if (merged.server.log_level, merged.server.log_format) != (
            before.log_level,
            before.log_format,
        ):
            logs.setup(merged.server.log_level, merged.server.log_format)
        return Result(ok=True, restart_required=kept)


async def endpoint(request: Request) -> Response:
    """``POST /-/reload``: 200 with what needs a restart, or 400 with why it was refused."""
    reloader: Reloader | None = getattr(request.app.state, "reloader", None)
    if reloader is None:
        return JSONResponse({"status": "no config file to reload"}, status_code=404)
    result = await reloader.reload("http")
    return JSONResponse(result.json(), status_code=200 if result.ok else 400)

"""Alertmanager's side of the wire: the postable alert of API v2, and its delivery.

The model encodes ``postableAlert`` from prometheus/alertmanager
``api/v2/openapi.yaml``: ``labels`` (required labelSet), ``annotations``
(labelSet), ``startsAt`` / ``endsAt`` (date-time) and ``generatorURL`` (uri).
An alert is resolved by posting it again with ``endsAt`` in the past.

:class:`Delivery` posts the outbox's queue to every configured Alertmanager
(high availability means each gets every alert; no load-balancing), retrying
what can succeed on retry: connection errors, timeouts, 5xx and 429.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import random
import re
import ssl
import time
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import TYPE_CHECKING

import httpx
from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    ValidationError,
    field_serializer,
    field_validator,
)

from bridge import __version__, config
from bridge.errors import ConfigError
from bridge.metrics import Metrics

if TYPE_CHECKING:
    # outbox.py stores PostableAlert, so it imports this module; only types flow back.
    from bridge.outbox import Outbox, Queued

log = logging.getLogger("bridge.alertmanager")

# Alertmanager 0.25 validates label and annotation names against the classic
# Prometheus pattern and answers 400 otherwise (pkg/labels, model.LabelName.IsValid).
LABEL_NAME = re.compile(r"^[a-zA-Z_][a-zA-Z0-9_]*$")


class PostableAlert(BaseModel):
    """One element of the JSON array ``POST /api/v2/alerts`` takes."""

    model_config = ConfigDict(extra="forbid", frozen=True, populate_by_name=True)

    labels: dict[str, str]
    annotations: dict[str, str] = Field(default_factory=dict)
    starts_at: datetime | None = Field(default=None, alias="startsAt")
    ends_at: datetime | None = Field(default=None, alias="endsAt")
    generator_url: str | None = Field(default=None, alias="generatorURL")

    @field_validator("labels", "annotations")
    @classmethod
    def _valid_label_set(cls, value: dict[str, str]) -> dict[str, str]:
        for name, text in value.items():
            if not LABEL_NAME.match(name):
                raise ValueError(f"invalid label or annotation name {name!r}")
            if text == "":
                # Alertmanager drops empty labels, silently changing the alert's identity.
                raise ValueError(f"empty value for {name!r}")
        return value

    @field_validator("labels")
    @classmethod
    def _has_alertname(cls, value: dict[str, str]) -> dict[str, str]:
        if not value:
            raise ValueError("an alert needs at least one label")
        return value

    @field_serializer("starts_at", "ends_at")
    def _rfc3339(self, value: datetime | None) -> str | None:
        return value.isoformat().replace("+00:00", "Z") if value else None

    def wire(self) -> dict[str, object]:
        """The JSON object Alertmanager receives (camelCase, no nulls)."""
        return self.model_dump(by_alias=True, exclude_none=True)


def _utcnow() -> datetime:
    return datetime.now(UTC)


def wire_json(alert: PostableAlert) -> str:
    """The alert as Alertmanager receives it, serialised (same as :meth:`PostableAlert.wire`)."""
    return alert.model_dump_json(by_alias=True, exclude_none=True)


def target_name(url: str) -> str:
    """An Alertmanager's metric label: ``host:port`` (plus the path, if any), never userinfo."""
    parsed = httpx.URL(url)
    host = f"[{parsed.host}]" if ":" in parsed.host else parsed.host
    port = parsed.port or (443 if parsed.scheme == "https" else 80)
    return f"{host}:{port}{parsed.path.rstrip('/')}"


def problem(alert: PostableAlert) -> str | None:
    """What Alertmanager would reject in an alert the model accepted, else None.

    Alertmanager 0.25 validates each alert of a batch (``Alert.Validate`` in
    prometheus/common ``model``) and answers 400 "start time must be before end
    time" to an end before the start; RFC 3339 times need an offset, so naive ones
    cannot be sent either. ``generatorURL`` is left to Alertmanager (its URI check
    refuses the whole batch with 422), which the sender isolates like any 400.
    """
    for name, value in (("startsAt", alert.starts_at), ("endsAt", alert.ends_at)):
        if value is not None and value.utcoffset() is None:
            return f"{name} has no time zone"
    if alert.starts_at and alert.ends_at and alert.ends_at < alert.starts_at:
        return "endsAt is before startsAt"
    return None


def check_wire(body: str) -> str | None:
    """Validate a stored alert before sending it: the model, then :func:`problem`."""
    try:
        alert = PostableAlert.model_validate_json(body)
    except ValidationError as exc:
        return "; ".join(
            f"{'.'.join(map(str, e['loc']))}: {e['msg']}"
            for e in exc.errors(include_url=False, include_input=False)
        )
    return problem(alert)


def ssl_context(tls: config.TLS) -> ssl.SSLContext | bool:
    """``True`` (system trust) unless a CA, a client certificate or skipping is configured."""
    if not (tls.ca_file or tls.cert_file or tls.key_file or tls.insecure_skip_verify):
        return True
    if tls.key_file and not tls.cert_file:
        raise ConfigError("alertmanager.tls.key_file needs alertmanager.tls.cert_file")
    try:
        context = ssl.create_default_context(cafile=str(tls.ca_file) if tls.ca_file else None)
        if tls.cert_file:
            context.load_cert_chain(tls.cert_file, tls.key_file)
    except (OSError, ssl.SSLError) as exc:
        raise ConfigError(f"alertmanager.tls: {exc}") from exc
    if tls.insecure_skip_verify:
        context.check_hostname = False
        context.verify_mode = ssl.CERT_NONE
    return context


def build_client(
    cfg: config.Alertmanager, transport: httpx.AsyncBaseTransport | None = None
) -> httpx.AsyncClient:
    headers = {"User-Agent": f"sentry-alertmanager-bridge/{__version__}"}
    if cfg.bearer_token is not None:
        headers["Authorization"] = f"Bearer {cfg.bearer_token.get_secret_value()}"
    auth = (
        httpx.BasicAuth(cfg.basic_auth.username, cfg.basic_auth.password.get_secret_value())
        if cfg.basic_auth
        else None
    )
    return httpx.AsyncClient(
        transport=transport,
        auth=auth,
        headers=headers,
        timeout=cfg.timeout,
        verify=ssl_context(cfg.tls),
    )


# --- delivery ----------------------------------------------------------------------------

Sleep = Callable[[float], Awaitable[None]]

# Statuses that depend on the alerts sent: a smaller batch can succeed, so split it
# down to the alert at fault. Any other 4xx is about the request (auth, path) and
# would fail for every alert alike.
_ISOLATE = frozenset({400, 413, 422})


class _Retry(Exception):
    """A failure worth retrying the whole batch for, after a backoff."""

    def __init__(self, retry_after: float | None = None) -> None:
        super().__init__()
        self.retry_after = retry_after


@dataclass(frozen=True, slots=True)
class _Rejected:
    status: int
    message: str


@dataclass(frozen=True, slots=True)
class _Target:
    name: str
    endpoint: str


class Delivery:
    """Sends the outbox to every Alertmanager, each at its own pace.

    One task per Alertmanager reads that Alertmanager's place in the queue, posts
    batches of up to ``batch_size``, and moves on only when the batch is settled:
    accepted, rejected (dead-lettered) or older than ``max_age`` (given up). The
    same task re-sends the active and recently resolved alerts every
    ``resend_interval``, after the queue, so a re-sent firing alert can never
    overtake a queued resolve for the same Alertmanager.
    """

    def __init__(
        self,
        outbox: Outbox,
        cfg: config.Alertmanager,
        metrics: Metrics,
        *,
        transport: httpx.AsyncBaseTransport | None = None,
        clock: Callable[[], datetime] = _utcnow,
        rng: Callable[[], float] = random.random,
        sleep: Sleep = asyncio.sleep,
    ) -> None:
        self.outbox = outbox
        self.cfg = cfg
        self.metrics = metrics
        self.clock = clock
        self.rng = rng
        self.sleep = sleep
        self.targets = [_Target(target_name(url), f"{url}/api/v2/alerts") for url in cfg.urls]
        unknown = {t.name for t in self.targets} - set(outbox.targets)
        if unknown:
            raise ConfigError(f"the outbox does not know Alertmanager(s) {sorted(unknown)}")
        self._client = build_client(cfg, transport)
        metrics.init_alertmanagers(t.name for t in self.targets)

    async def run(self) -> None:
        """One sender per Alertmanager, until cancelled."""
        async with asyncio.TaskGroup() as group:
            for target in self.targets:
                group.create_task(self._sender(target), name=f"deliver {target.name}")

    async def drain(self, timeout: float) -> bool:  # noqa: ASYNC109 - a budget, not a cancel
        """Wait up to ``timeout`` seconds for the senders to empty the queue; True if they
        did. Whatever is left stays on disk for the next start."""
        loop = asyncio.get_running_loop()
        deadline = loop.time() + timeout
        while self.outbox.queued_count():
            remaining = deadline - loop.time()
            if remaining <= 0:
                return False
            self.outbox.progress.clear()
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self.outbox.progress.wait(), remaining)
        return True

    async def aclose(self) -> None:
        await self._client.aclose()

    # --- one Alertmanager ---------------------------------------------------------------

    async def _sender(self, target: _Target) -> None:
        wakeup = self.outbox.wakeup(target.name)
        next_resend = self._now()  # on start: leftovers first, then what should be active
        while True:
            wakeup.clear()
            try:
                await self.deliver(target.name)
                now = self._now()
                if now >= next_resend:
                    await self.resend(target.name)
                    next_resend = now + self.cfg.resend_interval
            except Exception:
                # A bug or a broken disk must not end delivery for good.
                log.exception("delivery failed", extra={"alertmanager": target.name})
                await self.sleep(self.cfg.backoff_max)
                continue
            await self._wait(wakeup, next_resend - self._now())

    async def deliver(self, name: str) -> None:
        """Deliver everything queued for one Alertmanager; retries until it is settled."""
        target = self._target(name)
        failures = 0
        while batch := await self.outbox.pending(name, self.cfg.batch_size):
            try:
                dead = await self._settle(target, batch)
            except _Retry as retry:
                await self.sleep(self._backoff(failures, retry.retry_after))
                failures += 1
                continue
            failures = 0
            await self.outbox.advance(name, batch[-1].id, dead)

    async def resend(self, name: str) -> None:
        """Post the active and recently resolved alerts again, with their original times.
        Best effort: a failure waits for the next interval."""
        target = self._target(name)
        await self.outbox.expire(resolved_for=self.cfg.resolved_resend)
        bodies = [wire_json(alert) for alert in self.outbox.resend_snapshot()]
        for start in range(0, len(bodies), self.cfg.batch_size):
            try:
                rejected = await self._post(target, bodies[start : start + self.cfg.batch_size])
            except _Retry:
                return
            if rejected:
                log.warning(
                    "re-send rejected",
                    extra={
                        "alertmanager": name,
                        "status": rejected.status,
                        "reason": rejected.message,
                    },
                )

    async def _settle(self, target: _Target, batch: Sequence[Queued]) -> list[tuple[Queued, str]]:
        """Send one batch; returns the dead letters. Raises _Retry if it must be retried."""
        now = self._now()
        expired = [q for q in batch if now - q.queued_at >= self.cfg.max_age]
        if expired:
            self.metrics.am_dropped.labels(target.name, "max_age").inc(len(expired))
            log.warning(
                "alerts given up on: older than max_age",
                extra={"alertmanager": target.name, "alerts": len(expired)},
            )
        dead: list[tuple[Queued, str]] = []
        sendable: list[Queued] = []
        for item in batch:
            if now - item.queued_at >= self.cfg.max_age:
                continue
            reason = check_wire(item.body)
            if reason is None:
                sendable.append(item)
            else:
                self._dead_letter(target, item, f"invalid: {reason}", "invalid", dead)
        if sendable:
            await self._isolate(target, sendable, dead)
        return dead

    async def _isolate(
        self, target: _Target, items: Sequence[Queued], dead: list[tuple[Queued, str]]
    ) -> None:
        """Post ``items``; if Alertmanager refuses them for their content, split the batch
        until the refused alerts stand alone, so one bad alert never holds up the rest.
        (Alertmanager 0.25 answers 400 to a batch but keeps its valid alerts; posting
        those again is harmless.)"""
        rejected = await self._post(target, [item.body for item in items])
        if rejected is None:
            return
        if len(items) > 1 and rejected.status in _ISOLATE:
            middle = len(items) // 2
            await self._isolate(target, items[:middle], dead)
            await self._isolate(target, items[middle:], dead)
            return
        reason = f"HTTP {rejected.status}: {rejected.message}"
        for item in items:
            self._dead_letter(target, item, reason, "rejected", dead)

    def _dead_letter(
        self,
        target: _Target,
        item: Queued,
        reason: str,
        drop_reason: str,
        dead: list[tuple[Queued, str]],
    ) -> None:
        dead.append((item, reason))
        self.metrics.dead_letters.inc()
        self.metrics.am_dropped.labels(target.name, drop_reason).inc()
        # The reason names what is wrong (a label name, the times), not label values.
        log.error(
            "alert dead-lettered",
            extra={"alertmanager": target.name, "queue_id": item.id, "reason": reason[:300]},
        )

    async def _post(self, target: _Target, bodies: Sequence[str]) -> _Rejected | None:
        """One ``POST /api/v2/alerts``. None when accepted, _Rejected for a final 4xx;
        raises _Retry on connection errors, timeouts, 5xx and 429."""
        name = target.name
        self.metrics.am_requests.labels(name).inc()
        self.metrics.am_batch_size.observe(len(bodies))
        content = ("[" + ",".join(bodies) + "]").encode()
        started = time.perf_counter()
        try:
            response = await self._client.post(
                target.endpoint, content=content, headers={"Content-Type": "application/json"}
            )
        except httpx.TransportError as exc:
            reason = (
                "timeout"
                if isinstance(exc, httpx.TimeoutException)
                else "connect"
                if isinstance(exc, httpx.ConnectError)
                else "other"
            )
            self.metrics.am_failed.labels(name, reason).inc()
            log.warning(
                "alertmanager unreachable",
                extra={"alertmanager": name, "reason": reason, "error": type(exc).__name__},
            )
            raise _Retry() from None
        finally:
            self.metrics.am_request_duration.labels(name).observe(time.perf_counter() - started)
        status = response.status_code
        if 200 <= status < 300:
            self.metrics.am_sent.labels(name).inc(len(bodies))
            return None
        if status == 429 or status >= 500:
            reason = "status_429" if status == 429 else "status_5xx"
            self.metrics.am_failed.labels(name, reason).inc()
            log.warning("alertmanager failed", extra={"alertmanager": name, "status": status})
            raise _Retry(_retry_after(response) if status == 429 else None)
        self.metrics.am_failed.labels(name, "status_4xx" if status >= 400 else "other").inc()
        return _Rejected(status, response.text.strip()[:500])

    # --- time ---------------------------------------------------------------------------

    def _backoff(self, failures: int, retry_after: float | None) -> float:
        """Exponential from backoff_initial to backoff_max, the upper half jittered so
        senders that failed together do not retry together."""
        delay = min(self.cfg.backoff_max, self.cfg.backoff_initial * 2.0**failures)
        delay = delay / 2 + delay / 2 * self.rng()
        if retry_after is not None:
            delay = max(delay, min(retry_after, self.cfg.backoff_max))
        return delay

    async def _wait(self, event: asyncio.Event, seconds: float) -> None:
        """Until ``event`` is set or ``seconds`` passed on the injected sleep."""
        if event.is_set() or seconds <= 0:
            return
        waiter = asyncio.ensure_future(event.wait())
        sleeper = asyncio.ensure_future(self.sleep(seconds))
        try:
            await asyncio.wait({waiter, sleeper}, return_when=asyncio.FIRST_COMPLETED)
        finally:
            waiter.cancel()
            sleeper.cancel()

    def _now(self) -> float:
        return self.clock().timestamp()

    def _target(self, name: str) -> _Target:
        return next(t for t in self.targets if t.name == name)


def _retry_after(response: httpx.Response) -> float | None:
    value = response.headers.get("retry-after", "")
    return float(value) if value.isdigit() else None

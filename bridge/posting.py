"""A post to one Alertmanager and its outcome, shared by first deliveries
(``bridge.delivery``) and re-sends (``bridge.resends``).

What can succeed on retry raises ``Retry``: connection errors, timeouts, 5xx and 429. A
batch Alertmanager refuses for its content (400, 413, 422) is split until the refused
alert stands alone; any other 4xx is about the request and refuses the batch alike.
"""

from __future__ import annotations

import json
import logging
import time
from collections.abc import Sequence
from dataclasses import dataclass

import httpx

from bridge.labels import identity_from_labels
from bridge.metrics import Metrics
from bridge.outages import Outages
from bridge.store import refusals
from bridge.store.contract import Queued

log = logging.getLogger("bridge.delivery")

# Statuses that depend on the alerts sent: a smaller batch can succeed, so split it
# down to the alert at fault. Any other 4xx is about the request (auth, path) and
# would fail for every alert alike.
ISOLATE = refusals.CONTENT_STATUSES
# Seconds between looks at a lane another replica holds (it holds it for one batch).
LANE_BUSY_WAIT = 0.05
# Batches up to this size name their alerts in the "alerts delivered" line.
_NAMED_IN_LOG = 10


class Retry(Exception):
    """A failure worth retrying the whole batch for, after a backoff."""

    def __init__(self, retry_after: float | None = None) -> None:
        super().__init__()
        self.retry_after = retry_after


@dataclass(frozen=True, slots=True)
class Rejected:
    status: int
    message: str


@dataclass(frozen=True, slots=True)
class Target:
    name: str
    endpoint: str


class Poster:
    """Posts alerts to the Alertmanagers with one client; counts every answer and tells
    ``outages`` whether the Alertmanager answered."""

    def __init__(self, client: httpx.AsyncClient, metrics: Metrics, outages: Outages) -> None:
        self.client = client
        self.metrics = metrics
        self.outages = outages

    async def isolate(
        self,
        target: Target,
        bodies: Sequence[str],
        start: int,
        stop: int,
        refused: list[tuple[int, Rejected]],
    ) -> None:
        """Post ``bodies[start:stop]``; if Alertmanager refuses them for their content,
        split until the refused alerts stand alone, so one bad alert never holds up the
        rest. (Alertmanager 0.25 answers 400 to a batch but keeps its valid alerts; posting
        those again is harmless.) The refused ones' indexes are appended to ``refused``."""
        rejected = await self.post(target, bodies[start:stop])
        if rejected is None:
            return
        if stop - start > 1 and rejected.status in ISOLATE:
            middle = (start + stop) // 2
            await self.isolate(target, bodies, start, middle, refused)
            await self.isolate(target, bodies, middle, stop, refused)
            return
        refused.extend((index, rejected) for index in range(start, stop))

    async def post(self, target: Target, bodies: Sequence[str]) -> Rejected | None:
        """One ``POST /api/v2/alerts``. None when accepted, Rejected for a final 4xx;
        raises Retry on connection errors, timeouts, 5xx and 429."""
        name = target.name
        self.metrics.am_requests.labels(name).inc()
        self.metrics.am_batch_size.observe(len(bodies))
        content = ("[" + ",".join(bodies) + "]").encode()
        started = time.perf_counter()
        try:
            response = await self.client.post(
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
            self.outages.failed(name, reason, error=type(exc).__name__)
            raise Retry() from None
        finally:
            self.metrics.am_request_duration.labels(name).observe(time.perf_counter() - started)
        status = response.status_code
        if status == 429 or status >= 500:
            reason = "status_429" if status == 429 else "status_5xx"
            self.metrics.am_failed.labels(name, reason).inc()
            self.outages.failed(name, reason, status=status)
            raise Retry(_retry_after(response) if status == 429 else None)
        self.outages.answered(name)
        if 200 <= status < 300:
            self.metrics.am_sent.labels(name).inc(len(bodies))
            return None
        self.metrics.am_failed.labels(name, "status_4xx" if status >= 400 else "other").inc()
        return Rejected(status, response.text.strip()[:500])


def refusal_reason(rejected: Rejected) -> str:
    return refusals.reason(rejected.status, rejected.message)


def log_delivered(name: str, batch: Sequence[Queued], dead: Sequence[tuple[Queued, str]]) -> None:
    """One line per settled batch: how many this Alertmanager now has; for a small batch
    (the usual case: a webhook or a few), which Sentry identities, so one alert's story
    reads accepted, decided, delivered."""
    identities: list[str] | None = None
    if len(batch) <= _NAMED_IN_LOG:
        identities = [_identity(item.body) for item in batch]
    log.info(
        "alerts delivered",
        extra={
            "alertmanager": name,
            "alerts": len(batch) - len(dead),
            "dead_letters": len(dead) or None,
            "identities": identities,
        },
    )


def _identity(body: str) -> str:
    try:
        return identity_from_labels(json.loads(body).get("labels", {})) or "?"
    except (ValueError, AttributeError):
        return "?"


def _retry_after(response: httpx.Response) -> float | None:
    value = response.headers.get("retry-after", "")
    return float(value) if value.isdigit() else None

"""Affected users and events of an issue, read from Sentry's API.

Issue-alert payloads carry the event but not the issue's counts, and rules
such as "more than 10 users affected" need them. With ``sentry.api_token``
set, :class:`Enricher` reads the issue (Sentry's "Retrieve an Issue",
``GroupDetailsEndpoint``) and fills ``users`` / ``events`` where the payload
left them unknown.

Sentry's issue serializer (``src/sentry/api/serializers/models/group.py``,
``_convert_seen_stats``) sends ``userCount`` as a JSON number and ``count``
as a string (``str(times_seen)``); ``group_details.py`` overwrites ``count``
with ``str(group.times_seen_with_pending)``. Both are absent when the stats
are collapsed, so either may be missing. The type hints in Sentry's
``BaseGroupResponseOptional`` say ``count: int``, so numbers are accepted too.

Enrichment is best effort: every failure leaves the alert as it was (unknown
numbers match no numeric condition) and counts one ``result`` in
``sentry_bridge_enrichment_requests_total``; ``enrich`` never raises.
"""

from __future__ import annotations

import asyncio
import json
import logging
import time
from collections.abc import Callable
from typing import Any, Final
from urllib.parse import quote

import httpx
from cachetools import TTLCache

from bridge import __version__
from bridge.config import Sentry
from bridge.errors import ConfigError
from bridge.metrics import Metrics
from bridge.model import Kind, SentryAlert

log = logging.getLogger("bridge.enrich")

# (users, events); at least one is known.
Counts = tuple[int | None, int | None]
# (result word from metrics.ENRICH_RESULTS, counts when the look-up succeeded).
Outcome = tuple[str, Counts | None]

# Sentry rate-limits issue details per organization (5 GETs a second in
# group_details.py), so a handful of connections is all that can be useful.
_LIMITS: Final = httpx.Limits(max_connections=8, max_keepalive_connections=4)
_MAX_DIGITS: Final = 18  # int() on longer strings is pointless and, past 4300 digits, raises


class Enricher:
    """Fills ``users`` and ``events`` of issue alerts from Sentry's API, cached.

    Look-ups of one issue that overlap share one request (an alert storm on an
    issue must not fan out to Sentry); successes are cached for
    ``api_cache_ttl``. Failures are not cached: the next alert of the issue
    simply tries again, and a token or permission fixed in Sentry takes
    effect at once. Repeats of one issue are rare anyway, because Sentry's
    issue alert rules fire at most once per rule interval per issue.
    """

    def __init__(
        self,
        cfg: Sentry,
        metrics: Metrics,
        *,
        transport: httpx.AsyncBaseTransport | None = None,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self._timeout = cfg.api_timeout
        self._metrics = metrics
        self._token = cfg.api_token.get_secret_value() if cfg.api_token is not None else None
        self._base = _base_url(cfg.base_url)
        self._cache: TTLCache[str, Counts] = TTLCache(
            maxsize=cfg.api_cache_size, ttl=cfg.api_cache_ttl, timer=clock
        )
        self._inflight: dict[str, asyncio.Task[Outcome]] = {}
        self._client = httpx.AsyncClient(
            transport=transport,
            timeout=httpx.Timeout(cfg.api_timeout),
            limits=_LIMITS,
            # A redirect could lead anywhere; the token goes to Sentry's host only.
            follow_redirects=False,
            headers={
                "Accept": "application/json",
                "User-Agent": f"sentry-alertmanager-bridge/{__version__}",
            },
        )
        self._update_gauge()

    @property
    def enabled(self) -> bool:
        """False without an API token: then there is nothing to look up, ever."""
        return self._token is not None

    async def enrich(self, alert: SentryAlert) -> SentryAlert:
        """The alert with the issue's counts filled in, or unchanged when they
        cannot be read (or need not be). Never raises."""
        try:
            url = self._url_for(alert)
            if url is None:
                self._record("skipped")
                return alert

            cached = self._cache.get(url)
            if cached is not None:
                self._record("hit")
                return alert.with_counts(users=cached[0], events=cached[1])

            task = self._inflight.get(url)
            joined = task is not None
            if task is None:
                task = asyncio.create_task(self._fetch(url, alert))
                self._inflight[url] = task
                task.add_done_callback(lambda done: self._forget(url, done))
            # Shielded: a cancelled caller must not cancel the look-up others wait for.
            result, counts = await asyncio.shield(task)
        except Exception:  # a bug here must not lose the alert; enrichment is optional
            log.exception("enrichment failed", extra={"issue_id": alert.issue_id})
            self._record("error")
            return alert

        # Every call counts once: the caller that made the request counts its
        # result; callers that joined it count "hit" when it succeeded (they
        # made no request of their own) and the same failure otherwise.
        self._record("hit" if joined and counts is not None else result)
        if counts is None:
            return alert
        return alert.with_counts(users=counts[0], events=counts[1])

    async def aclose(self) -> None:
        tasks = list(self._inflight.values())
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
        await self._client.aclose()

    # --- internals ------------------------------------------------------------------------

    def _url_for(self, alert: SentryAlert) -> str | None:
        if self._token is None or alert.kind is not Kind.ISSUE or alert.test:
            return None  # doctor's test alert names no real issue (bridge.doctor)
        if alert.users is not None and alert.events is not None:
            return None  # the payload wins; nothing left to fill
        if alert.issue_api_url:
            url = _same_origin(alert.issue_api_url, self._base)
            if url is not None:
                return url
        # The token is only ever sent to the host of sentry.base_url. The payload
        # is authenticated, but a URL it names is still data: trusting it would
        # hand our API token to any host a forged, replayed or misconfigured
        # webhook names. For another host, ask our own Sentry about the issue id.
        if alert.issue_id:
            path = f"api/0/issues/{quote(alert.issue_id, safe='')}/"
            return str(self._base.join(path))
        return None

    async def _fetch(self, url: str, alert: SentryAlert) -> Outcome:
        status: int | None = None
        try:
            async with asyncio.timeout(self._timeout):  # the whole request, body included
                response = await self._client.get(
                    url, headers={"Authorization": f"Bearer {self._token}"}
                )
            status = response.status_code
            if status == 200:
                counts = _parse_counts(response.content)
                result = "fetched" if counts is not None else "error"
            else:
                counts, result = None, _result_for_status(status)
        except (TimeoutError, httpx.TimeoutException):
            counts, result = None, "timeout"
        except httpx.HTTPError:
            counts, result = None, "error"
        except Exception:  # nothing may escape a task other callers share
            log.exception("sentry issue look-up failed", extra={"issue_id": alert.issue_id})
            return "error", None

        if counts is not None:
            self._cache[url] = counts
            self._update_gauge()
        else:
            # Neither the URL (it may carry a query) nor the token is logged.
            log.warning(
                "sentry issue look-up failed",
                extra={
                    "issue_id": alert.issue_id,
                    "result": result,
                    "status": status,
                    "request_id": alert.request_id,
                },
            )
        return result, counts

    def _forget(self, url: str, task: asyncio.Task[Outcome]) -> None:
        if self._inflight.get(url) is task:
            del self._inflight[url]

    def _record(self, result: str) -> None:
        self._metrics.enrichment.labels(result).inc()
        self._update_gauge()

    def _update_gauge(self) -> None:
        self._cache.expire()
        self._metrics.cache_entries.labels("sentry_api").set(len(self._cache))


def _base_url(value: str) -> httpx.URL:
    try:
        url = httpx.URL(value)
    except httpx.InvalidURL as exc:
        raise ConfigError(f"sentry.base_url: {exc}") from None
    if url.scheme not in ("http", "https") or not url.host:
        raise ConfigError(f"sentry.base_url: {value!r} is not an http(s) URL")
    # A trailing slash makes join() keep a path prefix (self-hosted under /sentry/).
    return url if url.path.endswith("/") else url.copy_with(path=url.path + "/")


def _same_origin(value: str, base: httpx.URL) -> str | None:
    """``value`` without query and fragment when it is on base's scheme, host and port."""
    try:
        url = httpx.URL(value)
    except httpx.InvalidURL:
        return None
    if (url.scheme, url.host, url.port) != (base.scheme, base.host, base.port):
        return None
    return str(url.copy_with(query=None, fragment=None, username=None, password=None))


def _result_for_status(status: int) -> str:
    if status in (401, 403):
        return "unauthorized"
    if status == 404:
        return "not_found"
    # 3xx (not followed), 410 (a retired endpoint), 429 (Sentry's rate limit), 5xx.
    return "error"


def _parse_counts(body: bytes) -> Counts | None:
    try:
        data: Any = json.loads(body)
    except ValueError:
        return None
    if not isinstance(data, dict):
        return None
    users, events = _count(data.get("userCount")), _count(data.get("count"))
    if users is None and events is None:
        return None
    return users, events


def _count(value: object) -> int | None:
    """A non-negative count sent as a number or as a string of digits."""
    if isinstance(value, bool):
        return None
    if isinstance(value, int):
        return value if value >= 0 else None
    if isinstance(value, str) and value.isascii() and value.isdigit():
        return int(value) if len(value) <= _MAX_DIGITS else None
    return None

"""The reconciler: Sentry's status is the truth when the bridge can read it (issue 16, item 3).

With ``sentry.api_token`` set, every ``sentry.reconcile_interval`` (and at once on start,
so downtime is caught up), the replica holding the periodic lease (``Store.periodic``)
pages through the issues the store keeps a state for (``Store.issues``: those behind firing
alerts and those resolved within the day), asks Sentry's API for their status and, for each
issue whose status changes something (``bridge.state.wants``), accepts an input into the
inbox: a ``SentryAlert`` with ``resource="sentry_api"``, ``action`` the status and
``occurred_at`` the moment the bridge asked. The pipeline decides it like a webhook, in its
identity's order, with ``bridge.state.reconcile``; replicas, restarts and the spool see
nothing new.

Sentry's endpoints (read with the same token as enrichment):

* with ``sentry.organization``, BATCH issues per request: "List an Organization's Issues",
  ``GET /api/0/organizations/{org}/issues/?group=1&group=2&project=-1``. In getsentry/sentry
  ``OrganizationGroupIndexEndpoint.get`` (src/sentry/issues/endpoints/
  organization_group_index.py) answers ``group`` ids before any search: those groups,
  whatever their status, within the projects asked for (``-1``: all the token may see).
  An issue missing from the answer (deleted, or out of the token's reach) is left as it is.
* without it, one request per issue: "Retrieve an Issue", ``GET /api/0/issues/{id}/``
  (``GroupDetailsEndpoint``); 404 leaves the issue as it is.

Both answer the issue serializer's ``status`` (``resolved``, ``unresolved``, ``ignored``
-- Sentry's UI calls it archived --, ``pending_deletion``...) and ``substatus``; an
unresolved issue whose substatus is ``escalating`` is reported as ``escalating``.

Politeness: one request at a time, at least ``MIN_GAP`` apart (Sentry's issue endpoints
allow a few requests a second per organization). A 429 waits its ``Retry-After`` (seconds);
an error or timeout backs off, doubling from ``BACKOFF`` up to the interval; a batch that
fails ``TRIES`` times ends the round, and the next round starts over.
"""

from __future__ import annotations

import asyncio
import json
import logging
import time
from collections.abc import Awaitable, Callable, Sequence
from datetime import UTC, datetime
from typing import Any, Final
from urllib.parse import quote

import httpx

from bridge import __version__
from bridge.config import Config
from bridge.enrich import _base_url
from bridge.metrics import Metrics
from bridge.model import Kind, SentryAlert, State
from bridge.state import CLOSED, ESCALATING, Policy, wants
from bridge.store.contract import Store

log = logging.getLogger("bridge.reconcile")

RESOURCE: Final = "sentry_api"  # bridge.pipeline dispatches on it
BATCH: Final = 100  # issues per request of the organization endpoint
MIN_GAP: Final = 0.25  # seconds between two requests: at most 4 a second
BACKOFF: Final = 1.0  # seconds after the first failure, doubling
TRIES: Final = 3  # tries per batch before the round ends


class _Failed(Exception):
    """A request failed; ``wait`` is how long Sentry asked to wait (429), if it said."""

    def __init__(self, result: str, wait: float | None = None) -> None:
        super().__init__(result)
        self.result = result
        self.wait = wait


class Reconciler:
    def __init__(
        self,
        config: Config,
        store: Store,
        metrics: Metrics,
        *,
        transport: httpx.AsyncBaseTransport | None = None,
        sleep: Callable[[float], Awaitable[None]] = asyncio.sleep,
    ) -> None:
        cfg = config.sentry
        self.interval = cfg.reconcile_interval
        self.policy = Policy.from_config(config)
        self._org = cfg.organization
        self._token = cfg.api_token.get_secret_value() if cfg.api_token is not None else None
        self._base = _base_url(cfg.base_url)
        self._store = store
        self._metrics = metrics
        self._sleep = sleep
        self._next_request = 0.0  # time.monotonic() before which no request goes out
        # When this replica last finished a round (time.time()), for /-/status.
        self.last_round: float | None = None
        if self._token is not None:
            metrics.reconcile_last_success.enable()
        self._client = httpx.AsyncClient(
            transport=transport,
            timeout=httpx.Timeout(cfg.api_timeout),
            follow_redirects=False,  # the token goes to Sentry's host only
            headers={
                "Accept": "application/json",
                "User-Agent": f"sentry-alertmanager-bridge/{__version__}",
            },
        )

    @property
    def enabled(self) -> bool:
        return self._token is not None

    async def run(self) -> None:
        """Rounds every interval while this replica holds the periodic lease."""
        while True:
            try:
                if await self._store.periodic():
                    await self.round()
            except Exception:  # a bug or the store failing: the next round tries again
                log.exception("reconciler round failed")
            await self._sleep(self.interval)

    async def round(self) -> int:
        """One pass over every issue the store holds a state for; returns how many inputs
        it accepted. Raises nothing for Sentry's failures: the round ends early, logged."""
        accepted = 0
        after: str | None = None
        while True:
            page = await self._store.issues(after, BATCH)
            if not page:
                break
            after = page[-1][0]
            ids = [identity.partition(":")[2] for identity, _ in page]
            observed = datetime.now(UTC)
            try:
                statuses = await self._statuses([i for i in ids if i.isdigit()])
            except _Failed as failed:
                log.warning("reconciler round ended early", extra={"result": failed.result})
                return accepted
            now = datetime.now(UTC)
            for (identity, state), issue_id in zip(page, ids, strict=True):
                status = statuses.get(issue_id)
                if status is None or not wants(state, status, observed, now, self.policy):
                    continue
                await self._store.accept(answer(identity, issue_id, status, observed))
                accepted += 1
            if len(page) < BATCH:
                break
        self.last_round = time.time()
        self._metrics.reconcile_last_success.set(self.last_round)
        if accepted:
            log.info("reconciled with Sentry's API", extra={"alerts_queued": accepted})
        return accepted

    async def aclose(self) -> None:
        await self._client.aclose()

    # --- Sentry's API -----------------------------------------------------------------------

    async def _statuses(self, ids: Sequence[str]) -> dict[str, str]:
        """issue id -> status, for those Sentry answered about."""
        if not ids:
            return {}
        if self._org is not None:
            path = f"api/0/organizations/{quote(self._org, safe='')}/issues/"
            params = [("project", "-1"), *(("group", i) for i in ids)]
            body = await self._get(path, params)
            issues = body if isinstance(body, list) else []
            return {str(i.get("id")): s for i in issues if isinstance(i, dict) if (s := _status(i))}
        found: dict[str, str] = {}
        for issue_id in ids:
            body = await self._get(f"api/0/issues/{issue_id}/", [])
            status = _status(body) if isinstance(body, dict) else None
            if status is not None:
                found[issue_id] = status
        return found

    async def _get(self, path: str, params: Sequence[tuple[str, str]]) -> Any:
        """The JSON of a 200; None for a 404 (no such issue); ``_Failed`` after TRIES."""
        failures = 0
        while True:
            try:
                return await self._try(path, params)
            except _Failed as failed:
                self._metrics.reconcile_requests.labels(failed.result).inc()
                failures += 1
                if failed.result == "not_found":
                    return None
                if failures >= TRIES or failed.result == "unauthorized":
                    raise
                wait = failed.wait
                if wait is None:
                    wait = min(BACKOFF * 2 ** (failures - 1), self.interval)
                log.warning(
                    "sentry API request failed; backing off",
                    extra={"result": failed.result, "wait_seconds": wait},
                )
                self._next_request = max(self._next_request, time.monotonic() + wait)

    async def _try(self, path: str, params: Sequence[tuple[str, str]]) -> Any:
        delay = self._next_request - time.monotonic()
        if delay > 0:
            await self._sleep(delay)
        self._next_request = time.monotonic() + MIN_GAP
        try:
            response = await self._client.get(
                str(self._base.join(path)),
                params=httpx.QueryParams(list(params)),
                headers={"Authorization": f"Bearer {self._token}"},
            )
        except httpx.TimeoutException:
            raise _Failed("timeout") from None
        except httpx.HTTPError:
            raise _Failed("error") from None
        status = response.status_code
        if status == 429:
            raise _Failed("rate_limited", _retry_after(response))
        if status in (401, 403):
            raise _Failed("unauthorized")
        if status == 404:
            raise _Failed("not_found")
        if status != 200:
            raise _Failed("error")
        try:
            body = json.loads(response.content)
        except ValueError:
            raise _Failed("error") from None
        self._metrics.reconcile_requests.labels("ok").inc()
        return body


def _status(issue: dict[str, Any]) -> str | None:
    status = issue.get("status")
    if not isinstance(status, str):
        return None
    if status == "unresolved" and issue.get("substatus") == ESCALATING:
        return ESCALATING
    return status


def _retry_after(response: httpx.Response) -> float | None:
    try:
        seconds = float(response.headers.get("Retry-After", ""))
    except ValueError:
        return None
    return seconds if 0 <= seconds <= 3600 else None


def answer(identity: str, issue_id: str, status: str, observed: datetime) -> SentryAlert:
    """What the reconciler accepts into the inbox: Sentry's status of one issue."""
    return SentryAlert(
        resource=RESOURCE,
        action=status,
        kind=Kind.ISSUE,
        state=State.RESOLVED if status in CLOSED else State.FIRING,
        identity=identity,
        title=f"Sentry issue {issue_id}",
        issue_id=issue_id,
        occurred_at=observed,
    )

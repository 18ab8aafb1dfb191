"""The escalation timer's I/O (issue 16, contract item 4; the rules are ``bridge.state.tick``).

* ``Escalator.run``: every ``escalation.interval``, on the one replica that runs the periodic
  jobs (``Store.periodic``), the identities whose next step is due (``Store.due``) each get a
  tick accepted into the inbox, so a tick is ordered with the identity's webhooks and
  survives restarts, replicas and the spool like one. A round accepts one tick per due
  identity; a tick that finds its step not due (one more from rounds while the pipeline
  lagged) does nothing. (No body digest: a digest of the step's time would refuse the tick
  of a step whose time comes round again, after an acknowledgement or a severity change.)
* ``Silences.silenced``: before a step fires, whether the alert is silenced in any
  Alertmanager (a silence is an acknowledgement: the step waits). Alertmanager's API v2
  ``GET /api/v2/alerts`` with one ``filter`` matcher per label (api/v2/openapi.yaml:
  ``filter`` "a list of matchers to filter alerts by"; each ``gettableAlert`` has
  ``status.silencedBy``, the ids of the silences muting it). Tier alerts carry the alert's
  labels and more, so the filter finds them too: a silence on any tier holds the next one.
  An Alertmanager that does not answer counts as not silenced: a page held back by an
  outage would be a lost page.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable, Mapping, Sequence

import httpx

from bridge.errors import StoreFull
from bridge.model import Kind, SentryAlert, State
from bridge.store.contract import Store

log = logging.getLogger("bridge.escalation")

# The tick's words in the inbox (``Pipeline.decide`` dispatches on them).
RESOURCE, ACTION = "bridge", "tick"
BATCH = 500  # due identities accepted per round at most; the rest next round


def tick_alert(identity: str) -> SentryAlert:
    """The timer's input for one identity, as the inbox holds it."""
    kind = Kind.METRIC_ALERT if identity.startswith("metric_alert:") else Kind.ISSUE
    return SentryAlert(
        resource=RESOURCE,
        action=ACTION,
        kind=kind,
        state=State.FIRING,
        identity=identity,
        title="escalation timer",
    )


def is_tick(alert: SentryAlert) -> bool:
    return alert.resource == RESOURCE and alert.action == ACTION


def matchers(labels: Mapping[str, str]) -> list[str]:
    """One equality matcher per label, values quoted and escaped as Alertmanager's matcher
    syntax reads them (``\\\\``, ``\\"``, ``\\n``)."""
    out = []
    for name, value in sorted(labels.items()):
        quoted = value.replace("\\", "\\\\").replace('"', '\\"').replace("\n", "\\n")
        out.append(f'{name}="{quoted}"')
    return out


class Silences:
    """Asks every Alertmanager whether an alert is silenced there."""

    def __init__(self, client: httpx.AsyncClient, urls: Sequence[str]) -> None:
        self.client = client
        self.urls = list(urls)

    async def silenced(self, labels: Mapping[str, str]) -> bool:
        found = await asyncio.gather(*(self._one(url, labels) for url in self.urls))
        return any(found)

    async def _one(self, url: str, labels: Mapping[str, str]) -> bool:
        params = httpx.QueryParams([("filter", m) for m in matchers(labels)])
        try:
            response = await self.client.get(f"{url}/api/v2/alerts", params=params)
            response.raise_for_status()
            alerts = response.json()
        except (httpx.HTTPError, ValueError) as exc:
            log.warning(
                "cannot ask alertmanager for silences; the step fires",
                extra={"error": type(exc).__name__},
            )
            return False
        return any(
            isinstance(a, dict) and (a.get("status") or {}).get("silencedBy")
            for a in alerts
            if isinstance(alerts, list)
        )


class Escalator:
    """The periodic job: ticks for the identities whose step is due."""

    def __init__(
        self,
        store: Store,
        interval: float,
        *,
        sleep: Callable[[float], Awaitable[None]] = asyncio.sleep,
    ) -> None:
        self.store = store
        self.interval = interval
        self.sleep = sleep

    async def run(self) -> None:
        while True:
            await self.sleep(self.interval)  # a timer: the period is the point
            try:
                await self.round()
            except Exception:  # the next round tries again; nothing is lost meanwhile
                log.exception("escalation round failed")

    async def round(self) -> list[str]:
        """One round; returns the identities a tick was accepted for."""
        if not await self.store.periodic():
            return []
        accepted: list[str] = []
        for identity, _ in await self.store.due(BATCH):
            try:
                fresh = await self.store.accept(tick_alert(identity))
            except StoreFull:
                log.warning("cannot accept escalation ticks now; next round")
                break
            if fresh:
                accepted.append(identity)
        return accepted

"""The escalation timer's I/O (issue 16, contract item 4; the rules are ``bridge.state.tick``).

* ``Escalator.run``: every ``escalation.interval``, on the one replica that runs the periodic
  jobs (``Store.periodic``), the identities whose next step is due (``Store.due``) each get a
  tick accepted into the inbox, so a tick is ordered with the identity's webhooks and
  survives restarts, replicas and the spool like one. A round accepts one tick per due
  identity; a tick that finds its step not due (one more from rounds while the pipeline
  lagged) does nothing. (No body digest: a digest of the step's time would refuse the tick
  of a step whose time comes round again, after an acknowledgement or a severity change.)
* ``Silences.held``: before the steps of a batch of ticks fire, which of their alerts a
  silence mutes in any Alertmanager (a silence is an acknowledgement: the step waits). One
  ``GET /api/v2/alerts`` per Alertmanager per batch, whatever its size (api/v2/openapi.yaml,
  ``getAlerts``: ``active``, ``silenced``, ``inhibited`` default to true; ``filter`` is "a list
  of matchers to filter alerts by"; each ``gettableAlert`` has ``status.silencedBy``, the ids
  of the silences muting it). ``active=false`` leaves out what nothing mutes (api/v2/api.go
  ``alertFilter`` drops an alert in state ``active``); ``source="sentry"`` and a regex
  matcher on the batch's Sentry ids (``sentry_issue_id=~"1|2"``, anchored by Alertmanager)
  leave out what is not the batch's, so the answer grows with the batch, not with every
  silenced alert. A batch of issues and metric alerts asks once per id label. Inhibited
  alerts stay in (``inhibited=false`` would drop one both silenced and inhibited). The
  answers are matched here by label set: an alert Alertmanager holds whose labels include
  all of the batch alert's is that alert or one of its tiers (a tier carries the alert's
  labels and more), so a silence on any tier holds the next one. An Alertmanager that does
  not answer counts as not silenced: a page held back by an outage would be a lost page.
"""

from __future__ import annotations

import asyncio
import logging
import re
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


# The matcher selecting the bridge's alerts (bridge.labels.build_labels sets it, and no rule
# or step may change it: config.RESERVED_LABELS).
SOURCE = 'source="sentry"'
# The labels naming an alert's Sentry id (one of them on each alert; reserved too).
IDS = ("sentry_issue_id", "sentry_alert_rule_id")
# Labels every alert of one identity and its tiers share: the index the answers are
# matched through, so a batch costs one pass over each answer.
_KEY = ("alertname", *IDS)

Labels = Mapping[str, str]


class Silences:
    """Asks every Alertmanager which of the bridge's alerts a silence mutes there."""

    def __init__(self, client: httpx.AsyncClient, urls: Sequence[str]) -> None:
        self.client = client
        self.urls = list(urls)

    async def held(self, alerts: Sequence[Labels]) -> list[bool]:
        """For each alert's label set, whether a silence mutes it, or one of its tiers, in
        any Alertmanager; one request per Alertmanager (and id label), concurrently."""
        if not alerts:
            return []
        asks = [(url, f) for url in self.urls for f in filters(alerts)]
        muted: dict[tuple[str | None, ...], list[Labels]] = {}
        for answer in await asyncio.gather(*(self._muted(url, f) for url, f in asks)):
            for labels in answer:
                muted.setdefault(_key(labels), []).append(labels)
        return [
            any(_includes(other, labels) for other in muted.get(_key(labels), ()))
            for labels in alerts
        ]

    async def _muted(self, url: str, matchers: list[str]) -> list[Labels]:
        """The label sets of the alerts ``matchers`` select that a silence mutes in this
        Alertmanager."""
        params = httpx.QueryParams([("active", "false"), *(("filter", m) for m in matchers)])
        try:
            response = await self.client.get(f"{url}/api/v2/alerts", params=params)
            response.raise_for_status()
            alerts = response.json()
        except (httpx.HTTPError, ValueError) as exc:
            log.warning(
                "cannot ask alertmanager for silences; the steps fire",
                extra={"error": type(exc).__name__},
            )
            return []
        if not isinstance(alerts, list):
            return []
        return [
            a["labels"]
            for a in alerts
            if isinstance(a, dict)
            and isinstance(a.get("labels"), dict)
            and (a.get("status") or {}).get("silencedBy")
        ]


def filters(alerts: Sequence[Labels]) -> list[list[str]]:
    """The ``filter`` matchers of each request a batch makes: the bridge's alerts with the
    batch's ids, per id label; an alert with neither id: all the bridge's alerts, at once."""
    ids: dict[str, set[str]] = {}
    for labels in alerts:
        name = next((n for n in IDS if n in labels), None)
        if name is None:
            return [[SOURCE]]
        ids.setdefault(name, set()).add(labels[name])
    # Ids are [A-Za-z0-9_.-] (bridge.labels._identifier): escaped for the regex all the same.
    return [
        [SOURCE, f'{name}=~"{_quote("|".join(re.escape(v) for v in sorted(values)))}"']
        for name, values in sorted(ids.items())
    ]


def _quote(value: str) -> str:
    """A value inside a matcher's double quotes, as Alertmanager's matcher syntax reads it."""
    return value.replace("\\", "\\\\").replace('"', '\\"').replace("\n", "\\n")


def _key(labels: Labels) -> tuple[str | None, ...]:
    return tuple(labels.get(name) for name in _KEY)


def _includes(other: Labels, labels: Labels) -> bool:
    return all(other.get(name) == value for name, value in labels.items())


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

"""Delivery: the store's queue posted to every configured Alertmanager.

High availability means each Alertmanager gets every alert (no load-balancing),
each at its own pace. What can succeed on retry is retried with backoff:
connection errors, timeouts, 5xx and 429. A batch Alertmanager refuses for its
content (400, 413, 422) is split until the refused alert stands alone, which is
dead-lettered; any other 4xx is about the request and dead-letters the batch.
Re-sends of the active alerts split a refused page the same way; an alert refused for
its content becomes that Alertmanager's dead letter, once (``Lane.refuse``), and its
re-sends skip it, so it does not take its page down with it every round. A refusal is
the refusing Alertmanager's business only: the identity keeps its alert, and the other
Alertmanagers get every resolve and re-fire computed from it (issue 15).
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import random
import time
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

import httpx

from bridge import config
from bridge.alertmanager import build_client, check_wire, target_name
from bridge.errors import ConfigError
from bridge.labels import identity_from_labels
from bridge.metrics import Metrics
from bridge.outages import Outages, probe
from bridge.store import refusals
from bridge.store.contract import Lane, Page, Queued, Store

log = logging.getLogger("bridge.delivery")

Sleep = Callable[[float], Awaitable[None]]

# Statuses that depend on the alerts sent: a smaller batch can succeed, so split it
# down to the alert at fault. Any other 4xx is about the request (auth, path) and
# would fail for every alert alike.
_ISOLATE = refusals.CONTENT_STATUSES
_ALERTS_PATH = "/api/v2/alerts"
# Batches up to this size name their alerts in the "alerts delivered" line.
_NAMED_IN_LOG = 10
# Seconds between looks at a lane another replica holds (it holds it for one batch).
LANE_BUSY_WAIT = 0.05
# Queue batches a re-send hold delivers before its page; a storm longer than this puts the
# page off to the next hold (the queue is posted first, always: Delivery._page).
DRAIN_IN_HOLD = 64
# Alerts per re-send page at most (fewer when alertmanager.batch_size is smaller). A fresh
# alert queued while a page is being posted waits for that post, and Alertmanager's time to
# take a page grows with its alerts (issue 15, measured under load: 64 alerts p50 17 ms, max
# 41; 256 alerts p50 48 ms, max 89). But a page also costs store round trips of its own, so
# a round of small pages is slow (64: 2.5 times fewer alerts re-sent per second than 256):
# half the default batch is the trade.
RESEND_PAGE = 128
# Seconds between looks at the queue's size while draining at shutdown.
DRAIN_LOOK = 0.5


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


def _utcnow() -> datetime:
    return datetime.now(UTC)


class Delivery:
    """Sends the store's queue to every Alertmanager, each at its own pace.

    One task per Alertmanager holds that Alertmanager's lane (``Store.lane``) for one
    batch at a time: it reads the next batch of up to ``batch_size``, posts it, and
    settles it: accepted, rejected (dead-lettered) or older than ``max_age`` (given
    up). When another replica holds the lane, that replica posts, and this one looks
    again shortly. While ``Store.periodic()`` says so, the same task re-sends the active
    and recently resolved alerts every ``resend_interval``, a page per hold of the lane
    and only between batches of the queue, so a re-sent firing alert can never overtake
    a queued resolve for the same Alertmanager, and a fresh alert waits for one page at
    most.
    """

    def __init__(
        self,
        store: Store,
        cfg: config.Alertmanager,
        metrics: Metrics,
        *,
        transport: httpx.AsyncBaseTransport | None = None,
        clock: Callable[[], datetime] = _utcnow,
        rng: Callable[[], float] = random.random,
        sleep: Sleep = asyncio.sleep,
    ) -> None:
        self.store = store
        self.cfg = cfg
        self.metrics = metrics
        self.clock = clock
        self.rng = rng
        self.sleep = sleep
        self.targets = [_Target(target_name(url), f"{url}{_ALERTS_PATH}") for url in cfg.urls]
        unknown = {t.name for t in self.targets} - set(store.targets)
        if unknown:
            raise ConfigError(f"the store does not know Alertmanager(s) {sorted(unknown)}")
        self._client = build_client(cfg, transport)
        # Per Alertmanager: the highest queue id check_wire has seen, and why the ones it
        # refused were refused, so a batch retried through an outage is checked (and its
        # invalid alerts counted) once, not on every attempt.
        self._checked = {t.name: 0 for t in self.targets}
        self._invalid: dict[str, dict[int, str]] = {t.name: {} for t in self.targets}
        # Set (then replaced) by drain(): cuts short the backoffs under way at that moment.
        self._hurry = asyncio.Event()
        metrics.init_alertmanagers(t.name for t in self.targets)
        self.outages = Outages(metrics, (t.name for t in self.targets))

    async def probe(self) -> None:
        """At start: warn about every Alertmanager that does not answer (bridge.outages)."""
        targets = [(t.name, t.endpoint.removesuffix(_ALERTS_PATH)) for t in self.targets]
        await probe(self._client, targets, self.outages)

    async def run(self) -> None:
        """One sender per Alertmanager, until cancelled."""
        async with asyncio.TaskGroup() as group:
            for target in self.targets:
                group.create_task(self._sender(target), name=f"deliver {target.name}")

    async def drain(self, timeout: float) -> bool:  # noqa: ASYNC109 - a budget, not a cancel
        """Wait up to ``timeout`` seconds (real time: the shutdown grace period) for the
        senders to empty the queue; True if they did. Senders waiting out a backoff
        retry at once, one more time; whatever is left stays on disk for the next start."""
        self._hurry.set()
        self._hurry = asyncio.Event()
        loop = asyncio.get_running_loop()
        deadline = loop.time() + timeout
        while await self._queued(deadline - loop.time()):
            remaining = deadline - loop.time()
            if remaining <= 0:
                return False
            self.store.progress.clear()
            # Looked at again now and then, not only on this process's progress: with
            # PostgreSQL another replica may be the one that empties the queue.
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self.store.progress.wait(), min(remaining, DRAIN_LOOK))
        return True

    async def _queued(self, within: float) -> bool:
        """Whether any Alertmanager still has alerts queued; True when the store cannot
        be read ``within`` seconds (it is not known to be empty)."""
        try:
            async with asyncio.timeout(max(within, 0.1)):  # an empty queue still says so
                return bool((await self.store.sizes(0)).behind)
        except Exception:
            log.debug("cannot read the store's sizes", exc_info=True)
            return True

    async def aclose(self) -> None:
        await self._client.aclose()

    # --- one Alertmanager ---------------------------------------------------------------

    async def _sender(self, target: _Target) -> None:
        wakeup = self.store.wakeup(target.name)
        # On start: leftovers first, then what should be active (if anything is: what
        # arrives from now on is queued anyway).
        next_resend = self._now()
        with contextlib.suppress(Exception):  # unknown: re-send at once, as if there were
            if not (await self.store.sizes()).resendable:
                next_resend += self.cfg.resend_interval
        while True:
            wakeup.clear()
            try:
                settled = await self.deliver(target.name)
                now = self._now()
                if settled and now >= next_resend and await self.store.periodic():
                    await self.resend(target.name)
                    next_resend = now + self.cfg.resend_interval
                    continue  # what a failed round left queued is delivered at once
            except Exception:
                # A bug or a broken disk must not end delivery for good.
                log.exception("delivery failed", extra={"alertmanager": target.name})
                await self._backoff_sleep(self.cfg.backoff_max)
                continue
            if not settled:  # another replica holds the lane: look again shortly
                await self._wait(wakeup, LANE_BUSY_WAIT)
                continue
            await self._wait(wakeup, next_resend - self._now())

    async def deliver(self, name: str) -> bool:
        """Deliver everything queued for one Alertmanager, a batch per hold of its lane;
        retries until it is settled. False when another replica holds the lane (it posts
        what is queued)."""
        target = self._target(name)
        wakeup = self.store.wakeup(name)
        failures = 0
        while True:
            wakeup.clear()  # what is queued from now on sets it again
            try:
                sent = await self._deliver_batch(target)
            except _Retry as retry:
                # Outside the lane: nothing else waits on it while this one backs off.
                await self._backoff_sleep(self._backoff(failures, retry.retry_after))
                failures += 1
                continue
            if sent is None:
                return False
            if not sent or (sent < self.cfg.batch_size and not wakeup.is_set()):
                # A short batch was all that was queued when it was read, and nothing was
                # queued since (the store sets the wake-up whenever it queues; it was
                # cleared before the read): no read to find the queue empty, which at a
                # steady rate would be one more store round trip per webhook.
                return True
            failures = 0

    async def _deliver_batch(self, target: _Target, lane: Lane | None = None) -> int | None:
        """Post the next batch and settle it, in the lane (``lane``, or held here for the
        batch): how many alerts it held (0: nothing queued), None when the lane is busy."""
        if lane is None:
            async with self.store.lane(target.name) as held:
                return None if held is None else await self._deliver_batch(target, held)
        batch = await lane.pending(self.cfg.batch_size)
        if batch:
            await self._settled(target, lane, batch)
        return len(batch)

    async def _settled(self, target: _Target, lane: Lane, batch: Sequence[Queued]) -> None:
        """Post ``batch`` (read from ``lane``) and settle it in the lane."""
        dead = await self._settle(target, batch)
        await lane.advance(batch[-1].id, dead)
        self._invalid[target.name].clear()  # settled: all of them are in the dead letters
        _log_delivered(target.name, batch, dead)

    async def resend(self, name: str) -> None:
        """Post the active and recently resolved alerts again, as stored (original times).

        Page by page, each page in its own hold of the lane, posted once nothing decided
        before it was read is left queued: a fresh alert queued meanwhile is posted before
        the next page (it never waits behind a whole round, only behind the page in
        flight), and a resolve decided after a page was read is queued, so posted after
        that page (no stale firing overtakes it).

        Best effort: a failure waits for the next interval. A page Alertmanager refuses for
        its content is split like a first delivery; the alerts refused alone become this
        Alertmanager's dead letters (once: its re-sends skip them; nothing else changes)."""
        target = self._target(name)
        await self.store.expire(resolved_for=self.cfg.resolved_resend)
        after: Any = None
        while True:
            async with self.store.lane(name) as lane:
                if lane is None:
                    page = None
                else:
                    try:
                        ready = await self._page(target, lane, after)
                        if ready is None:
                            continue  # a storm: the queue first, in the next hold
                        page = ready
                        refused: list[tuple[int, _Rejected]] = []
                        if page.bodies:
                            await self._isolate(target, page.bodies, 0, len(page.bodies), refused)
                        await self._refuse(name, lane, page.bodies, refused)
                    except _Retry:
                        return
            if page is None:  # another replica holds the lane: look again shortly
                await self._wait(self.store.wakeup(name), LANE_BUSY_WAIT)
                continue
            if page.after is None:
                return
            after = page.after

    @property
    def _page_size(self) -> int:
        return min(self.cfg.batch_size, RESEND_PAGE)

    async def _page(self, target: _Target, lane: Lane, after: Any) -> Page | None:
        """The re-send page after ``after``, once what was queued before it was read is
        delivered (a page posted ahead of an older queued decision would be overtaken by
        it): the queue is read, then the page, then the queue again, and what the queue
        holds is delivered first. An alert queued between the two queue reads may be
        older or newer than the page; when it is of an identity on the page, the page is
        read again after it. The reads follow one another with no post between, so a
        steady stream of fresh alerts cannot starve the round, as draining until the queue
        read empty did (an arrival during each post: issue 15, one page per 64 fresh
        batches at 200 webhooks/s), and a fresh alert never waits for a page to be read
        again. Only a storm that outlasts DRAIN_IN_HOLD batches puts the page off (None)."""
        limit = self.cfg.batch_size
        for _ in range(DRAIN_IN_HOLD):
            queued = await lane.pending(limit)
            if len(queued) == limit:  # a storm: the queue first
                await self._settled(target, lane, queued)
                continue
            page = await lane.resend_page(after, self._page_size)
            again = await lane.pending(limit)
            if again:
                await self._settled(target, lane, again)
                if _shares_identity(page, again, queued):
                    continue
            return page
        return None

    async def _refuse(
        self,
        name: str,
        lane: Lane,
        bodies: Sequence[str],
        refused: Sequence[tuple[int, _Rejected]],
    ) -> None:
        """Re-sent alerts this Alertmanager refused for their content: its dead letters."""
        content = [(bodies[i], _reason(r)) for i, r in refused if r.status in _ISOLATE]
        if len(content) < len(refused):
            # About the request (auth, path), not the alerts: nothing to keep.
            rejected = next(r for _, r in refused if r.status not in _ISOLATE)
            log.warning(
                "re-send rejected",
                extra={"alertmanager": name, "status": rejected.status, "reason": rejected.message},
            )
        if content:
            new = await lane.refuse(content)
            self.metrics.dead_letters.inc(new)
            self.metrics.am_dropped.labels(name, "rejected").inc(new)
            log.error(
                "re-sent alerts refused: dead-lettered, not re-sent to this Alertmanager",
                extra={"alertmanager": name, "alerts": new, "reason": content[0][1][:300]},
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
        checked, invalid = self._checked[target.name], self._invalid[target.name]
        for item in batch:
            if now - item.queued_at >= self.cfg.max_age:
                continue
            if item.id > checked and (problem := check_wire(item.body)) is not None:
                invalid[item.id] = f"invalid: {problem}"
                self._count_dead_letter(target, item, invalid[item.id], "invalid")
            if item.id in invalid:
                dead.append((item, invalid[item.id]))
            else:
                sendable.append(item)
        self._checked[target.name] = max(checked, batch[-1].id)
        # The dead letters are this Alertmanager's (``Lane.advance``): its re-sends skip
        # them; the identities and the other Alertmanagers are not touched.
        if sendable:
            refused: list[tuple[int, _Rejected]] = []
            await self._isolate(target, [item.body for item in sendable], 0, len(sendable), refused)
            for index, rejected in refused:
                self._dead_letter(target, sendable[index], _reason(rejected), "rejected", dead)
        return dead

    async def _isolate(
        self,
        target: _Target,
        bodies: Sequence[str],
        start: int,
        stop: int,
        refused: list[tuple[int, _Rejected]],
    ) -> None:
        """Post ``bodies[start:stop]``; if Alertmanager refuses them for their content,
        split until the refused alerts stand alone, so one bad alert never holds up the
        rest. (Alertmanager 0.25 answers 400 to a batch but keeps its valid alerts; posting
        those again is harmless.) The refused ones' indexes are appended to ``refused``."""
        rejected = await self._post(target, bodies[start:stop])
        if rejected is None:
            return
        if stop - start > 1 and rejected.status in _ISOLATE:
            middle = (start + stop) // 2
            await self._isolate(target, bodies, start, middle, refused)
            await self._isolate(target, bodies, middle, stop, refused)
            return
        refused.extend((index, rejected) for index in range(start, stop))

    def _dead_letter(
        self,
        target: _Target,
        item: Queued,
        reason: str,
        drop_reason: str,
        dead: list[tuple[Queued, str]],
    ) -> None:
        dead.append((item, reason))
        self._count_dead_letter(target, item, reason, drop_reason)

    def _count_dead_letter(
        self, target: _Target, item: Queued, reason: str, drop_reason: str
    ) -> None:
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
            self.outages.failed(name, reason, error=type(exc).__name__)
            raise _Retry() from None
        finally:
            self.metrics.am_request_duration.labels(name).observe(time.perf_counter() - started)
        status = response.status_code
        if status == 429 or status >= 500:
            reason = "status_429" if status == 429 else "status_5xx"
            self.metrics.am_failed.labels(name, reason).inc()
            self.outages.failed(name, reason, status=status)
            raise _Retry(_retry_after(response) if status == 429 else None)
        self.outages.answered(name)
        if 200 <= status < 300:
            self.metrics.am_sent.labels(name).inc(len(bodies))
            return None
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

    async def _backoff_sleep(self, seconds: float) -> None:
        """A backoff that drain() cuts short: on shutdown, one last try beats waiting."""
        await self._wait(self._hurry, seconds)

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


def _shares_identity(page: Page, again: Sequence[Queued], before: Sequence[Queued]) -> bool:
    """Whether an alert in ``again`` and not ``before`` (queued between two reads around a
    page's) is of an identity on the page (the store read the page's identities with it);
    an alert whose identity cannot be read counts."""
    earlier = {item.id for item in before}
    between = {refusals.owner(item.body) for item in again if item.id not in earlier}
    return None in between or not between.isdisjoint(page.identities)


def _reason(rejected: _Rejected) -> str:
    return refusals.reason(rejected.status, rejected.message)


def _log_delivered(name: str, batch: Sequence[Queued], dead: Sequence[tuple[Queued, str]]) -> None:
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

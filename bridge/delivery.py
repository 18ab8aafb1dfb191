"""Delivery: the store's queue posted to every configured Alertmanager.

High availability means each Alertmanager gets every alert (no load-balancing),
each at its own pace. What can succeed on retry is retried with backoff:
connection errors, timeouts, 5xx and 429. A batch Alertmanager refuses for its
content (400, 413, 422) is split until the refused alert stands alone, which is
dead-lettered; any other 4xx is about the request and dead-letters the batch
(``bridge.posting``). Between batches, the same sender re-sends the active and
recently resolved alerts (``bridge.resends``).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import random
from collections.abc import Awaitable, Callable, Sequence
from datetime import UTC, datetime

import httpx

from bridge import config, resends
from bridge.alertmanager import build_client, check_wire, target_name
from bridge.errors import ConfigError
from bridge.metrics import Metrics
from bridge.outages import Outages, probe
from bridge.posting import (
    LANE_BUSY_WAIT,
    Poster,
    Rejected,
    Retry,
    Target,
    log_delivered,
    refusal_reason,
)
from bridge.store.contract import Lane, Queued, Store

log = logging.getLogger("bridge.delivery")

Sleep = Callable[[float], Awaitable[None]]

_ALERTS_PATH = "/api/v2/alerts"
# Seconds between looks at the queue's size while draining at shutdown.
DRAIN_LOOK = 0.5


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
        self.targets = [Target(target_name(url), f"{url}{_ALERTS_PATH}") for url in cfg.urls]
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
        self.poster = Poster(self._client, metrics, self.outages)

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

    async def _sender(self, target: Target) -> None:
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
                await self.wait(wakeup, LANE_BUSY_WAIT)
                continue
            await self.wait(wakeup, next_resend - self._now())

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
            except Retry as retry:
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

    async def _deliver_batch(self, target: Target, lane: Lane | None = None) -> int | None:
        """Post the next batch and settle it, in the lane (``lane``, or held here for the
        batch): how many alerts it held (0: nothing queued), None when the lane is busy."""
        if lane is None:
            async with self.store.lane(target.name) as held:
                return None if held is None else await self._deliver_batch(target, held)
        batch = await lane.pending(self.cfg.batch_size)
        if batch:
            await self.settled(target, lane, batch)
        return len(batch)

    async def settled(self, target: Target, lane: Lane, batch: Sequence[Queued]) -> None:
        """Post ``batch`` (read from ``lane``) and settle it in the lane."""
        dead = await self._settle(target, batch)
        await lane.advance(batch[-1].id, dead)
        self._invalid[target.name].clear()  # settled: all of them are in the dead letters
        log_delivered(target.name, batch, dead)

    async def resend(self, name: str) -> None:
        """Post the active and recently resolved alerts again (``bridge.resends``)."""
        await resends.resend(self, self._target(name))

    async def _settle(self, target: Target, batch: Sequence[Queued]) -> list[tuple[Queued, str]]:
        """Send one batch; returns the dead letters. Raises Retry if it must be retried."""
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
            refused: list[tuple[int, Rejected]] = []
            await self.poster.isolate(
                target, [item.body for item in sendable], 0, len(sendable), refused
            )
            for index, rejected in refused:
                self._dead_letter(
                    target, sendable[index], refusal_reason(rejected), "rejected", dead
                )
        return dead

    def _dead_letter(
        self,
        target: Target,
        item: Queued,
        reason: str,
        drop_reason: str,
        dead: list[tuple[Queued, str]],
    ) -> None:
        dead.append((item, reason))
        self._count_dead_letter(target, item, reason, drop_reason)

    def _count_dead_letter(
        self, target: Target, item: Queued, reason: str, drop_reason: str
    ) -> None:
        self.metrics.dead_letters.inc()
        self.metrics.am_dropped.labels(target.name, drop_reason).inc()
        # The reason names what is wrong (a label name, the times), not label values.
        log.error(
            "alert dead-lettered",
            extra={"alertmanager": target.name, "queue_id": item.id, "reason": reason[:300]},
        )

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
        await self.wait(self._hurry, seconds)

    async def wait(self, event: asyncio.Event, seconds: float) -> None:
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

    def _target(self, name: str) -> Target:
        return next(t for t in self.targets if t.name == name)

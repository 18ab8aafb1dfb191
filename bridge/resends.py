"""Re-sends: the active and recently resolved alerts posted again to one Alertmanager, a
page per hold of its lane (``Store.lane``), by that Alertmanager's sender
(``bridge.delivery``) between batches of its queue.

Re-sends of the active alerts split a refused page like a first delivery; an alert refused
for its content becomes that Alertmanager's dead letter, once (``Lane.refuse``), and its
re-sends skip it, so it does not take its page down with it every round. A refusal is the
refusing Alertmanager's business only: the identity keeps its alert, and the other
Alertmanagers get every resolve and re-fire computed from it (issue 15).
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Sequence
from typing import Any, Protocol

from bridge import config
from bridge.metrics import Metrics
from bridge.posting import (
    ISOLATE,
    LANE_BUSY_WAIT,
    Poster,
    Rejected,
    Retry,
    Target,
    refusal_reason,
)
from bridge.store import refusals
from bridge.store.contract import Lane, Page, Queued, Store

log = logging.getLogger("bridge.delivery")

# Queue batches a re-send hold delivers before its page; a storm longer than this puts the
# page off to the next hold (the queue is posted first, always: _page).
DRAIN_IN_HOLD = 64
# Alerts per re-send page at most (fewer when alertmanager.batch_size is smaller). A fresh
# alert queued while a page is being posted waits for that post, and Alertmanager's time to
# take a page grows with its alerts (issue 15, measured under load: 64 alerts p50 17 ms, max
# 41; 256 alerts p50 48 ms, max 89). But a page also costs store round trips of its own, so
# a round of small pages is slow (64: 2.5 times fewer alerts re-sent per second than 256):
# half the default batch is the trade.
RESEND_PAGE = 128


class Sender(Protocol):
    """What the pager needs of an Alertmanager's sender (``bridge.delivery.Delivery``)."""

    store: Store
    cfg: config.Alertmanager
    metrics: Metrics
    poster: Poster

    async def settled(self, target: Target, lane: Lane, batch: Sequence[Queued]) -> None:
        """Post ``batch`` (read from ``lane``) and settle it in the lane."""

    async def wait(self, event: asyncio.Event, seconds: float) -> None:
        """Until ``event`` is set or ``seconds`` passed."""


async def resend(sender: Sender, target: Target) -> None:
    """Post the active and recently resolved alerts again, as stored (original times).

    Page by page, each page in its own hold of the lane, posted once nothing decided
    before it was read is left queued: a fresh alert queued meanwhile is posted before
    the next page (it never waits behind a whole round, only behind the page in
    flight), and a resolve decided after a page was read is queued, so posted after
    that page (no stale firing overtakes it).

    Best effort: a failure waits for the next interval. A page Alertmanager refuses for
    its content is split like a first delivery; the alerts refused alone become this
    Alertmanager's dead letters (once: its re-sends skip them; nothing else changes)."""
    name = target.name
    await sender.store.expire(resolved_for=sender.cfg.resolved_resend)
    after: Any = None
    while True:
        async with sender.store.lane(name) as lane:
            if lane is None:
                page = None
            else:
                try:
                    ready = await _page(sender, target, lane, after)
                    if ready is None:
                        continue  # a storm: the queue first, in the next hold
                    page = ready
                    refused: list[tuple[int, Rejected]] = []
                    if page.bodies:
                        await sender.poster.isolate(
                            target, page.bodies, 0, len(page.bodies), refused
                        )
                    await _refuse(sender.metrics, name, lane, page.bodies, refused)
                except Retry:
                    return
        if page is None:  # another replica holds the lane: look again shortly
            await sender.wait(sender.store.wakeup(name), LANE_BUSY_WAIT)
            continue
        if page.after is None:
            return
        after = page.after


def _page_size(cfg: config.Alertmanager) -> int:
    return min(cfg.batch_size, RESEND_PAGE)


async def _page(sender: Sender, target: Target, lane: Lane, after: Any) -> Page | None:
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
    limit = sender.cfg.batch_size
    for _ in range(DRAIN_IN_HOLD):
        queued = await lane.pending(limit)
        if len(queued) == limit:  # a storm: the queue first
            await sender.settled(target, lane, queued)
            continue
        page = await lane.resend_page(after, _page_size(sender.cfg))
        again = await lane.pending(limit)
        if again:
            await sender.settled(target, lane, again)
            if _shares_identity(page, again, queued):
                continue
        return page
    return None


async def _refuse(
    metrics: Metrics,
    name: str,
    lane: Lane,
    bodies: Sequence[str],
    refused: Sequence[tuple[int, Rejected]],
) -> None:
    """Re-sent alerts this Alertmanager refused for their content: its dead letters."""
    content = [(bodies[i], refusal_reason(r)) for i, r in refused if r.status in ISOLATE]
    if len(content) < len(refused):
        # About the request (auth, path), not the alerts: nothing to keep.
        rejected = next(r for _, r in refused if r.status not in ISOLATE)
        log.warning(
            "re-send rejected",
            extra={"alertmanager": name, "status": rejected.status, "reason": rejected.message},
        )
    if content:
        new = await lane.refuse(content)
        metrics.dead_letters.inc(new)
        metrics.am_dropped.labels(name, "rejected").inc(new)
        log.error(
            "re-sent alerts refused: dead-lettered, not re-sent to this Alertmanager",
            extra={"alertmanager": name, "alerts": new, "reason": content[0][1][:300]},
        )


def _shares_identity(page: Page, again: Sequence[Queued], before: Sequence[Queued]) -> bool:
    """Whether an alert in ``again`` and not ``before`` (queued between two reads around a
    page's) is of an identity on the page (the store read the page's identities with it);
    an alert whose identity cannot be read counts."""
    earlier = {item.id for item in before}
    between = {refusals.owner(item.body) for item in again if item.id not in earlier}
    return None in between or not between.isdisjoint(page.identities)

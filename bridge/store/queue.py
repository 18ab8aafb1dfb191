"""The queue, re-sends and dead letters on both engines: a row per post and Alertmanager,
deleted once that one settled it; recently resolved alerts re-sent for a while; what an
Alertmanager refused kept for a human (``bridge.store.refusals``). Steps
(``bridge.store.steps``); the lanes that hand the rows out are each engine's own."""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime
from typing import Any

from bridge.store import refusals, views
from bridge.store.contract import Page
from bridge.store.steps import NOW, Dialect, Step, many, rows, run, value
from bridge.store.writes import Post, Writes


def enqueue(d: Dialect, targets: Sequence[str], posts: Sequence[Post]) -> Step[None]:
    """Queues the posts in order for every Alertmanager; the senders of every replica are
    told at commit."""
    if posts:
        at = [d.time(post.queued_at) for post in posts]
        queued = [(t, a, p.body) for a, p in zip(at, posts, strict=True) for t in targets]
        yield many("ENQUEUE", queued)
        yield run("NOTIFY", d.queue_channel)


def resend(d: Dialect, writes: Writes) -> Step[None]:
    """Starts and ends re-sends of resolved label sets as ``writes`` says (a started one
    replaces the one before under its label set)."""
    ending = [*writes.resends_ended, *(key for key, _ in writes.resends_started)]
    if ending:
        yield run("UNRESOLVE", d.array(ending))
    if started := writes.resends_started:
        stamp = d.time(writes.resolved_at)
        yield many("RESOLVE", [(key, stamp, body) for key, body in started])


def dead_letter(d: Dialect, target: str, dead: Sequence[tuple[str, str]], kept: int) -> Step[None]:
    """Keeps (wire JSON, reason) pairs as ``target``'s dead letters, a refusal for the
    content with the identity of its alert (``bridge.store.refusals``); the newest
    ``kept`` stay."""
    if not dead:
        return
    at = d.time((yield NOW))
    owners = [refusals.kept_under(body, why) for body, why in dead]
    yield many(
        "DEAD_LETTER",
        [
            (at, target, d.text(why), body, None if owner is None else d.text(owner))
            for (body, why), owner in zip(dead, owners, strict=True)
        ],
    )
    yield run("TRIM_DEAD_LETTERS", kept)


def refused(d: Dialect, target: str, bodies: Sequence[str]) -> Step[list[str]]:
    """What ``target`` refused (its dead letters) of the identities of ``bodies``."""
    # Asked first: reading the identities parses every body (on PostgreSQL, on the event
    # loop), and a re-send page usually meets no refusal at all.
    if not bodies or not (yield value("ANY_REFUSED", target)):
        return []
    owners = [d.text(o) for o in refusals.owners(bodies)]
    if not owners:
        return []
    return [r[0] for r in (yield rows("REFUSED", target, d.array(owners)))]


def unrefused(
    d: Dialect,
    target: str,
    dead: Sequence[tuple[str, str]],
    pending: Sequence[tuple[str, str]] = (),
) -> Step[list[tuple[str, str]]]:
    """What of ``dead`` (wire JSON, reason) a refusal newly dead-letters: not refused by
    ``target`` before, nor ``pending`` (dead-lettered in this lane, not yet written),
    once each, in order."""
    before = yield from refused(d, target, [body for body, _ in dead])
    return refusals.new_dead(dead, [*before, *(body for body, _ in pending)])


# views.ResendPager's tables, in its order.
RESEND_PAGES = ("RESEND_RESOLVED", "RESEND_ACTIVE")


def resend_page(d: Dialect, target: str, after: Any, limit: int) -> Step[Page]:
    """``Lane.resend_page``: ``views.ResendPager``'s page (recently resolved alerts, then
    the active ones, as they are when each page is read), without what ``target``
    refused (``bridge.store.refusals``)."""
    pager, page = views.ResendPager(after, limit), None
    while page is None:
        table, key, count = pager.read()
        got = yield rows(RESEND_PAGES[table], key, count)
        # An active alert and its tiers are read from the state's JSON; a resolve is kept
        # as posted.
        page = pager.got(got if table == 0 else [(r[0], *map(_wire(d), r[1:])) for r in got])
    gone = yield from refused(d, target, page.bodies)
    if not gone:
        return page
    return Page(refusals.not_refused(page.bodies, gone), page.after, page.identities)


def _wire(d: Dialect) -> Any:
    return lambda text: None if text is None else d.wire(text)


def expire_resolved(d: Dialect, before: datetime) -> Step[None]:
    yield run("EXPIRE_RESOLVED", d.time(before))

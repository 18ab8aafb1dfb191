"""Shared test factories: internal alerts and Alertmanager alerts, one definition each,
and the steps of the store contract tests repeat."""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Mapping, Sequence
from datetime import UTC, datetime, timedelta
from typing import Any

from starlette.types import ASGIApp, Receive, Scope, Send

from bridge.alertmanager import PostableAlert
from bridge.model import Kind, SentryAlert, State
from bridge.state import IdentityState
from bridge.store.contract import Processed, Sizes, Store

START = datetime(2024, 5, 1, 12, 0, tzinfo=UTC)


def sentry_alert(**overrides: Any) -> SentryAlert:
    """An issue alert (``event_alert`` / ``triggered`` for issue 42) with ``overrides``."""
    values: dict[str, Any] = {
        "resource": "event_alert",
        "action": "triggered",
        "kind": Kind.ISSUE,
        "state": State.FIRING,
        "identity": "issue:42",
        "issue_id": "42",
        "title": "ValueError: bad input",
    }
    values.update(overrides)
    return SentryAlert(**values)


def issue(n: int, state: State = State.FIRING, **overrides: Any) -> SentryAlert:
    """The ``issue`` webhook of issue ``n``, titled ``Error n``."""
    values: dict[str, Any] = {
        "resource": "issue",
        "action": "created" if state is State.FIRING else "resolved",
        "state": state,
        "identity": f"issue:{n}",
        "issue_id": str(n),
        "title": f"Error {n}",
    }
    return sentry_alert(**(values | overrides))


def postable(
    n: int | str,
    *,
    ends_in: float = 3600.0,
    start: datetime = START,
    labels: dict[str, str] | None = None,
    generator_url: str | None = None,
) -> PostableAlert:
    """A firing alert for issue ``n`` from ``start``, ending ``ends_in`` seconds later."""
    return PostableAlert(
        labels={"alertname": "SentryIssue", "sentry_issue_id": str(n), **(labels or {})},
        annotations={"summary": f"Error {n}"},
        starts_at=start,
        ends_at=start + timedelta(seconds=ends_in),
        generator_url=generator_url or f"https://sentry.example/issues/{n}/",
    )


# --- the store (bridge.store.contract), through its contract only ---------------------------

KEPT_UNTIL = START + timedelta(days=7)  # far beyond what a test's clock moves


def held(
    alerts: Mapping[str, PostableAlert | None], until: datetime = KEPT_UNTIL
) -> dict[str, tuple[IdentityState, datetime]]:
    """``Processed.states`` in which each identity holds ``alerts[identity]`` active (None:
    nothing), kept until ``until``."""
    return {identity: (IdentityState(alert=alert), until) for identity, alert in alerts.items()}


async def sizes(store: Store) -> Sizes:
    """What ``store`` holds now: read afresh, not its cached sizes."""
    return await store.sizes(0)


async def until_sizes(
    store: Store, check: Callable[[Sizes], bool], what: str, timeout: float = 10.0
) -> Sizes:
    """Wait until what ``store`` holds passes ``check``, read again every 10 ms."""
    async with asyncio.timeout(timeout):
        while not check(now := await sizes(store)):
            await asyncio.sleep(0.01)
    assert check(now), what
    return now


async def commit(
    store: Store,
    send: Sequence[PostableAlert] = (),
    states: Mapping[str, tuple[IdentityState, datetime | None]] | None = None,
) -> None:
    """What the pipeline does for one webhook: accept, take, complete with ``send`` queued
    and ``states`` written; the inbox must be empty, or another entry would be taken."""
    assert not (await sizes(store)).inbox, "commit() on a store with entries to take"
    await store.accept(sentry_alert(identity="issue:commit"))
    taken = await store.take(1)
    [entry] = taken.entries
    await store.complete(taken, [Processed(entry.inbox_id, list(send), states or {})])


async def stored_state(store: Store, identity: str) -> IdentityState | None:
    """The state ``take`` hands out for ``identity`` (a webhook of it, taken and completed
    without effect); the inbox must be empty, or another entry would be taken."""
    assert not (await sizes(store)).inbox, "stored_state() on a store with entries to take"
    await store.accept(sentry_alert(identity=identity))
    taken = await store.take(1)
    [entry] = taken.entries
    await store.complete(taken, [Processed(entry.inbox_id, ())])
    return taken.states.get(identity)


async def stored_alert(store: Store, identity: str) -> PostableAlert | None:
    """The alert the state of ``identity`` holds active (``stored_state``)."""
    state = await stored_state(store, identity)
    return state.alert if state else None


def both_listeners(edge: ASGIApp, admin: ASGIApp) -> ASGIApp:
    """One ASGI app for in-process tests: the operator's paths (``/-/reload``,
    ``/-/status...``, ``/-/quarantine...``) to the admin app, the rest (and the lifespan)
    to the webhook port's, as ``bridge.serve`` splits them between its two listeners."""

    async def app(scope: Scope, receive: Receive, send: Send) -> None:
        path = scope.get("path", "")
        operator = path.startswith(("/-/reload", "/-/status", "/-/quarantine"))
        await (admin if scope["type"] == "http" and operator else edge)(scope, receive, send)

    return app

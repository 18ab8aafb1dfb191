"""The quarantine for operators: the authenticated webhooks the bridge kept instead of
processing (``bridge.app``: unreadable bodies; ``bridge.pipeline``: alerts it failed on).

``sentry-bridge quarantine list|show ID|replay [ID...|--all]|discard (ID...|--all)`` works
through the running bridge's operator endpoints (below), on either store, while it runs.
With ``--offline``, or when no bridge answers, it opens the configured store itself:
PostgreSQL at any time (the running replicas see the replayed alerts at once), the SQLite
store only while the bridge is stopped (one process per file: it is locked while the
bridge runs).

``replay``: upgrade the bridge (so its parser reads what the old one could not), then
replay. Each kept body is read again with its kept headers; an entry the pipeline failed on
holds the already-normalised alert, which goes back as is. What reads as an alert leaves
the quarantine and enters the inbox in one transaction, and goes through the pipeline as
if just accepted; what reads as "no alert" (ignored) is removed; what the current parser
still cannot read stays. ``discard`` removes entries for good (an explicit id or
``--all``), counted in ``sentry_bridge_quarantine_discarded_total`` and logged.

The endpoints (JSON; ``bridge.app`` registers them beside ``/-/status``):
``GET /-/quarantine?limit=&after=`` (the entries without bodies, oldest first, and the
count per reason), ``GET /-/quarantine/{id}`` (one, with its body), ``POST
/-/quarantine/replay`` and ``POST /-/quarantine/discard`` with ``{"ids": [...]}`` or
``{"all": true}``.
"""

from __future__ import annotations

import json
import logging
from collections.abc import AsyncIterator, Awaitable, Callable, Sequence
from typing import TYPE_CHECKING, Any

from starlette.requests import Request
from starlette.responses import JSONResponse, Response

from bridge import config, sentry
from bridge.errors import BadPayload, StoreError
from bridge.metrics import Metrics
from bridge.model import Ignored, SentryAlert
from bridge.store import describe
from bridge.store.contract import Quarantined, Store

if TYPE_CHECKING:
    from bridge.compose import Bridge

log = logging.getLogger("bridge.quarantine")

DEFAULT_LIMIT = 100
MAX_LIMIT = 1000
PAGE = 100  # entries read at a time by replay --all (bodies may be 1 MiB each)


# --- what an operator does, on any store ---------------------------------------------------


def reread(cfg: config.Config, entry: Quarantined) -> SentryAlert | Ignored:
    """What the current bridge makes of a quarantined entry (raises if it still cannot)."""
    if entry.alert is not None:
        return SentryAlert.from_json(entry.alert)
    # Only the legacy token vouched for it: read as the legacy plugin's body or not at all.
    legacy_only = entry.reason == "unknown_legacy_body"
    if legacy_only and sentry.detect_resource(entry.headers, sentry.loads(entry.body)) != "legacy":
        raise BadPayload("invalid_payload", "still not a body of the legacy WebHooks plugin")
    _, result = sentry.read(
        entry.headers,
        entry.body,
        base_url=cfg.sentry.base_url,
        organization=cfg.sentry.organization,
        request_id=entry.headers.get("request-id"),
    )
    return result


def summary(entry: Quarantined) -> dict[str, Any]:
    """An entry without its body: what ``list`` shows."""
    resource = entry.headers.get("sentry-hook-resource")
    size = len(entry.body) if entry.alert is None else len(json.dumps(entry.alert))
    return {
        "id": entry.id,
        "at": entry.at,
        "reason": entry.reason,
        "detail": entry.detail,
        "resource": resource or ("alert" if entry.alert is not None else None),
        "request_id": entry.headers.get("request-id") or entry.headers.get("x-servicehook-guid"),
        "bytes": size,
    }


def detail(entry: Quarantined) -> dict[str, Any]:
    """All of an entry: its kept headers (``bridge.app.kept_headers``: no credentials), and
    its body as text or the alert the pipeline failed on."""
    body = None if entry.alert is not None else entry.body.decode(errors="replace")
    return summary(entry) | {"headers": entry.headers, "body": body, "alert": entry.alert}


async def listing(store: Store, *, after: int = 0, limit: int = DEFAULT_LIMIT) -> dict[str, Any]:
    snapshot = await store.snapshot(1)
    entries = await store.quarantined(after=after, limit=limit)
    return {
        "count": snapshot["quarantined"],
        "reasons": snapshot["quarantine_reasons"],
        "oldest_at": snapshot["quarantine_oldest_at"],
        "entries": [summary(e) for e in entries],
    }


async def show(store: Store, entry_id: int) -> dict[str, Any] | None:
    found = await store.quarantined(entry_id)
    return detail(found[0]) if found else None


async def _selected(store: Store, ids: Sequence[int] | None) -> AsyncIterator[Quarantined | int]:
    """The entries of ``ids`` (None: every one, a page at a time), oldest first."""
    if ids is not None:
        for entry_id in dict.fromkeys(ids):
            found = await store.quarantined(entry_id)
            yield found[0] if found else entry_id
        return
    after = 0
    while page := await store.quarantined(after=after, limit=PAGE):
        for entry in page:
            yield entry
        after = page[-1].id


async def replay(cfg: config.Config, store: Store, ids: Sequence[int] | None) -> dict[str, Any]:
    """Replay the entries of ``ids`` (None: all); per entry its outcome: ``replayed`` (into
    the inbox), ``ignored`` (no alert: removed), ``kept`` (still unreadable), ``missing``."""
    results: list[dict[str, Any]] = []
    async for entry in _selected(store, ids):
        if isinstance(entry, int):
            results.append({"id": entry, "outcome": "missing", "detail": "no such entry"})
            continue
        try:
            result = reread(cfg, entry)
        except Exception as exc:  # whatever it was, the entry stays
            results.append({"id": entry.id, "outcome": "kept", "detail": str(exc)[:500]})
            continue
        alert = None if isinstance(result, Ignored) else result
        if not await store.release(entry.id, alert):
            outcome, what = "missing", "gone meanwhile (replayed or discarded elsewhere)"
        elif isinstance(result, Ignored):
            outcome, what = "ignored", f"no alert ({result.reason}), removed"
        else:
            outcome, what = "replayed", result.identity
        results.append({"id": entry.id, "outcome": outcome, "detail": what})
    counts = {k: 0 for k in ("replayed", "ignored", "kept", "missing")}
    for one in results:
        counts[one["outcome"]] += 1
    if counts["replayed"] or counts["ignored"]:
        log.warning("quarantine replayed", extra=counts)
    return {"results": results, "counts": counts}


async def discard(store: Store, metrics: Metrics, ids: Sequence[int] | None) -> dict[str, Any]:
    """Remove the entries of ``ids`` (None: every one) for good, counted and logged."""
    removed = await store.discard_quarantined(ids)
    metrics.quarantine_discarded.inc(len(removed))
    missing = [] if ids is None else sorted(set(ids) - set(removed))
    if removed:
        log.warning(
            "quarantined webhooks discarded",
            extra={"discarded": len(removed), "ids": removed[:100], "all": ids is None},
        )
    return {"discarded": removed, "missing": missing}


# --- the operator endpoints ----------------------------------------------------------------


def _answer(bridge: Any, data: dict[str, Any]) -> Response:
    """The answer, naming the store it came from (the client says which it used)."""
    return JSONResponse(data | {"store": describe(bridge.config)})


def _int(request: Request, name: str, default: int, high: int) -> int:
    value = int(request.query_params.get(name, default))
    return max(0, min(high, value))


async def _selection(request: Request) -> list[int] | None:
    """``{"ids": [...]}`` (those) or ``{"all": true}`` (None); ValueError otherwise."""
    try:
        data = json.loads(await request.body() or b"{}")
    except ValueError:
        raise ValueError("the body is not JSON") from None
    if not isinstance(data, dict):
        raise ValueError('send {"ids": [...]} or {"all": true}')
    ids, every = data.get("ids"), data.get("all") is True
    if every and not ids:
        return None
    valid = isinstance(ids, list) and all(type(i) is int for i in ids)
    if not ids or every or not valid:
        raise ValueError('send {"ids": [...]} (integers) or {"all": true}, one of the two')
    return list(ids)


async def list_endpoint(request: Request) -> Response:
    bridge = request.app.state.bridge
    try:
        limit = max(1, _int(request, "limit", DEFAULT_LIMIT, MAX_LIMIT))
        after = _int(request, "after", 0, 2**62)
    except ValueError:
        return JSONResponse({"error": "limit, after: not a number"}, status_code=400)
    try:
        return _answer(bridge, await listing(bridge.store, after=after, limit=limit))
    except StoreError as exc:
        return JSONResponse({"error": str(exc)}, status_code=503)


async def show_endpoint(request: Request) -> Response:
    bridge = request.app.state.bridge
    entry_id: int = request.path_params["entry_id"]
    try:
        found = await show(bridge.store, entry_id)
    except StoreError as exc:
        return JSONResponse({"error": str(exc)}, status_code=503)
    if found is None:
        return JSONResponse({"error": f"no quarantined entry {entry_id}"}, status_code=404)
    return _answer(bridge, found)


async def _on_selection(
    request: Request, act: Callable[[Bridge, list[int] | None], Awaitable[dict[str, Any]]]
) -> Response:
    """``act`` on the entries the body selects (``{"ids": [...]}`` or ``{"all": true}``)."""
    bridge = request.app.state.bridge
    try:
        ids = await _selection(request)
    except ValueError as exc:
        return JSONResponse({"error": str(exc)}, status_code=400)
    try:
        return _answer(bridge, await act(bridge, ids))
    except StoreError as exc:
        return JSONResponse({"error": str(exc)}, status_code=503)


async def replay_endpoint(request: Request) -> Response:
    return await _on_selection(request, lambda b, ids: replay(b.config, b.store, ids))


async def discard_endpoint(request: Request) -> Response:
    return await _on_selection(request, lambda b, ids: discard(b.store, b.metrics, ids))

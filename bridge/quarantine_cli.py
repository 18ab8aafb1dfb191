"""``sentry-bridge quarantine list|show|replay|discard``: the operator's side of
``bridge.quarantine``, through the running bridge or, ``--offline``, on the store itself.

Without ``--offline`` the command calls the bridge's operator endpoints (``/-/quarantine``,
found as ``sentry-bridge status`` finds ``/-/status``); when nothing listens there it says
so and opens the configured store directly, which for the SQLite store works only while
the bridge is stopped (the file is locked while it runs) and for PostgreSQL at any time.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import sys
from collections.abc import Callable, Coroutine
from datetime import UTC, datetime
from typing import Any

import httpx
from prometheus_client import CollectorRegistry

from bridge import client, config, quarantine, status
from bridge.alertmanager import target_name
from bridge.errors import ConfigError, StoreError
from bridge.metrics import Metrics
from bridge.store import describe, open_for_operator
from bridge.store.contract import Store

# What one action does on a store: (config, open store, metrics) -> its JSON answer.
Action = Callable[[config.Config, Store, Metrics], Coroutine[Any, Any, Any]]


def _offline(cfg: config.Config, action: Action) -> Any:
    metrics = Metrics(CollectorRegistry())
    targets = [target_name(url) for url in cfg.alertmanager.urls]
    client.say(f"store: {describe(cfg)} (opened directly)")

    async def run() -> Any:
        store = open_for_operator(cfg, metrics, targets)
        try:
            await store.open()
        except ConfigError as exc:
            if cfg.store.backend != "sqlite":
                raise
            raise ConfigError(
                f"{exc}\nThe SQLite store is locked while the bridge runs: stop it, or run "
                "without --offline so the running bridge does it."
            ) from None
        try:
            return await action(cfg, store, metrics)
        finally:
            await store.close()

    return asyncio.run(run())


def _remote(base: str, method: str, path: str, **kwargs: Any) -> Any:
    """The bridge's answer: JSON, or None for a 404 of ``show``; raises ConnectError when
    nothing listens (the caller then opens the store)."""
    with httpx.Client(base_url=base, timeout=120.0) as http:
        response = http.request(method, path, **kwargs)
    if response.status_code == 404 and path.startswith("/-/quarantine/") and method == "GET":
        return None
    if response.status_code != 200:
        raise RuntimeError(f"{method} {base}{path}: {response.status_code} {response.text}")
    client.say(f"store: {response.json().get('store', '?')} (through the bridge at {base})")
    return response.json()


def _request(args: argparse.Namespace) -> tuple[Action, str, str, dict[str, Any]]:
    """The action of ``args`` on a store, and as a request to the running bridge."""
    if args.action == "list":
        params = {"limit": args.limit, "after": args.after}
        return (
            lambda c, s, m: quarantine.listing(s, after=args.after, limit=args.limit),
            "GET",
            "/-/quarantine",
            {"params": params},
        )
    if args.action == "show":
        return (lambda c, s, m: quarantine.show(s, args.id)), "GET", f"/-/quarantine/{args.id}", {}
    every = args.all or (args.action == "replay" and not args.ids)  # replay: all by default
    ids: list[int] | None = None if every else args.ids
    body = {"json": {"all": True} if every else {"ids": ids}}
    if args.action == "replay":
        return (lambda c, s, m: quarantine.replay(c, s, ids)), "POST", "/-/quarantine/replay", body
    return (lambda c, s, m: quarantine.discard(s, m, ids)), "POST", "/-/quarantine/discard", body


def _call(args: argparse.Namespace, cfg: config.Config) -> Any:
    """The action of ``args`` on the running bridge, or on the store (--offline / no bridge)."""
    action, method, path, kwargs = _request(args)
    if args.offline:
        return _offline(cfg, action)
    base = status.base_url(args.url, cfg)
    try:
        return _remote(base, method, path, **kwargs)
    except httpx.ConnectError:
        client.say(f"no bridge answers at {base}: opening the configured store directly")
        return _offline(cfg, action)


def _when(ts: float) -> str:
    return datetime.fromtimestamp(ts, UTC).isoformat(timespec="seconds")


def _print_list(answer: dict[str, Any]) -> int:
    reasons = ", ".join(f"{r}: {n}" for r, n in sorted(answer["reasons"].items()))
    oldest = f", oldest {_when(answer['oldest_at'])}" if answer["oldest_at"] else ""
    print(f"{answer['count']} quarantined" + (f" ({reasons}){oldest}" if reasons else ""))
    entries = answer["entries"]
    for e in entries:
        what = e["resource"] or "-"
        print(
            f"{e['id']:>6}  {_when(e['at'])}  {e['reason']:<15} {what:<15} {e['bytes']:>8}B"
            f"  {e['detail']}"
        )
    if entries and len(entries) < answer["count"]:
        print(f"... more: --after {entries[-1]['id']}")
    return 0


def _print_show(answer: dict[str, Any] | None, entry_id: int) -> int:
    if answer is None:
        print(f"no quarantined entry {entry_id}", file=sys.stderr)
        return 1
    for key in ("id", "reason", "detail", "resource", "request_id", "bytes"):
        print(f"{key}: {answer[key]}")
    print(f"received: {_when(answer['at'])}")
    print("headers (as kept: no credentials):")
    print(json.dumps(answer["headers"], indent=2, sort_keys=True))
    if answer["alert"] is not None:
        print("alert (normalised; the pipeline failed on it):")
        print(json.dumps(answer["alert"], indent=2))
    else:
        print("body:")
        print(answer["body"])
    return 0


def _print_replay(answer: dict[str, Any]) -> int:
    for one in answer["results"]:
        print(f"{one['id']}: {one['outcome']}: {one['detail']}")
    counts = answer["counts"]
    print(", ".join(f"{n} {what}" for what, n in counts.items()))
    return 1 if counts["kept"] or counts["missing"] else 0


def _print_discard(answer: dict[str, Any]) -> int:
    gone = answer["discarded"]
    print(f"discarded {len(gone)}" + (f": {' '.join(map(str, gone))}" if gone else ""))
    if answer["missing"]:
        print(f"not found: {' '.join(map(str, answer['missing']))}")
        return 1
    return 0


def cmd_quarantine(args: argparse.Namespace) -> int:
    from bridge.cli import _config_path

    if args.action == "discard" and bool(args.ids) == bool(args.all):
        print("discard: name the entries (IDs) or --all, one of the two", file=sys.stderr)
        return 2
    if args.action == "replay" and args.ids and args.all:
        print("replay: IDs or --all, not both", file=sys.stderr)
        return 2
    cfg = client.load(_config_path(args.config)).config
    try:
        answer = _call(args, cfg)
    except (StoreError, RuntimeError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    if args.action == "list":
        return _print_list(answer)
    if args.action == "show":
        return _print_show(answer, args.id)
    return _print_replay(answer) if args.action == "replay" else _print_discard(answer)


def add_parser(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    q = sub.add_parser(
        "quarantine",
        help="list, show, replay or discard the webhooks kept in quarantine",
        description="Through the running bridge's operator endpoints, or with --offline (or "
        "when no bridge answers) on the configured store itself: PostgreSQL at any time, the "
        "SQLite store only while the bridge is stopped.",
    )
    actions = q.add_subparsers(dest="action", required=True)
    common = argparse.ArgumentParser(add_help=False)
    common.add_argument("--config", help="config file (default: $BRIDGE_CONFIG or ./config.yaml)")
    common.add_argument("--url", help="the bridge (default: as `sentry-bridge status` finds it)")
    common.add_argument(
        "--offline",
        action="store_true",
        help="open the configured store directly (SQLite: only while the bridge is stopped)",
    )
    ls = actions.add_parser("list", parents=[common], help="the entries, oldest first")
    ls.add_argument("--limit", type=int, default=quarantine.DEFAULT_LIMIT)
    ls.add_argument("--after", type=int, default=0, help="only entries with a higher id")
    show = actions.add_parser("show", parents=[common], help="one entry, headers and body")
    show.add_argument("id", type=int)
    replay = actions.add_parser(
        "replay", parents=[common], help="read entries again into the inbox (default: all)"
    )
    replay.add_argument("ids", type=int, nargs="*", metavar="ID")
    replay.add_argument("--all", action="store_true", help="every entry (the default)")
    discard = actions.add_parser(
        "discard", parents=[common], help="remove entries for good (IDs or --all)"
    )
    discard.add_argument("ids", type=int, nargs="*", metavar="ID")
    discard.add_argument("--all", action="store_true", help="every entry")
    q.set_defaults(func=cmd_quarantine)

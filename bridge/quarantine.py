"""``sentry-bridge quarantine list|replay``: the authenticated webhooks the bridge kept
instead of processing (see ``bridge.app`` and ``bridge.pipeline``).

Both work on the outbox file of a *stopped* bridge: the file is opened with an exclusive
lock (one bridge per data directory), so while the bridge runs the command waits a few
seconds and fails saying so. Upgrade the bridge (so its parser reads what the old one
could not), stop it, ``replay``, start it: the replayed alerts are in its inbox and go
through the pipeline as if just accepted. A webhook the current parser still cannot read
stays in quarantine; one it now reads as "no alert" (ignored) is removed.

``replay`` re-reads each kept body with its kept headers; an entry the pipeline failed on
holds the already-normalised alert, which goes back to the inbox as is.
"""

from __future__ import annotations

import argparse
import asyncio
import json
from datetime import UTC, datetime

from prometheus_client import CollectorRegistry

from bridge import config, sentry
from bridge.alertmanager import target_name
from bridge.metrics import Metrics
from bridge.model import Ignored, SentryAlert
from bridge.store.contract import Quarantined
from bridge.store.sqlite import Outbox


def _outbox(cfg: config.Config) -> Outbox:
    return Outbox(
        cfg.outbox.data_dir,
        [target_name(url) for url in cfg.alertmanager.urls],
        max_queued=cfg.outbox.max_queued,
        metrics=Metrics(CollectorRegistry()),
    )


def reread(cfg: config.Config, entry: Quarantined) -> SentryAlert | Ignored:
    """What the current bridge makes of a quarantined entry (raises if it still cannot)."""
    if entry.alert is not None:
        return SentryAlert.from_json(entry.alert)
    _, result = sentry.read(
        entry.headers,
        entry.body,
        base_url=cfg.sentry.base_url,
        organization=cfg.sentry.organization,
        request_id=entry.headers.get("request-id"),
    )
    return result


def _line(entry: Quarantined) -> str:
    at = datetime.fromtimestamp(entry.at, UTC).isoformat(timespec="seconds")
    what = entry.headers.get("sentry-hook-resource") or ("alert" if entry.alert else "body")
    size = len(entry.body) if entry.alert is None else len(json.dumps(entry.alert))
    return f"{entry.id:>6}  {at}  {entry.reason:<15} {what:<15} {size:>8}B  {entry.detail}"


async def _list(cfg: config.Config, only: int | None) -> int:
    outbox = _outbox(cfg)
    await outbox.open()
    try:
        entries = [e for e in await outbox.quarantined() if only is None or e.id == only]
    finally:
        await outbox.close()
    print(f"{len(entries)} quarantined")
    for entry in entries:
        print(_line(entry))
        if only is not None:  # one entry: all of it, to inspect or report
            print(json.dumps(entry.headers, indent=2))
            print(json.dumps(entry.alert) if entry.alert else entry.body.decode(errors="replace"))
    return 0


async def _replay(cfg: config.Config, only: int | None) -> int:
    outbox = _outbox(cfg)
    await outbox.open()
    counts = {"replayed": 0, "ignored": 0, "kept": 0}
    try:
        for entry in await outbox.quarantined():
            if only is not None and entry.id != only:
                continue
            try:
                result = reread(cfg, entry)
            except Exception as exc:  # whatever it was, the entry stays
                counts["kept"] += 1
                print(f"{entry.id}: still unreadable, kept: {exc}")
                continue
            if isinstance(result, Ignored):
                await outbox.release(entry.id, None)
                counts["ignored"] += 1
                print(f"{entry.id}: no alert ({result.reason}), removed")
                continue
            await outbox.release(entry.id, result)
            counts["replayed"] += 1
            print(f"{entry.id}: replayed into the inbox ({result.identity})")
    finally:
        await outbox.close()
    print(", ".join(f"{n} {what}" for what, n in counts.items()))
    return 1 if counts["kept"] else 0


def cmd_quarantine(args: argparse.Namespace) -> int:
    from bridge.cli import _config_path

    cfg = config.load(_config_path(args.config))
    run = _list if args.action == "list" else _replay
    return asyncio.run(run(cfg, args.id))


def add_parser(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    q = sub.add_parser(
        "quarantine",
        help="list or replay the webhooks kept in quarantine (the bridge must be stopped)",
    )
    q.add_argument("action", choices=("list", "replay"))
    q.add_argument("--id", type=int, help="only the entry with this id (list: with its body)")
    q.add_argument("--config", help="config file (default: $BRIDGE_CONFIG or ./config.yaml)")
    q.set_defaults(func=cmd_quarantine)

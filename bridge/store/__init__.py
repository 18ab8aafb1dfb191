"""Where the bridge keeps its state: the engines behind one store contract.

``contract`` says what every engine keeps and all the pipeline, delivery and the edge use.
``sqlite`` (``Outbox``: embedded, one file, one replica) and ``pg`` (``PostgresStore``:
shared by several replicas, issue 10) keep it; ``spool`` rides out a PostgreSQL outage on
a local SQLite file. ``open_store`` picks the configured engine.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from bridge.config import Config
from bridge.metrics import Metrics
from bridge.store.contract import Store


def open_store(config: Config, metrics: Metrics, targets: Sequence[str]) -> Store:
    """The configured engine for these Alertmanagers (by target name), not yet open: the
    caller awaits its ``open()``."""
    common: dict[str, Any] = {
        "max_queued": config.outbox.max_queued,
        "metrics": metrics,
        "body_retention": config.dedup.body_retention,
        "max_bodies": config.dedup.max_bodies,
    }
    if config.store.backend == "postgres":
        from bridge.store.pg import PostgresStore  # asyncpg is only needed here
        from bridge.store.spool import spooled

        primary = PostgresStore(config.store.postgres, targets, **common)
        # Sentry still gets its answer within a second while PostgreSQL is away.
        return spooled(primary, config, metrics)
    from bridge.store.sqlite import Outbox

    return Outbox(config.outbox.data_dir, targets, **common)

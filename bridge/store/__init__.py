"""Where the bridge keeps its state: the engines behind one store contract.

``contract`` says what every engine keeps. ``sqlite`` (embedded, one replica) is the
outbox (``bridge/outbox.py``); ``postgres`` (``bridge.store.pg``) is shared by several
replicas (issue 10). ``open_store`` picks the configured one.
"""

from __future__ import annotations

from collections.abc import Sequence

from bridge.config import Config
from bridge.metrics import Metrics
from bridge.store.contract import Store


def open_store(config: Config, metrics: Metrics, targets: Sequence[str]) -> Store:
    """The configured engine for these Alertmanagers (by target name), not yet open: the
    caller awaits its ``open()``."""
    if config.store.backend == "postgres":
        from bridge.store.pg import PostgresStore  # asyncpg is only needed here

        return PostgresStore(
            config.store.postgres,
            targets,
            max_queued=config.outbox.max_queued,
            metrics=metrics,
            body_retention=config.dedup.body_retention,
            max_bodies=config.dedup.max_bodies,
        )
    from bridge.outbox import Outbox

    return Outbox(  # type: ignore[return-value]  # until the SQLite engine keeps the contract
        config.outbox.data_dir,
        targets,
        max_queued=config.outbox.max_queued,
        metrics=metrics,
        body_retention=config.dedup.body_retention,
        max_bodies=config.dedup.max_bodies,
    )

"""Where the bridge keeps its state: the engines behind one store contract.

``contract.py`` is what every engine promises and all the pipeline, delivery and the
edge use. ``sqlite.py`` (``Outbox``: embedded, one file, one replica) keeps it today;
``postgres`` (``postgres.py``: connection, schema migration, the database clock;
``lease.py``: one holder at a time across replicas) is the shared store of issue 10,
whose engine comes next: until it is wired, ``serve`` refuses ``store.backend:
postgres`` rather than silently running on SQLite.
"""

from __future__ import annotations

from bridge.config import Config
from bridge.errors import ConfigError


def check_supported(config: Config) -> None:
    """Refuse, at start, a store this version can validate but not run on."""
    if config.store.backend == "postgres":
        raise ConfigError(
            "store.backend: postgres is not yet supported by this version: the schema and "
            "the connection are ready, but the pipeline still runs on the embedded SQLite "
            "outbox; use store.backend: sqlite with one replica (docs/scaling.md)"
        )

"""Where the bridge keeps its state: the engines behind one store contract.

``contract`` says what every engine keeps and all the pipeline, delivery and the edge use.
The rules every engine shares are written once, as pure code: ``writes`` (what one batch of
decisions writes, as a plain value), ``refusals`` (what one Alertmanager refused is its own
dead letter), ``views`` (what expiry removes, re-send paging) and ``sizes`` (what a store
holds: one read, cached briefly, and the ``store.max_queued`` bound). What reads and writes
the tables for them is written once too, as steps (``steps``: generators yielding named
queries, which each engine runs its own way): ``identity`` (the state rows), ``queue``
(posts, re-sends, dead letters), ``bodies`` (a body seen again is a duplicate) and
``operators`` (a batch's writes, requeue, quarantine, snapshot, sizes, expiry).
``engine.Engine`` is the base of both engines: what they keep alike in memory, and the
contract's calls that are one step each.
``sqlite`` (``SqliteStore``: embedded, one file, one replica) and ``pg`` (``PostgresStore``:
shared by several replicas, issue 10) keep it; ``spool`` rides out a PostgreSQL outage on
a local SQLite file. ``open_store`` picks the configured engine; ``open_for_operator``
opens it for an operator's command (``sentry-bridge quarantine --offline``), and
``describe`` names it for a human.

Both engines hold one schema (``sqlite/schema.py``, ``pg/schema.py``)::

    inbox        accepted webhooks (SentryAlert JSON) the pipeline has not finished
    queue        postable alerts (wire JSON) an Alertmanager still needs, in order: a
                 row per post and Alertmanager, deleted once that one settled it
    state        per Sentry identity (PostgreSQL: ``identity_state``), the state
                 machine's state (``bridge.state``), kept until its ``kept_until``: the
                 one source of truth per identity. Its ``alert`` is the one Alertmanager
                 holds firing; ``active`` and ``ends_at`` beside it say whether that still
                 fires (expiry clears the flag once endsAt passed), and ``due_at`` when
                 its next escalation step is due
    resolved     recently resolved alerts, re-sent for a while as Prometheus does
    dead_letter  alerts an Alertmanager refused, with its reason, for a human (the
                 newest ``dead_letters_kept``); one refused for its content names its
                 identity, and that Alertmanager's re-sends skip it (``refusals``)
    quarantine   authenticated webhooks the bridge could not process: the raw body and
                 the headers parsing reads (never a signature), or the normalised alert
                 the pipeline failed on, with the reason (the newest ``quarantine_kept``)
    seen_body    SHA-256 of every body accepted within ``body_retention`` (at most
                 ``max_bodies``): the same body again is a duplicate with no effect
    probe        a row rewritten to learn whether a failing store can be written again

PostgreSQL adds ``progress`` (a row per Alertmanager: its lane's lock) and ``lease``.
Each engine's queries sit in one module, by name
(``sqlite/sql.py``, ``pg/sql.py``). A third engine creates those tables, writes the same
queries by name in a ``sql.py`` of its own, gives a ``steps.Dialect`` and a driver for the
steps, and brings what is its own (a connection, its inbox and takes, locks, lanes); the
contract tests (tests/store/test_contract.py) then run against it as against the others.
"""

from __future__ import annotations

from collections.abc import Sequence
from urllib.parse import urlsplit

from bridge.config import Config
from bridge.errors import ConfigError
from bridge.metrics import Metrics
from bridge.store.contract import Store
from bridge.store.engine import Limits


def open_store(config: Config, metrics: Metrics, targets: Sequence[str]) -> Store:
    """The configured engine for these Alertmanagers (by target name), not yet open: the
    caller awaits its ``open()``."""
    engine = _engine(config, metrics, targets, migrate=True)
    if config.store.backend == "postgres":
        from bridge.store.spool import spooled

        # Sentry still gets its answer within a second while PostgreSQL is away.
        return spooled(engine, config, metrics)
    return engine


def _engine(config: Config, metrics: Metrics, targets: Sequence[str], *, migrate: bool) -> Store:
    """The configured engine itself; ``migrate=False``: one that may not create or migrate
    PostgreSQL's schema (an operator's command)."""
    common = Limits(
        max_queued=config.store.max_queued,
        metrics=metrics,
        body_retention=config.store.body_retention,
        max_bodies=config.store.max_bodies,
    )
    if config.store.backend == "postgres":
        from bridge.store.pg import PostgresStore  # asyncpg is only needed here

        return PostgresStore(config.store.postgres, targets, migrate=migrate, **common)
    from bridge.store.sqlite import SqliteStore

    return SqliteStore(config.store.data_dir, targets, **common)


def describe(config: Config) -> str:
    """Which store a config names, for a human (no credentials): the SQLite file, or
    PostgreSQL's host, database and schema."""
    if config.store.backend == "postgres":
        settings = config.store.postgres
        if settings.dsn is None:
            return f"postgres (store.postgres.dsn not set), schema {settings.schema_}"
        dsn = urlsplit(settings.dsn.get_secret_value())
        host = dsn.hostname or "localhost (socket)"
        where = f"{host}:{dsn.port}" if dsn.port else host
        return f"postgres {where}{dsn.path or '/'}, schema {settings.schema_}"
    from bridge.store.sqlite.schema import FILENAME

    return f"sqlite {config.store.data_dir / FILENAME}"


def open_for_operator(config: Config, metrics: Metrics, targets: Sequence[str]) -> Store:
    """The configured store for an operator's command, not yet open: the engine itself,
    without the spool (that is the running bridge's, per pod). Refuses, rather than
    creates, a store file that is not there (a wrong ``data_dir`` would otherwise show an
    empty quarantine), as PostgreSQL's engine refuses a schema it would have to create or
    migrate; PostgreSQL needs ``store.postgres.dsn``, as ``serve`` does."""
    if config.store.backend == "postgres" and config.store.postgres.dsn is None:
        raise ConfigError(
            "store.postgres.dsn: needed to reach PostgreSQL (e.g. set BRIDGE_DATABASE_URL "
            "as the bridge has it)"
        )
    if config.store.backend != "postgres":
        from bridge.store.sqlite.schema import FILENAME

        path = config.store.data_dir / FILENAME
        if not path.exists():
            raise ConfigError(f"no store at {path}: is store.data_dir (or BRIDGE_DATA_DIR) right?")
    return _engine(config, metrics, targets, migrate=False)

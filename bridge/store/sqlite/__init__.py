"""The embedded engine of the store: one SQLite file between the 202 and Alertmanager.

It keeps the store contract (``bridge.store.contract``) for one process and one replica:
a lane is an ``asyncio.Lock`` per Alertmanager (never None), ``periodic()`` is always
True, ``Taken.now`` is this process's clock, and the one taker is the pipeline task.

``SqliteStore`` (``engine``) composes the parts: ``schema`` (the tables below), ``sql``
(every query, by name), ``dialect`` (running the shared steps, ``bridge.store.steps``, on
the file's thread), ``inbox`` (accepts, takes, seen bodies) and ``queue`` (the lanes), on
``bridge.store.sqlite_file`` (``SqliteFile``: the file on its one thread) and
``bridge.store.group_commit``, the plumbing the spool uses too.

Tables (``store.sqlite3`` under ``store.data_dir``; ``schema.VERSION`` in the file's
``user_version``)::

    inbox        accepted webhooks (SentryAlert JSON) the pipeline has not finished
    queue        postable alerts (wire JSON) an Alertmanager still needs, in order: a
                 row per post and Alertmanager, deleted once that one settled it
    state        per Sentry identity: the state machine's state (``bridge.state``):
                 the alert Alertmanager holds firing, severity earned, environments
                 seen, resolve time, recent firings, the last post; kept until
                 ``IdentityState.kept_until``. The one source of truth per identity;
                 ``active`` and ``ends_at`` beside it say whether its alert still fires
                 (expiry clears the flag once endsAt passed): re-sends, expiry, the
                 status page and requeue find the active alerts by them.
    resolved     recently resolved alerts, re-sent for a while as Prometheus does
    dead_letter  alerts an Alertmanager rejected, with its reason, for a human
                 (the newest ``dead_letters_kept``); one refused for its content names
                 its identity, and that Alertmanager's re-sends skip it
                 (``bridge.store.refusals``)
    quarantine   authenticated webhooks the bridge could not process: the raw body and
                 the headers parsing reads (never a signature), or the normalised alert
                 when the pipeline failed on it, with the reason; ``sentry-bridge
                 quarantine`` lists and replays them (the newest ``quarantine_kept``)
    seen_body    SHA-256 of every body accepted within ``body_retention`` (at most
                 ``max_bodies``): the same body again is a duplicate with no effect
    probe        one row, rewritten to learn whether a failing store can be written again

Memory: the active and resolved alerts live in the file only (100,000 active
alerts would take some 230 MB as objects), and so do the identities' states.
``take`` reads the states of the identities it hands out (``Taken.states``);
re-sends read the alerts page by page (``Lane.resend_page``, keyset pages).
What stays in memory per entry is an id and a time for each accepted webhook
not yet taken, plus the alerts themselves for the first ``kept_in_memory``
(a backlog beyond that is read back from the file). The sizes are read from the
file when asked (``bridge.store.sizes``), not counted by hand.

Durability: WAL with ``synchronous=FULL``. ``accept`` returns once its group
commit's transaction is in the WAL and the WAL is fsynced, so a 202 survives a
power loss or a kernel crash as well as a crash of the process
(https://www.sqlite.org/pragma.html#pragma_synchronous; ``NORMAL``, used before,
syncs only at checkpoints and could lose the last commits to a power loss).
``complete``, delivery's advance and expiry do commit at ``NORMAL``: what they
write follows from the inbox, and the next accept's fsync covers them
(``bridge.store.sqlite_file``).
Group commit pays for it: one fsync per round of concurrent accepts, not one
per webhook, and the fsync waits on the SQLite thread, not the event loop. It
still costs: on this project's shared 2-core test machine (ext4 on a virtual
disk) a one-row commit took 0.06 ms with ``NORMAL`` and 0.3 to 0.56 ms with
``FULL``, and ``bench/run ingest`` (wrk, concurrency 50, medians of 3 rounds,
2026-12-02, the machine busy with other work) served 35 % and 48 % of the bare
app's requests per second with ``NORMAL`` (p99 96 and 190 ms) against 23 % and
23 % with ``FULL`` (p99 198 and 314 ms), at the same CPU per webhook (about
0.9 ms): the bridge waits for the disk, it does not work harder. On a volume
with a slower fsync (network storage) each round waits that much longer.

Group commit (``GroupCommit``): concurrent ``accept`` calls queue up while one
write is running and are committed together by the next, so a storm costs one
transaction per round trip to the writer, not one per webhook, and a lone webhook
waits for no timer. Every SQLite call runs on one dedicated thread (``SqliteFile``),
which also serialises them; the event loop never blocks on the disk.

The file is opened with ``locking_mode=EXCLUSIVE``: a second bridge on the same
data directory fails at start instead of delivering the same alerts twice.
"""

from __future__ import annotations

from bridge.store.sqlite.engine import SqliteStore
from bridge.store.sqlite.schema import FILENAME

__all__ = ["FILENAME", "SqliteStore"]

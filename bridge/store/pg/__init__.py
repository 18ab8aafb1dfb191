"""The PostgreSQL engine of the store contract, shared by several replicas (issue 10).

``PostgresStore`` (``engine``: what a replica keeps in memory, and executing what a batch
writes, ``bridge.store.writes``) composes the parts: ``connection`` (the asyncpg pool, TLS,
the migration under an advisory lock, the database clock), ``schema`` (the migrations),
``sql`` (every other query, by name), ``inbox`` (group-committed accepts, takes in order
with each identity locked), ``identity`` (the state rows), ``queue`` (per-Alertmanager rows,
lanes, re-send pages, dead letters and refusals: ``bridge.store.refusals``), ``operators``
(requeue, quarantine, the status snapshot, sizes, expiry), ``lease`` (one replica at a
time runs the periodic jobs) and ``codec`` (what PostgreSQL text cannot hold).

The driver is asyncpg: it speaks PostgreSQL's protocol natively on asyncio (no thread
pool), uses the binary format and prepared statements (cached per connection), and was
the fastest of the asyncio drivers for this load of many small statements.
"""

from __future__ import annotations

from bridge.store.pg.engine import PostgresStore

__all__ = ["PostgresStore"]

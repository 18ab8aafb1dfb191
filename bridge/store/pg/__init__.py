"""The PostgreSQL engine of the store contract, shared by several replicas (issue 10).

``PostgresStore`` (``engine``: what a replica keeps in memory) composes the parts:
``connection`` (the asyncpg pool, TLS, the migration under an advisory lock), ``schema``
(the migrations), ``sql`` (every other query, by name), ``dialect`` (running the shared
steps, ``bridge.store.steps``, on a connection), ``inbox`` (group-committed accepts, takes
in order with each identity locked), ``queue`` (the lanes), ``lease`` (one replica at a
time runs the periodic jobs) and ``codec`` (what PostgreSQL text cannot hold).

The driver is asyncpg: it speaks PostgreSQL's protocol natively on asyncio (no thread
pool), uses the binary format and prepared statements (cached per connection), and was
the fastest of the asyncio drivers for this load of many small statements.
"""

from __future__ import annotations

from bridge.store.pg.engine import PostgresStore

__all__ = ["PostgresStore"]

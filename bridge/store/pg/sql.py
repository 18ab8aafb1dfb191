"""Every query of the PostgreSQL engine, by name, in one place (``sqlite/sql.py`` is
SQLite's); the schema and its migrations are ``schema.py``. The engine's parts execute
them. A query a new contract method needs goes here, under the table it reads, with a name
saying what it answers. Arrays are passed whole (``unnest``, ``= ANY``), one statement per
batch.
"""

from __future__ import annotations

# A transaction that writes only what the inbox, which every 202 committed durably, and the
# states give again (a batch's decisions, delivery's progress, expiry) commits without
# waiting for its WAL flush (PostgreSQL docs, "Asynchronous Commit"): a crash of the server
# can lose only the newest such transactions, and WAL is one sequence, so the next durable
# commit's flush covers every earlier one. What is lost is decided and posted again (a
# re-sent post is idempotent); as SQLite's synchronous=NORMAL (bridge/store/sqlite_file.py).
NOT_DURABLE = "SELECT set_config('synchronous_commit', 'off', true)"

# --- inbox, seen bodies, claims ------------------------------------------------------------

# bridge.store.bodies: a row seen within the retention is kept and not returned. $2 is
# NULL: the dialect's clock is the database's.
SEE_BODIES = """
WITH t AS (SELECT coalesce($2::timestamptz, clock_timestamp()) AS now)
INSERT INTO seen_body AS s (digest, seen_at)
SELECT d, t.now FROM unnest($1::bytea[]) AS d, t ORDER BY d
ON CONFLICT (digest) DO UPDATE SET seen_at = excluded.seen_at
    WHERE s.seen_at <= excluded.seen_at - make_interval(secs => $3)
RETURNING digest
"""

INSERT_INBOX = """
WITH added AS (
    INSERT INTO inbox (identity, alert)
    SELECT i, a FROM unnest($1::text[], $2::text[]) WITH ORDINALITY AS u (i, a, n) ORDER BY n
    RETURNING 1
)
SELECT pg_notify($3, ''), (SELECT count(*) FROM added)
"""

# Bounded by time and count (the newest max_bodies stay), in the accept's transaction: one
# sweeper at a time (the advisory lock, tried); rows another transaction holds are left to
# it (SKIP LOCKED: an accept never waits here); at most 1000 rows per bound a time. Each
# bound reads its own index in order (a literal LIMIT: a generic plan does too). One OR of
# the two made the planner scan the whole table: 10-12 ms of the database per accepted
# group at 100,000 bodies, before the 202s (issue 15: p50 69 ms at 100,000 active).
SWEEP_BODIES = """
DELETE FROM seen_body WHERE id = ANY (ARRAY (
    SELECT id FROM seen_body
    WHERE (SELECT pg_try_advisory_xact_lock($3, 0))
      AND seen_at <= (SELECT clock_timestamp()) - make_interval(secs => $1)
    ORDER BY seen_at LIMIT 1000 FOR UPDATE SKIP LOCKED
) || ARRAY (
    SELECT id FROM seen_body
    WHERE (SELECT pg_try_advisory_xact_lock($3, 0))
      AND id <= (SELECT max(id) FROM seen_body) - $2
    ORDER BY id LIMIT 1000 FOR UPDATE SKIP LOCKED
))
"""

INBOX_HEAD = """
SELECT identity, count(*) FROM (SELECT id, identity FROM inbox ORDER BY id LIMIT $1) AS h
GROUP BY identity ORDER BY min(id)
"""

# A try never waits: takers cannot deadlock, and one slow batch does not stall the others.
TRY_IDENTITIES = (
    "SELECT i FROM unnest($2::text[]) AS i WHERE pg_try_advisory_xact_lock($1, hashtext(i))"
)

CLAIM_INBOX = """
SELECT id, accepted_at, alert FROM inbox
WHERE identity = ANY($1::text[])
ORDER BY id LIMIT $2
FOR UPDATE
"""


# --- queue, lanes, re-sends, dead letters --------------------------------------------------

ENQUEUE = """
INSERT INTO queue (target, queued_at, body)
SELECT t, q, b
FROM unnest($1::text[], $2::timestamptz[], $3::text[]) WITH ORDINALITY AS s (t, q, b, n)
ORDER BY n
"""

NOTIFY = "SELECT pg_notify($1, '')"

# One row per Alertmanager, made at start by every replica (the lane is its lock).
ADD_LANES = "INSERT INTO progress (target) SELECT unnest($1::text[]) ON CONFLICT DO NOTHING"

# A lane's transaction writes only what the inbox and the states give again (NOT_DURABLE,
# set here: no round trip of its own).
TRY_LANE = """
SELECT target, set_config('synchronous_commit', 'off', true) FROM progress
WHERE target = $1 FOR UPDATE SKIP LOCKED
"""

PENDING = """
SELECT id, extract(epoch FROM queued_at)::float8, body FROM queue
WHERE target = $1 ORDER BY id LIMIT $2
"""

SETTLE = "DELETE FROM queue WHERE target = $1 AND id = ANY($2::bigint[])"

DEAD_LETTER = """
INSERT INTO dead_letter (at, target, reason, body, identity)
SELECT a, t, r, b, i
FROM unnest($1::timestamptz[], $2::text[], $3::text[], $4::text[], $5::text[])
     WITH ORDINALITY AS u (a, t, r, b, i, n)
ORDER BY n
"""

REFUSED = "SELECT body FROM dead_letter WHERE target = $1 AND identity = ANY($2::text[])"

ANY_REFUSED = "SELECT EXISTS (SELECT 1 FROM dead_letter WHERE target = $1 AND identity IS NOT NULL)"

# The dead-letter table is for a human, not an archive: the newest are kept. Rows another
# transaction is trimming already are skipped: two lanes may trim at once.
TRIM_DEAD_LETTERS = """
DELETE FROM dead_letter WHERE id IN (
    SELECT id FROM dead_letter WHERE id <= (SELECT max(id) FROM dead_letter) - $1
    FOR UPDATE SKIP LOCKED
)
"""

# Re-sends (bridge.store.views.ResendPager): the resolved alerts first, then the active
# ones, each with its escalation tiers' alerts, in key order pages.
RESEND_RESOLVED = "SELECT id, body, NULL FROM resolved WHERE id > $1 ORDER BY id LIMIT $2"
RESEND_ACTIVE = (
    "SELECT identity, (state->'alert')::text, (state->'tiers')::text FROM identity_state"
    " WHERE active AND identity > $1 ORDER BY identity LIMIT $2"
)

RESOLVE = """
INSERT INTO resolved AS r (labels, resolved_at, body)
SELECT * FROM unnest($1::text[], $2::timestamptz[], $3::text[])
ON CONFLICT (labels) DO UPDATE SET resolved_at = excluded.resolved_at, body = excluded.body
"""

UNRESOLVE = "DELETE FROM resolved WHERE labels = ANY($1::text[])"

EXPIRE_RESOLVED = "DELETE FROM resolved WHERE resolved_at <= $1"


# --- identity_state, its advisory locks ----------------------------------------------------

# Locks are taken in the order of their keys (the hashes), the same in every transaction;
# unnest keeps the array's order.
LOCK_KEYS = "SELECT DISTINCT hashtext(i) AS h FROM unnest($1::text[]) AS i ORDER BY h"

LOCK_IDENTITIES = "SELECT pg_advisory_xact_lock($1, h) FROM unnest($2::int4[]) AS h"

STATES = "SELECT identity, state::text FROM identity_state WHERE identity = ANY($1::text[])"

UPSERT_STATE = """
INSERT INTO identity_state AS s (identity, kept_until, active, ends_at, state, due_at)
SELECT * FROM unnest($1::text[], $2::timestamptz[], $3::boolean[], $4::timestamptz[],
                     $5::jsonb[], $6::timestamptz[])
ON CONFLICT (identity) DO UPDATE
    SET kept_until = excluded.kept_until, active = excluded.active,
        ends_at = excluded.ends_at, state = excluded.state, due_at = excluded.due_at
"""

FORGET_STATE = "DELETE FROM identity_state WHERE identity = ANY($1::text[])"

ACTIVE_ALERTS_OF = """
SELECT identity, (state->'alert')::text FROM identity_state
WHERE identity = ANY($1::text[]) AND active
"""

# An active alert whose endsAt passed has expired in Alertmanager too; a state is kept
# until its kept_until (IdentityState.kept_until).
END_EXPIRED = (
    "UPDATE identity_state SET active = false, due_at = NULL WHERE active AND ends_at <= $1"
)

# Store.issues, for the reconciler: byte order (COLLATE "C"), whatever the database's
# collation.
ISSUES = """
SELECT identity, state::text FROM identity_state
WHERE identity LIKE 'issue:%' AND identity COLLATE "C" > $1
ORDER BY identity COLLATE "C" LIMIT $2
"""

# The escalation timer (bridge.escalation): the identities whose next step is due.
DUE = """
SELECT identity, due_at FROM identity_state WHERE due_at <= $1 AND active
ORDER BY due_at LIMIT $2
"""

FORGET_KEPT_UNTIL = "DELETE FROM identity_state WHERE kept_until <= $1"


# --- quarantine ----------------------------------------------------------------------------

QUARANTINE = """
INSERT INTO quarantine (at, reason, detail, headers, body, alert)
SELECT * FROM unnest($1::timestamptz[], $2::text[], $3::text[], $4::text[], $5::bytea[], $6::text[])
"""

# The newest are kept; rows another transaction is trimming are left to it.
TRIM_QUARANTINE = """
DELETE FROM quarantine WHERE id IN (
    SELECT id FROM quarantine WHERE id <= (SELECT max(id) FROM quarantine) - $1
    FOR UPDATE SKIP LOCKED
)
"""

_QUARANTINED = (
    "SELECT id, extract(epoch FROM at)::float8, reason, detail, headers, body, alert "
    "FROM quarantine"
)
QUARANTINED_ONE = f"{_QUARANTINED} WHERE id = $1"
QUARANTINED_PAGE = f"{_QUARANTINED} WHERE id > $1 ORDER BY id LIMIT $2"
RELEASE = "DELETE FROM quarantine WHERE id = $1"
DISCARD_ALL = "DELETE FROM quarantine RETURNING id"
DISCARD = "DELETE FROM quarantine WHERE id = ANY($1::bigint[]) RETURNING id"
QUARANTINE_REASONS = "SELECT reason, count(*) FROM quarantine GROUP BY reason ORDER BY reason"
QUARANTINE_OLDEST = "SELECT extract(epoch FROM min(at))::float8 FROM quarantine"

# --- dead letters (operators) --------------------------------------------------------------

LOCK_DEAD_LETTERS = "SELECT id, body FROM dead_letter ORDER BY id FOR UPDATE"
DELETE_DEAD_LETTERS = "DELETE FROM dead_letter WHERE id = ANY($1::bigint[])"
NEWEST_DEAD_LETTERS = """
SELECT extract(epoch FROM at)::float8, target, reason, body FROM dead_letter
ORDER BY id DESC LIMIT $1
"""
COUNT_DEAD_LETTERS = "SELECT count(*) FROM dead_letter"
ACTIVE_ALERTS = """
SELECT identity, extract(epoch FROM ends_at)::float8, (state->'alert'->'labels')::text,
       extract(epoch FROM due_at)::float8, coalesce(jsonb_array_length(state->'tiers'), 0),
       coalesce((state->>'sentry_escalating')::boolean, false)
FROM identity_state WHERE active ORDER BY identity LIMIT $1
"""


# --- the clock, the probe ---------------------------------------------------------------

NOW = "SELECT clock_timestamp()"
PROBE = """
INSERT INTO probe (holder, at) VALUES ($1, clock_timestamp())
ON CONFLICT (holder) DO UPDATE SET at = excluded.at
"""
DELETE_INBOX = "DELETE FROM inbox WHERE id = ANY($1::bigint[])"


# --- complete ------------------------------------------------------------------------------

INBOX_DONE = """
WITH gone AS (DELETE FROM inbox WHERE id = ANY($1::bigint[]) RETURNING 1)
-- A batch's decisions (NOT_DURABLE, set here: no round trip of its own).
SELECT pg_notify($2, ''), set_config('synchronous_commit', 'off', true)
FROM (SELECT count(*) FROM gone) AS g
"""


# --- sizes ---------------------------------------------------------------------------------

SIZES = """
SELECT extract(epoch FROM clock_timestamp())::float8,
       (SELECT count(*) FROM inbox),
       (SELECT count(*) FROM identity_state WHERE active),
       (SELECT count(*) FROM resolved),
       (SELECT count(*) FROM quarantine),
       extract(epoch FROM least((SELECT min(accepted_at) FROM inbox),
                                (SELECT min(queued_at) FROM queue)))::float8
"""

QUEUED = "SELECT target, count(*) FROM queue GROUP BY target"


# --- the periodic lease --------------------------------------------------------------------

# One clock reading per statement: the CTE is evaluated once (clock_timestamp() is not).
ACQUIRE_LEASE = """
WITH t AS (SELECT coalesce($4::timestamptz, clock_timestamp()) AS now)
INSERT INTO lease AS l (name, holder, acquired_at, expires_at)
SELECT $1, $2, t.now, t.now + $3::interval FROM t
ON CONFLICT (name) DO UPDATE
    SET holder = excluded.holder,
        acquired_at = CASE WHEN l.holder = excluded.holder
                           THEN l.acquired_at ELSE excluded.acquired_at END,
        expires_at = excluded.expires_at
    WHERE l.holder = excluded.holder OR l.expires_at <= excluded.acquired_at
RETURNING l.expires_at
"""

RELEASE_LEASE = "DELETE FROM lease WHERE name = $1 AND holder = $2 RETURNING name"

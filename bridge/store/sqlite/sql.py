"""Every query of the SQLite engine, by name, in one place (``pg/sql.py`` is PostgreSQL's):
the engine's parts execute them. A query a new contract method needs goes here, under
the table it reads, with a name saying what it answers. Lists are passed as one JSON
array (``json_each``), so a statement's text does not depend on its arguments; the one
exception is ``SEE_BODIES``, whose digests are blobs a JSON array cannot carry.
"""

from __future__ import annotations

# --- inbox, seen bodies ----------------------------------------------------------------------

INSERT_INBOX = "INSERT INTO inbox (accepted_at, alert) VALUES (?, ?)"
INBOX_LEFT = "SELECT id, accepted_at FROM inbox ORDER BY id"
INBOX_ALERTS = "SELECT id, alert FROM inbox WHERE id IN (SELECT value FROM json_each(?))"
DELETE_INBOX = "DELETE FROM inbox WHERE id = ?"

# bridge.store.bodies: a row seen within the retention is kept and not returned. A query
# run ``each`` gets its rows as a VALUES list in place of {rows} (one statement per group:
# dialect.run), the other arguments after them; ``WHERE true`` tells SQLite's parser that
# ON CONFLICT is the upsert's (SQLite docs, "UPSERT", parsing ambiguity).
SEE_BODIES = (
    "WITH d (digest) AS (VALUES {rows}) INSERT INTO seen_body (digest, at)"
    " SELECT digest, ? FROM d WHERE true ON CONFLICT (digest) DO UPDATE"
    " SET at = excluded.at WHERE seen_body.at <= excluded.at - ? RETURNING digest"
)
# Bounded by time and count (the newest are kept).
FORGET_OLD_BODIES = "DELETE FROM seen_body WHERE at <= ?"
FORGET_MANY_BODIES = "DELETE FROM seen_body WHERE id <= (SELECT max(id) FROM seen_body) - ?"

# --- queue, re-sends, dead letters -----------------------------------------------------------

ENQUEUE = "INSERT INTO queue (target, queued_at, alert) VALUES (?, ?, ?)"
PENDING = "SELECT id, queued_at, alert FROM queue WHERE target = ? AND id > ? ORDER BY id LIMIT ?"
SETTLE = "DELETE FROM queue WHERE target = ? AND id <= ?"
# At start: the queue of an Alertmanager no longer configured goes.
KEEP_ONLY_TARGETS = "DELETE FROM queue WHERE target NOT IN (SELECT value FROM json_each(?))"

UNRESOLVE = "DELETE FROM resolved WHERE labels IN (SELECT value FROM json_each(?))"
RESOLVE = "INSERT INTO resolved (labels, resolved_at, alert) VALUES (?, ?, ?)"
EXPIRE_RESOLVED = "DELETE FROM resolved WHERE resolved_at <= ?"
# Re-sends (bridge.store.views.ResendPager): the resolved alerts first (rowid pages), then
# the active ones (identity pages), each with its escalation tiers' alerts.
RESEND_RESOLVED = "SELECT rowid, alert, NULL FROM resolved WHERE rowid > ? ORDER BY rowid LIMIT ?"
RESEND_ACTIVE = (
    "SELECT identity, json_extract(state, '$.alert'), json_extract(state, '$.tiers')"
    " FROM state WHERE active AND identity > ? ORDER BY identity LIMIT ?"
)

DEAD_LETTER = "INSERT INTO dead_letter (at, target, reason, alert, identity) VALUES (?, ?, ?, ?, ?)"
TRIM_DEAD_LETTERS = "DELETE FROM dead_letter WHERE id <= (SELECT max(id) FROM dead_letter) - ?"
REFUSED = (
    "SELECT alert FROM dead_letter WHERE target = ?"
    " AND identity IN (SELECT value FROM json_each(?))"
)
ANY_REFUSED = "SELECT 1 FROM dead_letter WHERE target = ? AND identity IS NOT NULL LIMIT 1"
LOCK_DEAD_LETTERS = "SELECT id, alert FROM dead_letter ORDER BY id"  # one writer: no lock
NEWEST_DEAD_LETTERS = "SELECT at, target, reason, alert FROM dead_letter ORDER BY id DESC LIMIT ?"
COUNT_DEAD_LETTERS = "SELECT count(*) FROM dead_letter"
DELETE_DEAD_LETTERS = "DELETE FROM dead_letter WHERE id IN (SELECT value FROM json_each(?))"

# --- state -------------------------------------------------------------------------------------

STATES = "SELECT identity, state FROM state WHERE identity IN (SELECT value FROM json_each(?))"
UPSERT_STATE = (
    "INSERT OR REPLACE INTO state (identity, kept_until, active, ends_at, state, due_at)"
    " VALUES (?, ?, ?, ?, ?, ?)"
)
# Store.issues, for the reconciler: a range of the primary key (``issue;`` is the name after
# every ``issue:<id>`` in byte order).
ISSUES = (
    "SELECT identity, state FROM state WHERE identity > max(?, 'issue:') AND identity < 'issue;'"
    " ORDER BY identity LIMIT ?"
)
# The escalation timer (bridge.escalation): the identities whose next step is due.
DUE = "SELECT identity, due_at FROM state WHERE due_at <= ? AND active ORDER BY due_at LIMIT ?"
FORGET_STATE = "DELETE FROM state WHERE identity = ?"
ACTIVE_ALERTS_OF = (
    "SELECT identity, json_extract(state, '$.alert') FROM state"
    " WHERE identity IN (SELECT value FROM json_each(?)) AND active"
)
ACTIVE_ALERTS = (
    "SELECT identity, ends_at, json_extract(state, '$.alert.labels'), due_at,"
    " json_array_length(state, '$.tiers'), json_extract(state, '$.sentry_escalating')"
    " FROM state WHERE active ORDER BY identity LIMIT ?"
)
# An active alert whose endsAt passed has expired in Alertmanager too.
END_EXPIRED = "UPDATE state SET active = 0, due_at = NULL WHERE active AND ends_at <= ?"
FORGET_KEPT_UNTIL = "DELETE FROM state WHERE kept_until <= ?"

# --- quarantine ------------------------------------------------------------------------------

QUARANTINE = (
    "INSERT INTO quarantine (at, reason, detail, headers, body, alert) VALUES (?, ?, ?, ?, ?, ?)"
)
TRIM_QUARANTINE = "DELETE FROM quarantine WHERE id <= (SELECT max(id) FROM quarantine) - ?"
_QUARANTINED = "SELECT id, at, reason, detail, headers, body, alert FROM quarantine"
QUARANTINED_ONE = f"{_QUARANTINED} WHERE id = ?"
QUARANTINED_PAGE = f"{_QUARANTINED} WHERE id > ? ORDER BY id LIMIT ?"
RELEASE = "DELETE FROM quarantine WHERE id = ?"
DISCARD_ALL = "DELETE FROM quarantine RETURNING id"
DISCARD = "DELETE FROM quarantine WHERE id IN (SELECT value FROM json_each(?)) RETURNING id"
QUARANTINE_REASONS = "SELECT reason, count(*) FROM quarantine GROUP BY reason ORDER BY reason"
QUARANTINE_OLDEST = "SELECT min(at) FROM quarantine"

# --- sizes, probe ------------------------------------------------------------------------------

SIZES = """
SELECT NULL, (SELECT count(*) FROM inbox), (SELECT count(*) FROM state WHERE active),
       (SELECT count(*) FROM resolved), (SELECT count(*) FROM quarantine),
       (SELECT min(at) FROM (SELECT min(accepted_at) AS at FROM inbox
                             UNION ALL SELECT min(queued_at) FROM queue))
"""
QUEUED = "SELECT target, count(*) FROM queue GROUP BY target"
PROBE = "INSERT OR REPLACE INTO probe (id, at) VALUES (1, ?)"

# --- what one process needs not (bridge.store.steps: running them does nothing) ----------------

NOTIFY = None  # the engine wakes its own senders
LOCK_KEYS = LOCK_IDENTITIES = None  # one writer

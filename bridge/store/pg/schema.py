"""The PostgreSQL schema, as ordered migrations (``connection.migrate`` applies them).

A migration is never edited once released: a change is a new one with the next version.
Plain ``CREATE TABLE`` (no ``IF NOT EXISTS``): a migration applied twice fails loudly instead
of hiding a broken version table.

Version 1 holds what issue 10 moves to PostgreSQL (``bridge.store.pg`` says how it is
used). Times are ``timestamptz`` from the database's clock, so replicas with skewed clocks
agree on windows and lease expiry. Row ids are ``bigint`` identities: arrival order for
causally ordered writes, but not commit order across replicas.
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class Migration:
    version: int
    description: str
    sql: str


_V1 = """
-- Accepted webhooks (the inbox), committed before the 202: the normalised alert as JSON
-- text (text, not jsonb: JSON escapes a NUL as \\u0000, which jsonb refuses). Taken in id
-- order; per identity one taker at a time (an advisory lock on the identity).
CREATE TABLE inbox (
    id          bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    accepted_at timestamptz NOT NULL DEFAULT clock_timestamp(),
    identity    text NOT NULL,
    alert       text NOT NULL             -- bridge.model.SentryAlert.to_json()
);
CREATE INDEX inbox_identity ON inbox (identity, id);

-- Bodies accepted within store.body_retention (the newest store.max_bodies), by SHA-256:
-- the same body twice, even to two replicas at once, makes one entry.
CREATE TABLE seen_body (
    id      bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    digest  bytea NOT NULL UNIQUE,
    seen_at timestamptz NOT NULL
);
CREATE INDEX seen_body_seen_at ON seen_body (seen_at);

-- The state machine's state per Sentry identity (bridge.state.IdentityState.to_json()).
-- Its alert is the one Alertmanager holds firing while ``active`` (cleared by expiry once
-- its endsAt passed, or when Alertmanager refuses it): re-sends read these rows.
CREATE TABLE identity_state (
    identity   text PRIMARY KEY,
    kept_until timestamptz NOT NULL,
    active     boolean NOT NULL,
    ends_at    timestamptz,               -- the active alert's endsAt
    state      jsonb NOT NULL
);
CREATE INDEX identity_state_kept_until ON identity_state (kept_until);
CREATE INDEX identity_state_active ON identity_state (identity) WHERE active;
CREATE INDEX identity_state_ends_at ON identity_state (ends_at) WHERE active;

-- Recently resolved label sets, re-sent for alertmanager.resolved_resend.
CREATE TABLE resolved (
    id          bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    labels      text NOT NULL UNIQUE,     -- the label set, as sorted JSON pairs
    resolved_at timestamptz NOT NULL,
    body        text NOT NULL             -- the resolve's wire JSON, posted as is
);
CREATE INDEX resolved_resolved_at ON resolved (resolved_at);

-- Posts one Alertmanager still needs: a row per Alertmanager, deleted once that one has
-- settled it. No cursor: ids are not in commit order across replicas.
CREATE TABLE queue (
    id        bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    target    text NOT NULL,
    queued_at timestamptz NOT NULL,       -- when the webhook was accepted
    body      text NOT NULL               -- wire JSON (Alertmanager openapi postableAlert)
);
CREATE INDEX queue_target ON queue (target, id);

-- One row per Alertmanager: its lane is this row's lock (FOR UPDATE SKIP LOCKED).
CREATE TABLE progress (
    target text PRIMARY KEY
);

-- Alerts an Alertmanager refused, for a human (the newest are kept).
CREATE TABLE dead_letter (
    id     bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    at     timestamptz NOT NULL DEFAULT clock_timestamp(),
    target text NOT NULL,
    reason text NOT NULL,
    body   text NOT NULL
);

-- Authenticated webhooks the bridge could not process: the raw body and headers, or the
-- normalised alert the pipeline failed on (the newest are kept).
CREATE TABLE quarantine (
    id      bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    at      timestamptz NOT NULL DEFAULT clock_timestamp(),
    reason  text NOT NULL,
    detail  text NOT NULL,
    headers text NOT NULL,                -- JSON object
    body    bytea NOT NULL,
    alert   text                          -- SentryAlert JSON, when the pipeline failed on it
);

-- One holder at a time for the periodic jobs (re-sends, expiry): bridge.store.pg.lease.
CREATE TABLE lease (
    name        text PRIMARY KEY,
    holder      text NOT NULL,
    acquired_at timestamptz NOT NULL,
    expires_at  timestamptz NOT NULL
);

-- Per replica, one row rewritten to learn whether a failing database can be written again.
CREATE TABLE probe (
    holder text PRIMARY KEY,
    at     timestamptz NOT NULL
);
"""

# Issue 15: what one Alertmanager refuses is its own business. A dead letter names the
# identity of its alert, so that Alertmanager's re-sends skip what it refused (a page looks
# up the refusals of its identities) instead of the refusal clearing the identity's alert
# for every Alertmanager.
_V2 = """
ALTER TABLE dead_letter ADD COLUMN identity text;
CREATE INDEX dead_letter_target ON dead_letter (target, identity);
"""

# Issue 16: the next escalation step's time, so the periodic job finds what is due.
_V3 = """
ALTER TABLE identity_state ADD COLUMN due_at timestamptz;
CREATE INDEX identity_state_due_at ON identity_state (due_at) WHERE due_at IS NOT NULL;
"""

MIGRATIONS: tuple[Migration, ...] = (
    Migration(
        1,
        "inbox, seen bodies, identity states, queue, resolved, dead letters, quarantine, leases",
        _V1,
    ),
    Migration(2, "dead letters name their identity: refusals per Alertmanager", _V2),
    Migration(3, "identity states keep their next escalation step's time", _V3),
)

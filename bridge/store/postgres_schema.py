"""The PostgreSQL schema, as ordered migrations (``postgres.migrate`` applies them).

A migration is never edited once released: a change is a new one with the next version.
Plain ``CREATE TABLE`` (no ``IF NOT EXISTS``): a migration applied twice fails loudly instead
of hiding a broken version table.

Version 1 holds what issue 10 moves to PostgreSQL. Times are ``timestamptz`` set from the
database's clock (``clock_timestamp()``), so replicas with skewed clocks agree on windows,
lease expiry and back-off. Row ids are ``bigint`` identities: their order is arrival order.
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class Migration:
    version: int
    description: str
    sql: str


_V1 = """
-- Accepted webhooks, committed before the 202 (the inbox). The body is kept as received and
-- verified, so processing can be redone; rows go once the pipeline has taken them in.
-- Claimed with FOR UPDATE SKIP LOCKED; a claim expires so a dead pod's rows are retried.
CREATE TABLE inbox (
    id            bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    received_at   timestamptz NOT NULL DEFAULT clock_timestamp(),
    request_id    text,
    resource      text NOT NULL,          -- Sentry-Hook-Resource (or the guessed kind)
    body          bytea NOT NULL,
    attempts      integer NOT NULL DEFAULT 0,
    claimed_by    text,
    claimed_until timestamptz
);

-- Bodies already accepted, by digest: Sentry retries a webhook it saw time out, and the
-- same body twice must make one decision. Expired rows are swept by the lease holder.
CREATE TABLE seen_body (
    digest     bytea PRIMARY KEY,         -- sha256 of the verified body
    first_seen timestamptz NOT NULL DEFAULT clock_timestamp(),
    expires_at timestamptz NOT NULL
);
CREATE INDEX seen_body_expires ON seen_body (expires_at);

-- The state machine's state per Sentry identity: the label set Alertmanager holds for it,
-- when it resolved, the severity it has earned ("only gets worse until resolved"), the
-- times of its repeats (escalation) and the dedup fingerprint with its window. One
-- decision at a time per identity: a transaction-scoped advisory lock on the identity,
-- in the same transaction as the queue insert.
CREATE TABLE identity_state (
    identity      text PRIMARY KEY,       -- e.g. sentry issue id + project + environment
    labels        jsonb,                  -- the active label set; NULL when none is active
    severity      text,
    resolved_at   timestamptz,
    repeat_times  timestamptz[] NOT NULL DEFAULT '{}',
    fingerprint   text,                   -- the last decision's dedup fingerprint
    window_until  timestamptz,            -- repeats with that fingerprint are suppressed until
    updated_at    timestamptz NOT NULL DEFAULT clock_timestamp()
);
CREATE INDEX identity_state_resolved ON identity_state (resolved_at)
    WHERE resolved_at IS NOT NULL;

-- Posts waiting for one Alertmanager (each Alertmanager has its own queue and progress).
-- Claimed without double delivery across pods: FOR UPDATE SKIP LOCKED on rows due now.
CREATE TABLE queue (
    id           bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    alertmanager text NOT NULL,           -- the configured URL, as a key
    identity     text NOT NULL,
    alert        jsonb NOT NULL,          -- the postable alert (Alertmanager openapi)
    enqueued_at  timestamptz NOT NULL DEFAULT clock_timestamp(),
    not_before   timestamptz NOT NULL DEFAULT clock_timestamp(),  -- back-off
    attempts     integer NOT NULL DEFAULT 0
);
CREATE INDEX queue_due ON queue (alertmanager, not_before, id);

-- Per Alertmanager: how far delivery got and since when it fails (the health and metrics).
CREATE TABLE progress (
    alertmanager  text PRIMARY KEY,
    delivered_id  bigint NOT NULL DEFAULT 0,  -- the highest queue id delivered
    last_success  timestamptz,
    failing_since timestamptz,
    last_error    text
);

-- What to re-send and when: active alerts every resend_interval (so a restarted
-- Alertmanager converges), resolved ones until resolved_resend has passed. Done by the
-- one holder of the "resend" lease.
CREATE TABLE resend (
    identity      text PRIMARY KEY,
    alert         jsonb NOT NULL,         -- the last posted alert, re-posted as is
    firing        boolean NOT NULL,
    next_at       timestamptz NOT NULL,
    until         timestamptz             -- resolved: stop re-sending after this
);
CREATE INDEX resend_due ON resend (next_at);

-- Posts given up on (too old, or refused by Alertmanager as invalid): kept for the operator.
CREATE TABLE dead_letter (
    id           bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    alertmanager text NOT NULL,
    identity     text NOT NULL,
    alert        jsonb NOT NULL,
    reason       text NOT NULL,           -- a closed set, as the metrics' reason label
    attempts     integer NOT NULL,
    enqueued_at  timestamptz NOT NULL,
    died_at      timestamptz NOT NULL DEFAULT clock_timestamp()
);

-- Accepted webhooks the pipeline cannot process (a bug, or a shape Sentry added): kept
-- with the error instead of blocking the inbox or being lost.
CREATE TABLE quarantine (
    id             bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    received_at    timestamptz NOT NULL,
    request_id     text,
    resource       text NOT NULL,
    body           bytea NOT NULL,
    error          text NOT NULL,
    quarantined_at timestamptz NOT NULL DEFAULT clock_timestamp()
);

-- One holder at a time for the periodic jobs (re-sends, expiry, sweeping): bridge.store.lease.
CREATE TABLE lease (
    name        text PRIMARY KEY,
    holder      text NOT NULL,
    acquired_at timestamptz NOT NULL,
    expires_at  timestamptz NOT NULL
);
"""

MIGRATIONS: tuple[Migration, ...] = (
    Migration(1, "inbox, queue, progress, identity state, re-sends, dead letters, leases", _V1),
)

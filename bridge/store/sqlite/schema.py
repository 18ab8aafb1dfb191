"""The SQLite engine's tables (the package docstring says what each one holds)."""

from __future__ import annotations

import sqlite3

from bridge.errors import ConfigError

FILENAME = "store.sqlite3"
# PRAGMA user_version of the tables below. 2 (issue 15): PostgreSQL's shape (no ``active``
# table, no cursors), and each dead letter names the identity of its alert (what one
# Alertmanager refused is its own). Nothing was released with version 1 (0 in the file),
# so there is no migration: such a file is refused. 3 (issue 16): ``state.due_at``, the
# next escalation step's time; a version 2 file gains the column at open.
VERSION = 3

# The shape PostgreSQL's schema has (bridge/store/pg/schema.py): a queue row per
# Alertmanager, deleted once settled; the active alert is the state's, flagged ``active``
# with its ``ends_at``. AUTOINCREMENT: ids are never reused, so a lane's ``done`` mark
# never covers a later row. The time indexes let expire() find what is due.
SCHEMA = """
CREATE TABLE IF NOT EXISTS inbox (
    id INTEGER PRIMARY KEY AUTOINCREMENT, accepted_at REAL NOT NULL, alert TEXT NOT NULL);
CREATE TABLE IF NOT EXISTS queue (
    id INTEGER PRIMARY KEY AUTOINCREMENT, target TEXT NOT NULL, queued_at REAL NOT NULL,
    alert TEXT NOT NULL);
CREATE TABLE IF NOT EXISTS resolved (
    labels TEXT PRIMARY KEY, resolved_at REAL NOT NULL, alert TEXT NOT NULL);
CREATE TABLE IF NOT EXISTS state (
    identity TEXT PRIMARY KEY, kept_until REAL NOT NULL, active INTEGER NOT NULL,
    ends_at REAL, state TEXT NOT NULL, due_at REAL);
CREATE TABLE IF NOT EXISTS dead_letter (
    id INTEGER PRIMARY KEY AUTOINCREMENT, at REAL NOT NULL, target TEXT NOT NULL,
    reason TEXT NOT NULL, alert TEXT NOT NULL, identity TEXT);
CREATE TABLE IF NOT EXISTS quarantine (
    id INTEGER PRIMARY KEY AUTOINCREMENT, at REAL NOT NULL, reason TEXT NOT NULL,
    detail TEXT NOT NULL, headers TEXT NOT NULL, body BLOB NOT NULL, alert TEXT);
CREATE TABLE IF NOT EXISTS seen_body (
    id INTEGER PRIMARY KEY AUTOINCREMENT, digest BLOB NOT NULL UNIQUE, at REAL NOT NULL);
CREATE TABLE IF NOT EXISTS probe (id INTEGER PRIMARY KEY CHECK (id = 1), at REAL NOT NULL);
"""
# Made once the version is known to be this one (an older file's columns differ).
INDEXES = """
CREATE INDEX IF NOT EXISTS queue_target ON queue (target, id);
CREATE INDEX IF NOT EXISTS resolved_resolved_at ON resolved (resolved_at);
CREATE INDEX IF NOT EXISTS state_kept_until ON state (kept_until);
CREATE INDEX IF NOT EXISTS state_active ON state (identity) WHERE active;
CREATE INDEX IF NOT EXISTS state_ends_at ON state (ends_at) WHERE active;
CREATE INDEX IF NOT EXISTS state_due_at ON state (due_at) WHERE due_at IS NOT NULL;
CREATE INDEX IF NOT EXISTS dead_letter_target ON dead_letter (target, identity);
CREATE INDEX IF NOT EXISTS seen_body_at ON seen_body (at);
"""


def check_version(db: sqlite3.Connection, path: object) -> None:
    """Stamps a new file with ``VERSION``; refuses a file of another version."""
    version = db.execute("PRAGMA user_version").fetchone()[0]
    columns = {row[1] for row in db.execute("PRAGMA table_info(state)")}
    if version == 0 and "active" in columns:  # made just now by SCHEMA
        db.execute(f"PRAGMA user_version = {VERSION}")
        version = VERSION
    if version == 2:  # issue 16: the escalation timer's column
        db.execute("ALTER TABLE state ADD COLUMN due_at REAL")
        db.execute(f"PRAGMA user_version = {VERSION}")
        version = VERSION
    if version != VERSION:
        raise ConfigError(
            f"the store {path} has schema version {version}, this bridge needs {VERSION}: "
            "an unreleased development version wrote it (docs/upgrading.md); move it away"
        )
    db.executescript(INDEXES)

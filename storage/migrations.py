"""Append-only named migrations, recorded in ``_migrations``.

Never edit a migration that has shipped: add ``m00N_...`` below it. Each runs in its own transaction.
"""

from __future__ import annotations

import sqlite3
import time

M001_INITIAL = """
CREATE TABLE accounts (
    platform   TEXT    NOT NULL,
    server_id  TEXT    NOT NULL,
    user_id    TEXT    NOT NULL,
    balance    INTEGER NOT NULL CHECK (balance >= 0),
    created_at REAL    NOT NULL,
    updated_at REAL    NOT NULL,
    PRIMARY KEY (platform, server_id, user_id)
) WITHOUT ROWID;

-- Every credit movement. ``delta`` is the change to the spendable balance, so each balance equals
-- the sum of its rows' deltas. ``consume`` has delta 0: it settles credits already held by ``reserve``.
CREATE TABLE ledger (
    id            INTEGER PRIMARY KEY,
    platform      TEXT    NOT NULL,
    server_id     TEXT    NOT NULL,
    user_id       TEXT    NOT NULL,
    kind          TEXT    NOT NULL CHECK (kind IN
                    ('initial', 'grant', 'revoke', 'set', 'reserve', 'consume', 'release', 'refund')),
    delta         INTEGER NOT NULL,
    amount        INTEGER NOT NULL CHECK (amount >= 0),
    balance_after INTEGER NOT NULL CHECK (balance_after >= 0),
    request_id    TEXT    NOT NULL,
    actor         TEXT    NOT NULL,
    note          TEXT,
    created_at    REAL    NOT NULL
);
CREATE INDEX ledger_account ON ledger (platform, server_id, user_id, id);
CREATE INDEX ledger_request ON ledger (request_id);

CREATE TABLE reservations (
    id         TEXT    PRIMARY KEY,
    platform   TEXT    NOT NULL,
    server_id  TEXT    NOT NULL,
    user_id    TEXT    NOT NULL,
    amount     INTEGER NOT NULL CHECK (amount >= 0),
    status     TEXT    NOT NULL CHECK (status IN ('held', 'settled', 'released')),
    instance   TEXT    NOT NULL,
    created_at REAL    NOT NULL,
    expires_at REAL    NOT NULL,
    settled_at REAL
) WITHOUT ROWID;
CREATE INDEX reservations_held ON reservations (status, platform, server_id, user_id);

CREATE TABLE generations (
    id               TEXT    PRIMARY KEY,
    platform         TEXT    NOT NULL,
    server_id        TEXT    NOT NULL,
    user_id          TEXT    NOT NULL,
    channel_id       TEXT    NOT NULL DEFAULT '',
    command          TEXT    NOT NULL,
    provider         TEXT,
    model            TEXT,
    prompt           TEXT    NOT NULL,
    options          TEXT    NOT NULL DEFAULT '{}',
    status           TEXT    NOT NULL CHECK (status IN ('PENDING', 'COMPLETED', 'FAILED')),
    error_code       TEXT,
    credits_reserved INTEGER NOT NULL DEFAULT 0,
    credits_consumed INTEGER NOT NULL DEFAULT 0,
    image_count      INTEGER NOT NULL DEFAULT 0,
    duration_ms      REAL,
    revised_prompt   TEXT,
    result_text      TEXT,
    created_at       REAL    NOT NULL,
    finished_at      REAL
) WITHOUT ROWID;
CREATE INDEX generations_user ON generations (platform, server_id, user_id, created_at);
CREATE INDEX generations_created ON generations (created_at);

CREATE TABLE generation_images (
    generation_id TEXT    NOT NULL REFERENCES generations (id),
    idx           INTEGER NOT NULL,
    sha256        TEXT    NOT NULL,
    mime          TEXT    NOT NULL,
    bytes         INTEGER NOT NULL,
    width         INTEGER NOT NULL,
    height        INTEGER NOT NULL,
    PRIMARY KEY (generation_id, idx)
) WITHOUT ROWID;
"""

# What the vendor reported it spent on a generation (OpenAI's ``usage``, Gemini's ``usageMetadata``).
M002_USAGE_TOKENS = """
ALTER TABLE generations ADD COLUMN input_tokens INTEGER NOT NULL DEFAULT 0;
ALTER TABLE generations ADD COLUMN output_tokens INTEGER NOT NULL DEFAULT 0
"""

# Leases instead of instance names: a held reservation names the process holding it (``holder``, a
# random id per process) and its lease (``expires_at``, renewed by the holder's heartbeat). Rows held by
# a named instance keep that name as their holder, so they are released when their old expiry passes.
# And one ledger row per (request id, movement kind): a second settle, refund or release of a request
# cannot move credits again. The ledger keeps every row it had.
M003_LEASES = """
CREATE TABLE reservations_leased (
    id         TEXT    PRIMARY KEY,
    platform   TEXT    NOT NULL,
    server_id  TEXT    NOT NULL,
    user_id    TEXT    NOT NULL,
    amount     INTEGER NOT NULL CHECK (amount >= 0),
    status     TEXT    NOT NULL CHECK (status IN ('held', 'settled', 'released')),
    holder     TEXT    NOT NULL,
    created_at REAL    NOT NULL,
    expires_at REAL    NOT NULL,
    settled_at REAL
) WITHOUT ROWID;
INSERT INTO reservations_leased (id, platform, server_id, user_id, amount, status, holder, created_at,
                                 expires_at, settled_at)
    SELECT id, platform, server_id, user_id, amount, status, instance, created_at, expires_at, settled_at
    FROM reservations;
DROP TABLE reservations;
ALTER TABLE reservations_leased RENAME TO reservations;
CREATE INDEX reservations_held ON reservations (status, platform, server_id, user_id);
CREATE INDEX reservations_expiry ON reservations (status, expires_at);
CREATE UNIQUE INDEX ledger_movement ON ledger (request_id, kind)
"""

# The generation row is the job: what any process needs to run and deliver a request (its payload, its
# address and the address's deadline) and who works it under which lease. A job's row is inserted with
# its reservation and its generation in one transaction. Jobs not done are few, so the index holds only
# them (claims and queue counts read nothing else).
M004_JOBS = """
CREATE TABLE jobs (
    id          TEXT    PRIMARY KEY REFERENCES generations (id),
    state       TEXT    NOT NULL CHECK (state IN ('queued', 'running', 'delivering', 'done')),
    payload     TEXT    NOT NULL,
    address     TEXT    NOT NULL,
    deliver_by  REAL    NOT NULL,
    attempts    INTEGER NOT NULL CHECK (attempts >= 0),
    holder      TEXT    NOT NULL,
    expires_at  REAL    NOT NULL,
    outcome     TEXT    NOT NULL DEFAULT '',
    created_at  REAL    NOT NULL
);
CREATE INDEX jobs_open ON jobs (state, created_at) WHERE state != 'done'
"""

# Issue 13. Per-server settings (JSON text per key; a missing key is the operator's default) and their
# audit trail, one row per real change; a generation can be marked deleted (its rows and images stay);
# ``history`` reads a user's shown results through a partial index that holds only those.
M005_SETTINGS_HISTORY = """
CREATE TABLE server_settings (
    server_key TEXT NOT NULL,
    key        TEXT NOT NULL,
    value      TEXT NOT NULL,
    updated_at REAL NOT NULL,
    updated_by TEXT NOT NULL,
    PRIMARY KEY (server_key, key)
) WITHOUT ROWID;
CREATE TABLE settings_log (
    id         INTEGER PRIMARY KEY,
    server_key TEXT    NOT NULL,
    key        TEXT    NOT NULL,
    old_value  TEXT,
    new_value  TEXT,
    actor      TEXT    NOT NULL,
    created_at REAL    NOT NULL
);
CREATE INDEX settings_log_server ON settings_log (server_key, id);
ALTER TABLE generations ADD COLUMN deleted_at REAL;
ALTER TABLE generations ADD COLUMN deleted_by TEXT;
CREATE INDEX generations_history ON generations (platform, server_id, user_id, created_at, id)
    WHERE status = 'COMPLETED' AND image_count > 0 AND deleted_at IS NULL
"""

# Issue 13, "confirm before spending": a command that would cost more than its server's threshold waits
# here until its asker clicks Confirm, in whichever process gets the click (the payload is JSON text, as a
# job's is). Proposals are few and live minutes: the expiry index keeps each save's sweep of the expired
# ones cheap. A rowid table, since a payload (with its prompt) can be a few kilobytes.
M006_PROPOSALS = """
CREATE TABLE proposals (
    id         TEXT NOT NULL PRIMARY KEY,
    platform   TEXT NOT NULL,
    server_id  TEXT NOT NULL,
    user_id    TEXT NOT NULL,
    payload    TEXT NOT NULL,
    created_at REAL NOT NULL,
    expires_at REAL NOT NULL
);
CREATE INDEX proposals_expiry ON proposals (expires_at)
"""

MIGRATIONS: list[tuple[str, str]] = [
    ("m001_initial", M001_INITIAL),
    ("m002_usage_tokens", M002_USAGE_TOKENS),
    ("m003_leases", M003_LEASES),
    ("m004_jobs", M004_JOBS),
    ("m005_settings_history", M005_SETTINGS_HISTORY),
    ("m006_proposals", M006_PROPOSALS),
]


def missing_migrations(conn: sqlite3.Connection) -> list[str]:
    """The names not applied yet, found by reading only (every name for a new database)."""
    exists = conn.execute("SELECT 1 FROM sqlite_master WHERE type = 'table' AND name = '_migrations'").fetchone()
    done = {r[0] for r in conn.execute("SELECT name FROM _migrations")} if exists else set()
    return [name for name, _ in MIGRATIONS if name not in done]


def apply_migrations(conn: sqlite3.Connection) -> list[str]:
    """Apply the missing migrations in order; return the names applied.

    An up-to-date database is only read (no write lock is taken), so a process starting next to a
    busy one does not queue behind it."""
    if not missing_migrations(conn):
        return []
    conn.execute("CREATE TABLE IF NOT EXISTS _migrations (name TEXT PRIMARY KEY, applied_at REAL NOT NULL)")
    conn.commit()
    applied: list[str] = []
    for name, sql in MIGRATIONS:
        conn.execute("BEGIN IMMEDIATE")
        try:
            done = conn.execute("SELECT 1 FROM _migrations WHERE name = ?", (name,)).fetchone()
            if done:
                conn.execute("ROLLBACK")
                continue
            for statement in sql.split(";"):
                if statement.strip():
                    conn.execute(statement)
            conn.execute("INSERT INTO _migrations (name, applied_at) VALUES (?, ?)", (name, time.time()))
            conn.execute("COMMIT")
            applied.append(name)
        except BaseException:
            conn.execute("ROLLBACK")
            raise
    return applied

"""The PostgreSQL dialect of ``storage.migrations``: the same names, the same ``_migrations`` record.

Each migration here produces the schema its SQLite namesake produces (same tables, columns, checks and
indexes; ``BIGINT`` for credits, ``DOUBLE PRECISION`` for unix times, ``BIGSERIAL`` for the ledger's
row id), so one contract suite holds for both engines. Never edit a migration that has shipped: add
``m00N_...`` below it, in both dialects.

Two processes starting at once are safe: each migration runs in its own transaction under a
transaction-scoped advisory lock (``pg_advisory_xact_lock``) keyed on the schema, and re-checks
``_migrations`` once it holds the lock, so every migration is applied exactly once. An up-to-date
schema is only read (no lock taken), so a process starting next to a busy one never waits.
"""

from __future__ import annotations

import time

from psycopg import AsyncConnection, sql

M001_INITIAL = """
CREATE TABLE accounts (
    platform   TEXT             NOT NULL,
    server_id  TEXT             NOT NULL,
    user_id    TEXT             NOT NULL,
    balance    BIGINT           NOT NULL CHECK (balance >= 0),
    created_at DOUBLE PRECISION NOT NULL,
    updated_at DOUBLE PRECISION NOT NULL,
    PRIMARY KEY (platform, server_id, user_id)
);

CREATE TABLE ledger (
    id            BIGSERIAL        PRIMARY KEY,
    platform      TEXT             NOT NULL,
    server_id     TEXT             NOT NULL,
    user_id       TEXT             NOT NULL,
    kind          TEXT             NOT NULL CHECK (kind IN
                    ('initial', 'grant', 'revoke', 'set', 'reserve', 'consume', 'release', 'refund')),
    delta         BIGINT           NOT NULL,
    amount        BIGINT           NOT NULL CHECK (amount >= 0),
    balance_after BIGINT           NOT NULL CHECK (balance_after >= 0),
    request_id    TEXT             NOT NULL,
    actor         TEXT             NOT NULL,
    note          TEXT,
    created_at    DOUBLE PRECISION NOT NULL
);
CREATE INDEX ledger_account ON ledger (platform, server_id, user_id, id);
CREATE INDEX ledger_request ON ledger (request_id);

CREATE TABLE reservations (
    id         TEXT             PRIMARY KEY,
    platform   TEXT             NOT NULL,
    server_id  TEXT             NOT NULL,
    user_id    TEXT             NOT NULL,
    amount     BIGINT           NOT NULL CHECK (amount >= 0),
    status     TEXT             NOT NULL CHECK (status IN ('held', 'settled', 'released')),
    instance   TEXT             NOT NULL,
    created_at DOUBLE PRECISION NOT NULL,
    expires_at DOUBLE PRECISION NOT NULL,
    settled_at DOUBLE PRECISION
);
CREATE INDEX reservations_held ON reservations (status, platform, server_id, user_id);

CREATE TABLE generations (
    id               TEXT             PRIMARY KEY,
    platform         TEXT             NOT NULL,
    server_id        TEXT             NOT NULL,
    user_id          TEXT             NOT NULL,
    channel_id       TEXT             NOT NULL DEFAULT '',
    command          TEXT             NOT NULL,
    provider         TEXT,
    model            TEXT,
    prompt           TEXT             NOT NULL,
    options          TEXT             NOT NULL DEFAULT '{}',
    status           TEXT             NOT NULL CHECK (status IN ('PENDING', 'COMPLETED', 'FAILED')),
    error_code       TEXT,
    credits_reserved BIGINT           NOT NULL DEFAULT 0,
    credits_consumed BIGINT           NOT NULL DEFAULT 0,
    image_count      INTEGER          NOT NULL DEFAULT 0,
    duration_ms      DOUBLE PRECISION,
    revised_prompt   TEXT,
    result_text      TEXT,
    created_at       DOUBLE PRECISION NOT NULL,
    finished_at      DOUBLE PRECISION
);
CREATE INDEX generations_user ON generations (platform, server_id, user_id, created_at);
CREATE INDEX generations_created ON generations (created_at);

CREATE TABLE generation_images (
    generation_id TEXT    NOT NULL REFERENCES generations (id),
    idx           INTEGER NOT NULL,
    sha256        TEXT    NOT NULL,
    mime          TEXT    NOT NULL,
    bytes         BIGINT  NOT NULL,
    width         INTEGER NOT NULL,
    height        INTEGER NOT NULL,
    PRIMARY KEY (generation_id, idx)
)
"""

M002_USAGE_TOKENS = """
ALTER TABLE generations ADD COLUMN input_tokens BIGINT NOT NULL DEFAULT 0;
ALTER TABLE generations ADD COLUMN output_tokens BIGINT NOT NULL DEFAULT 0
"""

# PostgreSQL renames a column in place, so the SQLite copy-and-swap is not needed: rows held under an
# instance name keep it as their holder, exactly as there.
M003_LEASES = """
ALTER TABLE reservations RENAME COLUMN instance TO holder;
CREATE INDEX reservations_expiry ON reservations (status, expires_at);
CREATE UNIQUE INDEX ledger_movement ON ledger (request_id, kind)
"""

# The generation row is the job: one job row per generation that a worker runs and delivers. Payload and
# address are JSON text (as on SQLite); the partial indexes keep claim and the queue counts on the few rows
# that are not done, however long the history grows.
M004_JOBS = """
CREATE TABLE jobs (
    id         TEXT             PRIMARY KEY REFERENCES generations (id),
    state      TEXT             NOT NULL CHECK (state IN ('queued', 'running', 'delivering', 'done')),
    payload    TEXT             NOT NULL,
    address    TEXT             NOT NULL,
    deliver_by DOUBLE PRECISION NOT NULL,
    attempts   INTEGER          NOT NULL,
    holder     TEXT             NOT NULL,
    expires_at DOUBLE PRECISION NOT NULL,
    outcome    TEXT             NOT NULL DEFAULT '',
    created_at DOUBLE PRECISION NOT NULL
);
CREATE INDEX jobs_open ON jobs (state, created_at) WHERE state <> 'done'
"""

# Settings, their audit trail, deleted results and the history index, as on SQLite. Adding nullable columns
# with no default is a catalogue change only: no rewrite of a long generations table. The index orders ids
# bytewise (``COLLATE "C"``), as the history query does.
M005_SETTINGS_HISTORY = """
CREATE TABLE server_settings (
    server_key TEXT             NOT NULL,
    key        TEXT             NOT NULL,
    value      TEXT             NOT NULL,
    updated_at DOUBLE PRECISION NOT NULL,
    updated_by TEXT             NOT NULL,
    PRIMARY KEY (server_key, key)
);
CREATE TABLE settings_log (
    id         BIGSERIAL        PRIMARY KEY,
    server_key TEXT             NOT NULL,
    key        TEXT             NOT NULL,
    old_value  TEXT,
    new_value  TEXT,
    actor      TEXT             NOT NULL,
    created_at DOUBLE PRECISION NOT NULL
);
CREATE INDEX settings_log_server ON settings_log (server_key, id);
ALTER TABLE generations ADD COLUMN deleted_at DOUBLE PRECISION;
ALTER TABLE generations ADD COLUMN deleted_by TEXT;
CREATE INDEX generations_history ON generations (platform, server_id, user_id, created_at, id COLLATE "C")
    WHERE status = 'COMPLETED' AND image_count > 0 AND deleted_at IS NULL
"""

# Proposals waiting for their asker's Confirm, as on SQLite.
M006_PROPOSALS = """
CREATE TABLE proposals (
    id         TEXT             PRIMARY KEY,
    platform   TEXT             NOT NULL,
    server_id  TEXT             NOT NULL,
    user_id    TEXT             NOT NULL,
    payload    TEXT             NOT NULL,
    created_at DOUBLE PRECISION NOT NULL,
    expires_at DOUBLE PRECISION NOT NULL
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

#: The first key of the two-key advisory lock (the second is the schema's hash), so imagebot's lock
#: never collides with another application's advisory locks in the same database.
LOCK_CLASS = 0x1A6EB07


async def missing_migrations(conn: AsyncConnection, preamble: sql.Composed | None = None) -> list[str]:
    """The names not applied yet in the connection's schema, found by reading only.

    ``preamble`` (``SET LOCAL ...``) starts the transaction: behind PgBouncer the schema is set there."""
    async with conn.transaction():
        if preamble is not None:
            await conn.execute(preamble)
        cur = await conn.execute("SELECT to_regclass('_migrations') IS NOT NULL")
        row = await cur.fetchone()
        done: set[str] = set()
        if row and row[0]:
            cur = await conn.execute("SELECT name FROM _migrations")
            done = {r[0] for r in await cur.fetchall()}
    return [name for name, _ in MIGRATIONS if name not in done]


async def apply_migrations(conn: AsyncConnection, preamble: sql.Composed | None = None) -> list[str]:
    """Apply the missing migrations in order, each in its own transaction under the advisory lock;
    return the names this call applied (another process may have applied the rest).

    ``conn`` must be in autocommit mode (each migration opens its own transaction); ``preamble``
    starts each transaction, as in ``missing_migrations``."""
    if not await missing_migrations(conn, preamble):
        return []
    applied: list[str] = []
    for name, text in MIGRATIONS:
        async with conn.transaction():
            if preamble is not None:
                await conn.execute(preamble)
            await conn.execute("SELECT pg_advisory_xact_lock(%s, hashtext(COALESCE(current_schema(), '')))", (LOCK_CLASS,))
            await conn.execute(
                "CREATE TABLE IF NOT EXISTS _migrations (name TEXT PRIMARY KEY, applied_at DOUBLE PRECISION NOT NULL)"
            )
            cur = await conn.execute("SELECT 1 FROM _migrations WHERE name = %s", (name,))
            if await cur.fetchone():
                continue
            for statement in text.split(";"):
                if statement.strip():
                    await conn.execute(statement)  # our own constant SQL
            await conn.execute("INSERT INTO _migrations (name, applied_at) VALUES (%s, %s)", (name, time.time()))
            applied.append(name)
    return applied

"""The PostgreSQL ledger (``storage.ledger.Ledger``) on psycopg 3 and ``psycopg_pool``, for several
processes on several machines sharing one ledger.

Same semantics as ``storage.sqlite`` exactly (one contract suite runs against both). How it stays
correct with many writers:

- Every movement is one transaction on one pooled connection. Balances only move by conditional
  updates (``UPDATE ... WHERE balance >= %s``) under ``CHECK (balance >= 0)``; nothing is read, changed
  in Python and written back unless the account row is locked (``SELECT ... FOR UPDATE``) first.
- ``reserve`` locks the account row before counting the user's live reservations, so two processes
  reserving for one user queue on that row and the concurrent-jobs limit holds across processes.
- Settle, refund and renew are fenced by one conditional ``UPDATE`` on the reservation (status,
  holder, live lease); ``release_expired`` claims expired rows with ``FOR UPDATE SKIP LOCKED``, so two
  sweepers never release one reservation twice. The unique (request id, movement kind) index backs it.
- Jobs (the generation row is the job): ``reserve`` inserts the job with the reservation and the
  generation in one statement. ``claim`` picks the oldest claimable jobs with ``FOR UPDATE OF j, r SKIP
  LOCKED`` (each job together with its reservation, or neither), so two processes never take one job
  and a claim never waits for a lock at all (it can be in no deadlock, whatever settle, renew or
  finish_job lock at the same moment).
- Proposals (confirm before spending): ``take_proposal`` is one ``DELETE ... RETURNING``, so of two
  Confirm clicks reaching two processes exactly one gets the proposal; ``save_proposal`` sweeps expired
  ones with ``SKIP LOCKED`` and never waits on another sweep.
- ``synchronous_commit`` is ``on``: an answered movement is on disk (and on a synchronous standby,
  where one is configured), whatever the server's default.
- A refusal raises inside the transaction, which rolls back: it changes nothing, not even the opening
  of a new account. A deadlock or serialization failure is retried whole.

The URL is a libpq URL plus imagebot's own query parameters, which are removed before connecting:

- ``schema=NAME``: keep imagebot's tables in schema NAME (created if missing; ``search_path``);
- ``pgbouncer=true``: behind PgBouncer in transaction mode: no prepared statements
  (``prepare_threshold=None``) and the session settings sent with every transaction (``SET LOCAL``),
  since a pooled server connection keeps no session state of ours;
- ``pool_size=N``: at most N connections from this process (default 10).
"""

from __future__ import annotations

import asyncio
import json
import logging
import math
import random
import re
import time
import uuid
from collections.abc import Awaitable, Callable, Iterable, Mapping
from dataclasses import replace
from typing import Any, TypeVar
from urllib.parse import parse_qsl, quote, urlencode, urlsplit, urlunsplit

import psycopg
from psycopg import AsyncConnection, AsyncCursor, errors, sql
from psycopg_pool import AsyncConnectionPool, PoolTimeout

from bot.errors import ConfigError, StorageError
from bot.models import Identity

from .ledger import (
    MAX_BALANCE,
    PROPOSAL_SWEEP,
    AboveMaxBalance,
    Clock,
    DuplicateRequest,
    GenerationRow,
    ImageRow,
    JobRow,
    JobSpec,
    ReadOnlyLedger,
    RevokeAboveBalance,
    Settlement,
    ShortBalance,
    TooManyJobs,
    encode_proposal,
    encode_settings,
    option_references,
    proposal_source,
    settings_log_entries,
)
from .migrations_pg import LOCK_CLASS, MIGRATIONS, apply_migrations, missing_migrations

__all__ = ["PostgresLedger", "parse_url"]

T = TypeVar("T")
Cursor = AsyncCursor[tuple[Any, ...]]
log = logging.getLogger(__name__)

#: Transactions aborted by a deadlock or a serialization failure are run again this many times.
RETRIES = 5
#: How long ``open`` waits for the server before giving up (seconds).
CONNECT_TIMEOUT = 10.0
_SCHEMA_NAME = re.compile(r"^[A-Za-z_][A-Za-z0-9_]{0,62}$")
_TRUE = ("1", "true", "yes", "on")


def _key(identity: Identity) -> tuple[str, str, str]:
    return (identity.platform, identity.server_id, identity.user_id)


def parse_url(url: str) -> tuple[str, dict[str, str]]:
    """Split imagebot's own query parameters (schema, pgbouncer, pool_size) off a PostgreSQL URL;
    return (the URL libpq gets, imagebot's options)."""
    parts = urlsplit(url)
    ours: dict[str, str] = {}
    theirs: list[tuple[str, str]] = []
    for name, value in parse_qsl(parts.query, keep_blank_values=True):
        if name in ("schema", "pgbouncer", "pool_size"):
            ours[name] = value
        else:
            theirs.append((name, value))
    scheme = "postgresql" if parts.scheme.lower() in ("postgresql", "postgres") else parts.scheme
    return urlunsplit((scheme, parts.netloc, parts.path, urlencode(theirs, quote_via=quote), parts.fragment)), ours


def _where(url: str) -> str:
    """Host, port and database of a URL, for messages: never the user's password."""
    parts = urlsplit(url)
    host = parts.hostname or "the local socket"
    port = f":{parts.port}" if parts.port else ""
    return f"{host}{port}{parts.path or '/'}"


class PostgresLedger:
    """The ledger and the generation log in one PostgreSQL schema, through a connection pool."""

    def __init__(
        self,
        url: str,
        *,
        starting_credits: int = 50,
        clock: Clock = time.time,
        read_only: bool = False,
    ) -> None:
        self.url = url
        self.starting_credits = starting_credits
        self.clock = clock
        self.read_only = read_only
        #: This process's holder id for the leases it takes: random, never configured.
        self.holder = uuid.uuid4().hex
        self.conninfo, options = parse_url(url)
        self.schema = options.get("schema") or None
        if self.schema is not None and not _SCHEMA_NAME.match(self.schema):
            raise ConfigError(
                f"IMAGEBOT_DATABASE: schema={self.schema!r} is not a plain SQL name (letters, digits, _)"
            )
        self.pgbouncer = options.get("pgbouncer", "").lower() in _TRUE
        try:
            self.pool_size = max(1, int(options.get("pool_size", "10")))
        except ValueError:
            raise ConfigError("IMAGEBOT_DATABASE: pool_size must be a whole number") from None
        self._pool: AsyncConnectionPool[AsyncConnection[tuple[Any, ...]]] | None = None
        #: Read-only look at a database imagebot never migrated: every read answers as an empty ledger.
        self._empty = False
        #: The migrations this object applied when it opened (others may have been applied elsewhere).
        self.applied: list[str] = []
        #: How long ``open`` waits for the server (seconds).
        self.connect_timeout = CONNECT_TIMEOUT

    # -- lifecycle -------------------------------------------------------------------------------

    def _settings(self) -> list[tuple[str, str]]:
        settings = [("synchronous_commit", "on")]
        if self.schema is not None:
            settings.append(("search_path", self.schema))
        if self.read_only:
            settings.append(("default_transaction_read_only", "on"))
        return settings

    def _settings_sql(self, *, local: bool) -> sql.Composed:
        verb = sql.SQL("SET LOCAL " if local else "SET ")
        return sql.SQL("; ").join(
            verb + sql.Identifier(name) + sql.SQL(" TO ") + sql.Literal(value) for name, value in self._settings()
        )

    def _preamble(self) -> sql.Composed | None:
        """What starts every transaction: the session settings behind PgBouncer, nothing otherwise."""
        return self._settings_sql(local=True) if self.pgbouncer else None

    async def _configure(self, conn: AsyncConnection[Any]) -> None:
        """Each new connection's session settings (direct connections only; behind PgBouncer they go
        with every transaction instead)."""
        await conn.execute(self._settings_sql(local=False))

    async def open(self) -> None:
        kwargs: dict[str, Any] = {"autocommit": True}
        if self.pgbouncer:
            kwargs["prepare_threshold"] = None
        pool: AsyncConnectionPool[AsyncConnection[tuple[Any, ...]]] = AsyncConnectionPool(
            self.conninfo,
            min_size=1,
            max_size=self.pool_size,
            kwargs=kwargs,
            configure=None if self.pgbouncer else self._configure,
            open=False,
            name="imagebot-ledger",
        )
        try:
            await pool.open(wait=True, timeout=self.connect_timeout)
        except PoolTimeout:
            await pool.close()
            raise StorageError(
                f"Cannot reach the PostgreSQL ledger at {_where(self.conninfo)} within {self.connect_timeout:g} s"
                f" ({await self._why()}): is the server running, and do IMAGEBOT_DATABASE's user and database exist?"
            ) from None
        self._pool = pool
        try:
            if self.read_only:
                await self._check_schema()
            else:
                await self._migrate()
        except BaseException:
            await self.close()
            raise

    async def _why(self) -> str:
        """The server's own reason for refusing a connection (libpq's messages carry no password)."""
        try:
            conn = await AsyncConnection.connect(self.conninfo, connect_timeout=max(1, int(self.connect_timeout)))
        except psycopg.Error as exc:
            lines = [line.strip() for line in str(exc).splitlines() if line.strip()]
            return lines[-1][:300] if lines else type(exc).__name__
        await conn.close()
        return "it answered only now"

    async def _migrate(self) -> None:
        async with self._connection() as conn:
            if self.schema is not None:
                async with conn.transaction():
                    await conn.execute("SELECT pg_advisory_xact_lock(%s, hashtext(%s))", (LOCK_CLASS, self.schema))
                    await conn.execute(sql.SQL("CREATE SCHEMA IF NOT EXISTS {}").format(sql.Identifier(self.schema)))
            self.applied = await apply_migrations(conn, self._preamble())
        if self.applied:
            log.info("PostgreSQL ledger at %s: applied %s", _where(self.conninfo), ", ".join(self.applied))

    async def _check_schema(self) -> None:
        async with self._connection() as conn:
            missing = await missing_migrations(conn, self._preamble())
        if missing and len(missing) == len(MIGRATIONS):
            self._empty = True  # nothing there yet: an empty ledger, as a missing SQLite file reads
        elif missing:
            raise StorageError(
                f"The PostgreSQL ledger at {_where(self.conninfo)} was written by an older imagebot "
                f"(missing {', '.join(missing)}); start `imagebot run` once to upgrade it, then look again."
            )

    async def close(self) -> None:
        if self._pool is not None:
            pool, self._pool = self._pool, None
            await pool.close()

    def _connection(self) -> Any:
        """A pooled connection (an async context manager); behind PgBouncer every use is a transaction
        that first sends the session settings."""
        if self._pool is None:
            raise RuntimeError("store is not open")
        return self._pool.connection()

    # -- running transactions --------------------------------------------------------------------

    async def _transaction(self, body: Callable[[Cursor], Awaitable[T]], *, single: bool = False) -> T:
        """Run ``body`` in one transaction; again, whole, after a deadlock or serialization failure.

        ``single``: the body's one write is a single statement, atomic by itself: on a direct
        connection it runs in autocommit (one round trip instead of three)."""
        for attempt in range(RETRIES):
            try:
                async with self._connection() as conn:
                    if single and not self.pgbouncer:
                        async with conn.cursor() as cur:
                            return await body(cur)
                    async with conn.transaction(), conn.cursor() as cur:
                        preamble = self._preamble()
                        if preamble is not None:
                            await cur.execute(preamble)
                        return await body(cur)
            except (errors.DeadlockDetected, errors.SerializationFailure):
                if attempt == RETRIES - 1:
                    raise
                await asyncio.sleep(random.uniform(0.001, 0.01) * (attempt + 1))
            except psycopg.OperationalError as exc:
                raise StorageError(f"The PostgreSQL ledger failed: {type(exc).__name__}") from exc
        raise AssertionError("unreachable")

    async def _write(self, body: Callable[[Cursor], Awaitable[T]], *, single: bool = False) -> T:
        if self._pool is None:
            raise RuntimeError("store is not open")
        if self.read_only:
            raise ReadOnlyLedger("this ledger was opened read-only")
        return await self._transaction(body, single=single)

    async def _read(self, query: str, params: tuple[Any, ...] = ()) -> list[tuple[Any, ...]]:
        """One query; autocommit on a direct connection (one round trip), a transaction behind PgBouncer."""
        if self._pool is None:
            raise RuntimeError("store is not open")
        if self._empty:
            return []

        async def run(cur: Cursor) -> list[tuple[Any, ...]]:
            await cur.execute(query, params)
            return [tuple(r) for r in await cur.fetchall()]

        if self.pgbouncer:
            return await self._transaction(run)
        try:
            async with self._connection() as conn, conn.cursor() as cur:
                return await run(cur)
        except psycopg.OperationalError as exc:
            raise StorageError(f"The PostgreSQL ledger failed: {type(exc).__name__}") from exc

    # -- accounts --------------------------------------------------------------------------------

    async def _lock_account(self, cur: Cursor, identity: Identity, now: float) -> tuple[int, bool]:
        """Lock the account row for this transaction, opening the account (with its starting credits
        and their ``initial`` row) if it is new; return (balance, opened now). A refusal later in the
        transaction rolls the opening back with everything else."""
        select = ("SELECT balance FROM accounts WHERE platform = %s AND server_id = %s AND user_id = %s"
                  " FOR UPDATE")
        await cur.execute(select, _key(identity))
        row = await cur.fetchone()
        if row is not None:
            return int(row[0]), False
        await cur.execute(
            "INSERT INTO accounts (platform, server_id, user_id, balance, created_at, updated_at)"
            " VALUES (%s, %s, %s, %s, %s, %s) ON CONFLICT DO NOTHING",
            (*_key(identity), self.starting_credits, now, now),
        )
        opened = cur.rowcount == 1
        if opened and self.starting_credits > 0:
            await self._ledger(cur, identity, "initial", self.starting_credits, self.starting_credits,
                               self.starting_credits, f"initial:{identity}", "system", "starting credits", now)
        await cur.execute(select, _key(identity))  # opened by us, or by a racer that committed first
        row = await cur.fetchone()
        assert row is not None
        return int(row[0]), opened

    @staticmethod
    async def _ledger(cur: Cursor, identity: Identity, kind: str, delta: int, amount: int, balance_after: int,
                      request_id: str, actor: str, note: str | None, now: float) -> None:
        await cur.execute(
            "INSERT INTO ledger (platform, server_id, user_id, kind, delta, amount, balance_after,"
            " request_id, actor, note, created_at) VALUES (%s, %s, %s, %s, %s, %s, %s, %s, %s, %s, %s)",
            (*_key(identity), kind, delta, amount, balance_after, request_id, actor, note, now),
        )

    @staticmethod
    async def _credit(cur: Cursor, identity: Identity, amount: int, now: float) -> int:
        await cur.execute(
            "UPDATE accounts SET balance = balance + %s, updated_at = %s"
            " WHERE platform = %s AND server_id = %s AND user_id = %s RETURNING balance",
            (amount, now, *_key(identity)),
        )
        row = await cur.fetchone()
        assert row is not None
        return int(row[0])

    async def balance(self, identity: Identity) -> int:
        """The spendable balance. A look never writes: an account not opened yet has the starting
        credits it will be opened with."""
        rows = await self._read(
            "SELECT balance FROM accounts WHERE platform = %s AND server_id = %s AND user_id = %s", _key(identity)
        )
        return int(rows[0][0]) if rows else self.starting_credits

    # -- two-phase charges, under leases ---------------------------------------------------------

    async def reserve(
        self,
        identity: Identity,
        request_id: str,
        amount: int,
        *,
        max_concurrent: int,
        lease: float,
        generation: Mapping[str, Any],
        job: JobSpec | None = None,
        queued: bool = False,
    ) -> int:
        """Hold ``amount`` credits and open a PENDING generation (and its job, with ``job``),
        atomically, under this holder's lease; return the balance left.

        The account row is locked before the live reservations are counted, so no other process can
        pass the concurrent-jobs limit (or spend the same credits) between the count and the charge.
        A queued job's reservation is held by nobody and never expires (``claim`` gives it a lease), so
        it counts as live for as long as it waits.
        """
        if queued and job is None:
            raise ValueError("a queued reservation needs its job (nobody could claim it otherwise)")

        async def run(cur: Cursor) -> int:
            now = self.clock()
            balance, _ = await self._lock_account(cur, identity, now)
            # One statement after the lock (so it sees every reservation committed before it): the
            # checks, the conditional charge, and the ledger row, the reservation, the generation and
            # the job only if the charge happened.
            await cur.execute(
                "WITH state AS ("
                "  SELECT EXISTS (SELECT 1 FROM reservations WHERE id = %(rid)s) AS dup,"
                "   (SELECT COUNT(*) FROM reservations WHERE status = 'held' AND expires_at > %(now)s"
                "    AND platform = %(platform)s AND server_id = %(server)s AND user_id = %(user)s) AS running"
                "), charged AS ("
                "  UPDATE accounts SET balance = balance - %(amount)s, updated_at = %(now)s"
                "  WHERE platform = %(platform)s AND server_id = %(server)s AND user_id = %(user)s"
                "  AND balance >= %(amount)s AND NOT (SELECT dup FROM state)"
                "  AND (SELECT running FROM state) < %(limit)s RETURNING balance"
                "), moved AS ("
                "  INSERT INTO ledger (platform, server_id, user_id, kind, delta, amount, balance_after,"
                "   request_id, actor, note, created_at)"
                "  SELECT %(platform)s, %(server)s, %(user)s, 'reserve', -%(amount)s, %(amount)s, balance,"
                "   %(rid)s, %(actor)s, %(note)s, %(now)s FROM charged"
                "), held AS ("
                "  INSERT INTO reservations (id, platform, server_id, user_id, amount, status, holder,"
                "   created_at, expires_at)"
                "  SELECT %(rid)s, %(platform)s, %(server)s, %(user)s, %(amount)s, 'held', %(holder)s,"
                "   %(now)s, %(res_expires)s FROM charged"
                "), opened AS ("
                "  INSERT INTO generations (id, platform, server_id, user_id, channel_id, command, provider,"
                "   model, prompt, options, status, credits_reserved, created_at)"
                "  SELECT %(rid)s, %(platform)s, %(server)s, %(user)s, %(channel)s, %(command)s, %(provider)s,"
                "   %(model)s, %(prompt)s, %(options)s, 'PENDING', %(amount)s, %(now)s FROM charged"
                "), jobbed AS ("
                "  INSERT INTO jobs (id, state, payload, address, deliver_by, attempts, holder, expires_at,"
                "   created_at)"
                "  SELECT %(rid)s, %(state)s, %(payload)s, %(address)s, %(deliver_by)s, %(attempts)s, %(holder)s,"
                "   %(job_expires)s, %(now)s FROM charged WHERE %(job)s"
                ") SELECT state.dup, state.running, (SELECT balance FROM charged) FROM state",
                {
                    "amount": amount, "now": now, "limit": max_concurrent, "platform": identity.platform, "server": identity.server_id,
                    "user": identity.user_id, "rid": request_id, "actor": str(identity),
                    "note": generation.get("command"), "holder": "" if queued else self.holder,
                    "res_expires": math.inf if queued else now + lease,
                    "job_expires": 0.0 if queued else now + lease,
                    "channel": generation.get("channel_id", ""), "command": generation["command"],
                    "provider": generation.get("provider"), "model": generation.get("model"),
                    "prompt": generation["prompt"],
                    "options": json.dumps(generation.get("options", {}), sort_keys=True),
                    "job": job is not None, "state": "queued" if queued else "running",
                    "payload": json.dumps(dict(job.payload) if job else {}, sort_keys=True),
                    "address": json.dumps(dict(job.address) if job else {}, sort_keys=True),
                    "deliver_by": float(job.deliver_by) if job else 0.0, "attempts": 0 if queued else 1,
                },
            )
            row = await cur.fetchone()
            assert row is not None
            dup, running, left = row
            if dup:
                raise DuplicateRequest(request_id=request_id)
            if int(running) >= max_concurrent:
                raise TooManyJobs(running=int(running), limit=max_concurrent)
            if left is None:
                raise ShortBalance(balance=balance, needed=amount)
            return int(left)

        try:
            return await self._write(run)
        except errors.UniqueViolation:  # the same request id reserved at the same moment elsewhere
            raise DuplicateRequest(request_id=request_id) from None

    async def renew(self, request_id: str, *, lease: float) -> bool:
        """The heartbeat: push this holder's live leases (the reservation's while held, the job's until
        done) ``lease`` seconds ahead, in one statement."""

        async def run(cur: Cursor) -> bool:
            now = self.clock()
            await cur.execute(
                "WITH res AS ("
                "  UPDATE reservations SET expires_at = %(expires)s WHERE id = %(rid)s AND status = 'held'"
                "  AND holder = %(holder)s AND expires_at > %(now)s RETURNING 1"
                "), job AS ("
                "  UPDATE jobs SET expires_at = %(expires)s WHERE id = %(rid)s AND state <> 'done'"
                "  AND holder = %(holder)s AND expires_at > %(now)s RETURNING 1"
                ") SELECT (SELECT COUNT(*) FROM res) + (SELECT COUNT(*) FROM job)",
                {"expires": now + lease, "rid": request_id, "holder": self.holder, "now": now},
            )
            row = await cur.fetchone()
            return bool(row and row[0])

        return await self._write(run, single=True)

    # -- jobs: the generation row is the job -----------------------------------------------------

    async def claim(self, limit: int, *, lease: float) -> list[JobRow]:
        """Take up to ``limit`` jobs, oldest first, queued or whose lease expired, with their held
        reservations.

        ``FOR UPDATE OF j, r SKIP LOCKED`` locks each job and its reservation or skips both, so two
        claimers never take one job and a claim never waits on a settle (no lock cycle)."""
        if limit <= 0:
            if self.read_only:
                raise ReadOnlyLedger("this ledger was opened read-only")
            return []

        async def run(cur: Cursor) -> list[JobRow]:
            now = self.clock()
            await cur.execute(_CLAIM, {"now": now, "limit": limit, "holder": self.holder, "expires": now + lease})
            rows = await cur.fetchall()
            return await self._jobs(cur, rows)

        return await self._write(run)

    async def _jobs(self, cur: Cursor, rows: list[tuple[Any, ...]]) -> list[JobRow]:
        """Job rows (``_JOB_SELECT``'s columns) with their generations and images, read on ``cur``."""
        if not rows:
            return []
        await cur.execute(
            "SELECT generation_id, sha256, mime, bytes, width, height FROM generation_images"
            " WHERE generation_id = ANY(%s) ORDER BY generation_id, idx",
            ([r[0] for r in rows],),
        )
        images: dict[str, list[ImageRow]] = {}
        for gid, *image in await cur.fetchall():
            images.setdefault(gid, []).append(ImageRow(*image))
        return [_job(r, images.get(r[0], ())) for r in rows]

    async def finish_job(self, request_id: str, outcome: str) -> bool:
        """Mark this holder's job done with ``outcome`` and forget its address (its credential).
        Fenced on the holder only: a lease that ran out while delivering still lets it finish."""

        async def run(cur: Cursor) -> bool:
            await cur.execute(
                "UPDATE jobs SET state = 'done', outcome = %s, address = '{}'"
                " WHERE id = %s AND state <> 'done' AND holder = %s",
                (outcome, request_id, self.holder),
            )
            return cur.rowcount == 1

        return await self._write(run, single=True)

    async def job(self, request_id: str) -> JobRow | None:
        if self._pool is None:
            raise RuntimeError("store is not open")
        if self._empty:
            return None

        async def run(cur: Cursor) -> list[JobRow]:
            await cur.execute(f"{_JOB_SELECT} WHERE j.id = %s", (request_id,))
            return await self._jobs(cur, [tuple(r) for r in await cur.fetchall()])

        # A transaction, so the job and its images are one snapshot.
        found = await self._transaction(run)
        return found[0] if found else None

    async def queued_ahead(self, request_id: str) -> int:
        rows = await self._read(
            "SELECT COUNT(q.id) FROM jobs me JOIN jobs q ON q.state = 'queued' AND q.created_at < me.created_at"
            " WHERE me.id = %s AND me.state = 'queued'",
            (request_id,),
        )
        return int(rows[0][0]) if rows else 0

    async def queue_depth(self) -> int:
        rows = await self._read("SELECT COUNT(*) FROM jobs WHERE state = 'queued'")
        return int(rows[0][0]) if rows else 0

    async def settle(
        self,
        request_id: str,
        consumed: int,
        *,
        status: str,
        error_code: str | None = None,
        provider: str | None = None,
        model: str | None = None,
        duration_ms: float | None = None,
        revised_prompt: str | None = None,
        result_text: str | None = None,
        images: Iterable[ImageRow] = (),
        input_tokens: int = 0,
        output_tokens: int = 0,
    ) -> Settlement:
        """Consume ``consumed`` of the hold, give back the rest, close the generation record, and
        move its job (if any) to ``delivering``.

        Fenced by one conditional update: unless the reservation is still held by this holder under a
        live lease, nothing changes and ``charged`` is False."""
        images = list(images)
        params = {
            "now": 0.0, "rid": request_id, "holder": self.holder, "consumed": consumed, "status": status,
            "code": error_code, "provider": provider, "model": model, "count": len(images),
            "duration": duration_ms, "revised": revised_prompt, "text": result_text,
            "input": max(0, int(input_tokens)), "output": max(0, int(output_tokens)),
            "shas": [im.sha256 for im in images], "mimes": [im.mime for im in images],
            "sizes": [im.size_bytes for im in images], "widths": [im.width for im in images],
            "heights": [im.height for im in images], "deliver": True,
        }
        return await self._settle(params)

    async def _settle(self, params: dict[str, Any]) -> Settlement:
        """``settle`` and ``refund``: ``_SETTLE`` with ``params`` (``now`` set here), then, when fenced
        out, the balance as it is."""
        request_id = params["rid"]

        async def run(cur: Cursor) -> Settlement:
            params["now"] = self.clock()
            await cur.execute(_SETTLE, params)
            row = await cur.fetchone()
            if row is not None:
                return Settlement(balance=int(row[2]), consumed=int(row[1]), released=int(row[0]) - int(row[1]),
                                  charged=True)
            await cur.execute(
                "SELECT a.balance FROM generations g JOIN accounts a ON a.platform = g.platform"
                " AND a.server_id = g.server_id AND a.user_id = g.user_id WHERE g.id = %s",
                (request_id,),
            )
            found = await cur.fetchone()
            return Settlement(balance=int(found[0]) if found else 0, consumed=0, released=0, charged=False)

        return await self._write(run, single=True)

    async def refund(self, request_id: str, *, code: str, duration_ms: float | None = None) -> Settlement:
        """Give the whole hold back and mark the generation FAILED (fenced like ``settle``). Its job
        stays as it is: its worker still tells the user, then calls ``finish_job``."""
        return await self._settle({
            "now": 0.0, "rid": request_id, "holder": self.holder, "consumed": 0, "status": "FAILED",
            "code": code, "provider": None, "model": None, "count": 0, "duration": duration_ms,
            "revised": None, "text": None, "input": 0, "output": 0, "shas": [], "mimes": [], "sizes": [],
            "widths": [], "heights": [], "deliver": False,
        })

    async def release_expired(self) -> int:
        """Refund held reservations whose lease has expired, whoever held them, that no worker can
        resume (no job, or its job is done); mark their generations FAILED (interrupted). Rows another
        sweeper is releasing right now are skipped, not waited for. A job not done is ``claim``'s."""

        async def run(cur: Cursor) -> int:
            now = self.clock()
            await cur.execute(
                "UPDATE reservations SET status = 'released', settled_at = %s WHERE id IN ("
                " SELECT r.id FROM reservations r WHERE r.status = 'held' AND r.expires_at <= %s"
                " AND NOT EXISTS (SELECT 1 FROM jobs j WHERE j.id = r.id AND j.state <> 'done')"
                " FOR UPDATE OF r SKIP LOCKED)"
                " RETURNING id, platform, server_id, user_id, amount",
                (now, now),
            )
            rows = await cur.fetchall()
            # Accounts in one order, so two sweepers (or a sweeper and a settle) cannot deadlock.
            for rid, platform, server_id, user_id, amount in sorted(rows, key=lambda r: (r[1], r[2], r[3], r[0])):
                identity = Identity(platform, server_id, user_id)
                if amount:
                    balance = await self._credit(cur, identity, int(amount), now)
                    await self._ledger(cur, identity, "refund", int(amount), int(amount), balance, rid, "system",
                                       "lease expired", now)
                await cur.execute(
                    "UPDATE generations SET status = 'FAILED', error_code = 'IMG-INTERRUPTED',"
                    " finished_at = %s WHERE id = %s AND status = 'PENDING'",
                    (now, rid),
                )
            return len(rows)

        return await self._write(run)

    async def refund_completed(self, request_id: str, *, code: str) -> int:
        """Refund what a COMPLETED generation consumed (its images reached nobody); mark it FAILED.
        Idempotent: the status flips only once, and only then do credits move."""

        async def run(cur: Cursor) -> int:
            now = self.clock()
            await cur.execute(
                "UPDATE generations SET status = 'FAILED', error_code = %s, finished_at = %s"
                " WHERE id = %s AND status = 'COMPLETED'"
                " RETURNING platform, server_id, user_id, credits_consumed",
                (code, now, request_id),
            )
            gen = await cur.fetchone()
            amount = int(gen[3]) if gen else 0
            if gen is not None and amount:
                identity = Identity(gen[0], gen[1], gen[2])
                balance = await self._credit(cur, identity, amount, now)
                await self._ledger(cur, identity, "refund", amount, amount, balance, request_id, "system", code, now)
                await cur.execute("UPDATE generations SET credits_consumed = 0 WHERE id = %s", (request_id,))
            return amount

        return await self._write(run)

    # -- admin movements -------------------------------------------------------------------------

    async def adjust(self, identity: Identity, kind: str, amount: int, *, actor: str, request_id: str,
                     note: str | None = None) -> tuple[int, int]:
        """Grant, revoke or set credits; return (old balance, new balance).

        The account row is locked first, so the old balance cannot move before the new one is
        written. A request id already applied changes nothing and returns what it did then."""
        if kind not in ("grant", "revoke", "set"):
            raise ValueError(kind)

        async def run(cur: Cursor) -> tuple[int, int]:
            now = self.clock()
            await cur.execute(
                "SELECT balance_after - delta, balance_after FROM ledger WHERE request_id = %s AND kind = %s",
                (request_id, kind),
            )
            done = await cur.fetchone()
            if done is not None:
                return int(done[0]), int(done[1])
            old, _ = await self._lock_account(cur, identity, now)
            if kind == "grant":
                if old + amount > MAX_BALANCE:
                    raise AboveMaxBalance(amount=amount, balance=old, maximum=MAX_BALANCE)
                new, delta = old + amount, amount
            elif kind == "revoke":
                if amount > old:
                    raise RevokeAboveBalance(amount=amount, balance=old)
                new, delta = old - amount, -amount
            else:
                if amount > MAX_BALANCE:
                    raise AboveMaxBalance(amount=amount, balance=old, maximum=MAX_BALANCE)
                new, delta = amount, amount - old
            await cur.execute(
                "UPDATE accounts SET balance = %s, updated_at = %s"
                " WHERE platform = %s AND server_id = %s AND user_id = %s AND balance = %s",
                (new, now, *_key(identity), old),
            )
            assert cur.rowcount == 1  # the row is locked by us: the balance cannot have moved
            await self._ledger(cur, identity, kind, delta, abs(delta) if kind == "set" else amount, new,
                               request_id, actor, note, now)
            return old, new

        for attempt in range(2):
            try:
                return await self._write(run)
            except errors.UniqueViolation:  # the same request applied at the same moment elsewhere
                if attempt == 1:
                    raise
        raise AssertionError("unreachable")

    # -- reads -----------------------------------------------------------------------------------

    async def held(self, identity: Identity) -> int:
        rows = await self._read(
            "SELECT COALESCE(SUM(amount), 0)::bigint FROM reservations WHERE status = 'held'"
            " AND platform = %s AND server_id = %s AND user_id = %s",
            _key(identity),
        )
        return int(rows[0][0]) if rows else 0

    async def spent(self, identity: Identity) -> tuple[int, int]:
        rows = await self._read(
            "SELECT COALESCE(SUM(credits_consumed), 0)::bigint, COALESCE(SUM(image_count), 0)::bigint"
            " FROM generations WHERE platform = %s AND server_id = %s AND user_id = %s",
            _key(identity),
        )
        return (int(rows[0][0]), int(rows[0][1])) if rows else (0, 0)

    async def recent_generations(self, identity: Identity, limit: int = 5) -> list[GenerationRow]:
        rows = await self._read(
            f"SELECT {_GEN_COLUMNS} FROM generations WHERE platform = %s AND server_id = %s AND user_id = %s"
            ' ORDER BY created_at DESC, id COLLATE "C" DESC LIMIT %s',
            (*_key(identity), limit),
        )
        return [_generation(r) for r in rows]

    async def generation(self, generation_id: str) -> GenerationRow | None:
        rows = await self._read(f"SELECT {_GEN_COLUMNS} FROM generations WHERE id = %s", (generation_id,))
        if not rows:
            return None
        images = await self._read(
            "SELECT sha256, mime, bytes, width, height FROM generation_images WHERE generation_id = %s"
            " ORDER BY idx",
            (generation_id,),
        )
        gen = _generation(rows[0])
        return GenerationRow(**{**gen.__dict__, "images": tuple(ImageRow(*i) for i in images)})

    async def ledger_rows(self, identity: Identity) -> list[dict[str, Any]]:
        rows = await self._read(
            "SELECT kind, delta, amount, balance_after, request_id, actor, note, created_at FROM ledger"
            " WHERE platform = %s AND server_id = %s AND user_id = %s ORDER BY id",
            _key(identity),
        )
        keys = ("kind", "delta", "amount", "balance_after", "request_id", "actor", "note", "created_at")
        return [dict(zip(keys, r, strict=True)) for r in rows]

    async def usage(self, since: float, server_key: str | None = None) -> list[dict[str, Any]]:
        """Per user, provider and status since ``since`` (a unix time), in SQLite's (bytewise) order."""
        params: list[Any] = [since]
        where = "created_at >= %s"
        if server_key:
            platform, _, server = server_key.partition(":")
            where += " AND platform = %s AND server_id = %s"
            params += [platform, server]
        rows = await self._read(
            "SELECT platform, server_id, user_id, COALESCE(provider, ''), status, COUNT(*),"
            " COALESCE(SUM(image_count), 0)::bigint, COALESCE(SUM(credits_consumed), 0)::bigint,"
            " COALESCE(SUM(input_tokens), 0)::bigint, COALESCE(SUM(output_tokens), 0)::bigint"
            f" FROM generations WHERE {where} GROUP BY 1, 2, 3, 4, 5"
            ' ORDER BY platform COLLATE "C", server_id COLLATE "C", user_id COLLATE "C",'
            ' COALESCE(provider, \'\') COLLATE "C", status COLLATE "C"',
            tuple(params),
        )
        keys = ("platform", "server_id", "user_id", "provider", "status", "requests", "images", "credits",
                "input_tokens", "output_tokens")
        return [dict(zip(keys, (*r[:5], *(int(v) for v in r[5:])), strict=True)) for r in rows]

    async def audit(self) -> list[tuple[str, str, str, int, int]]:
        """Accounts whose balance differs from the sum of their ledger deltas (should be none)."""
        rows = await self._read(
            "SELECT a.platform, a.server_id, a.user_id, a.balance, COALESCE(SUM(l.delta), 0)::bigint"
            " FROM accounts a LEFT JOIN ledger l ON l.platform = a.platform AND l.server_id = a.server_id"
            " AND l.user_id = a.user_id GROUP BY 1, 2, 3, 4 HAVING a.balance != COALESCE(SUM(l.delta), 0)"
        )
        return [(str(r[0]), str(r[1]), str(r[2]), int(r[3]), int(r[4])) for r in rows]

    async def _snapshot(self, body: Callable[[Cursor], Awaitable[T]], empty: T) -> T:
        """Several reads in one transaction (``REPEATABLE READ``: one snapshot for all of them), or
        ``empty`` on a read-only look at a database imagebot never migrated."""
        if self._pool is None:
            raise RuntimeError("store is not open")
        if self._empty:
            return empty

        async def run(cur: Cursor) -> T:
            await cur.execute("SET TRANSACTION ISOLATION LEVEL REPEATABLE READ")
            return await body(cur)

        return await self._transaction(run)

    # -- history ---------------------------------------------------------------------------------

    async def history(
        self, identity: Identity, *, offset: int = 0, limit: int = 10
    ) -> tuple[list[GenerationRow], int]:
        """One page of the user's shown results, newest first (ties by id, bytewise as on SQLite), with
        their images (one query for the page's), and the count of all, from one snapshot."""
        shown = ("FROM generations WHERE platform = %s AND server_id = %s AND user_id = %s"
                 " AND status = 'COMPLETED' AND image_count > 0 AND deleted_at IS NULL")

        async def run(cur: Cursor) -> tuple[list[GenerationRow], int]:
            await cur.execute(f"SELECT COUNT(*) {shown}", _key(identity))
            counted = await cur.fetchone()
            await cur.execute(
                f'SELECT {_GEN_COLUMNS} {shown} ORDER BY created_at DESC, id COLLATE "C" DESC LIMIT %s OFFSET %s',
                (*_key(identity), max(0, limit), max(0, offset)),
            )
            gens = [_generation(tuple(r)) for r in await cur.fetchall()]
            images: dict[str, list[ImageRow]] = {}
            if gens:
                await cur.execute(
                    "SELECT generation_id, sha256, mime, bytes, width, height FROM generation_images"
                    " WHERE generation_id = ANY(%s) ORDER BY generation_id, idx",
                    ([g.id for g in gens],),
                )
                for gid, *image in await cur.fetchall():
                    images.setdefault(gid, []).append(ImageRow(*image))
            return [replace(g, images=tuple(images.get(g.id, ()))) for g in gens], int(counted[0]) if counted else 0

        return await self._snapshot(run, ([], 0))

    async def delete_generation(self, generation_id: str, *, actor: str) -> bool:
        async def run(cur: Cursor) -> bool:
            await cur.execute(
                "UPDATE generations SET deleted_at = %s, deleted_by = %s WHERE id = %s AND deleted_at IS NULL",
                (self.clock(), actor, generation_id),
            )
            return cur.rowcount == 1

        return await self._write(run, single=True)

    # -- per-server settings ---------------------------------------------------------------------

    @staticmethod
    async def _read_settings(cur: Cursor, server_key: str) -> dict[str, Any]:
        await cur.execute('SELECT key, value FROM server_settings WHERE server_key = %s ORDER BY key COLLATE "C"',
                          (server_key,))
        return {str(k): json.loads(v) for k, v in await cur.fetchall()}

    async def server_settings(self, server_key: str) -> dict[str, Any]:
        rows = await self._read(
            'SELECT key, value FROM server_settings WHERE server_key = %s ORDER BY key COLLATE "C"', (server_key,))
        return {str(k): json.loads(v) for k, v in rows}

    async def change_settings(self, server_key: str, changes: Mapping[str, Any], *, actor: str) -> dict[str, Any]:
        """All of ``changes`` in one transaction, one log row per real change. A transaction-scoped
        advisory lock on the server's settings makes two admins' changes take turns, so each log row's
        old value is the value the change really replaced (a row lock cannot cover a key not set yet)."""
        encoded = encode_settings(changes)  # a value that is not JSON fails here, before the transaction

        async def run(cur: Cursor) -> dict[str, Any]:
            now = self.clock()
            await cur.execute(
                "SELECT pg_advisory_xact_lock(%s, hashtext(COALESCE(current_schema(), '') || ':' || %s))",
                (SETTINGS_LOCK_CLASS, server_key),
            )
            await cur.execute(
                "SELECT key, value FROM server_settings WHERE server_key = %s AND key = ANY(%s)",
                (server_key, list(encoded)),
            )
            current: dict[str, str | None] = {str(k): str(v) for k, v in await cur.fetchall()}
            for key, new in encoded.items():
                old = current.get(key)
                if old == new:
                    continue
                if new is None:
                    await cur.execute("DELETE FROM server_settings WHERE server_key = %s AND key = %s",
                                      (server_key, key))
                else:
                    await cur.execute(
                        "INSERT INTO server_settings (server_key, key, value, updated_at, updated_by)"
                        " VALUES (%s, %s, %s, %s, %s) ON CONFLICT (server_key, key) DO UPDATE SET"
                        " value = EXCLUDED.value, updated_at = EXCLUDED.updated_at, updated_by = EXCLUDED.updated_by",
                        (server_key, key, new, now, actor),
                    )
                await cur.execute(
                    "INSERT INTO settings_log (server_key, key, old_value, new_value, actor, created_at)"
                    " VALUES (%s, %s, %s, %s, %s, %s)",
                    (server_key, key, old, new, actor, now),
                )
            return await self._read_settings(cur, server_key)

        return await self._write(run)

    async def settings_log(self, server_key: str, limit: int = 20) -> list[dict[str, Any]]:
        rows = await self._read(
            "SELECT key, old_value, new_value, actor, created_at FROM settings_log WHERE server_key = %s"
            " ORDER BY id DESC LIMIT %s",
            (server_key, max(0, limit)),
        )
        return settings_log_entries(rows)

    # -- proposals: confirm before spending ------------------------------------------------------

    async def save_proposal(
        self, proposal_id: str, identity: Identity, payload: Mapping[str, Any], *, expires_at: float
    ) -> None:
        """Sweep a few expired proposals (``SKIP LOCKED``: two saves never wait on each other's sweep),
        then insert this one; the upsert takes over an expired proposal's id (its ``WHERE``), and a live
        one's is a duplicate, also when another process inserts the same id at the same moment (the
        insert waits for that one's transaction, then sees it)."""
        text = encode_proposal(proposal_id, payload, expires_at)  # before the transaction: bad input writes nothing

        async def run(cur: Cursor) -> None:
            now = self.clock()
            await cur.execute(
                "DELETE FROM proposals WHERE id IN (SELECT id FROM proposals WHERE expires_at <= %s"
                " ORDER BY expires_at LIMIT %s FOR UPDATE SKIP LOCKED)",
                (now, PROPOSAL_SWEEP),
            )
            await cur.execute(
                "INSERT INTO proposals (id, platform, server_id, user_id, payload, created_at, expires_at)"
                " VALUES (%s, %s, %s, %s, %s, %s, %s) ON CONFLICT (id) DO UPDATE SET platform = EXCLUDED.platform,"
                " server_id = EXCLUDED.server_id, user_id = EXCLUDED.user_id, payload = EXCLUDED.payload,"
                " created_at = EXCLUDED.created_at, expires_at = EXCLUDED.expires_at"
                " WHERE proposals.expires_at <= %s",
                (proposal_id, *_key(identity), text, now, float(expires_at), now),
            )
            if cur.rowcount == 0:
                raise DuplicateRequest(request_id=proposal_id)

        await self._write(run)

    async def take_proposal(self, proposal_id: str, identity: Identity) -> dict[str, Any] | None:
        """One ``DELETE ... RETURNING`` (atomic by itself): a second take at the same moment waits for the
        first's row lock, then finds the row gone."""

        async def run(cur: Cursor) -> str | None:
            await cur.execute(
                "DELETE FROM proposals WHERE id = %s AND platform = %s AND server_id = %s AND user_id = %s"
                " AND expires_at > %s RETURNING payload",
                (proposal_id, *_key(identity), self.clock()),
            )
            row = await cur.fetchone()
            return None if row is None else str(row[0])

        text = await self._write(run, single=True)
        return None if text is None else dict(json.loads(text))

    # -- prune support ---------------------------------------------------------------------------

    async def live_images(self, since: float) -> set[str]:
        """The images of recent generations and of jobs not done, their references, and the sources of
        upscales still to run and of proposals still waiting, from one snapshot."""

        async def run(cur: Cursor) -> set[str]:
            await cur.execute(
                "SELECT gi.sha256 FROM generations g JOIN generation_images gi ON gi.generation_id = g.id"
                " WHERE g.created_at >= %s"
                " UNION SELECT gi.sha256 FROM jobs j JOIN generation_images gi ON gi.generation_id = j.id"
                " WHERE j.state <> 'done'",
                (since,),
            )
            live = {str(r[0]) for r in await cur.fetchall()}
            # Only options that may name a reference are decoded.
            await cur.execute(
                "SELECT options FROM generations WHERE created_at >= %s AND options LIKE '%%reference%%'", (since,))
            for (options,) in await cur.fetchall():
                live |= option_references(json.loads(options or "{}"))
            await cur.execute("SELECT g.options FROM jobs j JOIN generations g ON g.id = j.id WHERE j.state <> 'done'")
            sources: list[str] = []
            for (options,) in await cur.fetchall():
                opened = json.loads(options or "{}")
                live |= option_references(opened)
                if opened.get("source"):
                    sources.append(str(opened["source"]))
            await cur.execute("SELECT payload FROM proposals WHERE expires_at > %s", (self.clock(),))
            proposed = [g for (payload,) in await cur.fetchall() if (g := proposal_source(json.loads(payload)))]
            if proposed:
                await cur.execute("SELECT options FROM generations WHERE id = ANY(%s)", (proposed,))
                for (options,) in await cur.fetchall():
                    live |= option_references(json.loads(options or "{}"))
            sources += proposed
            if sources:
                await cur.execute("SELECT sha256 FROM generation_images WHERE generation_id = ANY(%s)", (sources,))
                live.update(str(r[0]) for r in await cur.fetchall())
            return live

        return await self._snapshot(run, set())


#: The whole settle as one statement (atomic by itself): the fence (the reservation still held by this
#: holder under a live lease), the give-back, the ledger rows (consume, then release or refund, in that
#: order), the generation and its images, and (a settle, not a refund) its job to ``delivering``. No row back: fenced out, nothing changed.
_SETTLE = """
WITH res AS (
    UPDATE reservations SET status = 'settled', settled_at = %(now)s
    WHERE id = %(rid)s AND status = 'held' AND holder = %(holder)s AND expires_at > %(now)s
    RETURNING platform, server_id, user_id, amount, LEAST(GREATEST(%(consumed)s, 0), amount) AS spent
), acct AS (
    UPDATE accounts a SET balance = a.balance + (res.amount - res.spent), updated_at = %(now)s
    FROM res WHERE a.platform = res.platform AND a.server_id = res.server_id AND a.user_id = res.user_id
    RETURNING a.balance
), moved AS (
    INSERT INTO ledger (platform, server_id, user_id, kind, delta, amount, balance_after, request_id, actor,
                        note, created_at)
    SELECT res.platform, res.server_id, res.user_id,
           CASE WHEN k.n = 1 THEN 'consume' WHEN res.spent = 0 THEN 'refund' ELSE 'release' END,
           CASE WHEN k.n = 1 THEN 0 ELSE res.amount - res.spent END,
           CASE WHEN k.n = 1 THEN res.spent ELSE res.amount - res.spent END,
           CASE WHEN k.n = 1 THEN acct.balance - (res.amount - res.spent) ELSE acct.balance END,
           %(rid)s, res.platform || ':' || res.server_id || ':' || res.user_id,
           CASE WHEN k.n = 1 THEN NULL ELSE %(code)s END, %(now)s
    FROM res, acct, (VALUES (1), (2)) AS k (n)
    WHERE (k.n = 1 AND res.spent > 0) OR (k.n = 2 AND res.amount > res.spent)
    ORDER BY k.n
), closed AS (
    UPDATE generations g SET status = %(status)s, error_code = %(code)s, provider = COALESCE(%(provider)s, provider),
           model = COALESCE(%(model)s, model), credits_consumed = res.spent, image_count = %(count)s,
           duration_ms = %(duration)s, revised_prompt = %(revised)s, result_text = %(text)s,
           input_tokens = %(input)s, output_tokens = %(output)s, finished_at = %(now)s
    FROM res WHERE g.id = %(rid)s
), delivering AS (
    UPDATE jobs j SET state = 'delivering' FROM res WHERE j.id = %(rid)s AND j.state <> 'done' AND %(deliver)s
), pictured AS (
    INSERT INTO generation_images (generation_id, idx, sha256, mime, bytes, width, height)
    SELECT %(rid)s, i.idx - 1, i.sha, i.mime, i.size, i.width, i.height
    FROM res, unnest(%(shas)s::text[], %(mimes)s::text[], %(sizes)s::bigint[], %(widths)s::int[],
                     %(heights)s::int[]) WITH ORDINALITY AS i (sha, mime, size, width, height, idx)
)
SELECT res.amount, res.spent, acct.balance FROM res, acct
"""

_GEN_COLUMNS = (
    "id, platform, server_id, user_id, channel_id, command, provider, model, prompt, options, status,"
    " error_code, credits_reserved, credits_consumed, image_count, duration_ms, revised_prompt, result_text,"
    " created_at, finished_at, deleted_at, deleted_by"
)


#: The columns are named as ``GenerationRow``'s fields are.
_GEN_NAMES = tuple(c.strip() for c in _GEN_COLUMNS.split(","))


def _generation(row: tuple[Any, ...]) -> GenerationRow:
    """A row of ``_GEN_COLUMNS`` (images are read apart)."""
    values = dict(zip(_GEN_NAMES, row, strict=True))
    values["options"] = json.loads(values["options"] or "{}")
    return GenerationRow(**values)


#: The second key of the settings lock is the schema and the server's key hashed together
#: (``pg_advisory_xact_lock(SETTINGS_LOCK_CLASS, hashtext(...))``).
SETTINGS_LOCK_CLASS = LOCK_CLASS + 1


_JOB_COLUMNS = "j.id, j.state, j.payload, j.address, j.deliver_by, j.attempts, j.holder, j.expires_at, j.outcome, j.created_at"
_JOB_SELECT = (
    f"SELECT {_JOB_COLUMNS}, "
    + ", ".join(f"g.{c.strip()}" for c in _GEN_COLUMNS.split(","))
    + " FROM jobs j JOIN generations g ON g.id = j.id"
)

#: One claim as one statement: pick the oldest claimable jobs, locking each with its reservation (or
#: skipping it when another transaction holds either), take them (attempts + 1, queued -> running), take
#: over the reservations still held, and return the rows as they now are with their generations.
_CLAIM = f"""
WITH picked AS (
    SELECT j.id FROM jobs j JOIN reservations r ON r.id = j.id
    WHERE j.state <> 'done' AND (j.holder = '' OR j.expires_at <= %(now)s)
    ORDER BY j.created_at, j.id COLLATE "C"
    LIMIT %(limit)s
    FOR UPDATE OF j, r SKIP LOCKED
), taken AS (
    UPDATE jobs j SET holder = %(holder)s, expires_at = %(expires)s, attempts = j.attempts + 1,
           state = CASE WHEN j.state = 'queued' THEN 'running' ELSE j.state END
    FROM picked WHERE j.id = picked.id
    RETURNING {_JOB_COLUMNS}
), resumed AS (
    UPDATE reservations r SET holder = %(holder)s, expires_at = %(expires)s
    FROM taken WHERE r.id = taken.id AND r.status = 'held'
)
SELECT taken.*, {", ".join(f"g.{c.strip()}" for c in _GEN_COLUMNS.split(","))}
FROM taken JOIN generations g ON g.id = taken.id
ORDER BY taken.created_at, taken.id COLLATE "C"
"""


def _job(row: tuple[Any, ...], images: Iterable[ImageRow]) -> JobRow:
    """A job row from ``_JOB_SELECT``'s (or ``_CLAIM``'s) columns: the job's ten, then the generation's."""
    gen = _generation(row[10:])
    return JobRow(
        id=row[0], state=row[1], payload=json.loads(row[2] or "{}"), address=json.loads(row[3] or "{}"),
        deliver_by=float(row[4]), attempts=int(row[5]), holder=row[6], expires_at=float(row[7]),
        outcome=row[8], created_at=float(row[9]),
        generation=GenerationRow(**{**gen.__dict__, "images": tuple(images)}),
    )

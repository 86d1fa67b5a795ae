"""The SQLite ledger (``storage.ledger.Ledger``): accounts, credit movements, leased reservations and
the generation log, on one file in WAL mode with ``synchronous=FULL`` (a committed movement survives a
power cut).

The connection is a plain ``sqlite3`` connection owned by one thread (a single-thread
``ThreadPoolExecutor``): every transaction is a plain function run whole on that thread (``_tx``),
with no ``await`` inside it, so two commands can never interleave a read-modify-write, and
``BEGIN IMMEDIATE`` plus a busy timeout keeps several processes on one file correct too. Balances
only move by conditional updates (``WHERE balance >= ?``) under a ``CHECK (balance >= 0)``, and the
schema holds one ledger row per (request id, movement kind).

Group commit: writes that arrive while the connection thread is busy (most of that time is the
commit's fsync) wait in a queue and all run in the next transaction, so a batch pays for one commit
(one fsync, with ``synchronous=FULL``) and one thread hop instead of many. A refused write (short
balance) rolls back alone: the batch is then redone with a SAVEPOINT per write.

Jobs (``jobs``, migration m004): a reserve with a job inserts it in the reserve's transaction; a
``claim`` is a write transaction too, so ``BEGIN IMMEDIATE`` makes two processes' claims on one file
take turns and no job is claimed twice. A queued job's reservation is held by nobody and never expires
(``QUEUED_EXPIRY``), so it counts toward its user's concurrent jobs and no sweep refunds it.

Proposals (``proposals``, migration m006): ``take_proposal`` is one ``DELETE ... RETURNING`` in a write
transaction, so of two Confirm clicks (in one process or two) exactly one gets the proposal.
"""

from __future__ import annotations

import asyncio
import functools
import itertools
import json
import logging
import math
import random
import sqlite3
import time
import uuid
from collections.abc import Callable, Iterable, Mapping
from concurrent.futures import ThreadPoolExecutor
from dataclasses import replace
from pathlib import Path
from typing import Any, TypeVar
from urllib.request import pathname2url

from bot.errors import StorageError
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
from .migrations import apply_migrations, missing_migrations

__all__ = ["MAX_BALANCE", "GenerationRow", "ImageRow", "JobRow", "JobSpec", "Settlement", "SqliteStore"]

T = TypeVar("T")
log = logging.getLogger(__name__)
#: At most this many writes share one transaction.
MAX_BATCH = 200
#: Seconds ``open`` keeps trying while another process holds the file it opens (``_while_locked``).
OPEN_RETRY_SECONDS = 30.0
#: Pages of WAL after which a commit checkpoints by itself (the background task normally does it first).
SAFETY_CHECKPOINT_PAGES = 20000
#: A queued job's reservation is held by nobody and never expires: it counts toward the user's
#: concurrent jobs however long it waits, and no sweep releases it (a claim gives it a real lease).
QUEUED_EXPIRY = math.inf


#: A user's live reservations (params: platform, server_id, user_id, now): the concurrent-jobs count.
#: Through the per-user index: left to itself SQLite picks ``reservations_expiry`` and counts every
#: live job of every user, which grows with the load.
_RUNNING = ("SELECT COUNT(*) FROM reservations INDEXED BY reservations_held WHERE status = 'held'"
            " AND platform = ? AND server_id = ? AND user_id = ? AND expires_at > ?")


def _key(identity: Identity) -> tuple[str, str, str]:
    return (identity.platform, identity.server_id, identity.user_id)


class SqliteStore:
    """The ledger and the log, on one SQLite file in WAL mode."""

    def __init__(
        self,
        path: Path,
        *,
        starting_credits: int = 50,
        clock: Clock = time.time,
        read_only: bool = False,
    ) -> None:
        self.path = Path(path)
        self.starting_credits = starting_credits
        self.clock = clock
        self.read_only = read_only
        #: This process's holder id for the leases it takes: random, never configured.
        self.holder = uuid.uuid4().hex
        self._conn: sqlite3.Connection | None = None
        #: The one thread that owns ``_conn``: every statement runs there.
        self._thread: ThreadPoolExecutor | None = None
        self._pending: list[tuple[Callable[[sqlite3.Connection], Any], asyncio.Future[Any]]] = []
        self._flusher: asyncio.Task[None] | None = None
        self._checkpointer: asyncio.Task[None] | None = None
        self.checkpoint_interval = 1.0
        #: At most this many writes share a transaction (1: group commit off, as ``bench_core`` compares).
        self.max_batch = MAX_BATCH
        #: Group commit at work: writes asked for, and the transactions (commits) that carried them.
        self.writes = 0
        self.transactions = 0

    # -- lifecycle -------------------------------------------------------------------------------

    async def _connect(self, database: str, *, uri: bool = False) -> None:
        """Open the connection on its own thread (it is used there only)."""
        self._thread = ThreadPoolExecutor(max_workers=1, thread_name_prefix="sqlite-ledger")
        loop = asyncio.get_running_loop()
        self._conn = await loop.run_in_executor(
            self._thread, lambda: sqlite3.connect(database, uri=uri, isolation_level=None, timeout=30.0)
        )

    async def open(self) -> None:
        if self.read_only:
            await self._open_read_only()
            return
        if str(self.path) != ":memory:":
            self.path.parent.mkdir(parents=True, exist_ok=True)
        await self._connect(str(self.path))
        await self._tx(self._setup)
        if str(self.path) != ":memory:":
            self._checkpointer = asyncio.create_task(self._checkpoints(), name="sqlite-checkpoints")

    async def _open_read_only(self) -> None:
        """Open for looking only: ``mode=ro``, no migration, no checkpoints. A file that does not exist
        yet reads as an empty ledger (and is not created)."""
        if str(self.path) == ":memory:" or not self.path.exists():
            await self._connect(":memory:")
            await self._tx(apply_migrations)
            await self._tx(lambda conn: conn.execute("PRAGMA query_only=ON"))
            return
        await self._connect(f"file:{pathname2url(str(self.path.resolve()))}?mode=ro", uri=True)

        def check(conn: sqlite3.Connection) -> list[str]:
            conn.execute("PRAGMA busy_timeout=30000")
            conn.execute("PRAGMA query_only=ON")
            return missing_migrations(conn)

        missing = await self._tx(check)
        if missing:
            await self.close()
            raise StorageError(
                f"The database {self.path.name} was written by an older imagebot (missing {', '.join(missing)}); "
                "start `imagebot run` once to upgrade it, then look again."
            )

    async def _checkpoints(self) -> None:
        """Copy the WAL back into the database from a second connection, off the command path.

        SQLite's automatic checkpoint runs inside whichever commit crosses the threshold, which
        adds milliseconds to that one command; a PASSIVE checkpoint here never blocks writers. The
        connection has its own thread too, so closing it waits for a checkpoint still running.
        """
        thread = ThreadPoolExecutor(max_workers=1, thread_name_prefix="sqlite-checkpoint")
        loop = asyncio.get_running_loop()
        conn = await loop.run_in_executor(
            thread, lambda: sqlite3.connect(str(self.path), isolation_level=None, timeout=30.0)
        )
        try:
            while True:
                await asyncio.sleep(self.checkpoint_interval)
                try:
                    await loop.run_in_executor(thread, conn.execute, "PRAGMA wal_checkpoint(PASSIVE)")
                except sqlite3.Error as exc:
                    log.warning("background checkpoint failed: %s", exc)
        finally:
            await asyncio.wrap_future(thread.submit(conn.close))  # queued behind any checkpoint in flight
            thread.shutdown(wait=False)

    @staticmethod
    def _setup(conn: sqlite3.Connection) -> None:
        """WAL mode, the pragmas, the migrations: each step changes nothing when done already, so the
        whole is tried again while another process holds the file (``_while_locked``)."""
        _while_locked(lambda: SqliteStore._configure(conn))

    @staticmethod
    def _configure(conn: sqlite3.Connection) -> None:
        conn.execute("PRAGMA journal_mode=WAL")
        # FULL: the WAL is synced at every commit, so a credit movement that was answered survives a
        # power cut (NORMAL may lose the last commits). Group commit keeps that to one sync per batch.
        conn.execute("PRAGMA synchronous=FULL")
        # Checkpoints run in the background (``_checkpoints``); this is only a safety net.
        conn.execute(f"PRAGMA wal_autocheckpoint={SAFETY_CHECKPOINT_PAGES}")
        conn.execute("PRAGMA busy_timeout=30000")
        conn.execute("PRAGMA foreign_keys=ON")
        apply_migrations(conn)

    async def close(self) -> None:
        if self._checkpointer is not None:
            self._checkpointer.cancel()
            await asyncio.gather(self._checkpointer, return_exceptions=True)
            self._checkpointer = None
        if self._flusher is not None:
            await asyncio.gather(self._flusher, return_exceptions=True)
            self._flusher = None
        if self._conn is not None and self._thread is not None:
            conn, self._conn = self._conn, None
            await asyncio.get_running_loop().run_in_executor(self._thread, conn.close)
        if self._thread is not None:
            self._thread.shutdown(wait=False)
            self._thread = None

    async def _tx(self, fn: Callable[[sqlite3.Connection], T]) -> T:
        """Run ``fn`` whole on the connection's thread, with no await inside it (reads and setup)."""
        conn, thread = self._conn, self._thread
        if conn is None or thread is None:
            raise RuntimeError("store is not open")
        return await asyncio.get_running_loop().run_in_executor(thread, fn, conn)

    async def _write(self, body: Callable[[sqlite3.Connection], T]) -> T:
        """Run ``body`` in a write transaction, grouped with whatever other writes are waiting."""
        if self._conn is None:
            raise RuntimeError("store is not open")
        if self.read_only:
            raise ReadOnlyLedger("this ledger was opened read-only")
        future: asyncio.Future[T] = asyncio.get_running_loop().create_future()
        self._pending.append((body, future))
        if self._flusher is None or self._flusher.done():
            self._flusher = asyncio.create_task(self._flush())
        return await future

    async def _flush(self) -> None:
        """Run what is waiting as one transaction, then again for what arrived meanwhile, until none."""
        while self._pending:
            batch, self._pending = self._pending[:self.max_batch], self._pending[self.max_batch:]
            self.writes += len(batch)
            self.transactions += 1
            try:
                outcomes = await self._tx(functools.partial(_run_batch, bodies=[body for body, _ in batch]))
            except BaseException as exc:  # the commit itself failed: every write in the batch failed
                outcomes = [(False, exc)] * len(batch)
            for (_, future), (ok, value) in zip(batch, outcomes, strict=True):
                if future.done():
                    continue
                if ok:
                    future.set_result(value)
                else:
                    future.set_exception(value)

    # -- accounts --------------------------------------------------------------------------------

    def _ensure_account(self, conn: sqlite3.Connection, identity: Identity, now: float) -> bool:
        """Open the account with its starting credits if it is new; say whether it was."""
        cur = conn.execute(
            "INSERT OR IGNORE INTO accounts (platform, server_id, user_id, balance, created_at, updated_at)"
            " VALUES (?, ?, ?, ?, ?, ?)",
            (*_key(identity), self.starting_credits, now, now),
        )
        if cur.rowcount == 1 and self.starting_credits > 0:
            self._ledger(conn, identity, "initial", self.starting_credits, self.starting_credits,
                         self.starting_credits, f"initial:{identity}", "system", "starting credits", now)
        return cur.rowcount == 1

    @staticmethod
    def _ledger(conn: sqlite3.Connection, identity: Identity, kind: str, delta: int, amount: int,
                balance_after: int, request_id: str, actor: str, note: str | None, now: float) -> None:
        _insert(conn, _LEDGER_INSERT,
                [(*_key(identity), kind, delta, amount, balance_after, request_id, actor, note, now)])

    @staticmethod
    def _balance(conn: sqlite3.Connection, identity: Identity) -> int:
        row = conn.execute(
            "SELECT balance FROM accounts WHERE platform = ? AND server_id = ? AND user_id = ?", _key(identity)
        ).fetchone()
        return int(row[0]) if row else 0

    async def balance(self, identity: Identity) -> int:
        """The spendable balance. A look never writes: an account not opened yet (no movement so far)
        has the starting credits it will be opened with."""
        rows = await self._read(
            "SELECT balance FROM accounts WHERE platform = ? AND server_id = ? AND user_id = ?", _key(identity)
        )
        return int(rows[0][0]) if rows else self.starting_credits

    def _credit(self, conn: sqlite3.Connection, identity: Identity, amount: int, now: float) -> int:
        row = conn.execute(
            "UPDATE accounts SET balance = balance + ?, updated_at = ?"
            " WHERE platform = ? AND server_id = ? AND user_id = ? RETURNING balance",
            (amount, now, *_key(identity)),
        ).fetchone()
        return int(row[0])

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
        """Hold ``amount`` credits and open a PENDING generation, atomically, under this holder's
        lease; return the balance left. With ``job``, its job row too, in the same transaction:
        ``running`` under this holder's lease, or ``queued`` (held by nobody) for any ``claim``.

        Refuses (changing nothing) when the balance is short or the user already has
        ``max_concurrent`` live reservations: the count is taken inside the same write transaction,
        so the limit holds across processes too.
        """
        if queued and job is None:
            raise ValueError("a queued reservation needs its job (nobody could claim it otherwise)")
        # Serialized here, not in the transaction: a payload that is not JSON fails alone, before the batch.
        job_values = None if job is None else (
            json.dumps(dict(job.payload), sort_keys=True), json.dumps(dict(job.address), sort_keys=True),
            float(job.deliver_by))

        def run(conn: sqlite3.Connection) -> int:
            now = self.clock()
            holder, expires_at = ("", QUEUED_EXPIRY) if queued else (self.holder, now + lease)
            # The primary key finds a duplicate; a refusal below rolls this row back with the rest.
            if conn.execute(
                "INSERT INTO reservations (id, platform, server_id, user_id, amount, status, holder,"
                " created_at, expires_at) VALUES (?, ?, ?, ?, ?, 'held', ?, ?, ?) ON CONFLICT (id) DO NOTHING",
                (request_id, *_key(identity), amount, holder, now, expires_at),
            ).rowcount == 0:
                raise DuplicateRequest(request_id=request_id)
            # One statement checks the running jobs and the balance and charges; only a refusal (or a
            # new user) needs more of them, to tell which.
            charge = (
                "UPDATE accounts SET balance = balance - ?, updated_at = ?"
                " WHERE platform = ? AND server_id = ? AND user_id = ? AND balance >= ?"
                f" AND ({_RUNNING} AND id != ?) < ? RETURNING balance",
                (amount, now, *_key(identity), amount, *_key(identity), now, request_id, max_concurrent),
            )
            row = conn.execute(*charge).fetchone()
            if row is None:
                running = int(conn.execute(f"{_RUNNING} AND id != ?",
                                           (*_key(identity), now, request_id)).fetchone()[0])
                if running >= max_concurrent:
                    raise TooManyJobs(running=running, limit=max_concurrent)
                if self._ensure_account(conn, identity, now):  # a new user: charge again
                    row = conn.execute(*charge).fetchone()
            if row is None:
                raise ShortBalance(balance=self._balance(conn, identity), needed=amount)
            balance = int(row[0])
            self._ledger(conn, identity, "reserve", -amount, amount, balance, request_id,
                         str(identity), generation.get("command"), now)
            conn.execute(
                "INSERT INTO generations (id, platform, server_id, user_id, channel_id, command, provider,"
                " model, prompt, options, status, credits_reserved, created_at)"
                " VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, 'PENDING', ?, ?)",
                (
                    request_id, *_key(identity), generation.get("channel_id", ""),
                    generation["command"], generation.get("provider"), generation.get("model"),
                    generation["prompt"], json.dumps(generation.get("options", {}), sort_keys=True),
                    amount, now,
                ),
            )
            if job_values is not None:
                payload, address, deliver_by = job_values
                conn.execute(
                    "INSERT INTO jobs (id, state, payload, address, deliver_by, attempts, holder, expires_at,"
                    " created_at) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?)",
                    (request_id, "queued" if queued else "running", payload, address, deliver_by,
                     0 if queued else 1, holder, 0.0 if queued else now + lease, now),
                )
            return balance

        return await self._write(run)

    async def renew(self, request_id: str, *, lease: float) -> bool:
        """The heartbeat: push this holder's live leases ``lease`` seconds ahead (the reservation's
        while it is held, the job's until it is done)."""

        def run(conn: sqlite3.Connection) -> bool:
            now = self.clock()
            held = conn.execute(
                "UPDATE reservations SET expires_at = ? WHERE id = ? AND status = 'held' AND holder = ?"
                " AND expires_at > ?",
                (now + lease, request_id, self.holder, now),
            ).rowcount
            working = conn.execute(
                "UPDATE jobs SET expires_at = ? WHERE id = ? AND state != 'done' AND holder = ? AND expires_at > ?",
                (now + lease, request_id, self.holder, now),
            ).rowcount
            return held == 1 or working == 1

        return await self._write(run)

    # -- jobs: the generation row is the job -----------------------------------------------------

    async def claim(self, limit: int, *, lease: float) -> list[JobRow]:
        """Take up to ``limit`` jobs, oldest first, that nobody holds (queued) or whose lease ran out,
        with their reservations if still held (the old holder is fenced off). A write transaction:
        ``BEGIN IMMEDIATE`` makes two processes' claims take turns, so none is claimed twice."""
        if limit <= 0:
            return []

        def run(conn: sqlite3.Connection) -> list[JobRow]:
            now = self.clock()
            ids = [str(r[0]) for r in conn.execute(
                "UPDATE jobs SET holder = ?, expires_at = ?, attempts = attempts + 1,"
                " state = CASE state WHEN 'queued' THEN 'running' ELSE state END"
                " WHERE id IN (SELECT id FROM jobs WHERE state != 'done' AND (holder = '' OR expires_at <= ?)"
                " ORDER BY created_at, id LIMIT ?) RETURNING id",
                (self.holder, now + lease, now, limit),
            ).fetchall()]
            if not ids:
                return []
            marks = ", ".join("?" * len(ids))
            conn.execute(
                f"UPDATE reservations SET holder = ?, expires_at = ? WHERE id IN ({marks}) AND status = 'held'",
                (self.holder, now + lease, *ids),
            )
            return _jobs(conn, ids)

        return await self._write(run)

    async def finish_job(self, request_id: str, outcome: str) -> bool:
        """Close this holder's job with ``outcome`` and forget its address (it may hold a credential).
        Fenced by the holder only: a job is finished after its user was told, however late."""

        def run(conn: sqlite3.Connection) -> bool:
            return conn.execute(
                "UPDATE jobs SET state = 'done', outcome = ?, address = '{}'"
                " WHERE id = ? AND state != 'done' AND holder = ?",
                (outcome, request_id, self.holder),
            ).rowcount == 1

        return await self._write(run)

    async def job(self, request_id: str) -> JobRow | None:
        rows = await self._tx(functools.partial(_jobs, ids=[request_id]))
        return rows[0] if rows else None

    async def queued_ahead(self, request_id: str) -> int:
        """Jobs queued before this one (0 when it is not queued); ``state != 'done'`` lets the open-jobs
        index answer."""
        rows = await self._read(
            "SELECT COUNT(*) FROM jobs WHERE state != 'done' AND state = 'queued'"
            " AND created_at < (SELECT created_at FROM jobs WHERE id = ? AND state = 'queued')",
            (request_id,),
        )
        return int(rows[0][0])

    async def queue_depth(self) -> int:
        rows = await self._read("SELECT COUNT(*) FROM jobs WHERE state != 'done' AND state = 'queued'")
        return int(rows[0][0])

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
        """Consume ``consumed`` of the hold, give back the rest, and close the generation record; its
        job (if any) becomes ``delivering``.

        With ``consumed == 0`` the give-back is a ``refund``; otherwise the unused part is a
        ``release``. Fenced: unless the reservation is still held by this holder under a live lease
        (it was settled already, or its lease expired and it was or may be released), nothing changes
        and ``charged`` is False.
        """
        return await self._settle(request_id, consumed, status=status, error_code=error_code, provider=provider,
                                  model=model, duration_ms=duration_ms, revised_prompt=revised_prompt,
                                  result_text=result_text, images=images, input_tokens=input_tokens,
                                  output_tokens=output_tokens, deliver=True)

    async def _settle(
        self,
        request_id: str,
        consumed: int,
        *,
        status: str,
        error_code: str | None,
        provider: str | None = None,
        model: str | None = None,
        duration_ms: float | None,
        revised_prompt: str | None = None,
        result_text: str | None = None,
        images: Iterable[ImageRow] = (),
        input_tokens: int = 0,
        output_tokens: int = 0,
        deliver: bool,
    ) -> Settlement:
        """``settle`` and ``refund``: only a settle moves the job on (a refunded job's user is still to be told)."""
        images = list(images)

        def run(conn: sqlite3.Connection) -> Settlement:
            now = self.clock()
            res = conn.execute(
                "UPDATE reservations SET status = 'settled', settled_at = ?"
                " WHERE id = ? AND status = 'held' AND holder = ? AND expires_at > ?"
                " RETURNING platform, server_id, user_id, amount",
                (now, request_id, self.holder, now),
            ).fetchone()
            if res is None:
                gen = conn.execute(
                    "SELECT platform, server_id, user_id FROM generations WHERE id = ?", (request_id,)
                ).fetchone()
                balance = self._balance(conn, Identity(*gen)) if gen else 0
                return Settlement(balance=balance, consumed=0, released=0, charged=False)
            identity = Identity(res[0], res[1], res[2])
            held = int(res[3])
            spent = max(0, min(consumed, held))
            released = held - spent
            balance = self._credit(conn, identity, released, now) if released else self._balance(conn, identity)
            # The consume and the give-back are rows of one statement.
            key, actor = _key(identity), str(identity)
            movements: list[tuple[Any, ...]] = []
            if spent:
                movements.append((*key, "consume", 0, spent, balance - released, request_id, actor, None, now))
            if released:
                movements.append((*key, "refund" if spent == 0 else "release", released, released, balance,
                                  request_id, actor, error_code, now))
            _insert(conn, _LEDGER_INSERT, movements)
            conn.execute(
                "UPDATE generations SET status = ?, error_code = ?, provider = COALESCE(?, provider),"
                " model = COALESCE(?, model), credits_consumed = ?, image_count = ?, duration_ms = ?,"
                " revised_prompt = ?, result_text = ?, input_tokens = ?, output_tokens = ?, finished_at = ?"
                " WHERE id = ?",
                (status, error_code, provider, model, spent, len(images), duration_ms, revised_prompt,
                 result_text, max(0, int(input_tokens)), max(0, int(output_tokens)), now, request_id),
            )
            _insert(conn, "INSERT INTO generation_images (generation_id, idx, sha256, mime, bytes, width, height)",
                    [(request_id, i, im.sha256, im.mime, im.size_bytes, im.width, im.height)
                     for i, im in enumerate(images)])
            if deliver:
                conn.execute("UPDATE jobs SET state = 'delivering' WHERE id = ? AND state != 'done'", (request_id,))
            return Settlement(balance=balance, consumed=spent, released=released, charged=True)

        return await self._write(run)

    async def refund(self, request_id: str, *, code: str, duration_ms: float | None = None) -> Settlement:
        """Give the whole hold back and mark the generation FAILED (fenced like ``settle``); its job
        stays as it is until ``finish_job``."""
        return await self._settle(request_id, 0, status="FAILED", error_code=code, duration_ms=duration_ms,
                                  deliver=False)

    async def release_expired(self) -> int:
        """Refund held reservations whose lease has expired, whoever held them, unless their job is
        not done (``claim`` resumes it); mark their generations FAILED (interrupted). A queued job's
        reservation never expires."""

        def run(conn: sqlite3.Connection) -> int:
            now = self.clock()
            rows = conn.execute(
                "UPDATE reservations SET status = 'released', settled_at = ?"
                " WHERE status = 'held' AND expires_at <= ?"
                " AND NOT EXISTS (SELECT 1 FROM jobs WHERE jobs.id = reservations.id AND jobs.state != 'done')"
                " RETURNING id, platform, server_id, user_id, amount",
                (now, now),
            ).fetchall()
            for rid, platform, server_id, user_id, amount in rows:
                identity = Identity(platform, server_id, user_id)
                if amount:
                    balance = self._credit(conn, identity, int(amount), now)
                    self._ledger(conn, identity, "refund", amount, amount, balance, rid, "system",
                                 "lease expired", now)
                conn.execute(
                    "UPDATE generations SET status = 'FAILED', error_code = 'IMG-INTERRUPTED',"
                    " finished_at = ? WHERE id = ? AND status = 'PENDING'",
                    (now, rid),
                )
            return len(rows)

        return await self._write(run)

    async def refund_completed(self, request_id: str, *, code: str) -> int:
        """Refund what a COMPLETED generation consumed (its images reached nobody); mark it FAILED.

        Idempotent: the generation's status flips only once, and only then do credits move."""

        def run(conn: sqlite3.Connection) -> int:
            now = self.clock()
            gen = conn.execute(
                "UPDATE generations SET status = 'FAILED', error_code = ?, finished_at = ?"
                " WHERE id = ? AND status = 'COMPLETED' RETURNING platform, server_id, user_id, credits_consumed",
                (code, now, request_id),
            ).fetchone()
            amount = int(gen[3]) if gen else 0
            if gen is not None and amount:
                identity = Identity(gen[0], gen[1], gen[2])
                balance = self._credit(conn, identity, amount, now)
                self._ledger(conn, identity, "refund", amount, amount, balance, request_id, "system", code, now)
                conn.execute("UPDATE generations SET credits_consumed = 0 WHERE id = ?", (request_id,))
            return amount

        return await self._write(run)

    # -- admin movements -------------------------------------------------------------------------

    async def adjust(self, identity: Identity, kind: str, amount: int, *, actor: str, request_id: str,
                     note: str | None = None) -> tuple[int, int]:
        """Grant, revoke or set credits; return (old balance, new balance).

        A revoke above the balance, or a grant or set above ``MAX_BALANCE``, is refused, never clamped.
        A request id already applied changes nothing and returns what it did then.
        """
        if kind not in ("grant", "revoke", "set"):
            raise ValueError(kind)

        def run(conn: sqlite3.Connection) -> tuple[int, int]:
            now = self.clock()
            done = conn.execute(
                "SELECT balance_after - delta, balance_after FROM ledger WHERE request_id = ? AND kind = ?",
                (request_id, kind),
            ).fetchone()
            if done is not None:
                return int(done[0]), int(done[1])
            old = self._balance(conn, identity) if self._account_exists(conn, identity) else self.starting_credits
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
            self._ensure_account(conn, identity, now)
            row = conn.execute(
                "UPDATE accounts SET balance = ?, updated_at = ?"
                " WHERE platform = ? AND server_id = ? AND user_id = ? AND balance = ? RETURNING balance",
                (new, now, *_key(identity), old),
            ).fetchone()
            assert row is not None  # the write lock is ours: the balance cannot have moved
            self._ledger(conn, identity, kind, delta, abs(delta) if kind == "set" else amount, new,
                         request_id, actor, note, now)
            return old, new

        return await self._write(run)

    @staticmethod
    def _account_exists(conn: sqlite3.Connection, identity: Identity) -> bool:
        return conn.execute(
            "SELECT 1 FROM accounts WHERE platform = ? AND server_id = ? AND user_id = ?", _key(identity)
        ).fetchone() is not None

    # -- reads -----------------------------------------------------------------------------------

    async def _read(self, sql: str, params: tuple[Any, ...] = ()) -> list[tuple[Any, ...]]:
        def run(conn: sqlite3.Connection) -> list[tuple[Any, ...]]:
            return [tuple(r) for r in conn.execute(sql, params).fetchall()]

        return await self._tx(run)

    async def held(self, identity: Identity) -> int:
        rows = await self._read(
            "SELECT COALESCE(SUM(amount), 0) FROM reservations WHERE status = 'held'"
            " AND platform = ? AND server_id = ? AND user_id = ?",
            _key(identity),
        )
        return int(rows[0][0])

    async def spent(self, identity: Identity) -> tuple[int, int]:
        rows = await self._read(
            "SELECT COALESCE(SUM(credits_consumed), 0), COALESCE(SUM(image_count), 0) FROM generations"
            " WHERE platform = ? AND server_id = ? AND user_id = ?",
            _key(identity),
        )
        return int(rows[0][0]), int(rows[0][1])

    async def recent_generations(self, identity: Identity, limit: int = 5) -> list[GenerationRow]:
        rows = await self._read(
            f"SELECT {_GEN_COLUMNS} FROM generations WHERE platform = ? AND server_id = ? AND user_id = ?"
            " ORDER BY created_at DESC LIMIT ?",
            (*_key(identity), limit),
        )
        return [_generation(r) for r in rows]

    async def generation(self, generation_id: str) -> GenerationRow | None:
        rows = await self._read(f"SELECT {_GEN_COLUMNS} FROM generations WHERE id = ?", (generation_id,))
        if not rows:
            return None
        images = await self._read(
            "SELECT sha256, mime, bytes, width, height FROM generation_images WHERE generation_id = ?"
            " ORDER BY idx",
            (generation_id,),
        )
        gen = _generation(rows[0])
        return GenerationRow(**{**gen.__dict__, "images": tuple(ImageRow(*i) for i in images)})

    async def ledger_rows(self, identity: Identity) -> list[dict[str, Any]]:
        rows = await self._read(
            "SELECT kind, delta, amount, balance_after, request_id, actor, note, created_at FROM ledger"
            " WHERE platform = ? AND server_id = ? AND user_id = ? ORDER BY id",
            _key(identity),
        )
        keys = ("kind", "delta", "amount", "balance_after", "request_id", "actor", "note", "created_at")
        return [dict(zip(keys, r, strict=True)) for r in rows]

    async def usage(self, since: float, server_key: str | None = None) -> list[dict[str, Any]]:
        """Per user, provider and status since ``since`` (a unix time)."""
        params: list[Any] = [since]
        where = "created_at >= ?"
        if server_key:
            platform, _, server = server_key.partition(":")
            where += " AND platform = ? AND server_id = ?"
            params += [platform, server]
        rows = await self._read(
            "SELECT platform, server_id, user_id, COALESCE(provider, ''), status, COUNT(*),"
            " COALESCE(SUM(image_count), 0), COALESCE(SUM(credits_consumed), 0),"
            " COALESCE(SUM(input_tokens), 0), COALESCE(SUM(output_tokens), 0)"
            f" FROM generations WHERE {where} GROUP BY 1, 2, 3, 4, 5 ORDER BY 1, 2, 3, 4, 5",
            tuple(params),
        )
        keys = ("platform", "server_id", "user_id", "provider", "status", "requests", "images", "credits",
                "input_tokens", "output_tokens")
        return [dict(zip(keys, r, strict=True)) for r in rows]

    async def audit(self) -> list[tuple[str, str, str, int, int]]:
        """Accounts whose balance differs from the sum of their ledger deltas (should be none)."""
        rows = await self._read(
            "SELECT a.platform, a.server_id, a.user_id, a.balance, COALESCE(SUM(l.delta), 0) FROM accounts a"
            " LEFT JOIN ledger l ON l.platform = a.platform AND l.server_id = a.server_id"
            " AND l.user_id = a.user_id GROUP BY 1, 2, 3 HAVING a.balance != COALESCE(SUM(l.delta), 0)"
        )
        return [(str(p), str(s), str(u), int(b), int(d)) for p, s, u, b, d in rows]

    # -- history ---------------------------------------------------------------------------------

    async def history(
        self, identity: Identity, *, offset: int = 0, limit: int = 10
    ) -> tuple[list[GenerationRow], int]:
        """One page of the user's shown results, newest first (ties by id), with their images, and the
        count of all: one read transaction, so the page and the count agree."""
        shown = ("FROM generations INDEXED BY generations_history WHERE platform = ? AND server_id = ?"
                 " AND user_id = ? AND status = 'COMPLETED' AND image_count > 0 AND deleted_at IS NULL")

        def run(conn: sqlite3.Connection) -> tuple[list[GenerationRow], int]:
            conn.execute("BEGIN")
            try:
                total = int(conn.execute(f"SELECT COUNT(*) {shown}", _key(identity)).fetchone()[0])
                rows = conn.execute(
                    f"SELECT {_GEN_COLUMNS} {shown} ORDER BY created_at DESC, id DESC LIMIT ? OFFSET ?",
                    (*_key(identity), max(0, limit), max(0, offset)),
                ).fetchall()
                return _with_images(conn, [_generation(tuple(r)) for r in rows]), total
            finally:
                conn.execute("COMMIT")

        return await self._tx(run)

    async def delete_generation(self, generation_id: str, *, actor: str) -> bool:
        def run(conn: sqlite3.Connection) -> bool:
            return conn.execute(
                "UPDATE generations SET deleted_at = ?, deleted_by = ? WHERE id = ? AND deleted_at IS NULL",
                (self.clock(), actor, generation_id),
            ).rowcount == 1

        return await self._write(run)

    # -- per-server settings ---------------------------------------------------------------------

    @staticmethod
    def _settings(conn: sqlite3.Connection, server_key: str) -> dict[str, Any]:
        return {str(k): json.loads(v) for k, v in conn.execute(
            "SELECT key, value FROM server_settings WHERE server_key = ? ORDER BY key", (server_key,))}

    async def server_settings(self, server_key: str) -> dict[str, Any]:
        return await self._tx(functools.partial(self._settings, server_key=server_key))

    async def change_settings(self, server_key: str, changes: Mapping[str, Any], *, actor: str) -> dict[str, Any]:
        """All of ``changes`` in one write transaction (``BEGIN IMMEDIATE``: no other process changes the
        same settings between the read of the old values and the write), one log row per real change."""
        encoded = encode_settings(changes)  # a value that is not JSON fails here, before the transaction

        def run(conn: sqlite3.Connection) -> dict[str, Any]:
            now = self.clock()
            for key, new in encoded.items():
                found = conn.execute("SELECT value FROM server_settings WHERE server_key = ? AND key = ?",
                                     (server_key, key)).fetchone()
                old = None if found is None else str(found[0])
                if old == new:
                    continue
                if new is None:
                    conn.execute("DELETE FROM server_settings WHERE server_key = ? AND key = ?", (server_key, key))
                else:
                    conn.execute(
                        "INSERT INTO server_settings (server_key, key, value, updated_at, updated_by)"
                        " VALUES (?, ?, ?, ?, ?) ON CONFLICT (server_key, key) DO UPDATE SET value = excluded.value,"
                        " updated_at = excluded.updated_at, updated_by = excluded.updated_by",
                        (server_key, key, new, now, actor),
                    )
                conn.execute(
                    "INSERT INTO settings_log (server_key, key, old_value, new_value, actor, created_at)"
                    " VALUES (?, ?, ?, ?, ?, ?)",
                    (server_key, key, old, new, actor, now),
                )
            return self._settings(conn, server_key)

        return await self._write(run)

    async def settings_log(self, server_key: str, limit: int = 20) -> list[dict[str, Any]]:
        rows = await self._read(
            "SELECT key, old_value, new_value, actor, created_at FROM settings_log WHERE server_key = ?"
            " ORDER BY id DESC LIMIT ?",
            (server_key, max(0, limit)),
        )
        return settings_log_entries(rows)

    # -- proposals: confirm before spending ------------------------------------------------------

    async def save_proposal(
        self, proposal_id: str, identity: Identity, payload: Mapping[str, Any], *, expires_at: float
    ) -> None:
        """Sweep a few expired proposals, then insert this one; an expired proposal's id is taken over
        by the upsert (its ``WHERE``), a live one's is a duplicate. One write transaction."""
        text = encode_proposal(proposal_id, payload, expires_at)  # before the transaction: bad input writes nothing

        def run(conn: sqlite3.Connection) -> None:
            now = self.clock()
            conn.execute(
                "DELETE FROM proposals WHERE id IN (SELECT id FROM proposals WHERE expires_at <= ?"
                " ORDER BY expires_at LIMIT ?)",
                (now, PROPOSAL_SWEEP),
            )
            if conn.execute(
                "INSERT INTO proposals (id, platform, server_id, user_id, payload, created_at, expires_at)"
                " VALUES (?, ?, ?, ?, ?, ?, ?) ON CONFLICT (id) DO UPDATE SET platform = excluded.platform,"
                " server_id = excluded.server_id, user_id = excluded.user_id, payload = excluded.payload,"
                " created_at = excluded.created_at, expires_at = excluded.expires_at"
                " WHERE proposals.expires_at <= ?",
                (proposal_id, *_key(identity), text, now, float(expires_at), now),
            ).rowcount == 0:
                raise DuplicateRequest(request_id=proposal_id)

        await self._write(run)

    async def take_proposal(self, proposal_id: str, identity: Identity) -> dict[str, Any] | None:
        """One ``DELETE ... RETURNING`` in a write transaction (``BEGIN IMMEDIATE``): of two takes, in one
        process or two, the second finds nothing."""

        def run(conn: sqlite3.Connection) -> str | None:
            row = conn.execute(
                "DELETE FROM proposals WHERE id = ? AND platform = ? AND server_id = ? AND user_id = ?"
                " AND expires_at > ? RETURNING payload",
                (proposal_id, *_key(identity), self.clock()),
            ).fetchone()
            return None if row is None else str(row[0])

        text = await self._write(run)
        return None if text is None else dict(json.loads(text))

    # -- prune support ---------------------------------------------------------------------------

    async def live_images(self, since: float) -> set[str]:
        """The images of recent generations and of jobs not done, their references, and the sources of
        upscales still to run and of proposals still waiting; in one read transaction."""

        def run(conn: sqlite3.Connection) -> set[str]:
            conn.execute("BEGIN")
            try:
                live = {str(r[0]) for r in conn.execute(
                    "SELECT gi.sha256 FROM generations g JOIN generation_images gi ON gi.generation_id = g.id"
                    " WHERE g.created_at >= ?"
                    " UNION SELECT gi.sha256 FROM jobs j JOIN generation_images gi ON gi.generation_id = j.id"
                    " WHERE j.state != 'done'",
                    (since,),
                )}
                # Only options that may name a reference or a source are decoded.
                for (options,) in conn.execute(
                    "SELECT options FROM generations WHERE created_at >= ? AND options LIKE '%reference%'",
                    (since,),
                ):
                    live |= option_references(json.loads(options or "{}"))
                sources: list[str] = []
                for (options,) in conn.execute(
                    "SELECT g.options FROM jobs j JOIN generations g ON g.id = j.id WHERE j.state != 'done'"
                ):
                    opened = json.loads(options or "{}")
                    live |= option_references(opened)
                    if opened.get("source"):
                        sources.append(str(opened["source"]))
                proposed = [g for (payload,) in conn.execute(
                    "SELECT payload FROM proposals WHERE expires_at > ?", (self.clock(),))
                    if (g := proposal_source(json.loads(payload)))]
                for chunk in range(0, len(proposed), 500):
                    part = proposed[chunk:chunk + 500]
                    for (options,) in conn.execute(
                        f"SELECT options FROM generations WHERE id IN ({', '.join('?' * len(part))})", part,
                    ):
                        live |= option_references(json.loads(options or "{}"))
                sources += proposed
                for chunk in range(0, len(sources), 500):
                    part = sources[chunk:chunk + 500]
                    live.update(str(r[0]) for r in conn.execute(
                        f"SELECT sha256 FROM generation_images WHERE generation_id IN ({', '.join('?' * len(part))})",
                        part,
                    ))
                return live
            finally:
                conn.execute("COMMIT")

        return await self._tx(run)


def _while_locked(step: Callable[[], T], *, within: float = OPEN_RETRY_SECONDS) -> T:
    """``step()``, again after a short sleep while it meets "database is locked", for up to ``within``
    seconds. Processes that open one new file at once need it: switching a file to WAL mode can be
    refused at once, without waiting out the busy timeout, when SQLite sees that waiting could deadlock
    with another connection doing the same. Runs on the connection's own thread, never the event loop's."""
    deadline = time.monotonic() + within
    for attempt in itertools.count():
        try:
            return step()
        except sqlite3.OperationalError as exc:
            if "locked" not in str(exc) and "busy" not in str(exc):
                raise
            if time.monotonic() >= deadline:
                raise
            log.info("the ledger file is busy (another process is opening it); trying again")
            time.sleep(min(0.2, 0.005 * 2 ** attempt) * random.uniform(0.5, 1.5))
    raise AssertionError("unreachable")


def _run_batch(conn: sqlite3.Connection, bodies: list[Callable[[sqlite3.Connection], Any]]) -> list[tuple[bool, Any]]:
    """One transaction for many writes.

    Writes are rarely refused, so the batch first runs plainly. If one write raises, the whole
    transaction is rolled back and run again with a savepoint per write, so that the refused write
    rolls back alone and the others commit as if it had never been asked.
    """
    conn.execute("BEGIN IMMEDIATE")
    try:
        outcomes: list[tuple[bool, Any]] = [(True, body(conn)) for body in bodies]
    except Exception:  # noqa: BLE001 - a refused write: redo the batch write by write, below
        if conn.in_transaction:
            conn.execute("ROLLBACK")
    except BaseException:
        if conn.in_transaction:
            conn.execute("ROLLBACK")
        raise
    else:
        _commit(conn)
        return outcomes
    conn.execute("BEGIN IMMEDIATE")
    outcomes = []
    try:
        for body in bodies:
            conn.execute("SAVEPOINT write")
            try:
                outcomes.append((True, body(conn)))
            except Exception as exc:  # noqa: BLE001 - handed back to the caller that asked
                conn.execute("ROLLBACK TO write")
                outcomes.append((False, exc))
            conn.execute("RELEASE write")
    except BaseException:
        if conn.in_transaction:
            conn.execute("ROLLBACK")
        raise
    _commit(conn)
    return outcomes


_LEDGER_INSERT = ("INSERT INTO ledger (platform, server_id, user_id, kind, delta, amount, balance_after,"
                  " request_id, actor, note, created_at)")


def _insert(conn: sqlite3.Connection, head: str, rows: list[tuple[Any, ...]]) -> None:
    """``head VALUES (...), (...)``: all ``rows`` in one statement (one step of SQLite, where
    ``executemany`` takes one per row); nothing for no rows."""
    if rows:
        marks = "(" + ", ".join("?" * len(rows[0])) + ")"
        conn.execute(f"{head} VALUES {', '.join([marks] * len(rows))}", [v for row in rows for v in row])


def _commit(conn: sqlite3.Connection) -> None:
    try:
        conn.execute("COMMIT")
    except BaseException:
        if conn.in_transaction:
            conn.execute("ROLLBACK")
        raise


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


def _with_images(conn: sqlite3.Connection, gens: list[GenerationRow]) -> list[GenerationRow]:
    """``gens`` each with its images, read in one query (not one per generation)."""
    if not gens:
        return []
    marks = ", ".join("?" * len(gens))
    images: dict[str, list[ImageRow]] = {}
    for gid, *image in conn.execute(
        f"SELECT generation_id, sha256, mime, bytes, width, height FROM generation_images"
        f" WHERE generation_id IN ({marks}) ORDER BY generation_id, idx", [g.id for g in gens],
    ):
        images.setdefault(str(gid), []).append(ImageRow(*image))
    return [replace(g, images=tuple(images.get(g.id, ()))) for g in gens]


_JOB_COLUMNS = "id, state, payload, address, deliver_by, attempts, holder, expires_at, outcome, created_at"


def _jobs(conn: sqlite3.Connection, ids: list[str]) -> list[JobRow]:
    """The job rows of ``ids`` as they are now, each with its generation and images, oldest first
    (run inside the caller's transaction, so a claim returns what it committed)."""
    marks = ", ".join("?" * len(ids))
    jobs = conn.execute(f"SELECT {_JOB_COLUMNS} FROM jobs WHERE id IN ({marks})", ids).fetchall()
    if not jobs:
        return []
    found = [str(j[0]) for j in jobs]
    marks = ", ".join("?" * len(found))
    gens = {str(r[0]): _generation(tuple(r)) for r in conn.execute(
        f"SELECT {_GEN_COLUMNS} FROM generations WHERE id IN ({marks})", found)}
    images: dict[str, list[ImageRow]] = {}
    for gid, *image in conn.execute(
        f"SELECT generation_id, sha256, mime, bytes, width, height FROM generation_images"
        f" WHERE generation_id IN ({marks}) ORDER BY generation_id, idx", found,
    ):
        images.setdefault(str(gid), []).append(ImageRow(*image))
    rows = [
        JobRow(id=str(j[0]), state=str(j[1]), payload=json.loads(j[2]), address=json.loads(j[3]),
               deliver_by=float(j[4]), attempts=int(j[5]), holder=str(j[6]), expires_at=float(j[7]),
               outcome=str(j[8]), created_at=float(j[9]),
               generation=replace(gens[str(j[0])], images=tuple(images.get(str(j[0]), ()))))
        for j in jobs
    ]
    rows.sort(key=lambda r: (r.created_at, r.id))
    return rows

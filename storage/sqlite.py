"""The SQLite store: accounts, the credit ledger, reservations and the generation log.

Every write is a plain function run whole on aiosqlite's connection thread (``_write``): there is
no ``await`` inside a transaction, so two commands can never interleave a read-modify-write, and
``BEGIN IMMEDIATE`` plus a busy timeout keeps several processes on one file correct too. Balances
only move by conditional updates (``WHERE balance >= ?``) under a ``CHECK (balance >= 0)``.

Group commit: writes that arrive while the connection is busy are queued and run together in the
next transaction, each inside its own SAVEPOINT, so one refused write (short balance) rolls back
alone while the batch pays for one commit and one thread hop instead of many.
"""

from __future__ import annotations

import asyncio
import json
import logging
import sqlite3
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TypeVar

import aiosqlite

from bot.errors import InsufficientCredits, RateLimited, ValidationError
from bot.models import Identity

from .migrations import apply_migrations

T = TypeVar("T")
log = logging.getLogger(__name__)
#: No balance may exceed this: it keeps arithmetic and displays sane.
MAX_BALANCE = 1_000_000_000
#: At most this many writes share one transaction.
MAX_BATCH = 200
#: Pages of WAL after which a commit checkpoints by itself (the background task normally does it first).
SAFETY_CHECKPOINT_PAGES = 20000


@dataclass(frozen=True)
class ImageRow:
    sha256: str
    mime: str
    size_bytes: int
    width: int
    height: int


@dataclass(frozen=True)
class GenerationRow:
    id: str
    platform: str
    server_id: str
    user_id: str
    channel_id: str
    command: str
    provider: str | None
    model: str | None
    prompt: str
    options: dict[str, Any]
    status: str
    error_code: str | None
    credits_reserved: int
    credits_consumed: int
    image_count: int
    duration_ms: float | None
    revised_prompt: str | None
    result_text: str | None
    created_at: float
    finished_at: float | None
    images: tuple[ImageRow, ...] = ()

    @property
    def identity(self) -> Identity:
        return Identity(self.platform, self.server_id, self.user_id)


@dataclass(frozen=True)
class Settlement:
    balance: int
    consumed: int
    released: int
    #: False when the reservation had already been released (expired): nothing was charged.
    charged: bool


def _key(identity: Identity) -> tuple[str, str, str]:
    return (identity.platform, identity.server_id, identity.user_id)


class SqliteStore:
    """The ledger and the log, on one SQLite file in WAL mode."""

    def __init__(self, path: Path, *, starting_credits: int = 50, instance: str = "default") -> None:
        self.path = Path(path)
        self.starting_credits = starting_credits
        self.instance = instance
        self._db: aiosqlite.Connection | None = None
        self._pending: list[tuple[Callable[[sqlite3.Connection], Any], asyncio.Future[Any]]] = []
        self._flusher: asyncio.Task[None] | None = None
        self._checkpointer: asyncio.Task[None] | None = None
        self.checkpoint_interval = 1.0

    # -- lifecycle -------------------------------------------------------------------------------

    async def open(self) -> None:
        if str(self.path) != ":memory:":
            self.path.parent.mkdir(parents=True, exist_ok=True)
        self._db = await aiosqlite.connect(str(self.path), isolation_level=None, timeout=30.0)
        await self._tx(self._setup)
        if str(self.path) != ":memory:":
            self._checkpointer = asyncio.create_task(self._checkpoints(), name="sqlite-checkpoints")

    async def _checkpoints(self) -> None:
        """Copy the WAL back into the database from a second connection, off the command path.

        SQLite's automatic checkpoint runs inside whichever commit crosses the threshold, which
        adds milliseconds to that one command; a PASSIVE checkpoint here never blocks writers.
        """
        conn = await aiosqlite.connect(str(self.path), isolation_level=None, timeout=30.0)
        try:
            while True:
                await asyncio.sleep(self.checkpoint_interval)
                try:
                    await conn.execute("PRAGMA wal_checkpoint(PASSIVE)")
                except sqlite3.Error as exc:
                    log.warning("background checkpoint failed: %s", exc)
        finally:
            await conn.close()

    @staticmethod
    def _setup(conn: sqlite3.Connection) -> None:
        conn.execute("PRAGMA journal_mode=WAL")
        conn.execute("PRAGMA synchronous=NORMAL")
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
        if self._db is not None:
            await self._db.close()
            self._db = None

    async def _tx(self, fn: Callable[[sqlite3.Connection], T]) -> T:
        """Run ``fn`` on the connection thread, with no await inside it (reads and setup)."""
        if self._db is None:
            raise RuntimeError("store is not open")
        db = self._db
        # aiosqlite's own worker-thread entry point: one hop for the whole function.
        return await db._execute(lambda: fn(db._conn))  # noqa: SLF001

    async def _write(self, body: Callable[[sqlite3.Connection], T]) -> T:
        """Run ``body`` in a write transaction, grouped with whatever other writes are waiting."""
        if self._db is None:
            raise RuntimeError("store is not open")
        future: asyncio.Future[T] = asyncio.get_running_loop().create_future()
        self._pending.append((body, future))
        if self._flusher is None or self._flusher.done():
            self._flusher = asyncio.create_task(self._flush())
        return await future

    async def _flush(self) -> None:
        while self._pending:
            batch, self._pending = self._pending[:MAX_BATCH], self._pending[MAX_BATCH:]
            try:
                outcomes = await self._tx(lambda conn, b=batch: _run_batch(conn, [body for body, _ in b]))
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
        conn.execute(
            "INSERT INTO ledger (platform, server_id, user_id, kind, delta, amount, balance_after,"
            " request_id, actor, note, created_at) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
            (*_key(identity), kind, delta, amount, balance_after, request_id, actor, note, now),
        )

    @staticmethod
    def _balance(conn: sqlite3.Connection, identity: Identity) -> int:
        row = conn.execute(
            "SELECT balance FROM accounts WHERE platform = ? AND server_id = ? AND user_id = ?", _key(identity)
        ).fetchone()
        return int(row[0]) if row else 0

    async def balance(self, identity: Identity) -> int:
        """The spendable balance, creating the account with its starting credits on first sight."""
        rows = await self._read(
            "SELECT balance FROM accounts WHERE platform = ? AND server_id = ? AND user_id = ?", _key(identity)
        )
        if rows:
            return int(rows[0][0])

        def run(conn: sqlite3.Connection) -> int:
            self._ensure_account(conn, identity, time.time())
            return self._balance(conn, identity)

        return await self._write(run)

    # -- two-phase charges -----------------------------------------------------------------------

    async def reserve(
        self,
        identity: Identity,
        request_id: str,
        amount: int,
        *,
        max_concurrent: int,
        ttl: float,
        generation: dict[str, Any],
    ) -> int:
        """Hold ``amount`` credits and open a PENDING generation, atomically; return the balance left.

        Refuses (changing nothing) when the balance is short or the user already has
        ``max_concurrent`` jobs held: the count is taken inside the same write transaction, so the
        limit holds across processes too.
        """

        def run(conn: sqlite3.Connection) -> int:
            now = time.time()
            held = conn.execute(
                "SELECT COUNT(*), MIN(created_at) FROM reservations WHERE status = 'held'"
                " AND platform = ? AND server_id = ? AND user_id = ?",
                _key(identity),
            ).fetchone()
            if held[0] >= max_concurrent:
                raise RateLimited(
                    f"You already have {held[0]} jobs running (the limit is {max_concurrent}). "
                    "Wait for one to finish.",
                    retry_after=5.0,
                    code="IMG-RATE-003",
                )
            charge = (
                "UPDATE accounts SET balance = balance - ?, updated_at = ?"
                " WHERE platform = ? AND server_id = ? AND user_id = ? AND balance >= ? RETURNING balance",
                (amount, now, *_key(identity), amount),
            )
            row = conn.execute(*charge).fetchone()
            if row is None and self._ensure_account(conn, identity, now):  # a new user: charge again
                row = conn.execute(*charge).fetchone()
            if row is None:
                have = self._balance(conn, identity)
                raise InsufficientCredits(
                    f"This needs {amount} credits and you have {have}. Ask a server admin for more.",
                    balance=have,
                    needed=amount,
                )
            balance = int(row[0])
            self._ledger(conn, identity, "reserve", -amount, amount, balance, request_id,
                         str(identity), generation.get("command"), now)
            conn.execute(
                "INSERT INTO reservations (id, platform, server_id, user_id, amount, status, instance,"
                " created_at, expires_at) VALUES (?, ?, ?, ?, ?, 'held', ?, ?, ?)",
                (request_id, *_key(identity), amount, self.instance, now, now + ttl),
            )
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
            return balance

        return await self._write(run)

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
        """Consume ``consumed`` of the hold, give back the rest, and close the generation record.

        With ``consumed == 0`` the give-back is a ``refund``; otherwise the unused part is a
        ``release``. A reservation already released (expired) charges nothing.
        """
        images = list(images)

        def run(conn: sqlite3.Connection) -> Settlement:
            now = time.time()
            res = conn.execute(
                "UPDATE reservations SET status = 'settled', settled_at = ? WHERE id = ? AND status = 'held'"
                " RETURNING platform, server_id, user_id, amount",
                (now, request_id),
            ).fetchone()
            charged = res is not None
            spent = released = 0
            if res is not None:
                identity = Identity(res[0], res[1], res[2])
                held = int(res[3])
                spent = max(0, min(consumed, held))
                released = held - spent
                balance = self._balance(conn, identity)
                if spent:
                    self._ledger(conn, identity, "consume", 0, spent, balance, request_id,
                                 str(identity), None, now)
                if released:
                    row = conn.execute(
                        "UPDATE accounts SET balance = balance + ?, updated_at = ?"
                        " WHERE platform = ? AND server_id = ? AND user_id = ? RETURNING balance",
                        (released, now, *_key(identity)),
                    ).fetchone()
                    balance = int(row[0])
                    self._ledger(conn, identity, "refund" if spent == 0 else "release", released,
                                 released, balance, request_id, str(identity), error_code, now)
            else:
                gen = conn.execute(
                    "SELECT platform, server_id, user_id FROM generations WHERE id = ?", (request_id,)
                ).fetchone()
                balance = self._balance(conn, Identity(*gen)) if gen else 0
            conn.execute(
                "UPDATE generations SET status = ?, error_code = ?, provider = COALESCE(?, provider),"
                " model = COALESCE(?, model), credits_consumed = ?, image_count = ?, duration_ms = ?,"
                " revised_prompt = ?, result_text = ?, input_tokens = ?, output_tokens = ?, finished_at = ?"
                " WHERE id = ?",
                (status, error_code, provider, model, spent, len(images), duration_ms, revised_prompt,
                 result_text, max(0, int(input_tokens)), max(0, int(output_tokens)), now, request_id),
            )
            conn.executemany(
                "INSERT INTO generation_images (generation_id, idx, sha256, mime, bytes, width, height)"
                " VALUES (?, ?, ?, ?, ?, ?, ?)",
                [(request_id, i, im.sha256, im.mime, im.size_bytes, im.width, im.height)
                 for i, im in enumerate(images)],
            )
            return Settlement(balance=balance, consumed=spent, released=released, charged=charged)

        return await self._write(run)

    async def release_stale(self, *, orphaned_instance: str | None = None, now: float | None = None) -> int:
        """Refund held reservations that expired, or that belong to ``orphaned_instance`` (this
        instance's previous run, which crashed); mark their generations FAILED (interrupted)."""

        def run(conn: sqlite3.Connection) -> int:
            t = time.time() if now is None else now
            rows = conn.execute(
                "UPDATE reservations SET status = 'released', settled_at = ?"
                " WHERE status = 'held' AND (expires_at < ? OR instance = ?)"
                " RETURNING id, platform, server_id, user_id, amount",
                (t, t, orphaned_instance if orphaned_instance is not None else "\x00"),
            ).fetchall()
            for rid, platform, server_id, user_id, amount in rows:
                identity = Identity(platform, server_id, user_id)
                bal = conn.execute(
                    "UPDATE accounts SET balance = balance + ?, updated_at = ?"
                    " WHERE platform = ? AND server_id = ? AND user_id = ? RETURNING balance",
                    (amount, t, platform, server_id, user_id),
                ).fetchone()
                if amount:
                    self._ledger(conn, identity, "refund", amount, amount, int(bal[0]), rid, "system",
                                 "interrupted", t)
                conn.execute(
                    "UPDATE generations SET status = 'FAILED', error_code = 'IMG-INTERRUPTED',"
                    " finished_at = ? WHERE id = ? AND status = 'PENDING'",
                    (t, rid),
                )
            return len(rows)

        return await self._write(run)

    async def refund_completed(self, request_id: str, *, code: str) -> int:
        """Refund what a COMPLETED generation consumed (its images reached nobody); mark it FAILED.

        Idempotent: the generation's status flips only once, and only then do credits move."""

        def run(conn: sqlite3.Connection) -> int:
            now = time.time()
            gen = conn.execute(
                "UPDATE generations SET status = 'FAILED', error_code = ?, finished_at = ?"
                " WHERE id = ? AND status = 'COMPLETED' RETURNING platform, server_id, user_id, credits_consumed",
                (code, now, request_id),
            ).fetchone()
            amount = int(gen[3]) if gen else 0
            if gen is not None and amount:
                identity = Identity(gen[0], gen[1], gen[2])
                row = conn.execute(
                    "UPDATE accounts SET balance = balance + ?, updated_at = ?"
                    " WHERE platform = ? AND server_id = ? AND user_id = ? RETURNING balance",
                    (amount, now, *_key(identity)),
                ).fetchone()
                self._ledger(conn, identity, "refund", amount, amount, int(row[0]), request_id, "system",
                             code, now)
                conn.execute("UPDATE generations SET credits_consumed = 0 WHERE id = ?", (request_id,))
            return amount

        return await self._write(run)

    # -- admin movements -------------------------------------------------------------------------

    async def adjust(self, identity: Identity, kind: str, amount: int, *, actor: str, request_id: str,
                     note: str | None = None) -> tuple[int, int]:
        """Grant, revoke or set credits; return (old balance, new balance).

        A revoke above the balance is refused, never clamped.
        """
        if kind not in ("grant", "revoke", "set"):
            raise ValueError(kind)

        def run(conn: sqlite3.Connection) -> tuple[int, int]:
            now = time.time()
            self._ensure_account(conn, identity, now)
            old = self._balance(conn, identity)
            if kind == "grant":
                if old + amount > MAX_BALANCE:
                    raise ValidationError(
                        f"That grant would take the balance above {MAX_BALANCE:,} credits.",
                        code="IMG-VALID-AMOUNT",
                    )
                new, delta = old + amount, amount
            elif kind == "revoke":
                if amount > old:
                    raise ValidationError(
                        f"Cannot revoke {amount} credits: the balance is only {old}. Nothing was changed.",
                        code="IMG-VALID-AMOUNT",
                    )
                new, delta = old - amount, -amount
            else:
                new, delta = amount, amount - old
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
        return [tuple(r) for r in rows]  # type: ignore[misc]


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
    " created_at, finished_at"
)


def _generation(row: tuple[Any, ...]) -> GenerationRow:
    values = list(row)
    values[9] = json.loads(values[9] or "{}")
    return GenerationRow(*values)

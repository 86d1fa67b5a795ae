"""The ledger interface: exactly the calls the core and the CLI make, whatever the engine.

``Ledger`` is implemented by ``storage.sqlite.SqliteStore`` (one file, WAL, ``synchronous=FULL``) and
``storage.memory.MemoryLedger`` (the executable specification and test double) and
``storage.postgres.PostgresLedger`` (several processes on several machines); one contract suite
(``tests/test_ledger_contract.py``) runs every case against each. ``open_ledger`` picks the engine from
the database URL, so nothing above this module names SQLite.

Reservations and leases. ``reserve`` holds credits for a request under a *lease*: the holder id of the
ledger object that reserved (random per process, ``Ledger.holder``) and an expiry ``lease`` seconds
ahead. While the job runs its holder renews the lease (``renew``, a heartbeat). ``settle`` and
``refund`` are fenced: they move credits only while the reservation is still held, by this holder,
under a live lease; otherwise they change nothing and say so (``Settlement.charged is False``).
``release_expired`` (any process may call it; ``imagebot run`` does) refunds reservations whose lease
ran out, which is how a job whose process died gives its credits back. Liveness is a lease, never a
process or instance name.

Every movement is idempotent: a second settle, refund or release of a request changes nothing, and
the schema holds one ledger row per (request id, movement kind).

Proposals ("confirm before spending", issue 13). A command that would cost more than its server's
threshold is stored as a *proposal* (``save_proposal``: what to run, as JSON) and runs only when its asker
clicks Confirm, which may reach another process: ``take_proposal`` removes and returns it atomically, so
two clicks (or two processes) run it once at most. A proposal belongs to its asker (platform, server,
user) and dies at ``expires_at`` by the ledger's clock; saves sweep the expired ones away.

Refusals carry numbers, never sentences: ``bot/replies.py`` words them for people.

    LedgerRefused                  the movement was refused; nothing changed
     +-- ShortBalance              balance below the amount            (balance, needed)
     +-- TooManyJobs               live reservations at the limit      (running, limit)
     +-- RevokeAboveBalance        revoke more than the balance        (amount, balance)
     +-- AboveMaxBalance           a grant or set past MAX_BALANCE     (amount, balance, maximum)
     +-- DuplicateRequest          the request (or proposal) id is taken (request_id)
"""

from __future__ import annotations

import json
import math
import time
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any, ClassVar, Protocol, runtime_checkable

from bot.errors import ConfigError
from bot.models import Identity

#: No balance may exceed this: it keeps arithmetic and displays sane.
MAX_BALANCE = 1_000_000_000
#: How long a reservation's lease lasts unless the caller says otherwise (seconds).
DEFAULT_LEASE = 30.0

Clock = Callable[[], float]


# -- rows --------------------------------------------------------------------------------------------


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
    #: Set by ``delete_generation`` (its asker or an admin removed the result): the row, its ledger rows
    #: and its images stay, for the ledger's record; ``history`` no longer lists it.
    deleted_at: float | None = None
    deleted_by: str | None = None

    @property
    def identity(self) -> Identity:
        return Identity(self.platform, self.server_id, self.user_id)


#: A job's states. ``queued``: reserved, waiting for a worker; ``running``: a worker holds it and calls the
#: provider; ``delivering``: settled, its images stored, on their way to the user; ``done``: its user saw
#: its one outcome (or it was refunded). Only ``done`` is final.
JOB_STATES = ("queued", "running", "delivering", "done")


@dataclass(frozen=True)
class JobSpec:
    """What ``reserve`` stores with a generation so that any process can run and deliver it."""

    #: What to run: ``{"kind": "imagine" | "upscale" | "enhance", ...}`` (``bot.worker`` reads it).
    payload: Mapping[str, Any]
    #: Where its outcome goes: platform-specific (``{"platform": "discord", "token": ...}``). It may hold
    #: a short-lived credential (a Discord interaction token, a Slack response_url): never logged, and
    #: cleared when the job is done.
    address: Mapping[str, Any]
    #: Epoch seconds after which the address's short-lived credential is dead (fallbacks only).
    deliver_by: float


@dataclass(frozen=True)
class JobRow:
    id: str
    state: str
    payload: dict[str, Any]
    address: dict[str, Any]
    deliver_by: float
    #: Claims so far: 1 for a job running in the process that took the command, +1 per takeover.
    attempts: int
    holder: str
    expires_at: float
    #: "delivered", "undelivered", "failed", "told", "refunded" once done; "" before.
    outcome: str
    created_at: float
    generation: GenerationRow


@dataclass(frozen=True)
class Settlement:
    balance: int
    consumed: int
    released: int
    #: False when this holder no longer held the reservation (settled already, or its lease expired
    #: and it was released): nothing moved.
    charged: bool


#: The JSON values a server setting may hold (the core validates them before ``change_settings``).
SettingValue = str | int | float | bool | list[str]

def encode_settings(changes: Mapping[str, Any]) -> dict[str, str | None]:
    """Each change as the JSON text the engines store (None: remove the key), all before any write, so
    a value that is not JSON (``TypeError``; NaN or infinity: ``ValueError``) fails the whole change set
    with nothing written. The same value always gives the same text: that is how "changed" is told."""
    encoded: dict[str, str | None] = {}
    for key, value in changes.items():
        if not isinstance(key, str) or not key:
            raise ValueError(f"a setting's key must be a non-empty string, not {key!r}")
        encoded[key] = None if value is None else json.dumps(value, sort_keys=True, allow_nan=False)
    return encoded


def settings_log_entries(rows: Iterable[tuple[str, str | None, str | None, str, float]]) -> list[dict[str, Any]]:
    """``settings_log`` rows as every engine returns them: (key, old, new, actor, created_at), the values
    decoded from the JSON text ``encode_settings`` stored (None: the key was unset)."""
    return [{"key": key, "old": None if old is None else json.loads(old),
             "new": None if new is None else json.loads(new), "actor": actor, "created_at": at}
            for key, old, new, actor, at in rows]


#: How many expired proposals one ``save_proposal`` sweeps away at most (the sweep stays cheap; each
#: proposal is swept once, so a steady trickle of saves keeps the table to the live ones).
PROPOSAL_SWEEP = 100


def encode_proposal(proposal_id: str, payload: Mapping[str, Any], expires_at: float) -> str:
    """The payload as the JSON text the engines store, checked before any write: an empty id, a payload
    that is not a JSON object (``TypeError``; NaN or infinity: ``ValueError``) or an expiry that is not a
    finite time raises, with nothing written."""
    if not isinstance(proposal_id, str) or not proposal_id:
        raise ValueError(f"a proposal's id must be a non-empty string, not {proposal_id!r}")
    if not isinstance(payload, Mapping):
        raise TypeError(f"a proposal's payload must be a mapping, not {type(payload).__name__}")
    if not isinstance(expires_at, int | float) or not math.isfinite(expires_at):
        raise ValueError(f"a proposal's expires_at must be a finite time, not {expires_at!r}")
    return json.dumps(dict(payload), sort_keys=True, allow_nan=False)


def option_references(options: Mapping[str, Any]) -> set[str]:
    """The reference images a generation's recorded options name (one, or a list of several)."""
    found: set[str] = set()
    one = options.get("reference_sha256")
    if isinstance(one, str) and one:
        found.add(one)
    several = options.get("references_sha256")
    if isinstance(several, list):
        found.update(s for s in several if isinstance(s, str) and s)
    return found


def proposal_source(payload: Mapping[str, Any]) -> str | None:
    """The generation a waiting proposal (a button's Confirm) starts from: its images, and the references its
    options name, must outlive a prune until the proposal is taken or expires."""
    source = payload.get("generation_id")
    return source if isinstance(source, str) and source else None


#: The movement kinds a ledger row may have.
KINDS = ("initial", "grant", "revoke", "set", "reserve", "consume", "release", "refund")


# -- refusals ----------------------------------------------------------------------------------------


class LedgerRefused(Exception):
    """A movement the ledger refused. Nothing changed. Carries numbers; ``bot.replies`` words it."""

    code: ClassVar[str] = "IMG-STORE-001"

    def __init__(self, **fields: object) -> None:
        super().__init__(", ".join(f"{k}={v!r}" for k, v in fields.items()))
        self.fields = fields


class ShortBalance(LedgerRefused):
    code = "IMG-CREDITS-001"

    def __init__(self, *, balance: int, needed: int) -> None:
        super().__init__(balance=balance, needed=needed)
        self.balance = balance
        self.needed = needed


class TooManyJobs(LedgerRefused):
    code = "IMG-RATE-003"

    def __init__(self, *, running: int, limit: int) -> None:
        super().__init__(running=running, limit=limit)
        self.running = running
        self.limit = limit


class RevokeAboveBalance(LedgerRefused):
    code = "IMG-VALID-AMOUNT"

    def __init__(self, *, amount: int, balance: int) -> None:
        super().__init__(amount=amount, balance=balance)
        self.amount = amount
        self.balance = balance


class AboveMaxBalance(LedgerRefused):
    code = "IMG-VALID-AMOUNT"

    def __init__(self, *, amount: int, balance: int, maximum: int) -> None:
        super().__init__(amount=amount, balance=balance, maximum=maximum)
        self.amount = amount
        self.balance = balance
        self.maximum = maximum


class DuplicateRequest(LedgerRefused):
    code = "IMG-STORE-DUP"

    def __init__(self, *, request_id: str) -> None:
        super().__init__(request_id=request_id)
        self.request_id = request_id


class ReadOnlyLedger(RuntimeError):
    """A write was asked of a ledger opened read-only (an operator's look): a programming error."""


# -- the interface -----------------------------------------------------------------------------------


@runtime_checkable
class Ledger(Protocol):
    """Accounts, the credit ledger, reservations under leases, and the generation log."""

    #: This ledger object's holder id: random, one per process (never a configured name).
    holder: str
    #: Users the ledger has never seen start with this many credits (their ``initial`` row is
    #: written on their first movement, never by a look).
    starting_credits: int

    async def open(self) -> None: ...

    async def close(self) -> None: ...

    # two-phase charges, under a lease

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
        """Hold ``amount`` and open a PENDING generation, atomically, under a lease held by
        ``self.holder`` for ``lease`` seconds; return the balance left.

        With ``job``, its job row is inserted in the same transaction (no reservation without a job, no
        job without a reservation): state ``running`` held by this holder, or, with ``queued``, state
        ``queued`` held by nobody (holder ``""``) for any worker's ``claim``.

        Raises ``ShortBalance``, ``TooManyJobs`` (live reservations at ``max_concurrent``; a queued
        job's reservation counts as live) or ``DuplicateRequest``; a refusal changes nothing (not even
        opening the account)."""
        ...

    async def renew(self, request_id: str, *, lease: float) -> bool:
        """Extend this holder's live lease to ``lease`` seconds from now: the reservation's while it is
        held, and the job's (if the request has one) until it is done. False (and nothing changed) when
        this holder holds neither under a live lease any more."""
        ...

    # jobs: the generation row is the job

    async def claim(self, limit: int, *, lease: float) -> list[JobRow]:
        """Take up to ``limit`` jobs, oldest first, that are not done and are held by nobody (queued) or
        whose lease expired (their process died or stalled): each becomes this holder's for ``lease``
        seconds, ``attempts`` + 1, ``queued`` -> ``running`` (``running`` and ``delivering`` stay). A
        reservation still held is taken over with it, so the old holder's settle or refund is fenced
        off. Two processes never claim the same job (PostgreSQL: ``FOR UPDATE SKIP LOCKED``)."""
        ...

    async def finish_job(self, request_id: str, outcome: str) -> bool:
        """Mark this holder's job ``done`` with ``outcome`` and clear its address. Fenced: False (and
        nothing changed) when the job is not held by this holder, or is done already."""
        ...

    async def job(self, request_id: str) -> JobRow | None: ...

    async def queued_ahead(self, request_id: str) -> int:
        """Jobs still ``queued`` that were created before this one (0 once it runs), across processes."""
        ...

    async def queue_depth(self) -> int:
        """Jobs ``queued`` (not yet claimed), across processes."""
        ...

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
        """Consume ``consumed`` of the hold (at most the hold), give back the rest, close the
        generation; its job (if any) becomes ``delivering``. Fenced: changes nothing unless this
        holder's lease is live."""
        ...

    async def refund(self, request_id: str, *, code: str, duration_ms: float | None = None) -> Settlement:
        """Give the whole hold back and mark the generation FAILED with ``code``; its job (if any) stays
        held by this holder until ``finish_job`` (its user must still be told). Fenced like settle."""
        ...

    async def refund_completed(self, request_id: str, *, code: str) -> int:
        """Refund what a COMPLETED generation consumed (its images reached nobody); return the amount,
        0 when there was nothing (left) to refund. Its job's state is left to ``finish_job``."""
        ...

    async def release_expired(self) -> int:
        """Refund every held reservation whose lease has expired, whoever held it, that no worker can
        resume: it has no job, or its job is done. Mark their generations FAILED
        (``IMG-INTERRUPTED``). Return how many were released. Jobs not done are ``claim``'s."""
        ...

    # admin movements

    async def adjust(
        self, identity: Identity, kind: str, amount: int, *, actor: str, request_id: str, note: str | None = None
    ) -> tuple[int, int]:
        """Grant, revoke or set; return (old balance, new balance). Raises ``RevokeAboveBalance`` or
        ``AboveMaxBalance`` (never clamps). A request id already applied changes nothing and returns
        what it did the first time."""
        ...

    # reads (never write)

    async def balance(self, identity: Identity) -> int: ...

    async def held(self, identity: Identity) -> int: ...

    async def spent(self, identity: Identity) -> tuple[int, int]:
        """(credits consumed, images made) over the user's whole history."""
        ...

    async def recent_generations(self, identity: Identity, limit: int = 5) -> list[GenerationRow]: ...

    async def generation(self, generation_id: str) -> GenerationRow | None: ...

    async def ledger_rows(self, identity: Identity) -> list[dict[str, Any]]:
        """Rows as dicts: kind, delta, amount, balance_after, request_id, actor, note, created_at."""
        ...

    async def usage(self, since: float, server_key: str | None = None) -> list[dict[str, Any]]:
        """Per user, provider and status since ``since``: requests, images, credits, tokens."""
        ...

    async def audit(self) -> list[tuple[str, str, str, int, int]]:
        """Accounts whose balance differs from the sum of their ledger deltas (should be none)."""
        ...

    # history: what a user finds again

    async def history(
        self, identity: Identity, *, offset: int = 0, limit: int = 10
    ) -> tuple[list[GenerationRow], int]:
        """One page of this user's results in this server: generations COMPLETED with images and not
        deleted, newest first (ties by id, so pages never overlap or skip), each with its images; and
        how many such results there are in all. A read."""
        ...

    async def delete_generation(self, generation_id: str, *, actor: str) -> bool:
        """Mark a generation deleted (``deleted_at`` now, ``deleted_by`` ``actor``); its ledger rows and
        images stay. False (nothing changed) when it is unknown or deleted already. Who may delete is
        the core's to check."""
        ...

    # per-server settings, every change recorded

    async def server_settings(self, server_key: str) -> dict[str, Any]:
        """The settings a server's admins changed from the operator's defaults (``{}`` when none),
        JSON values decoded. A read."""
        ...

    async def change_settings(self, server_key: str, changes: Mapping[str, Any], *, actor: str) -> dict[str, Any]:
        """Apply ``changes`` in one transaction (a value of None removes the key: the operator's default
        again), with one ``settings_log`` row per key whose value really changed; return the settings
        after. A value that is not JSON raises ``TypeError`` or ``ValueError`` and changes nothing."""
        ...

    async def settings_log(self, server_key: str, limit: int = 20) -> list[dict[str, Any]]:
        """The server's setting changes, newest first: key, old, new (decoded; None for absent), actor,
        created_at."""
        ...

    # proposals: confirm before spending

    async def save_proposal(
        self, proposal_id: str, identity: Identity, payload: Mapping[str, Any], *, expires_at: float
    ) -> None:
        """Store what a command would run (``payload``: JSON, e.g. kind, options, generation_id, index,
        prompt, op) until its asker confirms it or ``expires_at`` (epoch seconds, by the ledger's clock)
        passes. Raises ``DuplicateRequest`` when a live proposal has this id (an expired one's id is free
        again); a payload that is not JSON raises ``TypeError`` or ``ValueError``; either way nothing is
        written. Sweeps up to ``PROPOSAL_SWEEP`` expired proposals in the same transaction."""
        ...

    async def take_proposal(self, proposal_id: str, identity: Identity) -> dict[str, Any] | None:
        """Remove and return the payload of the proposal ``proposal_id`` if it exists, has not expired and
        belongs to ``identity``, atomically: of two takes at once (in one process or two) exactly one gets
        it. Otherwise None, and nothing changed (another user's proposal stays for its owner)."""
        ...

    # prune support

    async def live_images(self, since: float) -> set[str]:
        """The sha256 of every stored image the bot may still need, so ``ImageStore.prune`` keeps it:
        the images and the reference images (``options["reference_sha256"]``,
        ``options["references_sha256"]``) of generations created at or after ``since``, and of every
        generation whose job is not done (with, for those, the images of the generation named by
        ``options["source"]``, which an upscale still to run reads). A read."""
        ...


# -- choosing the engine -----------------------------------------------------------------------------


def open_ledger(
    url: str | Path,
    *,
    starting_credits: int = 50,
    clock: Clock = time.time,
    read_only: bool = False,
) -> Ledger:
    """The ledger for a database URL (call ``await ledger.open()`` before use).

    - a plain path, or ``sqlite:///relative/path`` / ``sqlite:////absolute/path``: SQLite;
    - ``memory://``: in memory, this process only (tests, demos);
    - ``postgresql://user@host/db`` (or ``postgres://``): PostgreSQL through psycopg 3, with imagebot's
      own query parameters ``schema=``, ``pgbouncer=true`` and ``pool_size=`` (``storage.postgres``).

    ``read_only`` opens for looking only (``imagebot credits show``, ``imagebot usage``): nothing is
    written, not even a migration; a SQLite file that does not exist yet reads as an empty ledger.
    """
    text = str(url).strip()
    if not text:
        raise ConfigError(
            "IMAGEBOT_DATABASE is empty: give a SQLite path, sqlite:///path, postgresql://... or memory://"
        )
    scheme, sep, rest = text.partition("://")
    scheme = scheme.lower() if sep else ""
    if scheme == "memory":
        from .memory import MemoryLedger

        return MemoryLedger(starting_credits=starting_credits, clock=clock, read_only=read_only)
    if scheme in ("postgresql", "postgres"):
        from .postgres import PostgresLedger

        return PostgresLedger(text, starting_credits=starting_credits, clock=clock, read_only=read_only)
    if scheme.startswith(("postgresql+", "postgres+")):
        raise ConfigError(
            f"IMAGEBOT_DATABASE: {scheme}:// is not a driver imagebot uses; for PostgreSQL write "
            "postgresql://user@host/db (psycopg 3)."
        )
    if scheme == "sqlite":
        path = rest[1:] if rest.startswith("/") else rest  # sqlite:///rel -> rel, sqlite:////abs -> /abs
        if not path:
            raise ConfigError("IMAGEBOT_DATABASE: sqlite:/// needs a file path, e.g. sqlite:///data/imagebot.sqlite3")
    elif sep:
        raise ConfigError(
            f"IMAGEBOT_DATABASE: unknown database scheme {scheme!r}; use a SQLite path, sqlite:///path, "
            "postgresql://user@host/db or memory://"
        )
    else:
        path = text
    from .sqlite import SqliteStore

    return SqliteStore(Path(path), starting_credits=starting_credits, clock=clock, read_only=read_only)

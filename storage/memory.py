"""The in-memory ledger: the executable specification of ``storage.ledger.Ledger`` and a test double.

Plain dicts behind one ``asyncio.Lock`` per database: every movement runs whole under the lock with
no ``await`` inside, so it is as atomic as one SQLite transaction. Same semantics, same refusals, same
rows as ``SqliteStore`` (the contract suite checks both). ``MemoryDatabase`` is the shared state: two
``MemoryLedger`` objects on one database are two processes (two holders) on one SQLite file.

Nothing survives the process: ``memory://`` is for tests and demos, not for credits that matter.
"""

from __future__ import annotations

import asyncio
import json
import math
import time
import uuid
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field, replace
from typing import Any

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

Key = tuple[str, str, str]
#: A queued job's reservation is held by nobody and never expires (``storage.sqlite`` does the same).
QUEUED_EXPIRY = math.inf


def _key(identity: Identity) -> Key:
    return (identity.platform, identity.server_id, identity.user_id)


@dataclass
class _Reservation:
    id: str
    key: Key
    amount: int
    status: str  # held | settled | released
    holder: str
    created_at: float
    expires_at: float
    settled_at: float | None = None


@dataclass
class _Job:
    id: str
    state: str  # queued | running | delivering | done
    #: JSON text, as the database keeps it: a row read is a copy, never the caller's dict.
    payload: str
    address: str
    deliver_by: float
    attempts: int
    holder: str
    expires_at: float
    created_at: float
    outcome: str = ""


@dataclass
class _Proposal:
    key: Key
    #: JSON text, as the database keeps it: a take returns a fresh dict, never the saver's.
    payload: str
    created_at: float
    expires_at: float


@dataclass
class MemoryDatabase:
    """What a SQLite file holds, as dicts. Share one between ledgers to model several processes."""

    accounts: dict[Key, int] = field(default_factory=dict)
    ledger: list[dict[str, Any]] = field(default_factory=list)
    #: The schema's unique (request id, kind) key.
    movements: set[tuple[str, str]] = field(default_factory=set)
    reservations: dict[str, _Reservation] = field(default_factory=dict)
    generations: dict[str, GenerationRow] = field(default_factory=dict)
    tokens: dict[str, tuple[int, int]] = field(default_factory=dict)
    jobs: dict[str, _Job] = field(default_factory=dict)
    #: (server key, setting key) -> the value's JSON text, as the database keeps it.
    settings: dict[tuple[str, str], str] = field(default_factory=dict)
    settings_log: list[dict[str, Any]] = field(default_factory=list)
    proposals: dict[str, _Proposal] = field(default_factory=dict)
    lock: asyncio.Lock = field(default_factory=asyncio.Lock)


class MemoryLedger:
    """``Ledger`` on a ``MemoryDatabase`` (a fresh one unless given)."""

    def __init__(
        self,
        *,
        starting_credits: int = 50,
        clock: Clock = time.time,
        read_only: bool = False,
        database: MemoryDatabase | None = None,
    ) -> None:
        self.starting_credits = starting_credits
        self.clock = clock
        self.read_only = read_only
        self.holder = uuid.uuid4().hex
        self.db = database if database is not None else MemoryDatabase()
        self._open = False

    async def open(self) -> None:
        self._open = True

    async def close(self) -> None:
        self._open = False

    def _check(self, *, write: bool) -> None:
        if not self._open:
            raise RuntimeError("store is not open")
        if write and self.read_only:
            raise ReadOnlyLedger("this ledger was opened read-only")

    # -- internals (called under the lock) --------------------------------------------------------

    def _row(self, key: Key, kind: str, delta: int, amount: int, balance_after: int, request_id: str,
             actor: str, note: str | None, now: float) -> None:
        if (request_id, kind) in self.db.movements:  # the schema's UNIQUE (request_id, kind)
            raise AssertionError(f"duplicate movement {kind} for {request_id}")
        assert amount >= 0 and balance_after >= 0
        self.db.movements.add((request_id, kind))
        self.db.ledger.append({
            "key": key, "kind": kind, "delta": delta, "amount": amount, "balance_after": balance_after,
            "request_id": request_id, "actor": actor, "note": note, "created_at": now,
        })

    def _ensure_account(self, identity: Identity, now: float) -> bool:
        key = _key(identity)
        if key in self.db.accounts:
            return False
        self.db.accounts[key] = self.starting_credits
        if self.starting_credits > 0:
            self._row(key, "initial", self.starting_credits, self.starting_credits, self.starting_credits,
                      f"initial:{identity}", "system", "starting credits", now)
        return True

    def _credit(self, key: Key, amount: int) -> int:
        self.db.accounts[key] += amount
        return self.db.accounts[key]

    def _current(self, key: Key) -> int:
        return self.db.accounts.get(key, 0)

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
        self._check(write=True)
        if queued and job is None:
            raise ValueError("a queued reservation needs its job (nobody could claim it otherwise)")
        payload, address = (None, None) if job is None else (
            json.dumps(dict(job.payload), sort_keys=True), json.dumps(dict(job.address), sort_keys=True))
        async with self.db.lock:
            now = self.clock()
            key = _key(identity)
            if request_id in self.db.reservations:
                raise DuplicateRequest(request_id=request_id)
            running = sum(1 for r in self.db.reservations.values()
                          if r.key == key and r.status == "held" and r.expires_at > now)
            if running >= max_concurrent:
                raise TooManyJobs(running=running, limit=max_concurrent)
            have = self.db.accounts.get(key, self.starting_credits)
            if have < amount:
                raise ShortBalance(balance=have, needed=amount)
            self._ensure_account(identity, now)
            self.db.accounts[key] -= amount
            balance = self.db.accounts[key]
            self._row(key, "reserve", -amount, amount, balance, request_id, str(identity),
                      generation.get("command"), now)
            holder, expires_at = ("", QUEUED_EXPIRY) if queued else (self.holder, now + lease)
            self.db.reservations[request_id] = _Reservation(request_id, key, amount, "held", holder,
                                                            now, expires_at)
            self.db.generations[request_id] = GenerationRow(
                id=request_id, platform=key[0], server_id=key[1], user_id=key[2],
                channel_id=generation.get("channel_id", ""), command=generation["command"],
                provider=generation.get("provider"), model=generation.get("model"), prompt=generation["prompt"],
                options=dict(generation.get("options", {})), status="PENDING", error_code=None,
                credits_reserved=amount, credits_consumed=0, image_count=0, duration_ms=None,
                revised_prompt=None, result_text=None, created_at=now, finished_at=None,
            )
            self.db.tokens[request_id] = (0, 0)
            if job is not None and payload is not None and address is not None:
                self.db.jobs[request_id] = _Job(
                    id=request_id, state="queued" if queued else "running", payload=payload, address=address,
                    deliver_by=float(job.deliver_by), attempts=0 if queued else 1, holder=holder,
                    expires_at=0.0 if queued else now + lease, created_at=now)
            return balance

    def _live(self, request_id: str, now: float) -> _Reservation | None:
        res = self.db.reservations.get(request_id)
        if res is None or res.status != "held" or res.holder != self.holder or res.expires_at <= now:
            return None
        return res

    async def renew(self, request_id: str, *, lease: float) -> bool:
        self._check(write=True)
        async with self.db.lock:
            now = self.clock()
            res = self._live(request_id, now)
            if res is not None:
                res.expires_at = now + lease
            job = self.db.jobs.get(request_id)
            working = (job is not None and job.state != "done" and job.holder == self.holder
                       and job.expires_at > now)
            if job is not None and working:
                job.expires_at = now + lease
            return res is not None or working

    # -- jobs: the generation row is the job -----------------------------------------------------

    def _job_row(self, job: _Job) -> JobRow:
        return JobRow(id=job.id, state=job.state, payload=json.loads(job.payload), address=json.loads(job.address),
                      deliver_by=job.deliver_by, attempts=job.attempts, holder=job.holder,
                      expires_at=job.expires_at, outcome=job.outcome, created_at=job.created_at,
                      generation=self.db.generations[job.id])

    async def claim(self, limit: int, *, lease: float) -> list[JobRow]:
        self._check(write=True)
        if limit <= 0:
            return []
        async with self.db.lock:
            now = self.clock()
            free = sorted((j for j in self.db.jobs.values()
                           if j.state != "done" and (j.holder == "" or j.expires_at <= now)),
                          key=lambda j: (j.created_at, j.id))[:limit]
            for job in free:
                job.holder, job.expires_at, job.attempts = self.holder, now + lease, job.attempts + 1
                if job.state == "queued":
                    job.state = "running"
                res = self.db.reservations.get(job.id)
                if res is not None and res.status == "held":
                    res.holder, res.expires_at = self.holder, now + lease
            return [self._job_row(j) for j in free]

    async def finish_job(self, request_id: str, outcome: str) -> bool:
        self._check(write=True)
        async with self.db.lock:
            job = self.db.jobs.get(request_id)
            if job is None or job.state == "done" or job.holder != self.holder:
                return False
            job.state, job.outcome, job.address = "done", outcome, "{}"
            return True

    async def job(self, request_id: str) -> JobRow | None:
        self._check(write=False)
        job = self.db.jobs.get(request_id)
        return None if job is None else self._job_row(job)

    async def queued_ahead(self, request_id: str) -> int:
        self._check(write=False)
        mine = self.db.jobs.get(request_id)
        if mine is None or mine.state != "queued":
            return 0
        return sum(1 for j in self.db.jobs.values() if j.state == "queued" and j.created_at < mine.created_at)

    async def queue_depth(self) -> int:
        self._check(write=False)
        return sum(1 for j in self.db.jobs.values() if j.state == "queued")

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
        self._check(write=True)
        images = tuple(images)
        async with self.db.lock:
            now = self.clock()
            res = self._live(request_id, now)
            if res is None:
                gen = self.db.generations.get(request_id)
                balance = self._current((gen.platform, gen.server_id, gen.user_id)) if gen else 0
                return Settlement(balance=balance, consumed=0, released=0, charged=False)
            res.status, res.settled_at = "settled", now
            key, actor = res.key, ":".join(res.key)
            spent = max(0, min(consumed, res.amount))
            released = res.amount - spent
            balance = self._current(key)
            if spent:
                self._row(key, "consume", 0, spent, balance, request_id, actor, None, now)
            if released:
                balance = self._credit(key, released)
                self._row(key, "refund" if spent == 0 else "release", released, released, balance, request_id,
                          actor, error_code, now)
            gen = self.db.generations[request_id]
            self.db.generations[request_id] = replace(
                gen, status=status, error_code=error_code, provider=gen.provider if provider is None else provider,
                model=gen.model if model is None else model, credits_consumed=spent, image_count=len(images), duration_ms=duration_ms,
                revised_prompt=revised_prompt, result_text=result_text, finished_at=now, images=images,
            )
            self.db.tokens[request_id] = (max(0, int(input_tokens)), max(0, int(output_tokens)))
            job = self.db.jobs.get(request_id)
            if deliver and job is not None and job.state != "done":
                job.state = "delivering"
            return Settlement(balance=balance, consumed=spent, released=released, charged=True)

    async def refund(self, request_id: str, *, code: str, duration_ms: float | None = None) -> Settlement:
        return await self._settle(request_id, 0, status="FAILED", error_code=code, duration_ms=duration_ms,
                                  deliver=False)

    async def release_expired(self) -> int:
        self._check(write=True)
        async with self.db.lock:
            now = self.clock()
            expired = [r for r in self.db.reservations.values() if r.status == "held" and r.expires_at <= now
                       and (r.id not in self.db.jobs or self.db.jobs[r.id].state == "done")]
            for res in expired:
                res.status, res.settled_at = "released", now
                if res.amount:
                    balance = self._credit(res.key, res.amount)
                    self._row(res.key, "refund", res.amount, res.amount, balance, res.id, "system",
                              "lease expired", now)
                gen = self.db.generations.get(res.id)
                if gen is not None and gen.status == "PENDING":
                    self.db.generations[res.id] = replace(gen, status="FAILED", error_code="IMG-INTERRUPTED",
                                                          finished_at=now)
            return len(expired)

    async def refund_completed(self, request_id: str, *, code: str) -> int:
        self._check(write=True)
        async with self.db.lock:
            now = self.clock()
            gen = self.db.generations.get(request_id)
            if gen is None or gen.status != "COMPLETED":
                return 0
            amount = gen.credits_consumed
            key = (gen.platform, gen.server_id, gen.user_id)
            self.db.generations[request_id] = replace(gen, status="FAILED", error_code=code, finished_at=now,
                                                      credits_consumed=0)
            if amount:
                balance = self._credit(key, amount)
                self._row(key, "refund", amount, amount, balance, request_id, "system", code, now)
            return amount

    # -- admin movements -------------------------------------------------------------------------

    async def adjust(self, identity: Identity, kind: str, amount: int, *, actor: str, request_id: str,
                     note: str | None = None) -> tuple[int, int]:
        if kind not in ("grant", "revoke", "set"):
            raise ValueError(kind)
        self._check(write=True)
        async with self.db.lock:
            now = self.clock()
            if (request_id, kind) in self.db.movements:
                row = next(r for r in self.db.ledger if (r["request_id"], r["kind"]) == (request_id, kind))
                return row["balance_after"] - row["delta"], row["balance_after"]
            key = _key(identity)
            old = self.db.accounts.get(key, self.starting_credits)
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
            self._ensure_account(identity, now)
            self.db.accounts[key] = new
            self._row(key, kind, delta, abs(delta) if kind == "set" else amount, new, request_id, actor, note, now)
            return old, new

    # -- reads -----------------------------------------------------------------------------------

    async def balance(self, identity: Identity) -> int:
        self._check(write=False)
        return self.db.accounts.get(_key(identity), self.starting_credits)

    async def held(self, identity: Identity) -> int:
        self._check(write=False)
        key = _key(identity)
        return sum(r.amount for r in self.db.reservations.values() if r.key == key and r.status == "held")

    async def spent(self, identity: Identity) -> tuple[int, int]:
        self._check(write=False)
        gens = [g for g in self.db.generations.values() if g.identity == identity]
        return sum(g.credits_consumed for g in gens), sum(g.image_count for g in gens)

    async def recent_generations(self, identity: Identity, limit: int = 5) -> list[GenerationRow]:
        self._check(write=False)
        gens = [replace(g, images=()) for g in self.db.generations.values() if g.identity == identity]
        gens.sort(key=lambda g: g.created_at, reverse=True)
        return gens[:limit]

    async def generation(self, generation_id: str) -> GenerationRow | None:
        self._check(write=False)
        return self.db.generations.get(generation_id)

    async def ledger_rows(self, identity: Identity) -> list[dict[str, Any]]:
        self._check(write=False)
        key = _key(identity)
        return [{k: v for k, v in r.items() if k != "key"} for r in self.db.ledger if r["key"] == key]

    async def usage(self, since: float, server_key: str | None = None) -> list[dict[str, Any]]:
        self._check(write=False)
        platform, _, server = (server_key or "").partition(":")
        groups: dict[tuple[str, str, str, str, str], list[int]] = {}
        for g in self.db.generations.values():
            if g.created_at < since or (server_key and (g.platform, g.server_id) != (platform, server)):
                continue
            totals = groups.setdefault((g.platform, g.server_id, g.user_id, g.provider or "", g.status),
                                       [0, 0, 0, 0, 0])
            tokens_in, tokens_out = self.db.tokens.get(g.id, (0, 0))
            for i, value in enumerate((1, g.image_count, g.credits_consumed, tokens_in, tokens_out)):
                totals[i] += value
        keys = ("requests", "images", "credits", "input_tokens", "output_tokens")
        return [
            {"platform": k[0], "server_id": k[1], "user_id": k[2], "provider": k[3], "status": k[4],
             **dict(zip(keys, v, strict=True))}
            for k, v in sorted(groups.items())
        ]

    async def audit(self) -> list[tuple[str, str, str, int, int]]:
        self._check(write=False)
        sums: dict[Key, int] = {}
        for r in self.db.ledger:
            sums[r["key"]] = sums.get(r["key"], 0) + r["delta"]
        return [(*key, balance, sums.get(key, 0)) for key, balance in sorted(self.db.accounts.items())
                if balance != sums.get(key, 0)]

    # -- history ---------------------------------------------------------------------------------

    async def history(
        self, identity: Identity, *, offset: int = 0, limit: int = 10
    ) -> tuple[list[GenerationRow], int]:
        self._check(write=False)
        shown = [g for g in self.db.generations.values()
                 if g.identity == identity and g.status == "COMPLETED" and g.image_count > 0 and g.deleted_at is None]
        shown.sort(key=lambda g: (g.created_at, g.id), reverse=True)
        return shown[max(0, offset):max(0, offset) + max(0, limit)], len(shown)

    async def delete_generation(self, generation_id: str, *, actor: str) -> bool:
        self._check(write=True)
        async with self.db.lock:
            gen = self.db.generations.get(generation_id)
            if gen is None or gen.deleted_at is not None:
                return False
            self.db.generations[generation_id] = replace(gen, deleted_at=self.clock(), deleted_by=actor)
            return True

    # -- per-server settings ---------------------------------------------------------------------

    def _settings(self, server_key: str) -> dict[str, Any]:
        return {k: json.loads(v) for (server, k), v in sorted(self.db.settings.items()) if server == server_key}

    async def server_settings(self, server_key: str) -> dict[str, Any]:
        self._check(write=False)
        return self._settings(server_key)

    async def change_settings(self, server_key: str, changes: Mapping[str, Any], *, actor: str) -> dict[str, Any]:
        self._check(write=True)
        encoded = encode_settings(changes)  # before anything is touched: a bad value changes nothing
        async with self.db.lock:
            now = self.clock()
            for key, new in encoded.items():
                old = self.db.settings.get((server_key, key))
                if old == new:
                    continue
                if new is None:
                    del self.db.settings[(server_key, key)]
                else:
                    self.db.settings[(server_key, key)] = new
                self.db.settings_log.append({"server_key": server_key, "key": key, "old": old, "new": new,
                                             "actor": actor, "created_at": now})
            return self._settings(server_key)

    async def settings_log(self, server_key: str, limit: int = 20) -> list[dict[str, Any]]:
        self._check(write=False)
        rows = [r for r in reversed(self.db.settings_log) if r["server_key"] == server_key][:max(0, limit)]
        return settings_log_entries((r["key"], r["old"], r["new"], r["actor"], r["created_at"]) for r in rows)

    # -- proposals: confirm before spending ------------------------------------------------------

    async def save_proposal(
        self, proposal_id: str, identity: Identity, payload: Mapping[str, Any], *, expires_at: float
    ) -> None:
        self._check(write=True)
        text = encode_proposal(proposal_id, payload, expires_at)  # bad input raises before anything changes
        async with self.db.lock:
            now = self.clock()
            expired = sorted((p.expires_at, pid) for pid, p in self.db.proposals.items() if p.expires_at <= now)
            for _, pid in expired[:PROPOSAL_SWEEP]:
                del self.db.proposals[pid]
            found = self.db.proposals.get(proposal_id)
            if found is not None and found.expires_at > now:
                raise DuplicateRequest(request_id=proposal_id)
            self.db.proposals[proposal_id] = _Proposal(_key(identity), text, now, float(expires_at))

    async def take_proposal(self, proposal_id: str, identity: Identity) -> dict[str, Any] | None:
        self._check(write=True)
        async with self.db.lock:
            found = self.db.proposals.get(proposal_id)
            if found is None or found.key != _key(identity) or found.expires_at <= self.clock():
                return None
            del self.db.proposals[proposal_id]
            return dict(json.loads(found.payload))

    # -- prune support ---------------------------------------------------------------------------

    async def live_images(self, since: float) -> set[str]:
        self._check(write=False)
        open_jobs = {j.id for j in self.db.jobs.values() if j.state != "done"}
        needed = [g for g in self.db.generations.values() if g.created_at >= since or g.id in open_jobs]
        sources = {str(g.options["source"]) for g in needed if g.id in open_jobs and g.options.get("source")}
        live: set[str] = set()
        for proposal in self.db.proposals.values():
            proposed = proposal_source(json.loads(proposal.payload)) if proposal.expires_at > self.clock() else None
            if proposed is not None and proposed in self.db.generations:
                sources.add(proposed)
                live |= option_references(self.db.generations[proposed].options)
        for gen in needed:
            live.update(i.sha256 for i in gen.images)
            live |= option_references(gen.options)
        for source in sources:
            upscaled = self.db.generations.get(source)
            if upscaled is not None:
                live.update(i.sha256 for i in upscaled.images)
        return live

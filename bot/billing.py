"""The two-phase charge, written once: reserve -> (heartbeat while the job runs) -> settle or refund.

    async with charge(ledger, identity, request_id, price, ...) as bill:
        ...do the job...
        bill.produced(credits, provider=..., images=[...])   # what to charge for
    bill.settlement                                          # what was charged and given back

- The reservation is taken before the body runs. A refusal (short balance, too many jobs) becomes the
  user error ``bot.replies.refusal`` words, and the body never runs.
- While the body runs, a heartbeat task renews the reservation's lease every ``lease / 3`` seconds, so
  another process never mistakes a live job for an abandoned one. The heartbeat stops when the body
  ends, however it ends.
- The body ends normally: settle with what it reported (``produced``); the rest is released.
- The body raises or is cancelled: refund everything (shielded from the cancellation) and raise
  ``failure(exc, amount)`` (the core's wording: "you were not charged").
- The settle finds the lease lost (this process was paused or starved past its lease and another
  process released the reservation): nothing was charged, and the caller sees ``LeaseLost`` through
  ``failure`` instead of a result it did not pay for.

``not_charged`` is the product's wording of a failure (the core passes it as ``failure``), and
``image_rows`` turns stored images into the ledger's rows for ``Bill.produced``.

Every generation ends here, so here it is recorded once: one line on the ``imagebot.generations``
logger (request id, platform, server, user, command, provider, model, outcome, error code, credits
consumed / reserved / refunded, images, duration_ms; structured fields in ``IMAGEBOT_LOG_FORMAT=json``)
and the command and credit counters of ``bot.metrics``.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import AsyncIterator, Callable, Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any

from storage.ledger import GenerationRow, ImageRow, JobSpec, Ledger, LedgerRefused, Settlement

from . import metrics
from .errors import ContentRejected, GenerationFailed, ImagebotError, LeaseLost
from .models import Identity, StoredImage
from .replies import refusal, returned_note

log = logging.getLogger(__name__)
#: The one line per generation (see the module), apart from this module's own diagnostics.
generations_log = logging.getLogger("imagebot.generations")

Failure = Callable[[BaseException, int], BaseException]


@dataclass
class Bill:
    """Handed to the body of ``charge``: it reports what was produced; ``settlement`` after the block."""

    request_id: str
    amount: int
    #: The balance left once the reservation was taken, when it is known for free (``charge``: the
    #: reserve returns it); a worker's ``hold`` of a claimed job does not read it.
    balance: int | None = None
    consumed: int = 0
    details: dict[str, Any] = field(default_factory=dict)
    settlement: Settlement | None = None
    #: Heartbeats that renewed the lease, and whether one found it lost.
    renewals: int = 0
    lost: bool = False
    #: ``time.monotonic()`` just before the last renewal that succeeded was sent (0.0: none yet): the
    #: lease then ran at least a full ``lease`` from that moment.
    renewed_at: float = 0.0

    def produced(
        self,
        credits: int,
        *,
        provider: str | None = None,
        model: str | None = None,
        revised_prompt: str | None = None,
        result_text: str | None = None,
        images: Iterable[ImageRow] = (),
        input_tokens: int = 0,
        output_tokens: int = 0,
    ) -> None:
        """Charge ``credits`` (at most the reservation) on success, and record these details."""
        self.consumed = credits
        self.details = {
            "provider": provider, "model": model, "revised_prompt": revised_prompt, "result_text": result_text,
            "images": list(images), "input_tokens": input_tokens, "output_tokens": output_tokens,
        }


def _code(exc: BaseException) -> str:
    if isinstance(exc, ImagebotError):
        return exc.code
    if isinstance(exc, asyncio.CancelledError):
        return "IMG-CANCELLED"
    return "IMG-INTERNAL-001"


def _as_is(exc: BaseException, amount: int) -> BaseException:
    return exc


def not_charged(exc: BaseException, refunded: int) -> BaseException:
    """What the user hears when a charged job failed: the reason, and that the credits came back.
    A cancellation stays a cancellation; a bug never shows its text."""
    if isinstance(exc, asyncio.CancelledError):
        return exc
    back = returned_note(refunded)
    if isinstance(exc, ContentRejected):
        return GenerationFailed(
            f"{exc.message} Try rewording the prompt, or run /enhance on it.{back}",
            code=exc.code, refunded=refunded, cause=exc,
        )
    if isinstance(exc, ImagebotError):
        return GenerationFailed(exc.message + back, code=exc.code, refunded=refunded, cause=exc)
    return GenerationFailed(f"Something went wrong while generating.{back}", code="IMG-INTERNAL-001",
                            refunded=refunded)


def image_rows(stored: Iterable[StoredImage]) -> list[ImageRow]:
    """The ledger's record of each stored image (hash, type, bytes, pixels)."""
    return [ImageRow(s.sha256, s.mime, s.size_bytes, s.width, s.height) for s in stored]


@contextlib.asynccontextmanager
async def charge(
    ledger: Ledger,
    identity: Identity,
    request_id: str,
    amount: int,
    *,
    max_concurrent: int,
    lease: float,
    generation: Mapping[str, Any],
    failure: Failure = _as_is,
    job: JobSpec | None = None,
) -> AsyncIterator[Bill]:
    """Reserve ``amount`` for the body (with its job row, when ``job`` is given), keep its lease alive,
    then settle or refund (see the module)."""
    try:
        balance = await ledger.reserve(identity, request_id, amount, max_concurrent=max_concurrent, lease=lease,
                                       generation=generation, job=job)
    except LedgerRefused as exc:
        metrics.command(str(generation.get("command") or ""), "refused")
        raise refusal(exc) from None
    async with hold(ledger, request_id, amount, balance=balance, lease=lease, failure=failure, identity=identity,
                    generation=generation) as bill:
        yield bill


@contextlib.asynccontextmanager
async def hold(
    ledger: Ledger, request_id: str, amount: int, *, balance: int | None = None, lease: float, failure: Failure = _as_is,
    identity: Identity | None = None, generation: Mapping[str, Any] | None = None,
) -> AsyncIterator[Bill]:
    """The second phase of a charge whose reservation this holder already has: taken by ``charge``, or
    claimed by a worker from the job table (``Ledger.claim``). Heartbeat, then settle or refund.

    ``identity`` and ``generation`` (its row's fields: command, provider, model) name the job in its log
    line; without them they are read from the ledger while the body runs."""
    bill = Bill(request_id, amount, balance)
    heartbeat = asyncio.create_task(_heartbeat(ledger, bill, lease), name=f"lease-{request_id}")
    lookup = None if identity is not None else asyncio.create_task(ledger.generation(request_id),
                                                                   name=f"row-{request_id}")
    metrics.reserved(amount)
    started = time.perf_counter()
    try:
        yield bill
    except BaseException as exc:
        heartbeat.cancel()  # at once, without awaiting: nothing may come between a failure and its refund
        if not isinstance(exc, ImagebotError | asyncio.CancelledError):
            log.error("generation %s failed: %s", request_id, type(exc).__name__, exc_info=exc)
        settled = await asyncio.shield(
            ledger.refund(request_id, code=_code(exc), duration_ms=(time.perf_counter() - started) * 1000)
        )
        bill.settlement = settled
        await _stop(heartbeat)
        if not settled.charged:
            log.warning("generation %s: its lease was lost before the refund; the lease sweep gave it back",
                        request_id)
            bill.lost = True
        outcome = "lease_lost" if bill.lost else "cancelled" if isinstance(exc, asyncio.CancelledError) else "failed"
        _record(bill, outcome, _code(exc), started, identity, generation, lookup,
                provider=getattr(exc, "provider", None) or None)
        raise failure(exc, amount) from None
    heartbeat.cancel()
    settled = await asyncio.shield(
        ledger.settle(request_id, bill.consumed, status="COMPLETED",
                      duration_ms=(time.perf_counter() - started) * 1000, **bill.details)
    )
    bill.settlement = settled
    await _stop(heartbeat)
    _record(bill, "completed" if settled.charged else "lease_lost", None if settled.charged else LeaseLost.code,
            started, identity, generation, lookup)
    if not settled.charged:
        bill.lost = True
        log.warning("generation %s finished after its lease was lost; nothing charged, result withheld", request_id)
        raise failure(LeaseLost(
            "This job ran past its reservation's lease (the bot was paused or overloaded) and the credits "
            "were handed back, so its result was discarded. Please try again."
        ), amount) from None


@contextlib.asynccontextmanager
async def keep_lease(ledger: Ledger, request_id: str, lease: float) -> AsyncIterator[Bill]:
    """Renew a job's lease while the body runs (its delivery, after the settle): a job whose process is
    alive is never taken over by another worker. ``bill.lost`` tells whether it was lost meanwhile."""
    bill = Bill(request_id, 0)
    heartbeat = asyncio.create_task(_heartbeat(ledger, bill, lease), name=f"job-lease-{request_id}")
    try:
        yield bill
    finally:
        await _stop(heartbeat)


def _record(
    bill: Bill, outcome: str, code: str | None, started: float, identity: Identity | None,
    generation: Mapping[str, Any] | None, lookup: asyncio.Task[GenerationRow | None] | None,
    *, provider: str | None = None,
) -> None:
    """The generation's one log line and its metrics. Never raises: a record must not change a charge."""
    try:
        row = _looked_up(lookup)
        if identity is None and row is not None:
            identity = row.identity
        planned: Mapping[str, Any] = generation or (
            {"command": row.command, "provider": row.provider, "model": row.model} if row is not None else {})
        settled = bill.settlement
        consumed = settled.consumed if settled is not None and settled.charged else 0
        refunded = settled.released if settled is not None and settled.charged else bill.amount
        kind = str(planned.get("command") or "unknown")
        fields: dict[str, Any] = {
            "event": "generation",
            "request_id": bill.request_id,
            "platform": identity.platform if identity else None,
            "server": identity.server_id if identity else None,
            "user": identity.user_id if identity else None,
            "command": kind,
            "provider": bill.details.get("provider") or provider or planned.get("provider"),
            # a failure names the provider that failed; its model is the planned one only if it was planned
            "model": bill.details.get("model") or (planned.get("model") if provider in (None, planned.get("provider"))
                                                   else None),
            "outcome": outcome,
            "code": code,
            "credits": consumed,
            "credits_reserved": bill.amount,
            "credits_refunded": refunded,
            "images": len(bill.details.get("images") or ()),
            "duration_ms": round((time.perf_counter() - started) * 1000, 1),
        }
        metrics.command(kind, outcome)
        metrics.consumed(consumed)
        reason = "unused" if outcome == "completed" else "lease_lost" if outcome == "lease_lost" else "failed"
        metrics.refunded(refunded, reason)
        generations_log.info(
            "generation %s %s: %s by %s:%s:%s provider=%s model=%s credits=%d refunded=%d code=%s duration_ms=%.0f",
            bill.request_id, outcome, kind, fields["platform"], fields["server"], fields["user"], fields["provider"],
            fields["model"], consumed, refunded, code or "-", fields["duration_ms"], extra=fields,
        )
    except Exception:  # noqa: BLE001 - recording is best effort; the charge already happened
        log.exception("recording generation %s failed", bill.request_id)


def _looked_up(lookup: asyncio.Task[GenerationRow | None] | None) -> GenerationRow | None:
    """The generation row read while the body ran, if it has arrived (it is never waited for)."""
    if lookup is None:
        return None
    if not lookup.done():
        lookup.cancel()
        return None
    if lookup.cancelled() or lookup.exception() is not None:
        return None
    return lookup.result()


async def _heartbeat(ledger: Ledger, bill: Bill, lease: float) -> None:
    """Renew the lease every ``lease / 3`` s until cancelled; a lost lease ends the heartbeat."""
    interval = max(0.05, lease / 3)
    while True:
        await asyncio.sleep(interval)
        try:
            sent = time.monotonic()
            if not await ledger.renew(bill.request_id, lease=lease):
                bill.lost = True
                log.warning("generation %s lost its lease", bill.request_id)
                return
            bill.renewals += 1
            bill.renewed_at = sent
        except Exception:  # noqa: BLE001 - a failed renewal is retried at the next beat
            log.exception("lease renewal for %s failed", bill.request_id)


async def _stop(task: asyncio.Task[None]) -> None:
    task.cancel()
    await asyncio.gather(task, return_exceptions=True)

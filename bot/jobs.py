"""One job runner for every adapter: acknowledge first, run the core, show progress, deliver or refund.

    platform event ── adapter: translate, check, ack (within 3 s) ──> runner.start(Job)
        task: wait for pending acks ── job.work(progress) ──> core ──> result
              outlet.prepare(result) | progress.finish(result)   (at once; never waits out a pending edit)
              outlet.targets(result), in order  (Discord: here -> private -> DM; Slack: channel -> DM)
              none took it -> core.delivery_failed(id) -> outlet.undelivered(...) tells the asker

An adapter supplies translations only: it builds the ``Context`` and the core call (``Job.work``), its
``ProgressSink``, and an ``Outlet``: the ordered delivery ``Target``s, ``tell`` (a private note to the
asker), and how a failure is worded. Everything else is here, once:

- ``AckGate``: under a burst, jobs let acknowledgements still in flight go first (at most ``ack_wait``).
- Tracking: every job is a task this runner owns. ``close(grace)`` stops taking jobs, waits up to ``grace``
  seconds for the ones in flight (they deliver and settle), then cancels the rest.
- Cancellation: a job cancelled while the core works is refunded by the billing layer and told so. Once
  its result exists, delivery runs shielded: a cancel gives it ``finish_timeout`` more seconds, then cuts
  it, refunds through ``core.delivery_failed`` and tells the asker; that refund and note are shielded too.
- The generation-ownership check for buttons (``owned_generation``, ``prompt_of``): a button's generation
  must belong to the presser's own server, or it is "no longer known".

Nothing here imports discord or slack; the console uses it too.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Awaitable, Callable, Coroutine, Sequence
from contextlib import AbstractAsyncContextManager
from dataclasses import dataclass, field
from types import TracebackType
from typing import TYPE_CHECKING, Any, Generic, Protocol, TypeVar

from .errors import ImagebotError, NotFound
from .models import Context, DescribeResult, EnhanceResult, ImagineResult
from .replies import broken_delivery_text, error_text, interrupted_text, restarting_text, undelivered_text

if TYPE_CHECKING:
    from storage.ledger import GenerationRow

log = logging.getLogger(__name__)

R = TypeVar("R")
#: ``await progress(stage, details)``: the core's progress callback (same shape as ``bot.core.Progress``).
Progress = Callable[[str, dict[str, Any]], Awaitable[None]]
#: Seconds a shutdown waits for jobs in flight before cancelling them.
DEFAULT_GRACE = 30.0
#: Seconds a delivery under way when its job is cancelled may still take.
FINISH_TIMEOUT = 10.0
#: Seconds a progress sink may take to stop (an edit already on the wire) before delivery goes ahead anyway.
PROGRESS_TIMEOUT = 5.0
#: Seconds a note to the asker (error, refund) may take.
TELL_TIMEOUT = 10.0


class Core(Protocol):
    """What the runner needs of the core: the refund for results that reached no one, and generation lookups."""

    async def delivery_failed(self, generation_id: str, *, code: str = ...) -> int: ...

    async def generation(self, generation_id: str) -> GenerationRow | None: ...

    async def job_finished(self, generation_id: str, outcome: str) -> bool: ...

    async def may_deliver(self, generation_id: str) -> bool: ...

    def keep_lease(self, generation_id: str) -> AbstractAsyncContextManager[Any]: ...


# -- acknowledgements first ---------------------------------------------------------------------------

class AckGate:
    """Counts acknowledgements in flight; ``quiet()`` lets them go before a job's first step.

    Discord drops an interaction not deferred within 3 s and Slack a request not answered within 3 s; the
    work after the ack has no such deadline. When 200 commands arrive at once, the jobs of the first ones
    would otherwise share the event loop with the acks of the last ones. A job waits until no ack is in
    flight, for at most ``max_wait`` seconds, so a steady stream of acks can never starve the work.
    Use ``with gate:`` around an ack (a defer, an HTTP request being answered)."""

    def __init__(self, max_wait: float = 0.25) -> None:
        self.max_wait = max_wait
        self._in_flight = 0
        self._quiet = asyncio.Event()
        self._quiet.set()

    def __enter__(self) -> AckGate:
        self._in_flight += 1
        self._quiet.clear()
        return self

    def __exit__(self, kind: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None) -> None:
        self._in_flight -= 1
        if not self._in_flight:
            self._quiet.set()

    async def wait(self) -> None:
        """Called by a job before its first step: let pending acks go first (``max_wait`` at most)."""
        if self._in_flight:
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._quiet.wait(), self.max_wait)


# -- what an adapter supplies -------------------------------------------------------------------------

def _always(failures: Sequence[BaseException]) -> bool:
    return True


@dataclass(frozen=True)
class Target(Generic[R]):
    """One place a result may go. ``send(result, failures)`` raises when refused (``failures``: the
    refusals of the targets before it, for a note such as "sent by DM because..."). ``after(failures)``
    says whether this target is worth trying after those refusals (a DM after "not in channel", not after
    a revoked token)."""

    name: str
    send: Callable[[R, Sequence[BaseException]], Awaitable[None]]
    after: Callable[[Sequence[BaseException]], bool] = _always


class NotDelivered(Exception):
    """A target that cannot report a refusal of its own (a reply helper that answers False)."""


class ProgressSink(Protocol):
    """The adapter's progress display. ``update`` is the core's callback; ``finish(result)`` stops it at
    once before delivery (``result`` None: the job failed or was cancelled) and must never wait out a
    pending settle or interval: the runner bounds it by ``PROGRESS_TIMEOUT`` anyway."""

    async def update(self, stage: str, details: dict[str, Any]) -> None: ...

    async def finish(self, result: object | None) -> None: ...


class Outlet(Generic[R]):
    """How a job's outcome reaches the person: the adapter's delivery targets and its wording.

    ``refusals``: the exceptions a target raises when the platform refuses (anything else raised by a
    target is a bug: the credits are refunded and the asker told)."""

    refusals: tuple[type[BaseException], ...] = (Exception,)

    def targets(self, result: R) -> Sequence[Target[R]]:
        raise NotImplementedError

    def prepare(self, result: R) -> None:
        """Called the moment the result exists, before progress stops: start whatever the first send needs
        (reading and fitting files) so it overlaps that. Must not raise; a failure surfaces at ``send``."""

    async def tell(self, text: str) -> None:
        """A private note to the asker; must not raise (the runner guards it anyway)."""
        raise NotImplementedError

    async def failed(self, exc: Exception) -> None:
        """The work raised: a user error is worded, anything else logged and answered generically."""
        if isinstance(exc, ImagebotError):
            await self.tell(error_text(exc))
            return
        log.error("job failed", exc_info=exc)
        await self.tell("Something went wrong on the bot's side; nothing was charged. (IMG-INTERNAL-001)")

    async def undelivered(self, failures: Sequence[BaseException], refunded: int) -> None:
        """Every target refused and ``refunded`` credits went back: say so where possible."""
        await self.tell(undelivered_text(refunded))


@dataclass
class Job(Generic[R]):
    """``work(progress)`` calls the core (``progress`` is None without a sink) and returns what to
    deliver, or None when it already told the person everything."""

    kind: str
    work: Callable[[Progress | None], Awaitable[R | None]]
    outlet: Outlet[R]
    progress: ProgressSink | None = None
    #: Filled in when the job ends: "delivered", "undelivered", "failed", "interrupted", "told".
    outcome: str = field(default="", init=False)


def generation_id_of(result: object) -> str | None:
    """The generation to refund when ``result`` reaches no one (None for answers that cost nothing)."""
    if isinstance(result, ImagineResult | EnhanceResult | DescribeResult):
        return result.generation_id
    return None


# -- the runner -----------------------------------------------------------------------------------------

class JobRunner:
    """Owns every job of one adapter (or of the console): see the module docstring."""

    def __init__(self, core: Core, *, grace: float = DEFAULT_GRACE, ack_wait: float = 0.25,
                 finish_timeout: float = FINISH_TIMEOUT, progress_timeout: float = PROGRESS_TIMEOUT,
                 tell_timeout: float = TELL_TIMEOUT) -> None:
        self.core = core
        self.grace = grace
        self.acks = AckGate(ack_wait)
        self.finish_timeout = finish_timeout
        self.progress_timeout = progress_timeout
        self.tell_timeout = tell_timeout
        self._jobs: set[asyncio.Task[None]] = set()
        self._aftercare: set[asyncio.Task[Any]] = set()
        self._closing = False

    @property
    def accepting(self) -> bool:
        return not self._closing

    @property
    def busy(self) -> int:
        """Jobs still running (delivery included)."""
        return len(self._jobs)

    async def acknowledge(self, ack: Callable[[], Awaitable[bool]]) -> bool:
        """Run the adapter's ack (a defer) counted by the gate, so jobs already started let it go first."""
        with self.acks:
            return await ack()

    def start(self, job: Job[Any]) -> asyncio.Task[None] | None:
        """Run ``job`` in a tracked task; None when shutting down (the caller tells the person)."""
        if self._closing:
            return None
        task = asyncio.create_task(self._run(job), name=f"job-{job.kind}")
        self._jobs.add(task)
        task.add_done_callback(self._jobs.discard)
        return task

    async def run(self, job: Job[Any]) -> None:
        """Start ``job`` and wait for it. Cancelling the caller leaves the job to ``close`` (it drains)."""
        task = self.start(job)
        if task is None:
            job.outcome = "told"
            await self._tell(job.outlet, restarting_text())
            return
        await asyncio.shield(task)

    async def close(self, grace: float | None = None) -> None:
        """Stop taking jobs; wait up to ``grace`` s for those in flight; cancel the rest (each is refunded
        and told); then wait for the refunds and notes. Cancelling this cancels what is left at once."""
        self._closing = True
        grace = self.grace if grace is None else grace
        try:
            running = set(self._jobs)
            if running:
                log.info("shutting down: waiting up to %.0f s for %d job(s) in flight", grace, len(running))
                _, pending = await asyncio.wait(running, timeout=grace)
                if pending:
                    log.warning("cancelling %d job(s) still running after %.0f s; their credits are refunded",
                                len(pending), grace)
                    await _cancel_all(pending)
            if self._aftercare:
                _, late = await asyncio.wait(set(self._aftercare), timeout=self.finish_timeout)
                await _cancel_all(late)
        except asyncio.CancelledError:
            await _cancel_all(set(self._jobs) | set(self._aftercare))
            raise

    # -- one job -----------------------------------------------------------------------------------------

    async def _run(self, job: Job[Any]) -> None:
        sink = _Sink(job.progress, job.kind)
        try:
            await self.acks.wait()
            result = await job.work(sink if job.progress is not None else None)
        except asyncio.CancelledError as exc:
            # The billing layer has refunded whatever was reserved; the asker was acked and waits.
            job.outcome = "interrupted"
            await self._shielded(self._told(exc, job, self._stop_and_tell(sink, job.outlet, interrupted_text(None))))
            raise
        except Exception as exc:  # noqa: BLE001 - the outlet words it (user error) or logs it (bug)
            job.outcome = "failed"
            await self._finish(sink, None)
            await self._told(exc, job, self._guarded(job.outlet.failed(exc), job.kind))
            return
        if result is None:
            job.outcome = "told"
            await self._finish(sink, None)
            return
        phase = asyncio.create_task(self._deliver(job, sink, result), name=f"deliver-{job.kind}")
        try:
            await asyncio.shield(phase)
        except asyncio.CancelledError:
            # Shutting down while the result is on its way: let it arrive if it can, then cut it short (the
            # phase refunds and tells). A second cancel leaves the phase to ``close``.
            if not phase.done():
                self._aftercare.add(phase)
                phase.add_done_callback(self._aftercare.discard)
                _, pending = await asyncio.wait({phase}, timeout=self.finish_timeout)
                if pending:
                    phase.cancel()
                    await asyncio.wait({phase}, timeout=self.tell_timeout + 1)
            raise

    async def _deliver(self, job: Job[R], sink: _Sink, result: R) -> None:
        generation = generation_id_of(result)
        if generation is None:
            await self._deliver_now(job, sink, result, None)
            return
        # The job's lease is renewed while its result travels, so no other worker takes it over; once the
        # outcome is settled here, the job is done and no worker ever delivers it again.
        try:
            async with self.core.keep_lease(generation):
                await self._deliver_now(job, sink, result, generation)
        finally:
            await self._shielded(self._done(generation, job))

    async def _told(self, exc: BaseException, job: Job[Any], tell: Awaitable[None]) -> None:
        """Tell the asker that their job failed (it was refunded), holding its lease meanwhile; then it is done.
        Were this process to die before telling, the job would still be open, and a worker would tell them
        after the restart."""
        generation = getattr(exc, "generation_id", None)
        if not generation:
            await tell
            return
        async with self.core.keep_lease(generation):
            await tell
        await self._done(generation, job)

    async def _done(self, generation: str, job: Job[Any]) -> None:
        try:
            await self.core.job_finished(generation, job.outcome or "interrupted")
        except Exception:  # noqa: BLE001 - the job then expires and a worker finds it told or delivered
            log.exception("marking job %s done failed", generation)

    async def _deliver_now(self, job: Job[R], sink: _Sink, result: R, generation: str | None) -> None:
        outlet = job.outlet
        try:
            outlet.prepare(result)
            await self._finish(sink, result)
            if generation is not None and not await self.core.may_deliver(generation):
                # This process stalled past its job's lease and another worker took the job over: the
                # result is that worker's to post (once), not this one's.
                log.warning("%s %s: taken over by another worker while this process stalled; not posted here",
                            job.kind, generation)
                job.outcome = "taken over"
                return
            failures: list[BaseException] = []
            for target in outlet.targets(result):
                if failures and not target.after(failures):
                    continue
                try:
                    await target.send(result, failures)
                except outlet.refusals as exc:
                    log.info("%s delivery to %s refused: %s", job.kind, target.name, type(exc).__name__)
                    failures.append(exc)
                    continue
                job.outcome = "delivered"
                return
            job.outcome = "undelivered"
            refunded = await asyncio.shield(self.core.delivery_failed(generation)) if generation else 0
            await self._guarded(outlet.undelivered(failures, refunded), job.kind)
        except asyncio.CancelledError:
            # Cut short at shutdown: whether the platform showed it is unknown, so the asker is not charged.
            job.outcome = "interrupted"
            await self._shielded(self._refund_and_tell(outlet, generation, "IMG-DELIVERY-CANCELLED",
                                                       interrupted_text))
            raise
        except Exception:  # a bug after the charge: give the credits back, then say so
            log.exception("delivering %s %s failed", job.kind, generation or "")
            job.outcome = "undelivered"
            await self._shielded(self._refund_and_tell(outlet, generation, "IMG-INTERNAL-001",
                                                       broken_delivery_text))

    async def _refund_and_tell(self, outlet: Outlet[Any], generation: str | None, code: str,
                               text: Callable[[int], str]) -> None:
        refunded = await self.core.delivery_failed(generation, code=code) if generation else 0
        await self._tell(outlet, text(refunded))

    async def _stop_and_tell(self, sink: _Sink, outlet: Outlet[Any], text: str) -> None:
        await self._finish(sink, None)
        await self._tell(outlet, text)

    async def _finish(self, sink: _Sink, result: object | None) -> None:
        """Stop the progress display; a slow one is cut off so the result never waits for it."""
        try:
            async with asyncio.timeout(self.progress_timeout):
                await sink.finish(result)
        except TimeoutError:
            log.info("progress took over %.0f s to stop; delivering anyway", self.progress_timeout)
        except Exception:  # noqa: BLE001 - progress is a courtesy
            log.warning("stopping progress failed", exc_info=True)

    async def _tell(self, outlet: Outlet[Any], text: str) -> None:
        await self._guarded(outlet.tell(text), "note")

    async def _guarded(self, call: Awaitable[None], what: str) -> None:
        try:
            async with asyncio.timeout(self.tell_timeout):
                await call
        except TimeoutError:
            log.warning("telling the asker about %s took over %.0f s; dropped", what, self.tell_timeout)
        except Exception:  # noqa: BLE001 - a note that fails must not fail the runner
            log.exception("telling the asker about %s failed", what)

    async def _shielded(self, work: Coroutine[Any, Any, None]) -> None:
        """Run ``work`` (a refund, a note) to its end even if the caller is cancelled; ``close`` waits for it."""
        task = asyncio.create_task(work)
        self._aftercare.add(task)
        task.add_done_callback(self._aftercare.discard)
        with contextlib.suppress(asyncio.CancelledError):
            await asyncio.shield(task)


class _Sink:
    """The runner's side of the progress fan-in: every stage from the core (several calls per job may
    report at once) goes to the adapter's sink until the result exists; nothing after; failures are
    logged, never raised into the core."""

    def __init__(self, sink: ProgressSink | None, kind: str) -> None:
        self._sink = sink
        self._kind = kind
        self._open = True

    async def __call__(self, stage: str, details: dict[str, Any]) -> None:
        if not self._open or self._sink is None:
            return
        try:
            await self._sink.update(stage, details)
        except Exception:  # noqa: BLE001 - a failed progress edit must not fail the job
            log.warning("progress %s of a %s job failed", stage, self._kind, exc_info=True)

    async def finish(self, result: object | None) -> None:
        if not self._open:
            return
        self._open = False
        if self._sink is not None:
            await self._sink.finish(result)


async def _cancel_all(tasks: set[asyncio.Task[Any]]) -> None:
    for task in tasks:
        task.cancel()
    if tasks:
        await asyncio.gather(*tasks, return_exceptions=True)


# -- buttons: is this generation from the presser's server? -----------------------------------------------

async def owned_generation(core: Core, ctx: Context, generation_id: str) -> GenerationRow:
    """The generation behind a button, if it belongs to the presser's own server (platform and server id):
    credits, prompts and images never cross servers."""
    gen = await core.generation(generation_id)
    if gen is None or (gen.platform, gen.server_id) != (ctx.identity.platform, ctx.identity.server_id):
        raise NotFound("That image is no longer known to the bot.", code="IMG-NOTFOUND-GEN")
    return gen


async def prompt_of(core: Core, ctx: Context, generation_id: str, *, enhanced: bool, index: int = 0) -> str:
    """The prompt a button works on: the generation's own prompt, or (``enhanced``, "Imagine this") the text
    an /enhance produced, or the ``index``-th prompt a /describe suggested."""
    gen = await owned_generation(core, ctx, generation_id)
    if not enhanced:
        if not gen.prompt:
            raise NotFound("That result has no prompt to use.", code="IMG-NOTFOUND-GEN")
        return gen.prompt
    if gen.command == "describe" and gen.result_text:
        prompts = gen.result_text.split("\n")
        if 0 <= index < len(prompts):
            return prompts[index]
    if gen.command != "enhance" or not gen.result_text:
        raise NotFound("That enhanced prompt is no longer known to the bot.", code="IMG-NOTFOUND-GEN")
    return gen.result_text

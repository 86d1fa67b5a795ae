"""Works jobs from the table, in any process: claim, run, deliver by address, finish.

    ingress (any process) --reserve + job row, one transaction--> jobs table
    worker: claim (lease) -> core.work (generate, store, settle) -> courier.deliver -> finish_job
            lease renewed all along; a worker killed mid-job leaves its lease to expire, then another
            worker claims the job: a job not yet settled runs again (charged once: the settle is fenced by
            the lease), a settled one is delivered again from its stored images.

A job ends in exactly one outcome its user sees: the result; or a note through the courier (an error,
"refunded", "interrupted"). A job that can no longer reach its user in time (past its ``deliver_by``,
or claimed ``MAX_ATTEMPTS`` times: it keeps killing its workers) is refunded and its user told.

The process that took a command in-process (``bot.jobs.JobRunner``) runs it itself; this loop then only
finds jobs queued by ingress processes and jobs whose process died. Nothing here names a platform: the
couriers (``bot.couriers``) do. Jobs' outcomes and the refunds made here (undelivered, interrupted before
they ran) are counted in ``bot.metrics``; the charge of a job that runs is counted by ``bot.billing``.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Callable, Mapping

from storage.ledger import JobRow

from . import metrics
from .core import Imagebot
from .couriers import Courier, Undeliverable
from .errors import ImagebotError, Interrupted, LeaseLost
from .replies import error_text, interrupted_text, undelivered_text

log = logging.getLogger(__name__)

#: Claims of one job before it is refunded instead of run again (a job that kills its workers).
MAX_ATTEMPTS = 3
#: Seconds between claims when nothing woke the worker.
POLL = 0.25
#: How many recent outcomes ``Worker.outcomes`` keeps.
KEEP_OUTCOMES = 1000
#: Jobs one worker process runs at once (provider slots still apply inside).
DEFAULT_CONCURRENCY = 32

INTERNAL = "Something went wrong on the bot's side; you were not charged. (IMG-INTERNAL-001)"
STALE = ("Your request waited too long for a free worker and was cancelled; you were not charged. "
         "Please run it again. (IMG-JOB-STALE)")


class Worker:
    def __init__(self, core: Imagebot, couriers: Mapping[str, Courier], *,
                 concurrency: int = DEFAULT_CONCURRENCY, poll: float = POLL) -> None:
        self.core = core
        self.couriers = dict(couriers)
        self.concurrency = concurrency
        self.poll = poll
        self._tasks: set[asyncio.Task[None]] = set()
        self._closing = False
        #: Outcomes of the latest jobs this worker ended (the last ``KEEP_OUTCOMES``), for tests and the log.
        self.outcomes: dict[str, str] = {}

    @property
    def busy(self) -> int:
        return len(self._tasks)

    async def run(self) -> None:
        """Claim and run jobs until cancelled; then let the running ones finish (``close``)."""
        log.info("worker: taking jobs (up to %d at once) for %s", self.concurrency,
                 ", ".join(sorted(self.couriers)) or "no platform")
        try:
            while not self._closing:
                free = self.concurrency - len(self._tasks)
                jobs: list[JobRow] = []
                claimed_at = time.monotonic()  # before the claim is sent: its lease runs at least from here
                if free > 0:
                    self.core.job_added.clear()
                    try:
                        jobs = await self.core.store.claim(free, lease=self.core.config.lease_seconds)
                    except Exception:  # noqa: BLE001 - the database went away: try again at the next poll
                        log.exception("claiming jobs failed")
                for job in jobs:
                    if self.core.working_here(job.id):  # see Imagebot.working_here: never worked twice at once
                        log.info("job %s: its lease ran out while this process still works it; left to that task",
                                 job.id)
                        continue
                    task = asyncio.create_task(self._one(job, claimed_at), name=f"work-{job.id}")
                    self._tasks.add(task)
                    task.add_done_callback(self._tasks.discard)
                if len(jobs) < free:
                    with contextlib.suppress(TimeoutError):
                        await asyncio.wait_for(self.core.job_added.wait(), self.poll)
                elif free <= 0:
                    await asyncio.wait(set(self._tasks), timeout=self.poll, return_when=asyncio.FIRST_COMPLETED)
        finally:
            self._closing = True

    async def close(self, grace: float = 30.0) -> None:
        """Stop claiming; give running jobs ``grace`` seconds, then cancel them (refunded and told)."""
        self._closing = True
        if self._tasks:
            _, pending = await asyncio.wait(set(self._tasks), timeout=grace)
            for task in pending:
                task.cancel()
            if pending:
                await asyncio.gather(*pending, return_exceptions=True)

    # -- one job ---------------------------------------------------------------------------------------

    async def _one(self, job: JobRow, claimed_at: float) -> None:
        courier = self.couriers.get(str(job.address.get("platform", "")))
        if courier is None:
            # Another worker with this platform's token takes it once this claim expires; one that
            # keeps coming back here is refunded at MAX_ATTEMPTS.
            log.warning("job %s is for %r, which this worker cannot deliver to", job.id, job.address.get("platform"))
            if job.attempts >= MAX_ATTEMPTS:
                await self._give_up(job, None, STALE)
            return
        async with self.core.keep_lease(job.id) as lease:
            try:
                await self._run(job, courier, lambda: max(claimed_at, lease.renewed_at))
            except asyncio.CancelledError:
                await asyncio.shield(self._give_up(job, courier, interrupted_text(None)))
                raise
            except Exception:  # noqa: BLE001 - a bug in delivery: give the credits back, say so
                log.exception("job %s failed in the worker", job.id)
                await asyncio.shield(self._give_up(job, courier, INTERNAL))
            if lease.lost:
                log.warning("job %s: its lease was lost while it ran", job.id)

    async def _run(self, job: JobRow, courier: Courier, held_since: Callable[[], float]) -> None:
        """``held_since``: when this process last knew the job's lease its own (``Imagebot.may_deliver``)."""
        settled = job.state == "delivering" or job.generation.status == "COMPLETED"
        if not settled and (job.attempts > MAX_ATTEMPTS or time.time() > job.deliver_by):
            log.warning("job %s: refunded unrun (attempt %d, %.0f s past its deadline)", job.id, job.attempts,
                        time.time() - job.deliver_by)
            await self._give_up(job, courier, STALE)
            return
        if job.attempts > 1:
            log.info("job %s: resumed (attempt %d, %s)", job.id, job.attempts, job.state)
        try:
            result = await self.core.work(job)
        except ImagebotError as exc:
            if isinstance(exc.__cause__, LeaseLost) or exc.code == LeaseLost.code:
                return  # another worker holds it now: its outcome is theirs to tell
            text = exc.message if isinstance(exc, Interrupted) else error_text(exc)
            await courier.tell(job.address, job.deliver_by, text)
            await self._finish(job, "failed")
            return
        async def posted() -> None:  # visible now: a worker killed after this leaves nothing to post again
            await self._finish(job, "delivered")

        if not await self.core.may_deliver(job.id, held_since=held_since()):
            log.warning("job %s: taken over by another worker while this one stalled; not posted here", job.id)
            return
        try:
            await courier.deliver(job.address, job.deliver_by, result, posted=posted)
        except Undeliverable:
            refunded = await self.core.delivery_failed(job.id)
            await courier.tell(job.address, job.deliver_by, undelivered_text(refunded))
            await self._finish(job, "undelivered")
            return
        if self.outcomes.get(job.id) != "delivered":  # a courier that did not say when it was posted
            await self._finish(job, "delivered")

    async def _give_up(self, job: JobRow, courier: Courier | None, text: str) -> None:
        """Refund whatever this job still holds or consumed, tell its user, finish it."""
        store = self.core.store
        try:
            current = await store.job(job.id)
            if current is None or current.state == "done" or current.holder != store.holder:
                return
            if current.generation.status == "PENDING":
                settled = await store.refund(job.id, code="IMG-INTERRUPTED")
                if settled.charged:  # held, never run: reserved and given back here, not in bot.billing
                    metrics.reserved(settled.released)
                    metrics.refunded(settled.released, "interrupted")
            elif current.generation.status == "COMPLETED":
                await self.core.delivery_failed(job.id, code="IMG-INTERRUPTED")
            if courier is not None:
                await courier.tell(job.address, job.deliver_by, text)
            await self._finish(job, "refunded")
        except Exception:  # noqa: BLE001 - the lease expires and another worker tries
            log.exception("giving up job %s failed", job.id)

    async def _finish(self, job: JobRow, outcome: str) -> None:
        if await self.core.job_finished(job.id, outcome):
            self.outcomes[job.id] = outcome
            while len(self.outcomes) > KEEP_OUTCOMES:
                del self.outcomes[next(iter(self.outcomes))]
            metrics.job(outcome)
            log.info("job %s: %s", job.id, outcome)

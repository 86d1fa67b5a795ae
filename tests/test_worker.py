"""The job table's worker: queued jobs run in another "process" (another ledger holder on the same SQLite
file), a job whose process died is taken over and finished once, a settled job is delivered again from its
stored images without a second charge, and a job that can no longer reach its user is refunded and told.

The courier here records what it was handed (the platform couriers are tested against the Slack and
Discord fakes in their own files); everything else is real: the SQLite file, the core, the image store.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import pytest

from bot.couriers import Posted, Undeliverable
from bot.errors import ProviderUnavailable
from bot.models import Context, DescribeResult, EnhanceResult, Identity, ImagineOptions, ImagineResult
from bot.worker import Worker
from tests.doubles import ScriptedProvider, make_config, make_core

ALICE = Identity("slack", "T1", "alice")


class RecordingCourier:
    platform = "slack"

    def __init__(self, *, refuse: bool = False) -> None:
        self.delivered: list[ImagineResult | EnhanceResult | DescribeResult] = []
        self.told: list[str] = []
        self.refuse = refuse

    async def deliver(self, address: Mapping[str, Any], deliver_by: float,
                      result: ImagineResult | EnhanceResult | DescribeResult, *, posted: Posted | None = None,
                      ) -> None:
        if self.refuse:
            raise Undeliverable("channel and DM refused")
        assert address["channel_id"] == "C1"
        self.delivered.append(result)
        if posted is not None:
            await posted()

    async def tell(self, address: Mapping[str, Any], deliver_by: float, text: str) -> bool:
        self.told.append(text)
        return True

    async def aclose(self) -> None:
        return None


def ctx(user: Identity = ALICE, *, deliver_by: float | None = None) -> Context:
    address = {"platform": "slack", "team_id": user.server_id, "channel_id": "C1", "user_id": user.user_id,
               "response_url": "", "thread_ts": ""}
    return Context(user, channel_id="C1", address=address, deliver_by=deliver_by or time.time() + 600)


async def run_until(worker: Worker, done: Any, timeout: float = 10.0) -> None:
    task = asyncio.create_task(worker.run())
    try:
        async with asyncio.timeout(timeout):
            while not done():  # noqa: ASYNC110 - polling what the worker recorded
                await asyncio.sleep(0.02)
    finally:
        task.cancel()
        await asyncio.gather(task, return_exceptions=True)
        await worker.close(grace=5)


@pytest.fixture
def config(tmp_path: Path) -> Any:
    return make_config(tmp_path, IMAGEBOT_LEASE_SECONDS="1", IMAGEBOT_MAX_CONCURRENT="20")


async def test_a_queued_job_is_run_and_delivered_by_another_process(config: Any) -> None:
    ingress = make_core(config, [ScriptedProvider()])
    worker_core = make_core(config, [ScriptedProvider()])
    async with ingress, worker_core:
        queued = await ingress.enqueue(ctx(), "imagine", options=ImagineOptions("a fox", size="256x256", count=2))
        assert queued.balance == 50 - queued.price
        second = await ingress.enqueue(ctx(), "imagine", options=ImagineOptions("a cat", size="256x256"))
        assert second.ahead == 1  # counted in the table
        courier = RecordingCourier()
        worker = Worker(worker_core, {"slack": courier})
        await run_until(worker, lambda: len(courier.delivered) == 2)
        result = next(r for r in courier.delivered if r.generation_id == queued.generation_id)
        assert isinstance(result, ImagineResult) and len(result.images) == 2
        assert all(image.path.exists() for image in result.images)
        assert await ingress.store.balance(ALICE) == 50 - queued.price - second.price
        assert await ingress.store.audit() == []
        job = await ingress.store.job(queued.generation_id)
        assert job is not None and job.state == "done" and job.outcome == "delivered" and job.address == {}


async def test_a_held_job_left_by_a_killed_process_is_finished_by_a_worker(config: Any) -> None:
    gone = make_core(config, [ScriptedProvider()])
    alive = make_core(config, [ScriptedProvider()])
    async with gone, alive:
        # What a SIGKILLed process leaves: a reservation and its running job held under a lease nobody renews.
        queued = await gone.enqueue(ctx(), "imagine", options=ImagineOptions("a fox", size="256x256"))
        claimed = await gone.store.claim(1, lease=1.0)
        assert [j.id for j in claimed] == [queued.generation_id]
        courier = RecordingCourier()
        worker = Worker(alive, {"slack": courier})
        assert await alive.store.claim(1, lease=1.0) == []  # not before the lease expires
        await run_until(worker, lambda: courier.delivered)
        assert [r.generation_id for r in courier.delivered] == [queued.generation_id]
        # The dead holder's late settle is fenced off: nothing moves twice.
        late = await gone.store.settle(queued.generation_id, queued.price, status="COMPLETED")
        assert not late.charged
        rows = [r for r in await alive.store.ledger_rows(ALICE) if r["request_id"] == queued.generation_id]
        assert [r["kind"] for r in rows].count("consume") == 1
        assert await alive.store.balance(ALICE) == 50 - queued.price
        assert await alive.store.audit() == []


async def test_a_settled_job_cut_off_while_delivering_is_delivered_again_without_a_second_charge(config: Any) -> None:
    gone = make_core(config, [ScriptedProvider()])
    alive = make_core(config, [ScriptedProvider()])
    async with gone, alive:
        queued = await gone.enqueue(ctx(), "imagine", options=ImagineOptions("a fox", size="256x256", count=2))
        [job] = await gone.store.claim(1, lease=1.0)
        await gone.work(job)  # generated, stored, settled... and the process died before posting
        balance = await alive.store.balance(ALICE)
        assert balance == 50 - queued.price
        courier = RecordingCourier()
        await run_until(Worker(alive, {"slack": courier}), lambda: courier.delivered)
        [result] = courier.delivered
        assert isinstance(result, ImagineResult) and len(result.images) == 2
        assert all(image.path.exists() for image in result.images)
        assert await alive.store.balance(ALICE) == balance
        job_after = await alive.store.job(queued.generation_id)
        assert job_after is not None and job_after.outcome == "delivered"


async def test_a_failed_job_is_told_and_refunded(config: Any) -> None:
    core = make_core(config, [ScriptedProvider(behaviour=lambda i: ProviderUnavailable("down"))])
    async with core:
        await core.enqueue(ctx(), "imagine", options=ImagineOptions("a fox", size="256x256"))
        courier = RecordingCourier()
        await run_until(Worker(core, {"slack": courier}), lambda: courier.told)
        assert "not charged" in courier.told[0]
        assert courier.delivered == []
        assert await core.store.balance(ALICE) == 50


async def test_an_undeliverable_result_is_refunded_and_told(config: Any) -> None:
    core = make_core(config, [ScriptedProvider()])
    async with core:
        queued = await core.enqueue(ctx(), "imagine", options=ImagineOptions("a fox", size="256x256"))
        courier = RecordingCourier(refuse=True)
        await run_until(Worker(core, {"slack": courier}), lambda: courier.told)
        assert f"Your {queued.price} credits were refunded" in courier.told[0]
        assert await core.store.balance(ALICE) == 50
        assert await core.store.audit() == []


async def test_a_job_past_its_deadline_is_refunded_unrun(config: Any) -> None:
    provider = ScriptedProvider()
    core = make_core(config, [provider])
    async with core:
        await core.enqueue(ctx(deliver_by=time.time() - 1), "imagine", options=ImagineOptions("a fox", size="256x256"))
        courier = RecordingCourier()
        await run_until(Worker(core, {"slack": courier}), lambda: courier.told)
        assert "waited too long" in courier.told[0] and provider.calls == 0
        assert await core.store.balance(ALICE) == 50


async def test_enhance_and_upscale_run_as_jobs(config: Any) -> None:
    core = make_core(config, [ScriptedProvider()])
    async with core:
        made = await core.imagine(Context(ALICE, channel_id="C1"), ImagineOptions("a fox", size="256x256"))
        await core.enqueue(ctx(), "enhance", prompt="a fox")
        await core.enqueue(ctx(), "reroll", generation_id=made.generation_id)
        courier = RecordingCourier()
        await run_until(Worker(core, {"slack": courier}), lambda: len(courier.delivered) == 2)
        kinds = sorted(type(r).__name__ for r in courier.delivered)
        assert kinds == ["EnhanceResult", "ImagineResult"]
        assert await core.store.audit() == []


async def test_a_job_worked_at_once_after_its_claim_is_posted_without_another_write_to_renew_it(tmp_path: Path) -> None:
    """Its claim's lease has nearly all its length to run: posting needs no renewal (one write less per job)."""
    config = make_config(tmp_path, IMAGEBOT_LEASE_SECONDS="30")
    ingress, worker_core = make_core(config, [ScriptedProvider()]), make_core(config, [ScriptedProvider()])
    async with ingress, worker_core:
        queued = await ingress.enqueue(ctx(), "imagine", options=ImagineOptions("a fox", size="256x256"))
        renewals: list[str] = []
        renew = worker_core.store.renew

        async def counted(request_id: str, *, lease: float) -> bool:
            renewals.append(request_id)
            return await renew(request_id, lease=lease)

        worker_core.store.renew = counted  # type: ignore[method-assign]
        courier = RecordingCourier()
        await run_until(Worker(worker_core, {"slack": courier}), lambda: courier.delivered)
        assert [r.generation_id for r in courier.delivered] == [queued.generation_id]
        assert renewals == []
        job = await ingress.store.job(queued.generation_id)
        assert job is not None and job.outcome == "delivered"
        assert await ingress.store.balance(ALICE) == 50 - queued.price


async def test_a_result_whose_lease_was_last_known_long_ago_is_not_posted_once_another_worker_took_it(
        config: Any) -> None:
    """Past a third of the lease since it was last known, the job's lease is renewed before posting: a process
    that stalled meanwhile finds it taken over and posts nothing."""
    stalled, other = make_core(config, [ScriptedProvider()]), make_core(config, [ScriptedProvider()])
    async with stalled, other:
        queued = await stalled.enqueue(ctx(), "imagine", options=ImagineOptions("a fox", size="256x256"))
        claimed_at = time.monotonic()
        [job] = await stalled.store.claim(1, lease=config.lease_seconds)
        await stalled.work(job)
        await asyncio.sleep(config.lease_seconds + 0.1)  # the stall: no heartbeat ran
        assert [j.id for j in await other.store.claim(1, lease=config.lease_seconds)] == [job.id]
        assert not await stalled.may_deliver(job.id, held_since=claimed_at)
        assert await other.may_deliver(job.id, held_since=time.monotonic())
        assert await other.may_deliver(job.id, held_since=claimed_at)  # renewed: it is other's now
        assert await stalled.store.balance(ALICE) == 50 - queued.price


async def test_a_job_this_process_still_works_is_not_started_again_when_a_claim_hands_it_back(config: Any) -> None:
    """Under load a renewal can wait past the lease, and this process's own claim then returns the job it is
    still on: the claim renews the lease, the task goes on, nothing runs or is posted twice."""
    provider = ScriptedProvider(delay=0.6)
    core = make_core(config, [provider])
    async with core:
        queued = await core.enqueue(ctx(), "imagine", options=ImagineOptions("a fox", size="256x256"))
        [job] = await core.store.claim(1, lease=config.lease_seconds)
        first = asyncio.create_task(core.work(job))
        await asyncio.sleep(0.1)
        assert core.working_here(job.id)
        real = core.store.clock
        core.store.clock = lambda: real() + 100  # the lease, seen from now on, ran out
        courier = RecordingCourier()
        worker = Worker(core, {"slack": courier}, poll=0.05)
        await run_until(worker, first.done)
        result = await first
        assert isinstance(result, ImagineResult) and result.credits_spent == queued.price
        assert provider.calls == 1 and courier.delivered == []
        assert not core.working_here(job.id)
        assert await core.store.balance(ALICE) == 50 - queued.price
        assert await core.store.audit() == []

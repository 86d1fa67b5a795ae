"""The charge written once (``bot.billing.charge``): reserve, heartbeat, settle or refund."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from bot.billing import LeaseLost, charge
from bot.errors import InsufficientCredits, ProviderUnavailable, RateLimited
from bot.models import Identity
from storage.ledger import ImageRow, Ledger
from storage.memory import MemoryLedger
from storage.sqlite import SqliteStore

ALICE = Identity("discord", "g1", "alice")
GEN = {"command": "imagine", "prompt": "a fox", "options": {}}
LEASE = 0.3  # a heartbeat every 0.1 s


class Counting:
    """A ledger wrapper that counts renewals (the heartbeat) and can lose the lease on demand."""

    def __init__(self, inner: Ledger) -> None:
        self.inner = inner
        self.renewals = 0
        self.lose = False

    def __getattr__(self, name: str) -> object:
        return getattr(self.inner, name)

    async def renew(self, request_id: str, *, lease: float) -> bool:
        self.renewals += 1
        if self.lose:
            return False
        return await self.inner.renew(request_id, lease=lease)


@pytest.fixture(params=["sqlite", "memory"])
async def ledger(request: pytest.FixtureRequest, tmp_path: Path) -> AsyncIterator[Counting]:
    inner: Ledger = SqliteStore(tmp_path / "b.sqlite3") if request.param == "sqlite" else MemoryLedger()
    await inner.open()
    yield Counting(inner)
    await inner.close()


def bill_for(ledger: Counting, request_id: str, amount: int, **kw: object):  # type: ignore[no-untyped-def]
    return charge(ledger, ALICE, request_id, amount, max_concurrent=2, lease=LEASE, generation=GEN, **kw)  # type: ignore[arg-type]


async def test_settles_what_the_body_produced_and_heartbeats_only_while_it_runs(ledger: Counting) -> None:
    async with bill_for(ledger, "r1", 30) as bill:
        assert bill.balance == 20
        await asyncio.sleep(LEASE * 3)  # three leases long: alive only thanks to the heartbeat
        bill.produced(20, provider="fake", images=[ImageRow("ab" * 32, "image/png", 1, 1, 1)])
    assert bill.settlement is not None
    assert (bill.settlement.consumed, bill.settlement.released, bill.settlement.balance) == (20, 10, 30)
    beats = ledger.renewals
    assert beats >= 6
    await asyncio.sleep(LEASE)
    assert ledger.renewals == beats  # the heartbeat stopped with the body
    gen = await ledger.inner.generation("r1")
    assert gen is not None and (gen.status, gen.provider, gen.image_count) == ("COMPLETED", "fake", 1)


async def test_a_failing_body_is_refunded_in_full_and_the_failure_is_worded_by_the_caller(ledger: Counting) -> None:
    def failure(exc: BaseException, amount: int) -> BaseException:
        return RuntimeError(f"worded: {type(exc).__name__}, {amount} back")

    with pytest.raises(RuntimeError, match="worded: ProviderUnavailable, 30 back"):
        async with bill_for(ledger, "r1", 30, failure=failure):
            raise ProviderUnavailable("down")
    assert await ledger.inner.balance(ALICE) == 50 and await ledger.inner.held(ALICE) == 0
    gen = await ledger.inner.generation("r1")
    assert gen is not None and (gen.status, gen.error_code) == ("FAILED", "IMG-PROV-DOWN")
    beats = ledger.renewals
    await asyncio.sleep(LEASE)
    assert ledger.renewals == beats


async def test_a_cancelled_job_is_refunded(ledger: Counting) -> None:
    started = asyncio.Event()

    async def job() -> None:
        async with bill_for(ledger, "r1", 30):
            started.set()
            await asyncio.sleep(60)

    task = asyncio.create_task(job())
    await started.wait()
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    assert await ledger.inner.balance(ALICE) == 50 and await ledger.inner.held(ALICE) == 0
    gen = await ledger.inner.generation("r1")
    assert gen is not None and (gen.status, gen.error_code) == ("FAILED", "IMG-CANCELLED")


async def test_refusals_become_worded_user_errors_and_the_body_never_runs(ledger: Counting) -> None:
    ran = False
    with pytest.raises(InsufficientCredits, match="This needs 51 credits and you have 50") as short:
        async with bill_for(ledger, "r1", 51):
            ran = True
    assert (short.value.balance, short.value.needed, short.value.code) == (50, 51, "IMG-CREDITS-001")
    await ledger.inner.reserve(ALICE, "a", 1, max_concurrent=2, lease=60, generation=GEN)
    await ledger.inner.reserve(ALICE, "b", 1, max_concurrent=2, lease=60, generation=GEN)
    with pytest.raises(RateLimited, match="You already have 2 jobs running") as busy:
        async with bill_for(ledger, "r2", 1):
            ran = True
    assert busy.value.code == "IMG-RATE-003" and not ran


async def test_a_lost_lease_charges_nothing_and_withholds_the_result(ledger: Counting) -> None:
    ledger.lose = True  # another process took the reservation over: the heartbeat finds it gone
    with pytest.raises(LeaseLost) as lost:
        async with bill_for(ledger, "r1", 30) as bill:
            await asyncio.sleep(LEASE * 1.5)  # past the lease, with no renewal
            bill.produced(30)
    assert bill.lost and lost.value.code == "IMG-LEASE-LOST"
    assert bill.settlement is not None and bill.settlement.charged is False
    assert await ledger.inner.held(ALICE) == 30  # left for the sweep, which refunds it
    await ledger.inner.release_expired()
    assert await ledger.inner.balance(ALICE) == 50

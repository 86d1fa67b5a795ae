"""The job table's contract (issue 11, "the generation row is the job"): every case runs against SQLite on
a real file, memory and PostgreSQL on the real server, through the ``World`` of the ledger contract.

Two ledger objects on one database are two processes (two holders); the injectable clock expires leases
when a case says so. What is asserted is what a user would notice: one charge at most, credits back when
nobody can deliver, a queue position that is right across processes, no credential kept once done.
"""

from __future__ import annotations

import asyncio
import random
import sqlite3
from pathlib import Path
from typing import Any

import pytest

from bot.models import Identity
from storage.ledger import (
    JOB_STATES,
    DuplicateRequest,
    ImageRow,
    JobRow,
    JobSpec,
    Ledger,
    ReadOnlyLedger,
    ShortBalance,
    TooManyJobs,
)
from storage.migrations import MIGRATIONS, apply_migrations
from storage.sqlite import SqliteStore
from tests import test_ledger_contract as contract
from tests.test_ledger_contract import GEN, World, old_database

#: The ledger contract's parametrized fixture (sqlite, memory, postgres), used here under its own name.
world = contract.world

ALICE = Identity("discord", "g1", "alice")
BOB = Identity("slack", "T1", "bob")
LEASE = 30.0
IMAGE = ImageRow("ab" * 32, "image/png", 100, 256, 256)
SECRET = "interaction-token-sekrit"


def spec(n: int = 0) -> JobSpec:
    return JobSpec(payload={"kind": "imagine", "prompt": "a fox", "count": n},
                   address={"platform": "discord", "token": SECRET, "channel_id": "c1"},
                   deliver_by=1_700_000_900.0)


async def reserve(ledger: Ledger, who: Identity, rid: str, amount: int = 10, *, queued: bool = False,
                  max_concurrent: int = 5, n: int = 0) -> int:
    return await ledger.reserve(who, rid, amount, max_concurrent=max_concurrent, lease=LEASE, generation=GEN,
                                job=spec(n), queued=queued)


async def the_job(ledger: Ledger, rid: str) -> JobRow:
    job = await ledger.job(rid)
    assert job is not None
    return job


# -- reserve inserts the job with the charge ------------------------------------------------------------


async def test_reserve_with_a_job_inserts_it_with_the_reservation_and_the_generation(world: World) -> None:
    ledger = await world.ledger()
    now = world.clock.now
    assert await reserve(ledger, ALICE, "r1", 20) == 30
    job = await the_job(ledger, "r1")
    assert (job.id, job.state, job.attempts, job.holder, job.expires_at, job.outcome, job.created_at) == (
        "r1", "running", 1, ledger.holder, now + LEASE, "", now)
    assert (job.payload, job.address, job.deliver_by) == (dict(spec().payload), dict(spec().address),
                                                          spec().deliver_by)
    assert (job.generation.id, job.generation.status, job.generation.credits_reserved) == ("r1", "PENDING", 20)
    assert job.generation.prompt == "a fox" and job.generation.images == ()
    assert await ledger.held(ALICE) == 20

    # without a job: as before, no job row
    await ledger.reserve(ALICE, "plain", 1, max_concurrent=5, lease=LEASE, generation=GEN)
    assert await ledger.job("plain") is None and await ledger.job("never") is None


async def test_a_refused_reserve_inserts_no_job(world: World) -> None:
    ledger = await world.ledger()
    await reserve(ledger, ALICE, "r1", 20, max_concurrent=2)
    with pytest.raises(ShortBalance):
        await reserve(ledger, ALICE, "short", 31, max_concurrent=2)
    with pytest.raises(ShortBalance):
        await reserve(ledger, BOB, "new-short", 51, queued=True)
    await reserve(ledger, ALICE, "r2", 1, max_concurrent=2, queued=True)
    with pytest.raises(TooManyJobs):
        await reserve(ledger, ALICE, "busy", 1, max_concurrent=2)
    before = await the_job(ledger, "r1")
    with pytest.raises(DuplicateRequest):
        await ledger.reserve(BOB, "r1", 1, max_concurrent=5, lease=LEASE, generation=GEN,
                             job=JobSpec(payload={"kind": "other"}, address={}, deliver_by=0.0), queued=True)
    for rid in ("short", "new-short", "busy"):
        assert await ledger.job(rid) is None and await ledger.generation(rid) is None
    assert await the_job(ledger, "r1") == before  # the duplicate changed nothing
    assert await ledger.queue_depth() == 1 and await ledger.balance(BOB) == 50
    assert await ledger.ledger_rows(BOB) == [] and await ledger.audit() == []


async def test_a_queued_job_is_held_by_nobody_until_claimed(world: World) -> None:
    taker, worker = await world.ledger(), await world.ledger()
    now = world.clock.now
    assert await reserve(taker, ALICE, "q1", 20, queued=True) == 30
    job = await the_job(worker, "q1")
    assert (job.state, job.holder, job.expires_at, job.attempts) == ("queued", "", 0.0, 0)
    # nobody can settle, refund or renew it before claiming it, not even the process that took the command
    for ledger in (taker, worker):
        assert (await ledger.settle("q1", 20, status="COMPLETED")).charged is False
        assert (await ledger.refund("q1", code="IMG-PROV-DOWN")).charged is False
        assert await ledger.renew("q1", lease=LEASE) is False
        assert await ledger.finish_job("q1", "told") is False
    assert await taker.held(ALICE) == 20 and await taker.balance(ALICE) == 30

    [claimed] = await worker.claim(5, lease=LEASE)
    assert (claimed.id, claimed.state, claimed.holder, claimed.expires_at, claimed.attempts) == (
        "q1", "running", worker.holder, now + LEASE, 1)
    assert claimed.generation.status == "PENDING" and claimed.payload == dict(spec().payload)
    assert await the_job(taker, "q1") == claimed
    assert (await taker.settle("q1", 20, status="COMPLETED")).charged is False  # still not the taker's
    settled = await worker.settle("q1", 5, status="COMPLETED", images=[IMAGE])
    assert (settled.charged, settled.consumed, settled.balance) == (True, 5, 45)
    assert (await the_job(taker, "q1")).state == "delivering"


async def test_a_queued_job_counts_toward_the_concurrent_limit_however_long_it_waits(world: World) -> None:
    ledger, worker = await world.ledger(), await world.ledger()
    await reserve(ledger, ALICE, "q1", 1, queued=True, max_concurrent=2)
    await reserve(ledger, ALICE, "q2", 1, queued=True, max_concurrent=2)
    with pytest.raises(TooManyJobs) as busy:
        await reserve(ledger, ALICE, "q3", 1, queued=True, max_concurrent=2)
    assert (busy.value.running, busy.value.limit) == (2, 2)
    world.clock.advance(100 * LEASE)  # nobody has claimed them yet
    assert await worker.release_expired() == 0
    with pytest.raises(TooManyJobs):
        await reserve(ledger, ALICE, "q3", 1, max_concurrent=2)
    assert await ledger.held(ALICE) == 2 and await ledger.queue_depth() == 2
    await reserve(ledger, BOB, "b1", 1, queued=True, max_concurrent=2)  # another user's limit is their own

    [first] = await worker.claim(1, lease=LEASE)
    assert first.id == "q1"
    assert (await worker.settle("q1", 1, status="COMPLETED")).charged is True
    await reserve(ledger, ALICE, "q3", 1, queued=True, max_concurrent=2)  # one of two is no longer live
    with pytest.raises(TooManyJobs):
        await reserve(ledger, ALICE, "q4", 1, max_concurrent=2)


# -- claims --------------------------------------------------------------------------------------------


async def test_two_processes_claiming_at_once_never_get_the_same_job(world: World) -> None:
    taker = await world.ledger()
    workers = [await world.ledger(), await world.ledger()]
    users = [Identity("discord", "g1", f"u{i}") for i in range(10)]
    ids = []
    for i in range(40):
        rid = f"q{i:02d}"
        await reserve(taker, users[i % len(users)], rid, 2, queued=True, n=i)
        ids.append(rid)
        world.clock.advance(0.01)

    async def claims(worker: Ledger) -> list[JobRow]:
        got: list[JobRow] = []
        for _ in range(6):
            got += await worker.claim(2, lease=LEASE)
            await asyncio.sleep(0)
        return got

    results = await asyncio.gather(*(claims(w) for w in workers for _ in range(3)))
    claimed = [job for batch in results for job in batch]
    assert sorted(j.id for j in claimed) == ids  # every job once, none twice
    for index, batch in enumerate(results):
        worker = workers[index // 3]
        for job in batch:
            assert (job.holder, job.state, job.attempts) == (worker.holder, "running", 1)
            assert (await the_job(taker, job.id)).holder == worker.holder
            assert job.payload["count"] == int(job.id[1:])
    assert await taker.queue_depth() == 0
    assert await workers[0].claim(10, lease=LEASE) == []  # all held under live leases

    # whoever claimed a job can settle it, and only they
    for index, batch in enumerate(results):
        worker, other = workers[index // 3], workers[1 - index // 3]
        for job in batch:
            assert (await other.settle(job.id, 2, status="COMPLETED")).charged is False
            assert (await worker.settle(job.id, 2, status="COMPLETED")).charged is True
    assert [(await taker.spent(u))[0] for u in users] == [8] * len(users)  # 4 jobs of 2 credits each
    assert await taker.audit() == []


async def test_claims_go_oldest_first_and_take_at_most_the_limit(world: World) -> None:
    taker, worker = await world.ledger(), await world.ledger()
    for rid in ("a", "b", "c"):
        await reserve(taker, ALICE, rid, 1, queued=True)
        world.clock.advance(1)
    assert await worker.claim(0, lease=LEASE) == []
    assert [j.id for j in await worker.claim(2, lease=LEASE)] == ["a", "b"]
    assert [j.id for j in await worker.claim(2, lease=LEASE)] == ["c"]
    assert await worker.claim(2, lease=LEASE) == []


async def test_a_claim_takes_over_an_expired_running_job_and_fences_off_its_old_holder(world: World) -> None:
    old, new = await world.ledger(), await world.ledger()
    await reserve(old, ALICE, "r1", 20)
    assert await new.claim(5, lease=LEASE) == []  # its lease is live: not claimable
    world.clock.advance(LEASE - 1)
    assert await old.renew("r1", lease=LEASE) is True
    world.clock.advance(LEASE - 1)
    assert await new.claim(5, lease=LEASE) == []  # renewed: still the old holder's
    world.clock.advance(2)  # the old process stalled (or died)
    assert await new.release_expired() == 0  # a job not done is claim's, not the sweep's
    [job] = await new.claim(5, lease=LEASE)
    assert (job.id, job.state, job.holder, job.attempts, job.expires_at) == (
        "r1", "running", new.holder, 2, world.clock.now + LEASE)
    before = await old.balance(ALICE), await old.held(ALICE), await old.ledger_rows(ALICE)

    # the old holder wakes up: everything it tries is fenced off
    assert (await old.settle("r1", 20, status="COMPLETED", images=[IMAGE])).charged is False
    assert (await old.refund("r1", code="IMG-PROV-DOWN")).charged is False
    assert await old.renew("r1", lease=LEASE) is False
    assert await old.finish_job("r1", "delivered") is False
    assert (await old.balance(ALICE), await old.held(ALICE), await old.ledger_rows(ALICE)) == before
    assert (await the_job(old, "r1")).holder == new.holder

    assert await new.renew("r1", lease=LEASE) is True
    settled = await new.settle("r1", 15, status="COMPLETED", images=[IMAGE])
    assert (settled.charged, settled.consumed, settled.released, settled.balance) == (True, 15, 5, 35)
    job = await the_job(new, "r1")
    assert (job.state, job.generation.status, job.generation.images) == ("delivering", "COMPLETED", (IMAGE,))
    assert [r["kind"] for r in await new.ledger_rows(ALICE)] == ["initial", "reserve", "consume", "release"]
    assert await new.audit() == []


async def test_a_delivering_job_is_claimed_again_for_redelivery_and_finish_job_fences(world: World) -> None:
    first, second = await world.ledger(), await world.ledger()
    await reserve(first, ALICE, "r1", 20)
    assert (await first.settle("r1", 20, status="COMPLETED", images=[IMAGE])).charged is True
    assert (await the_job(first, "r1")).state == "delivering"
    world.clock.advance(LEASE - 1)
    assert await first.renew("r1", lease=LEASE) is True  # the job's lease, while it delivers
    world.clock.advance(LEASE - 1)
    assert await second.claim(5, lease=LEASE) == []
    world.clock.advance(2)  # the first process died while delivering
    [job] = await second.claim(5, lease=LEASE)
    assert (job.state, job.holder, job.attempts) == ("delivering", second.holder, 2)
    assert (job.generation.status, job.generation.credits_consumed, job.generation.images) == (
        "COMPLETED", 20, (IMAGE,))
    assert job.address["token"] == SECRET  # the new holder can still deliver
    assert await first.finish_job("r1", "delivered") is False
    assert await first.renew("r1", lease=LEASE) is False
    assert await second.finish_job("r1", "delivered") is True
    assert await second.finish_job("r1", "delivered") is False  # once
    done = await the_job(first, "r1")
    assert (done.state, done.outcome, done.holder) == ("done", "delivered", second.holder)
    assert await second.renew("r1", lease=LEASE) is False  # done: no lease to renew
    world.clock.advance(10 * LEASE)
    assert await second.claim(5, lease=LEASE) == []  # done is final
    assert await second.release_expired() == 0
    assert await first.balance(ALICE) == 30 and await first.audit() == []  # charged once


async def test_a_refunded_job_stays_its_holders_until_its_user_is_told(world: World) -> None:
    ledger, other = await world.ledger(), await world.ledger()
    await reserve(ledger, ALICE, "r1", 20)
    assert (await ledger.refund("r1", code="IMG-PROV-DOWN")).charged is True
    job = await the_job(ledger, "r1")
    assert (job.state, job.holder, job.generation.status, job.generation.error_code) == (
        "running", ledger.holder, "FAILED", "IMG-PROV-DOWN")
    assert await ledger.renew("r1", lease=LEASE) is True
    assert await other.finish_job("r1", "told") is False
    assert await ledger.finish_job("r1", "told") is True
    assert (await the_job(other, "r1")).outcome == "told"
    assert await ledger.balance(ALICE) == 50


async def test_refund_completed_leaves_the_job_to_finish_job(world: World) -> None:
    ledger = await world.ledger()
    await reserve(ledger, ALICE, "r1", 20)
    await ledger.settle("r1", 20, status="COMPLETED", images=[IMAGE])
    assert await ledger.refund_completed("r1", code="IMG-DELIVERY-001") == 20
    assert (await the_job(ledger, "r1")).state == "delivering"
    assert await ledger.finish_job("r1", "undelivered") is True
    assert await ledger.balance(ALICE) == 50 and await ledger.audit() == []


# -- the sweep -----------------------------------------------------------------------------------------


async def test_release_expired_refunds_jobless_reservations_and_leaves_jobs_to_claim(world: World) -> None:
    ledger, sweeper = await world.ledger(), await world.ledger()
    await ledger.reserve(ALICE, "plain", 5, max_concurrent=5, lease=LEASE, generation=GEN)
    await reserve(ledger, ALICE, "running", 5)
    await reserve(ledger, ALICE, "queued", 5, queued=True)
    await reserve(ledger, ALICE, "finished", 5)
    world.clock.advance(LEASE + 1)
    assert await ledger.finish_job("finished", "failed") is True  # done, its reservation never settled
    assert await sweeper.release_expired() == 2  # "plain" and "finished"
    assert await sweeper.release_expired() == 0
    assert await ledger.held(ALICE) == 10 and await ledger.balance(ALICE) == 40
    for rid in ("plain", "finished"):
        gen = await ledger.generation(rid)
        assert gen is not None and (gen.status, gen.error_code) == ("FAILED", "IMG-INTERRUPTED")
    assert {j.id for j in await sweeper.claim(5, lease=LEASE)} == {"running", "queued"}
    for rid in ("running", "queued"):
        assert (await sweeper.refund(rid, code="IMG-INTERRUPTED")).charged is True
        assert await sweeper.finish_job(rid, "refunded") is True
    assert await ledger.held(ALICE) == 0 and await ledger.balance(ALICE) == 50 and await ledger.audit() == []


# -- the queue -----------------------------------------------------------------------------------------


async def test_queue_position_and_depth_are_counted_in_the_table(world: World) -> None:
    taker, worker = await world.ledger(), await world.ledger()
    assert await taker.queue_depth() == 0 and await taker.queued_ahead("none") == 0
    for rid in ("q1", "q2", "q3"):
        await reserve(taker, ALICE if rid != "q2" else BOB, rid, 1, queued=True)
        world.clock.advance(1)
    await reserve(taker, ALICE, "running", 1)
    looker = await world.ledger(read_only=True)
    for ledger in (taker, worker, looker):
        assert [await ledger.queued_ahead(r) for r in ("q1", "q2", "q3", "running")] == [0, 1, 2, 0]
        assert await ledger.queue_depth() == 3
    [first] = await worker.claim(1, lease=LEASE)
    assert first.id == "q1"
    assert [await looker.queued_ahead(r) for r in ("q1", "q2", "q3")] == [0, 0, 1]
    assert await looker.queue_depth() == 2
    await worker.claim(5, lease=LEASE)
    assert await looker.queue_depth() == 0 and await looker.queued_ahead("q3") == 0


async def test_finish_job_clears_the_address_and_keeps_the_rest(world: World) -> None:
    ledger = await world.ledger()
    await reserve(ledger, ALICE, "r1", 20)
    await ledger.settle("r1", 20, status="COMPLETED", images=[IMAGE])
    assert (await the_job(ledger, "r1")).address["token"] == SECRET
    assert await ledger.finish_job("r1", "delivered") is True
    job = await the_job(ledger, "r1")
    assert (job.state, job.outcome, job.address, job.payload) == ("done", "delivered", {}, dict(spec().payload))
    assert job.generation.images == (IMAGE,) and job.deliver_by == spec().deliver_by
    if world.kind == "sqlite":  # the credential is gone from the row itself
        conn = sqlite3.connect(world.path)
        try:
            assert conn.execute("SELECT address FROM jobs WHERE id = 'r1'").fetchone() == ("{}",)
        finally:
            conn.close()


async def test_a_read_only_ledger_reads_jobs_and_refuses_their_writes(world: World) -> None:
    writer = await world.ledger()
    await reserve(writer, ALICE, "q1", 5, queued=True)
    looker = await world.ledger(read_only=True)
    assert (await the_job(looker, "q1")).state == "queued" and await looker.queue_depth() == 1
    with pytest.raises(ReadOnlyLedger):
        await looker.claim(1, lease=LEASE)
    with pytest.raises(ReadOnlyLedger):
        await looker.finish_job("q1", "told")
    with pytest.raises(ReadOnlyLedger):
        await looker.reserve(ALICE, "q2", 1, max_concurrent=5, lease=LEASE, generation=GEN, job=spec(),
                             queued=True)
    assert (await the_job(writer, "q1")).state == "queued" and await writer.job("q2") is None


# -- migrations ----------------------------------------------------------------------------------------


async def test_reopening_migrates_nothing_and_keeps_every_job(world: World) -> None:
    """Migrations applied again (a second process, a restart) change no job."""
    first = await world.ledger()
    await reserve(first, ALICE, "q1", 5, queued=True)
    await reserve(first, ALICE, "r1", 5)
    before = [await first.job("q1"), await first.job("r1"), await first.queue_depth()]
    await first.close()
    world.opened.remove(first)
    for _ in range(2):
        again = await world.ledger()
        assert [await again.job("q1"), await again.job("r1"), await again.queue_depth()] == before
        await again.close()
        world.opened.remove(again)


def _schema_and_jobs(path: Path) -> tuple[list[Any], list[Any]]:
    conn = sqlite3.connect(path)
    try:
        schema = conn.execute("SELECT type, name, sql FROM sqlite_master ORDER BY name").fetchall()
        names = conn.execute("SELECT name, applied_at FROM _migrations ORDER BY name").fetchall()
        jobs = conn.execute("SELECT * FROM jobs ORDER BY id").fetchall()
    finally:
        conn.close()
    return schema + names, jobs


async def test_sqlite_m004_applied_twice_changes_nothing(tmp_path: Path) -> None:
    path = tmp_path / "m.sqlite3"
    store = SqliteStore(path)
    await store.open()
    await store.reserve(ALICE, "q1", 5, max_concurrent=2, lease=LEASE, generation=GEN, job=spec(), queued=True)
    await store.close()
    first = _schema_and_jobs(path)
    assert len(first[1]) == 1 and "m004_jobs" in [name for name, _ in MIGRATIONS]
    for _ in range(2):
        again = SqliteStore(path)
        await again.open()
        await again.close()
        conn = sqlite3.connect(path)
        assert apply_migrations(conn) == []
        conn.close()
    assert _schema_and_jobs(path) == first


async def test_sqlite_m004_upgrades_a_database_with_a_reservation_in_flight(tmp_path: Path) -> None:
    """A database from before jobs: its held reservation has no job, so the sweep still refunds it."""
    path = tmp_path / "old.sqlite3"
    conn = old_database(path, applied=3, holder="old-holder")
    conn.close()
    now = [999.0]
    store = SqliteStore(path, clock=lambda: now[0])
    await store.open()
    try:
        assert await store.job("r1") is None and await store.queue_depth() == 0
        assert await store.claim(5, lease=LEASE) == []  # no job: nothing to resume
        assert await store.release_expired() == 0
        now[0] = 1000.0
        assert await store.release_expired() == 1
        assert await store.balance(ALICE) == 50 and await store.audit() == []
    finally:
        await store.close()


# -- conservation --------------------------------------------------------------------------------------


async def test_credits_are_conserved_through_a_random_mix_of_jobs(world: World) -> None:
    """Reserves (queued or running), claims, takeovers, settles, refunds, finishes and abandoned jobs from
    three processes; afterwards every job is done, nothing is held, and every balance equals its rows."""
    ledgers = [await world.ledger(), await world.ledger(), await world.ledger()]
    users = [Identity("discord", f"g{i % 2}", f"u{i}") for i in range(6)]
    rng = random.Random(11)
    granted = 0

    async def work(ledger: Ledger, job: JobRow) -> None:
        roll = rng.random()
        await asyncio.sleep(rng.random() * 0.003)
        if job.generation.status == "PENDING":
            if roll < 0.45:
                await ledger.settle(job.id, rng.randint(0, job.generation.credits_reserved), status="COMPLETED",
                                    images=[IMAGE])
            elif roll < 0.7:
                await ledger.refund(job.id, code="IMG-PROV-DOWN")
            elif roll < 0.8:
                return  # abandoned while running: a takeover finishes it
        if rng.random() < 0.85:
            if rng.random() < 0.2 and job.generation.status != "FAILED":
                await ledger.refund_completed(job.id, code="IMG-DELIVERY-001")
            await ledger.finish_job(job.id, "delivered")
        else:
            await ledger.renew(job.id, lease=LEASE)  # and then abandoned while delivering

    async def command(i: int) -> None:
        nonlocal granted
        ledger = ledgers[i % len(ledgers)]
        user = users[rng.randrange(len(users))]
        await asyncio.sleep(rng.random() * 0.005)
        if i % 19 == 0:
            await ledger.adjust(user, "grant", 7, actor="admin", request_id=f"g{i}")
            granted += 7
            return
        if i % 23 == 0:
            world.clock.advance(LEASE / 2)  # time passes: some leases run out mid-mix
        if i % 11 == 0:
            await ledger.release_expired()
        queued = rng.random() < 0.5
        try:
            await reserve(ledger, user, f"r{i}", rng.randint(0, 12), queued=queued, max_concurrent=3, n=i)
        except (ShortBalance, TooManyJobs):
            return
        if not queued:
            job = await ledger.job(f"r{i}")
            assert job is not None
            await work(ledger, job)
        for job in await ledger.claim(rng.randint(1, 3), lease=LEASE):
            await work(ledger, job)

    await asyncio.gather(*(command(i) for i in range(300)))

    # drain: every process dies but one, which takes over whatever is left and closes it
    survivor = ledgers[0]
    for _ in range(20):
        world.clock.advance(LEASE + 1)
        await survivor.release_expired()
        left = await survivor.claim(100, lease=LEASE)
        if not left:
            break
        for job in left:
            if job.generation.status == "PENDING":
                assert (await survivor.refund(job.id, code="IMG-INTERRUPTED")).charged is True
            assert await survivor.finish_job(job.id, "refunded") is True
    assert await survivor.claim(100, lease=LEASE) == [] and await survivor.queue_depth() == 0

    total = opened = 0
    for user in users:
        assert await survivor.held(user) == 0
        rows = await survivor.ledger_rows(user)
        opened += 1 if rows else 0
        balance = await survivor.balance(user)
        consumed = sum(r["amount"] for r in rows if r["kind"] == "consume")
        refunded_after = sum(r["amount"] for r in rows if r["kind"] == "refund" and r["note"] == "IMG-DELIVERY-001")
        total += balance + consumed - refunded_after if rows else 0
        for gen in await survivor.recent_generations(user, 1000):
            closed = await survivor.job(gen.id)
            assert closed is not None and closed.state == "done" and closed.address == {}
            assert closed.state in JOB_STATES and gen.status in ("COMPLETED", "FAILED")
            assert closed.attempts >= 1
    assert total == opened * 50 + granted
    assert await survivor.audit() == []

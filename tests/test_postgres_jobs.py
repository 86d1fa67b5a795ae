"""What only PostgreSQL's job table needs proving on the real server: claims racing from several
ledger objects and from several OS processes never take one job twice (``FOR UPDATE SKIP LOCKED``),
and a claim racing the old holder's settle charges the user once.

The job contract for every engine is ``tests/test_job_contract.py``.
"""

from __future__ import annotations

import asyncio
import json
import sys
import textwrap
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import psycopg
import pytest

from bot.models import Identity
from storage.ledger import JobSpec, LedgerRefused, ShortBalance
from storage.postgres import PostgresLedger, parse_url

GEN = {"command": "imagine", "channel_id": "c1", "prompt": "a fox", "provider": "fake", "model": "m"}
LEASE = 30.0
ROOT = Path(__file__).resolve().parent.parent


class Clock:
    def __init__(self) -> None:
        self.now = 1_700_000_000.0

    def __call__(self) -> float:
        return self.now


class Ledgers:
    """Ledgers on one schema, each with its own pool and holder (another process, to the server)."""

    def __init__(self, url: str) -> None:
        self.url = url
        self.clock = Clock()
        self.opened: list[PostgresLedger] = []

    async def open(self, **kwargs: Any) -> PostgresLedger:
        ledger = PostgresLedger(self.url, clock=self.clock, **kwargs)
        await ledger.open()
        self.opened.append(ledger)
        return ledger


@pytest.fixture
async def ledgers(postgres_url: str) -> AsyncIterator[Ledgers]:
    made = Ledgers(postgres_url)
    yield made
    for ledger in made.opened:
        await ledger.close()


def _user(i: int) -> Identity:
    return Identity("discord", "g1", f"u{i % 7}")


def _spec(i: int) -> JobSpec:
    return JobSpec(payload={"kind": "imagine", "n": i}, address={"platform": "discord", "token": f"t{i}"},
                   deliver_by=2_000_000_000.0)


async def _queue(ledger: PostgresLedger, count: int, clock: Clock) -> list[str]:
    ids = []
    for i in range(count):
        clock.now += 0.001  # oldest first is observable
        await ledger.reserve(_user(i), f"r{i:03}", 2, max_concurrent=count, lease=LEASE, generation=GEN,
                             job=_spec(i), queued=True)
        ids.append(f"r{i:03}")
    return ids


async def test_many_concurrent_claims_from_two_ledgers_take_each_job_once(ledgers: Ledgers) -> None:
    a, b = await ledgers.open(), await ledgers.open()
    ids = await _queue(a, 60, ledgers.clock)
    assert await b.queue_depth() == 60 and await b.queued_ahead("r010") == 10

    got = await asyncio.gather(*(ledger.claim(3, lease=LEASE) for _ in range(20) for ledger in (a, b)))
    claimed = [(job.id, job.holder) for batch in got for job in batch]
    assert sorted(i for i, _ in claimed) == ids  # every job, each exactly once
    assert all(job.state == "running" and job.attempts == 1 for batch in got for job in batch)
    assert await a.queue_depth() == 0 and await a.claim(5, lease=LEASE) == []

    # each claimer now holds its jobs' reservations: it settles, the other is fenced off
    by = {a.holder: a, b.holder: b}
    for rid, holder in claimed:
        other = b if holder == a.holder else a
        assert (await other.settle(rid, 1, status="COMPLETED")).charged is False
        assert (await by[holder].settle(rid, 1, status="COMPLETED")).charged is True
        assert await by[holder].finish_job(rid, "delivered")
    users = {_user(i) for i in range(60)}
    assert sum([await a.balance(u) for u in users]) == 50 * len(users) - 60
    assert await a.audit() == [] and all([await a.held(u) == 0 for u in users])


async def test_claims_from_two_os_processes_never_take_one_job(ledgers: Ledgers) -> None:
    a = await ledgers.open()
    ids = await _queue(a, 80, ledgers.clock)
    script = textwrap.dedent("""
        import asyncio, json, sys
        from storage.postgres import PostgresLedger

        async def main() -> None:
            ledger = PostgresLedger(sys.argv[1], clock=lambda: 1_700_000_100.0)
            await ledger.open()
            taken = []
            try:
                while True:
                    batches = await asyncio.gather(*(ledger.claim(2, lease=30.0) for _ in range(4)))
                    got = [job.id for batch in batches for job in batch]
                    if not got:
                        break
                    taken += got
            finally:
                await ledger.close()
            print(json.dumps(taken))

        asyncio.run(main())
    """)
    procs = [await asyncio.create_subprocess_exec(sys.executable, "-c", script, ledgers.url, cwd=ROOT,
                                                  stdout=asyncio.subprocess.PIPE) for _ in range(2)]
    outs = await asyncio.wait_for(asyncio.gather(*(p.communicate() for p in procs)), 120)
    assert [p.returncode for p in procs] == [0, 0]
    taken = [json.loads(out) for out, _ in outs]
    assert sorted(taken[0] + taken[1]) == ids  # all claimed, none twice
    url, options = parse_url(ledgers.url)
    with psycopg.connect(url, autocommit=True) as conn:
        conn.execute(f'SET search_path TO "{options["schema"]}"')
        assert conn.execute("SELECT count(*) FROM jobs WHERE attempts = 1 AND state = 'running'").fetchone() == (80,)
        holders = conn.execute("SELECT count(DISTINCT r.holder) FROM reservations r JOIN jobs j ON j.id = r.id"
                               " WHERE r.holder = j.holder").fetchone()
    assert holders == (len([t for t in taken if t]),)


async def test_a_takeover_racing_the_old_holders_settle_charges_once(ledgers: Ledgers) -> None:
    a, b = await ledgers.open(), await ledgers.open()
    for i in range(30):
        await a.reserve(_user(i), f"t{i}", 3, max_concurrent=30, lease=LEASE, generation=GEN, job=_spec(i))
    ledgers.clock.now += LEASE  # a stalled: its leases ran out; its late settles race b's claims

    async def late(rid: str) -> bool:
        return (await a.settle(rid, 3, status="COMPLETED")).charged

    results = await asyncio.gather(b.claim(30, lease=LEASE), *(late(f"t{i}") for i in range(30)))
    taken = results[0]
    assert isinstance(taken, list) and {job.id for job in taken} == {f"t{i}" for i in range(30)}
    assert all(job.attempts == 2 for job in taken) and not any(results[1:])  # expired: a is fenced
    settled = [(await b.settle(f"t{i}", 3, status="COMPLETED")).charged for i in range(30)]
    assert all(settled)
    assert [(await b.job(f"t{i}")).state for i in range(30)] == ["delivering"] * 30
    users = {_user(i) for i in range(30)}
    assert sum([await a.balance(u) for u in users]) == 50 * len(users) - 90 and await a.audit() == []


async def test_a_refused_reservation_inserts_no_job_and_a_read_only_ledger_claims_nothing(
    ledgers: Ledgers,
) -> None:
    a = await ledgers.open()
    alice = Identity("slack", "T1", "alice")
    with pytest.raises(ShortBalance):
        await a.reserve(alice, "big", 51, max_concurrent=2, lease=LEASE, generation=GEN, job=_spec(0))
    assert await a.job("big") is None and await a.generation("big") is None
    await a.reserve(alice, "q1", 1, max_concurrent=1, lease=LEASE, generation=GEN, job=_spec(1), queued=True)
    ledgers.clock.now += 10 * LEASE  # a queued job's reservation stays live however long it waits
    with pytest.raises(LedgerRefused):
        await a.reserve(alice, "q2", 1, max_concurrent=1, lease=LEASE, generation=GEN, job=_spec(2), queued=True)
    assert await a.release_expired() == 0
    looker = await ledgers.open(read_only=True)
    job = await looker.job("q1")
    assert job is not None and (job.state, job.holder, job.attempts, job.address) == ("queued", "", 0,
                                                                                      {"platform": "discord",
                                                                                       "token": "t1"})
    from storage.ledger import ReadOnlyLedger

    with pytest.raises(ReadOnlyLedger):
        await looker.claim(1, lease=LEASE)
    with pytest.raises(ReadOnlyLedger):
        await looker.finish_job("q1", "told")


async def test_a_refund_leaves_the_job_to_its_worker_and_release_expired_leaves_it_to_claim(
    ledgers: Ledgers,
) -> None:
    a, b = await ledgers.open(), await ledgers.open()
    alice = Identity("slack", "T1", "alice")
    await a.reserve(alice, "j1", 5, max_concurrent=3, lease=LEASE, generation=GEN, job=_spec(1))
    await a.reserve(alice, "plain", 5, max_concurrent=3, lease=LEASE, generation=GEN)
    assert (await a.refund("j1", code="IMG-PROVIDER-001")).charged
    job = await a.job("j1")
    assert job is not None and (job.state, job.holder) == ("running", a.holder)  # its user is still to be told
    assert job.generation.status == "FAILED" and await a.balance(alice) == 45
    ledgers.clock.now += LEASE
    await a.reserve(alice, "j2", 5, max_concurrent=3, lease=LEASE, generation=GEN, job=_spec(2))
    ledgers.clock.now += LEASE
    assert await b.release_expired() == 1  # "plain" only: j2's worker died, and claim resumes it
    assert [job.id for job in await b.claim(5, lease=LEASE)] == ["j1", "j2"]
    assert not await a.finish_job("j1", "told") and await b.finish_job("j1", "told")
    assert (await b.settle("j2", 5, status="COMPLETED")).charged
    assert await b.balance(alice) == 45 and await b.held(alice) == 0 and await b.audit() == []
    done = await b.job("j1")
    assert done is not None and (done.state, done.outcome, done.address) == ("done", "told", {})


async def test_jobs_behind_pgbouncer_keep_no_session_state(ledgers: Ledgers) -> None:
    ledger = await ledgers.open()
    bouncer = PostgresLedger(ledgers.url + "&pgbouncer=true&pool_size=1", clock=ledgers.clock)
    await bouncer.open()
    ledgers.opened.append(bouncer)
    ids = await _queue(bouncer, 8, ledgers.clock)
    assert await bouncer.queue_depth() == 8 and await bouncer.queued_ahead("r007") == 7
    for _ in range(8):  # past psycopg's default prepare threshold
        [job] = await bouncer.claim(1, lease=LEASE)
        assert await bouncer.renew(job.id, lease=LEASE)
        assert (await bouncer.settle(job.id, 2, status="COMPLETED")).charged
        assert await bouncer.finish_job(job.id, "delivered")
    assert [(await ledger.job(i)).outcome for i in ids] == ["delivered"] * 8
    assert await ledger.audit() == [] and await ledger.queue_depth() == 0

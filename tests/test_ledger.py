"""The SQLite ledger on a real file: two-phase charges, admin movements, migrations, expired leases.

The cases every ledger must pass (SQLite and memory alike) are in ``test_ledger_contract.py``; these are
the SQLite-specific ones and the original regression cases."""

from __future__ import annotations

import asyncio
import sqlite3
from pathlib import Path

import pytest

from bot.models import Identity
from storage.ledger import RevokeAboveBalance, ShortBalance, TooManyJobs
from storage.sqlite import SqliteStore

ALICE = Identity("discord", "g1", "alice")
GEN = {"command": "imagine", "prompt": "a fox", "options": {"size": "256x256"}}


@pytest.fixture
async def store(tmp_path: Path):
    s = SqliteStore(tmp_path / "ledger.sqlite3", starting_credits=50)
    await s.open()
    yield s
    await s.close()


async def test_a_new_account_opens_with_its_credits_on_its_first_movement_not_on_a_look(store: SqliteStore) -> None:
    assert await store.balance(ALICE) == 50
    assert await store.ledger_rows(ALICE) == []  # a look writes nothing
    await store.reserve(ALICE, "r1", 5, max_concurrent=2, lease=60, generation=GEN)
    rows = await store.ledger_rows(ALICE)
    assert [(r["kind"], r["delta"]) for r in rows] == [("initial", 50), ("reserve", -5)]
    assert await store.balance(ALICE) == 45  # the first movement opened the account, once


async def test_reserve_then_consume_part_releases_the_rest(store: SqliteStore) -> None:
    assert await store.reserve(ALICE, "r1", 30, max_concurrent=2, lease=60, generation=GEN) == 20
    assert await store.held(ALICE) == 30
    settled = await store.settle("r1", 10, status="COMPLETED")
    assert (settled.balance, settled.consumed, settled.released) == (40, 10, 20)
    kinds = [(r["kind"], r["delta"], r["amount"]) for r in await store.ledger_rows(ALICE)]
    assert kinds == [("initial", 50, 50), ("reserve", -30, 30), ("consume", 0, 10), ("release", 20, 20)]
    assert all(r["request_id"] == "r1" for r in (await store.ledger_rows(ALICE))[1:])
    gen = await store.generation("r1")
    assert gen is not None and gen.status == "COMPLETED" and gen.credits_consumed == 10
    assert await store.audit() == []


async def test_failure_refunds_everything(store: SqliteStore) -> None:
    await store.reserve(ALICE, "r1", 30, max_concurrent=2, lease=60, generation=GEN)
    settled = await store.settle("r1", 0, status="FAILED", error_code="IMG-PROV-DOWN")
    assert settled.balance == 50 and settled.consumed == 0
    assert [r["kind"] for r in await store.ledger_rows(ALICE)][-1] == "refund"
    gen = await store.generation("r1")
    assert gen is not None and (gen.status, gen.error_code) == ("FAILED", "IMG-PROV-DOWN")


async def test_settling_twice_charges_once(store: SqliteStore) -> None:
    await store.reserve(ALICE, "r1", 10, max_concurrent=2, lease=60, generation=GEN)
    await store.settle("r1", 10, status="COMPLETED")
    again = await store.settle("r1", 10, status="COMPLETED")
    assert again.charged is False and again.balance == 40
    assert await store.audit() == []


async def test_short_balance_is_refused_and_changes_nothing(store: SqliteStore) -> None:
    await store.adjust(ALICE, "grant", 1, actor="admin", request_id="a0")
    with pytest.raises(ShortBalance) as err:
        await store.reserve(ALICE, "r1", 52, max_concurrent=2, lease=60, generation=GEN)
    assert err.value.balance == 51 and err.value.needed == 52
    assert await store.balance(ALICE) == 51
    assert await store.generation("r1") is None
    assert [r["kind"] for r in await store.ledger_rows(ALICE)] == ["initial", "grant"]


async def test_concurrent_jobs_limit_counts_held_reservations(store: SqliteStore) -> None:
    await store.reserve(ALICE, "r1", 1, max_concurrent=2, lease=60, generation=GEN)
    await store.reserve(ALICE, "r2", 1, max_concurrent=2, lease=60, generation=GEN)
    with pytest.raises(TooManyJobs) as err:
        await store.reserve(ALICE, "r3", 1, max_concurrent=2, lease=60, generation=GEN)
    assert (err.value.running, err.value.limit) == (2, 2)
    assert await store.balance(ALICE) == 48
    await store.settle("r1", 1, status="COMPLETED")
    await store.reserve(ALICE, "r3", 1, max_concurrent=2, lease=60, generation=GEN)


async def test_admin_movements_and_refused_revoke(store: SqliteStore) -> None:
    assert await store.adjust(ALICE, "grant", 100, actor="admin", request_id="a1") == (50, 150)
    assert await store.adjust(ALICE, "revoke", 20, actor="admin", request_id="a2") == (150, 130)
    with pytest.raises(RevokeAboveBalance) as err:
        await store.adjust(ALICE, "revoke", 131, actor="admin", request_id="a3")
    assert (err.value.amount, err.value.balance) == (131, 130)
    assert await store.adjust(ALICE, "set", 0, actor="admin", request_id="a4") == (130, 0)
    rows = await store.ledger_rows(ALICE)
    assert [(r["kind"], r["delta"], r["actor"]) for r in rows[1:]] == [
        ("grant", 100, "admin"), ("revoke", -20, "admin"), ("set", -130, "admin")
    ]
    assert await store.audit() == []


async def test_the_database_itself_refuses_a_negative_balance(store: SqliteStore, tmp_path: Path) -> None:
    await store.adjust(ALICE, "grant", 1, actor="admin", request_id="a1")
    conn = sqlite3.connect(tmp_path / "ledger.sqlite3")
    with pytest.raises(sqlite3.IntegrityError):
        conn.execute("UPDATE accounts SET balance = -1")
    conn.close()


async def test_expired_reservations_are_released(tmp_path: Path) -> None:
    now = [1000.0]
    store = SqliteStore(tmp_path / "ledger.sqlite3", starting_credits=50, clock=lambda: now[0])
    await store.open()
    await store.reserve(ALICE, "r1", 20, max_concurrent=2, lease=60, generation=GEN)
    now[0] += 59
    assert await store.release_expired() == 0  # not yet expired
    now[0] += 2
    assert await store.release_expired() == 1
    assert await store.balance(ALICE) == 50
    gen = await store.generation("r1")
    assert gen is not None and (gen.status, gen.error_code) == ("FAILED", "IMG-INTERRUPTED")
    late = await store.settle("r1", 20, status="COMPLETED")
    assert late.charged is False and await store.balance(ALICE) == 50
    await store.close()


async def test_migrations_are_recorded_and_run_once(tmp_path: Path) -> None:
    path = tmp_path / "m.sqlite3"
    for _ in range(2):
        s = SqliteStore(path)
        await s.open()
        await s.close()
    conn = sqlite3.connect(path)
    assert [r[0] for r in conn.execute("SELECT name FROM _migrations")] == [
        "m001_initial", "m002_usage_tokens", "m003_leases", "m004_jobs", "m005_settings_history", "m006_proposals"
    ]
    assert conn.execute("PRAGMA journal_mode").fetchone()[0] == "wal"
    conn.close()


async def test_prompts_are_stored_as_data_never_as_sql(store: SqliteStore) -> None:
    evil = "'); DROP TABLE accounts; --"
    await store.reserve(ALICE, "r1", 1, max_concurrent=2, lease=60, generation={**GEN, "prompt": evil})
    gen = await store.generation("r1")
    assert gen is not None and gen.prompt == evil
    assert await store.balance(ALICE) == 49


async def test_a_refused_write_in_a_group_commit_leaves_the_others_whole(store: SqliteStore) -> None:
    """Writes that arrive together share one transaction; a refused one must not undo or skew the rest."""
    users = [Identity("discord", "g1", f"u{i}") for i in range(6)]
    for i, user in enumerate(users):
        await store.adjust(user, "set", 50, actor="admin", request_id=f"open{i}")  # 50 each

    async def attempt(i: int) -> int | Exception:
        amount = 60 if i % 3 == 1 else 20  # every third asks for more than it has
        try:
            return await store.reserve(users[i], f"g{i}", amount, max_concurrent=2, lease=60, generation=GEN)
        except ShortBalance as exc:
            return exc

    outcomes = await asyncio.gather(*(attempt(i) for i in range(6)))
    assert [o if isinstance(o, int) else "refused" for o in outcomes] == [30, "refused", 30, 30, "refused", 30]
    for i, user in enumerate(users):
        refused = i % 3 == 1
        assert await store.balance(user) == (50 if refused else 30)
        kinds = [r["kind"] for r in await store.ledger_rows(user)]
        assert kinds == (["initial", "set"] if refused else ["initial", "set", "reserve"])
        gen = await store.generation(f"g{i}")
        assert (gen is None) == refused
    assert await store.audit() == []


async def test_a_new_user_charged_in_one_step_gets_the_starting_credits_first(store: SqliteStore) -> None:
    bob = Identity("slack", "T1", "bob")
    assert await store.reserve(bob, "b1", 10, max_concurrent=2, lease=60, generation=GEN) == 40
    kinds = [(r["kind"], r["delta"]) for r in await store.ledger_rows(bob)]
    assert kinds == [("initial", 50), ("reserve", -10)]
    carol = Identity("slack", "T1", "carol")
    with pytest.raises(ShortBalance):
        await store.reserve(carol, "c1", 80, max_concurrent=2, lease=60, generation=GEN)
    assert await store.ledger_rows(carol) == []  # a refusal changes nothing, not even an account

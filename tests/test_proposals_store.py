"""Proposals in the ledger (issue 13, "confirm before spending"): every case runs against SQLite on a real
file, memory and PostgreSQL on the real server (a schema of its own), through the ledger contract's
``World``; and a database as m005 left it upgrades to m006 in place, keeping every row.

What a user would notice: the command they confirm is exactly the one they were shown, wherever the click
lands; it runs once however often (or wherever) Confirm is clicked; nobody else can confirm it for them;
a proposal left too long is gone; nothing is stored from a proposal that cannot be stored.
"""

from __future__ import annotations

import asyncio
import math
import sqlite3
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import psycopg
import pytest
from psycopg import sql

from bot.errors import StorageError
from bot.models import Identity
from storage.ledger import PROPOSAL_SWEEP, DuplicateRequest, Ledger, ReadOnlyLedger
from storage.migrations import MIGRATIONS
from storage.migrations_pg import MIGRATIONS as PG_MIGRATIONS
from storage.postgres import PostgresLedger, parse_url
from storage.sqlite import SqliteStore
from tests import test_ledger_contract as contract
from tests.test_ledger_contract import World, old_database

#: The ledger contract's parametrized fixture (sqlite, memory, postgres), used here under its own name.
world = contract.world

ALICE = Identity("discord", "g1", "alice")
TTL = 300.0
PAYLOAD: dict[str, Any] = {
    "kind": "imagine", "prompt": "a fox'); DROP TABLE proposals; --", "options": {"count": 4, "quality": "high"},
    "generation_id": None, "index": 0, "op": "", "price": 80, "ratio": 1.5, "moderated": True,
}


def stored(world: World) -> set[str]:
    """The proposal ids the database holds, looked at from outside the ledger (expired ones included)."""
    if world.kind == "memory":
        return set(world.memory.proposals)
    if world.kind == "sqlite":
        lite = sqlite3.connect(world.path)
        try:
            return {str(r[0]) for r in lite.execute("SELECT id FROM proposals")}
        finally:
            lite.close()
    with _schema(world.url) as conn:
        return {str(r[0]) for r in conn.execute("SELECT id FROM proposals")}


async def test_a_proposal_round_trips_across_processes_and_is_taken_once(world: World) -> None:
    asker, clicked = await world.ledger(), await world.ledger()
    await asker.save_proposal("p1", ALICE, PAYLOAD, expires_at=world.clock.now + TTL)
    taken = await clicked.take_proposal("p1", ALICE)
    assert taken == PAYLOAD
    assert [type(taken[k]) for k in ("index", "ratio", "moderated")] == [int, float, bool]
    assert await clicked.take_proposal("p1", ALICE) is None
    assert await asker.take_proposal("p1", ALICE) is None
    assert await asker.take_proposal("never-saved", ALICE) is None
    assert stored(world) == set()


async def test_the_taken_payload_is_what_was_saved_not_the_savers_dict(world: World) -> None:
    ledger = await world.ledger()
    options = {"count": 1}
    payload: dict[str, Any] = {"kind": "upscale", "options": options}
    await ledger.save_proposal("p1", ALICE, payload, expires_at=world.clock.now + TTL)
    payload["kind"] = "changed"
    options["count"] = 9
    assert await ledger.take_proposal("p1", ALICE) == {"kind": "upscale", "options": {"count": 1}}


@pytest.mark.parametrize("stranger", [
    Identity("discord", "g1", "mallory"),   # another user in the same server
    Identity("discord", "g2", "alice"),     # the same user id in another server
    Identity("slack", "g1", "alice"),       # the same ids on another platform
])
async def test_only_its_asker_can_take_it_and_a_strangers_try_changes_nothing(
    world: World, stranger: Identity
) -> None:
    ledger, other_process = await world.ledger(), await world.ledger()
    await ledger.save_proposal("p1", ALICE, PAYLOAD, expires_at=world.clock.now + TTL)
    assert await other_process.take_proposal("p1", stranger) is None
    assert await ledger.take_proposal("p1", stranger) is None
    assert stored(world) == {"p1"}
    assert await other_process.take_proposal("p1", ALICE) == PAYLOAD


async def test_a_proposal_expires_by_the_ledgers_clock(world: World) -> None:
    ledger = await world.ledger()
    start = world.clock.now
    await ledger.save_proposal("early", ALICE, {"n": 1}, expires_at=start + 60)
    await ledger.save_proposal("late", ALICE, {"n": 2}, expires_at=start + 60)
    world.clock.advance(59.5)
    assert await ledger.take_proposal("early", ALICE) == {"n": 1}
    world.clock.advance(0.5)  # exactly at expires_at: too late
    assert await ledger.take_proposal("late", ALICE) is None
    world.clock.advance(3600)
    assert await ledger.take_proposal("late", ALICE) is None


async def test_a_live_id_is_a_duplicate_and_the_first_proposal_stays(world: World) -> None:
    ledger, other_process = await world.ledger(), await world.ledger()
    await ledger.save_proposal("p1", ALICE, PAYLOAD, expires_at=world.clock.now + TTL)
    mallory = Identity("discord", "g1", "mallory")
    for saver, who in ((ledger, ALICE), (other_process, mallory)):
        with pytest.raises(DuplicateRequest) as refused:
            await saver.save_proposal("p1", who, {"kind": "other"}, expires_at=world.clock.now + 10 * TTL)
        assert refused.value.request_id == "p1"
    assert await other_process.take_proposal("p1", mallory) is None
    assert await other_process.take_proposal("p1", ALICE) == PAYLOAD


async def test_an_expired_proposals_id_is_free_again(world: World) -> None:
    ledger = await world.ledger()
    await ledger.save_proposal("p1", ALICE, {"n": 1}, expires_at=world.clock.now + 60)
    world.clock.advance(60)
    bob = Identity("slack", "T1", "bob")
    await ledger.save_proposal("p1", bob, {"n": 2}, expires_at=world.clock.now + 60)
    assert await ledger.take_proposal("p1", ALICE) is None
    assert await ledger.take_proposal("p1", bob) == {"n": 2}


async def test_ten_concurrent_takes_from_two_processes_get_it_exactly_once(world: World) -> None:
    first, second = await world.ledger(), await world.ledger()
    for i in range(3):
        await first.save_proposal(f"p{i}", ALICE, {**PAYLOAD, "index": i}, expires_at=world.clock.now + TTL)
    for i in range(3):
        takers = [(first if n % 2 else second).take_proposal(f"p{i}", ALICE) for n in range(10)]
        results = await asyncio.gather(*takers)
        assert [r for r in results if r is not None] == [{**PAYLOAD, "index": i}]
    assert stored(world) == set()


async def test_saves_sweep_expired_proposals_and_keep_live_ones(world: World) -> None:
    ledger = await world.ledger()
    start = world.clock.now
    for i in range(5):
        await ledger.save_proposal(f"old{i}", ALICE, {"i": i}, expires_at=start + 10)
    await ledger.save_proposal("live", ALICE, {"i": "live"}, expires_at=start + TTL)
    world.clock.advance(10)
    assert stored(world) == {f"old{i}" for i in range(5)} | {"live"}  # a take never sweeps
    assert await ledger.take_proposal("old0", ALICE) is None
    await ledger.save_proposal("new", ALICE, {"i": "new"}, expires_at=world.clock.now + TTL)
    assert stored(world) == {"live", "new"}
    assert await ledger.take_proposal("live", ALICE) == {"i": "live"}


async def test_one_save_sweeps_a_bounded_number_of_expired_proposals(world: World) -> None:
    ledger = await world.ledger()
    start = world.clock.now
    for i in range(PROPOSAL_SWEEP + 5):
        await ledger.save_proposal(f"old{i:03}", ALICE, {}, expires_at=start + 1 + i * 0.001)
    world.clock.advance(10)
    await ledger.save_proposal("a", ALICE, {}, expires_at=world.clock.now + TTL)
    assert stored(world) == {f"old{i:03}" for i in range(PROPOSAL_SWEEP, PROPOSAL_SWEEP + 5)} | {"a"}  # oldest first
    await ledger.save_proposal("b", ALICE, {}, expires_at=world.clock.now + TTL)
    assert stored(world) == {"a", "b"}


@pytest.mark.parametrize(("proposal_id", "payload", "expires_in"), [
    ("p1", {"bad": object()}, TTL),
    ("p1", {"bad": {1, 2}}, TTL),
    ("p1", {"bad": math.nan}, TTL),
    ("p1", {"bad": b"bytes"}, TTL),
    ("p1", ["not", "a", "mapping"], TTL),
    ("p1", {"kind": "imagine"}, math.inf),
    ("p1", {"kind": "imagine"}, math.nan),
    ("", {"kind": "imagine"}, TTL),
])
async def test_a_proposal_that_cannot_be_stored_writes_nothing(
    world: World, proposal_id: str, payload: Any, expires_in: float
) -> None:
    ledger = await world.ledger()
    await ledger.save_proposal("kept", ALICE, {"n": 1}, expires_at=world.clock.now + 60)
    world.clock.advance(60)  # "kept" is expired: a save that fails must not even sweep it
    with pytest.raises((TypeError, ValueError)):
        await ledger.save_proposal(proposal_id, ALICE, payload, expires_at=world.clock.now + expires_in)
    assert stored(world) == {"kept"}
    await ledger.save_proposal("p1", ALICE, {"kind": "imagine"}, expires_at=world.clock.now + TTL)
    assert await ledger.take_proposal("p1", ALICE) == {"kind": "imagine"}


async def test_read_only_ledgers_neither_save_nor_take(world: World) -> None:
    ledger = await world.ledger()
    await ledger.save_proposal("p1", ALICE, PAYLOAD, expires_at=world.clock.now + TTL)
    look = await world.ledger(read_only=True)
    with pytest.raises(ReadOnlyLedger):
        await look.save_proposal("p2", ALICE, PAYLOAD, expires_at=world.clock.now + TTL)
    with pytest.raises(ReadOnlyLedger):
        await look.take_proposal("p1", ALICE)
    assert await ledger.take_proposal("p1", ALICE) == PAYLOAD


# -- upgrades: a database as m005 left it ------------------------------------------------------------


async def _m006_works(store: Ledger, now: list[float]) -> None:
    """What an upgraded ledger must do: every old row kept and working, proposals stored and taken."""
    assert [r["kind"] for r in await store.ledger_rows(ALICE)] == ["initial", "reserve"]
    assert await store.balance(ALICE) == 30 and await store.held(ALICE) == 20
    assert await store.server_settings("discord:g1") == {"max_images": 2}
    assert [(r["key"], r["new"], r["actor"]) for r in await store.settings_log("discord:g1")] == [
        ("max_images", 2, "admin")]
    await store.save_proposal("p1", ALICE, PAYLOAD, expires_at=now[0] + TTL)
    assert await store.take_proposal("p1", ALICE) == PAYLOAD
    now[0] = 1000.0
    assert await store.release_expired() == 1  # the reservation in flight is still refunded
    assert await store.balance(ALICE) == 50 and await store.audit() == []


async def test_sqlite_m006_upgrades_an_m005_database_keeping_every_row(tmp_path: Path) -> None:
    path = tmp_path / "old.sqlite3"
    assert [name for name, _ in MIGRATIONS][5] == "m006_proposals"
    conn = old_database(path, applied=5, holder="old-holder")
    conn.execute("INSERT INTO server_settings VALUES ('discord:g1', 'max_images', '2', 5, 'admin')")
    conn.execute("INSERT INTO settings_log (server_key, key, old_value, new_value, actor, created_at)"
                 " VALUES ('discord:g1', 'max_images', NULL, '2', 'admin', 5)")
    conn.close()

    look = SqliteStore(path, read_only=True)  # an operator's look does not upgrade it, and says so
    with pytest.raises(StorageError, match="m006_proposals"):
        await look.open()

    now = [999.0]
    store = SqliteStore(path, clock=lambda: now[0])
    await store.open()
    try:
        await _m006_works(store, now)
    finally:
        await store.close()
    again = sqlite3.connect(path)
    try:
        assert [r[0] for r in again.execute("SELECT name FROM _migrations ORDER BY name")] == [
            name for name, _ in MIGRATIONS]
    finally:
        again.close()


@contextmanager
def _schema(url: str) -> Iterator[psycopg.Connection[Any]]:
    """A plain connection to the test's own schema, for building an old database by hand and looking in."""
    conninfo, options = parse_url(url)
    with psycopg.connect(conninfo, autocommit=True) as conn:
        conn.execute(sql.SQL("SET search_path TO {}").format(sql.Identifier(options["schema"])))
        yield conn


async def test_postgres_m006_upgrades_an_m005_database_keeping_every_row(postgres_url: str) -> None:
    assert [name for name, _ in PG_MIGRATIONS][5] == "m006_proposals"
    key = ("discord", "g1", "alice")
    with _schema(postgres_url) as conn:
        conn.execute("CREATE TABLE _migrations (name TEXT PRIMARY KEY, applied_at DOUBLE PRECISION NOT NULL)")
        for name, text in PG_MIGRATIONS[:5]:
            for statement in text.split(";"):
                if statement.strip():
                    conn.execute(statement)  # type: ignore[call-overload]  # our own constant SQL
            conn.execute("INSERT INTO _migrations VALUES (%s, 0)", (name,))
        conn.execute("INSERT INTO accounts VALUES (%s, %s, %s, 30, 0, 0)", key)
        conn.execute("INSERT INTO ledger (platform, server_id, user_id, kind, delta, amount, balance_after,"
                     " request_id, actor, note, created_at) VALUES (%s, %s, %s, 'initial', 50, 50, 50, 'initial:x',"
                     " 'system', NULL, 0), (%s, %s, %s, 'reserve', -20, 20, 30, 'r1', 'u', NULL, 1)", key + key)
        conn.execute("INSERT INTO reservations VALUES ('r1', %s, %s, %s, 20, 'held', 'old', 1, 1000, NULL)", key)
        conn.execute("INSERT INTO generations (id, platform, server_id, user_id, command, prompt, status, created_at)"
                     " VALUES ('r1', %s, %s, %s, 'imagine', 'fox', 'PENDING', 1)", key)
        conn.execute("INSERT INTO server_settings VALUES ('discord:g1', 'max_images', '2', 5, 'admin')")
        conn.execute("INSERT INTO settings_log (server_key, key, old_value, new_value, actor, created_at)"
                     " VALUES ('discord:g1', 'max_images', NULL, '2', 'admin', 5)")

    look = PostgresLedger(postgres_url, read_only=True)
    with pytest.raises(StorageError, match="m006_proposals"):
        await look.open()

    now = [999.0]
    store = PostgresLedger(postgres_url, clock=lambda: now[0])
    await store.open()
    try:
        assert store.applied == ["m006_proposals"]
        await _m006_works(store, now)
    finally:
        await store.close()

"""A user's history and deleting a result (issue 13, /history and Delete): every case runs against SQLite
on a real file, memory and PostgreSQL on the real server, through the ledger contract's ``World``; and an
existing database (as m004 left it) upgrades to m005 in place, keeping every row.

What a user would notice: pages of ten, newest first, never a result twice or missing across pages; only
their own results in this server, with their images; a deleted result gone from the list but its credits
and records untouched.
"""

from __future__ import annotations

import hashlib
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
from storage.ledger import ImageRow, Ledger, ReadOnlyLedger
from storage.migrations import MIGRATIONS
from storage.migrations_pg import MIGRATIONS as PG_MIGRATIONS
from storage.postgres import PostgresLedger, parse_url
from storage.sqlite import SqliteStore
from tests import test_ledger_contract as contract
from tests.test_ledger_contract import GEN, World, old_database

#: The ledger contract's parametrized fixture (sqlite, memory, postgres), used here under its own name.
world = contract.world

ALICE = Identity("discord", "g1", "alice")
LEASE = 30.0


def image(rid: str, i: int = 0) -> ImageRow:
    return ImageRow(hashlib.sha256(f"{rid}:{i}".encode()).hexdigest(), "image/png", 100 + i, 256, 256)


async def completed(ledger: Ledger, who: Identity, rid: str, *, images: int = 1, command: str = "imagine",
                    prompt: str = "a fox") -> list[ImageRow]:
    made = [image(rid, i) for i in range(images)]
    await ledger.reserve(who, rid, 2, max_concurrent=100, lease=LEASE,
                         generation={**GEN, "command": command, "prompt": prompt})
    settled = await ledger.settle(rid, 2, status="COMPLETED", images=made)
    assert settled.charged
    return made


async def test_history_pages_of_ten_newest_first_stable_with_their_images(world: World) -> None:
    ledger = await world.ledger(starting_credits=1000)
    made: dict[str, list[ImageRow]] = {}
    for n in range(25):
        if n % 3 == 0:
            world.clock.advance(1)  # three at a time share a created_at: ties are broken by id
        rid = f"gen-{(n * 7) % 25:02d}"  # ids not in creation order
        made[rid] = await completed(ledger, ALICE, rid, images=1 + n % 4, prompt=f"prompt {n}")
    pages = [await ledger.history(ALICE, offset=offset, limit=10) for offset in (0, 10, 20)]
    assert [len(rows) for rows, _ in pages] == [10, 10, 5]
    assert {total for _, total in pages} == {25}
    shown = [g for rows, _ in pages for g in rows]
    assert len({g.id for g in shown}) == 25
    assert [(g.created_at, g.id) for g in shown] == sorted(((g.created_at, g.id) for g in shown), reverse=True)
    for gen in shown:
        assert gen.images == tuple(made[gen.id]) and gen.image_count == len(made[gen.id])
        assert gen == await ledger.generation(gen.id)
        assert (gen.status, gen.deleted_at, gen.deleted_by) == ("COMPLETED", None, None)
    # the same pages again are the same pages; past the end is empty, with the total
    assert [await ledger.history(ALICE, offset=o, limit=10) for o in (0, 10, 20)] == pages
    assert await ledger.history(ALICE, offset=25, limit=10) == ([], 25)
    assert (await ledger.history(ALICE))[0] == pages[0][0]  # ten at a time by default
    other = await world.ledger(read_only=True)  # another process's read-only look reads the same
    assert await other.history(ALICE, offset=10, limit=10) == pages[1]


async def test_history_lists_only_this_users_shown_results_in_this_server(world: World) -> None:
    ledger = await world.ledger(starting_credits=1000)
    await completed(ledger, ALICE, "mine-1")
    world.clock.advance(1)
    await completed(ledger, ALICE, "mine-2", images=2)
    await completed(ledger, Identity("discord", "g2", "alice"), "other-server")
    await completed(ledger, Identity("slack", "g1", "alice"), "other-platform")
    await completed(ledger, Identity("discord", "g1", "bob"), "other-user")
    await completed(ledger, ALICE, "enhanced", images=0, command="enhance")  # a text result: no images
    await ledger.reserve(ALICE, "pending", 2, max_concurrent=100, lease=LEASE, generation=GEN)
    await ledger.reserve(ALICE, "failed", 2, max_concurrent=100, lease=LEASE, generation=GEN)
    await ledger.refund("failed", code="IMG-PROV-DOWN")
    await completed(ledger, ALICE, "gone")
    assert await ledger.delete_generation("gone", actor="discord:g1:alice") is True
    await completed(ledger, ALICE, "refunded-after")
    assert await ledger.refund_completed("refunded-after", code="IMG-DELIVERY-001") == 2  # it reached nobody
    rows, total = await ledger.history(ALICE)
    assert ([g.id for g in rows], total) == (["mine-2", "mine-1"], 2)
    assert await ledger.history(Identity("discord", "g1", "carol")) == ([], 0)


async def test_delete_marks_the_result_deleted_once_and_keeps_its_records(world: World) -> None:
    ledger = await world.ledger()
    made = await completed(ledger, ALICE, "r1", images=2)
    before = (await ledger.balance(ALICE), await ledger.ledger_rows(ALICE), await ledger.spent(ALICE))
    world.clock.advance(60)
    assert await ledger.delete_generation("r1", actor="discord:g1:admin") is True
    world.clock.advance(60)
    assert await ledger.delete_generation("r1", actor="discord:g1:alice") is False  # deleted already
    assert await ledger.delete_generation("no-such-id", actor="discord:g1:admin") is False
    gen = await ledger.generation("r1")
    assert gen is not None
    assert (gen.deleted_at, gen.deleted_by) == (world.clock.now - 60, "discord:g1:admin")
    assert (gen.status, gen.images, gen.credits_consumed) == ("COMPLETED", tuple(made), 2)
    assert (await ledger.balance(ALICE), await ledger.ledger_rows(ALICE), await ledger.spent(ALICE)) == before
    assert await ledger.history(ALICE) == ([], 0) and await ledger.audit() == []
    look = await world.ledger(read_only=True)
    with pytest.raises(ReadOnlyLedger):
        await look.delete_generation("r1", actor="x")


# -- upgrades: a database as m004 left it ------------------------------------------------------------


async def test_sqlite_m005_upgrades_an_m004_database_keeping_every_row(tmp_path: Path) -> None:
    path = tmp_path / "old.sqlite3"
    assert [name for name, _ in MIGRATIONS][4] == "m005_settings_history"
    conn = old_database(path, applied=4, holder="old-holder")
    key = ("discord", "g1", "alice")
    conn.execute("INSERT INTO generations (id, platform, server_id, user_id, command, prompt, status, image_count,"
                 " credits_consumed, created_at) VALUES ('done1', ?, ?, ?, 'imagine', 'owl', 'COMPLETED', 1, 0, 2)", key)
    conn.execute("INSERT INTO generation_images VALUES ('done1', 0, ?, 'image/png', 10, 64, 64)", ("cd" * 32,))
    conn.close()

    look = SqliteStore(path, read_only=True)  # an operator's look does not upgrade it, and says so
    with pytest.raises(StorageError, match="m005_settings_history"):
        await look.open()

    now = [999.0]
    store = SqliteStore(path, clock=lambda: now[0])
    await store.open()
    try:
        assert [r["kind"] for r in await store.ledger_rows(ALICE)] == ["initial", "reserve"]
        assert await store.balance(ALICE) == 30 and await store.held(ALICE) == 20
        rows, total = await store.history(ALICE)
        assert total == 1 and rows[0].id == "done1" and rows[0].deleted_at is None
        assert rows[0].images == (ImageRow("cd" * 32, "image/png", 10, 64, 64),)
        assert await store.server_settings("discord:g1") == {}
        assert await store.live_images(0.0) == {"cd" * 32}
        assert await store.change_settings("discord:g1", {"max_images": 2}, actor="a") == {"max_images": 2}
        assert await store.delete_generation("done1", actor="a") is True
        now[0] = 1000.0
        assert await store.release_expired() == 1  # the reservation in flight is still refunded
        assert await store.balance(ALICE) == 50 and await store.audit() == []
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
    """A plain connection to the test's own schema, for building an old database by hand."""
    conninfo, options = parse_url(url)
    with psycopg.connect(conninfo, autocommit=True) as conn:
        conn.execute(sql.SQL("SET search_path TO {}").format(sql.Identifier(options["schema"])))
        yield conn


async def test_postgres_m005_upgrades_an_m004_database_keeping_every_row(postgres_url: str) -> None:
    assert [name for name, _ in PG_MIGRATIONS][4] == "m005_settings_history"
    key = ("discord", "g1", "alice")
    with _schema(postgres_url) as conn:
        conn.execute("CREATE TABLE _migrations (name TEXT PRIMARY KEY, applied_at DOUBLE PRECISION NOT NULL)")
        for name, text in PG_MIGRATIONS[:4]:
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
        conn.execute("INSERT INTO generations (id, platform, server_id, user_id, command, prompt, status,"
                     " image_count, created_at) VALUES ('done1', %s, %s, %s, 'imagine', 'owl', 'COMPLETED', 1, 2)",
                     key)
        conn.execute("INSERT INTO generation_images VALUES ('done1', 0, %s, 'image/png', 10, 64, 64)", ("cd" * 32,))
        conn.execute("INSERT INTO jobs VALUES ('r1', 'queued', '{}', '{}', 0, 0, '', 0, '', 1)")

    look = PostgresLedger(postgres_url, read_only=True)
    with pytest.raises(StorageError, match="m005_settings_history"):
        await look.open()

    now = [999.0]
    store = PostgresLedger(postgres_url, clock=lambda: now[0])
    await store.open()
    try:
        assert store.applied == ["m005_settings_history", "m006_proposals"]
        assert [r["kind"] for r in await store.ledger_rows(ALICE)] == ["initial", "reserve"]
        assert await store.balance(ALICE) == 30 and await store.held(ALICE) == 20
        rows, total = await store.history(ALICE)
        assert total == 1 and rows[0].id == "done1" and rows[0].deleted_at is None
        assert rows[0].images == (ImageRow("cd" * 32, "image/png", 10, 64, 64),)
        job = await store.job("r1")
        assert job is not None and job.state == "queued" and job.generation.deleted_at is None
        assert await store.server_settings("discord:g1") == {}
        assert await store.change_settings("discord:g1", {"max_images": 2}, actor="a") == {"max_images": 2}
        assert await store.delete_generation("done1", actor="a") is True
        assert await store.audit() == []
    finally:
        await store.close()

"""The Ledger contract: every case runs against every implementation (SQLite on a real file, memory,
PostgreSQL on the real server in a schema of its own).

Two ledger objects on one storage are two processes (two lease holders) on one database. Time is an
injectable clock, so leases expire when a case says so.
"""

from __future__ import annotations

import asyncio
import random
import sqlite3
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest

from bot.errors import ConfigError
from bot.models import Identity
from storage.ledger import (
    MAX_BALANCE,
    AboveMaxBalance,
    DuplicateRequest,
    ImageRow,
    Ledger,
    ReadOnlyLedger,
    RevokeAboveBalance,
    ShortBalance,
    TooManyJobs,
    open_ledger,
)
from storage.memory import MemoryDatabase, MemoryLedger
from storage.migrations import MIGRATIONS, apply_migrations
from storage.postgres import PostgresLedger
from storage.sqlite import SqliteStore

ALICE = Identity("discord", "g1", "alice")
BOB = Identity("slack", "T1", "bob")
GEN = {"command": "imagine", "channel_id": "c1", "prompt": "a fox", "provider": "fake", "model": "m",
       "options": {"size": "256x256"}}
LEASE = 30.0


class Clock:
    def __init__(self) -> None:
        self.now = 1_700_000_000.0

    def __call__(self) -> float:
        return self.now

    def advance(self, seconds: float) -> None:
        self.now += seconds


@dataclass
class World:
    """One database; ``ledger()`` opens another process's view of it (a new holder)."""

    kind: str
    clock: Clock
    path: Path
    memory: MemoryDatabase = field(default_factory=MemoryDatabase)
    opened: list[Ledger] = field(default_factory=list)
    #: The PostgreSQL URL (its own schema) when ``kind`` is "postgres".
    url: str = ""

    async def ledger(self, *, read_only: bool = False, starting_credits: int = 50) -> Ledger:
        ledger: Ledger
        if self.kind == "sqlite":
            ledger = SqliteStore(self.path, starting_credits=starting_credits, clock=self.clock, read_only=read_only)
        elif self.kind == "postgres":
            ledger = PostgresLedger(self.url, starting_credits=starting_credits, clock=self.clock,
                                    read_only=read_only)
        else:
            ledger = MemoryLedger(starting_credits=starting_credits, clock=self.clock, read_only=read_only,
                                  database=self.memory)
        await ledger.open()
        self.opened.append(ledger)
        return ledger


@pytest.fixture(params=["sqlite", "memory", "postgres"])
async def world(request: pytest.FixtureRequest, tmp_path: Path) -> AsyncIterator[World]:
    w = World(request.param, Clock(), tmp_path / "contract.sqlite3")
    if request.param == "postgres":
        w.url = request.getfixturevalue("postgres_url")
    yield w
    for ledger in reversed(w.opened):
        await ledger.close()


async def snapshot(ledger: Ledger, *identities: Identity) -> list[Any]:
    out: list[Any] = []
    for who in identities:
        out += [await ledger.balance(who), await ledger.held(who), await ledger.ledger_rows(who),
                await ledger.recent_generations(who, 100)]
    return out


# -- the basics ----------------------------------------------------------------------------------------


async def test_implements_the_protocol(world: World) -> None:
    ledger = await world.ledger()
    assert isinstance(ledger, Ledger)
    other = await world.ledger()
    assert ledger.holder != other.holder and len(ledger.holder) >= 16


async def test_reserve_settle_release_the_rest_and_record(world: World) -> None:
    ledger = await world.ledger()
    assert await ledger.balance(ALICE) == 50 and await ledger.ledger_rows(ALICE) == []  # a look writes nothing
    assert await ledger.reserve(ALICE, "r1", 30, max_concurrent=2, lease=LEASE, generation=GEN) == 20
    assert await ledger.held(ALICE) == 30
    image = ImageRow("ab" * 32, "image/png", 100, 256, 256)
    settled = await ledger.settle("r1", 10, status="COMPLETED", provider="fake", model="m2", duration_ms=5.0,
                                  images=[image], input_tokens=7, output_tokens=3)
    assert (settled.balance, settled.consumed, settled.released, settled.charged) == (40, 10, 20, True)
    rows = await ledger.ledger_rows(ALICE)
    assert [(r["kind"], r["delta"], r["amount"], r["balance_after"]) for r in rows] == [
        ("initial", 50, 50, 50), ("reserve", -30, 30, 20), ("consume", 0, 10, 20), ("release", 20, 20, 40)
    ]
    gen = await ledger.generation("r1")
    assert gen is not None
    assert (gen.status, gen.provider, gen.model, gen.credits_reserved, gen.credits_consumed, gen.image_count) == (
        "COMPLETED", "fake", "m2", 30, 10, 1)
    assert gen.images == (image,) and gen.options == {"size": "256x256"} and gen.channel_id == "c1"
    assert await ledger.spent(ALICE) == (10, 1)
    [usage] = await ledger.usage(0)
    assert usage == {"platform": "discord", "server_id": "g1", "user_id": "alice", "provider": "fake",
                     "status": "COMPLETED", "requests": 1, "images": 1, "credits": 10, "input_tokens": 7,
                     "output_tokens": 3}
    assert await ledger.usage(0, "discord:other") == []
    assert await ledger.audit() == []


async def test_refund_gives_everything_back(world: World) -> None:
    ledger = await world.ledger()
    await ledger.reserve(ALICE, "r1", 30, max_concurrent=2, lease=LEASE, generation=GEN)
    settled = await ledger.refund("r1", code="IMG-PROV-DOWN", duration_ms=3.0)
    assert (settled.balance, settled.consumed, settled.released, settled.charged) == (50, 0, 30, True)
    assert [r["kind"] for r in await ledger.ledger_rows(ALICE)] == ["initial", "reserve", "refund"]
    gen = await ledger.generation("r1")
    assert gen is not None and (gen.status, gen.error_code) == ("FAILED", "IMG-PROV-DOWN")


# -- conservation ------------------------------------------------------------------------------------


async def test_credits_are_conserved_under_concurrency(world: World) -> None:
    """Many concurrent reserves, settles, refunds and grants from two holders; some jobs are left to expire."""
    ledgers = [await world.ledger(), await world.ledger()]
    users = [Identity("discord", f"g{i % 3}", f"u{i}") for i in range(8)]
    rng = random.Random(7)
    granted = 0

    async def job(i: int) -> None:
        nonlocal granted
        ledger = ledgers[i % 2]
        user = users[rng.randrange(len(users))]
        amount = rng.randint(0, 15)
        await asyncio.sleep(rng.random() * 0.005)
        if i % 17 == 0:
            await ledger.adjust(user, "grant", 5, actor="admin", request_id=f"g{i}")
            granted += 5
            return
        try:
            await ledger.reserve(user, f"r{i}", amount, max_concurrent=4, lease=LEASE, generation=GEN)
        except (ShortBalance, TooManyJobs):
            return
        await asyncio.sleep(rng.random() * 0.005)
        roll = rng.random()
        if roll < 0.5:
            await ledger.settle(f"r{i}", rng.randint(0, amount), status="COMPLETED")
        elif roll < 0.8:
            await ledger.refund(f"r{i}", code="IMG-PROV-DOWN")
        elif roll < 0.9:
            await ledger.renew(f"r{i}", lease=LEASE)  # and then abandoned: its lease runs out below

    await asyncio.gather(*(job(i) for i in range(400)))
    ledger = ledgers[0]
    world.clock.advance(LEASE + 1)
    await ledger.release_expired()

    total = 0
    opened = 0
    for user in users:
        assert await ledger.held(user) == 0
        rows = await ledger.ledger_rows(user)
        if rows:
            opened += 1
        balance = await ledger.balance(user)
        assert balance >= 0 and balance == (sum(r["delta"] for r in rows) if rows else 50)
        consumed = sum(r["amount"] for r in rows if r["kind"] == "consume")
        total += balance + consumed if rows else 0
        by_request: dict[str, dict[str, int]] = {}
        for r in rows:
            by_request.setdefault(r["request_id"], {})[r["kind"]] = r["amount"]
        for kinds in by_request.values():
            if "reserve" in kinds:  # every reservation is exactly consumed + released/refunded
                back = kinds.get("consume", 0) + kinds.get("release", 0) + kinds.get("refund", 0)
                assert back == kinds["reserve"]
    assert total == opened * 50 + granted
    assert await ledger.audit() == []


# -- refusals ----------------------------------------------------------------------------------------


async def test_refusals_carry_their_numbers_and_change_nothing(world: World) -> None:
    ledger = await world.ledger()
    await ledger.reserve(ALICE, "r1", 20, max_concurrent=2, lease=LEASE, generation=GEN)
    before = await snapshot(ledger, ALICE, BOB)

    with pytest.raises(ShortBalance) as short:
        await ledger.reserve(ALICE, "r2", 31, max_concurrent=2, lease=LEASE, generation=GEN)
    assert (short.value.balance, short.value.needed, short.value.code) == (30, 31, "IMG-CREDITS-001")
    await ledger.reserve(ALICE, "r3", 1, max_concurrent=2, lease=LEASE, generation=GEN)
    before = await snapshot(ledger, ALICE, BOB)
    with pytest.raises(TooManyJobs) as busy:
        await ledger.reserve(ALICE, "r4", 1, max_concurrent=2, lease=LEASE, generation=GEN)
    assert (busy.value.running, busy.value.limit, busy.value.code) == (2, 2, "IMG-RATE-003")
    with pytest.raises(DuplicateRequest):
        await ledger.reserve(BOB, "r1", 1, max_concurrent=2, lease=LEASE, generation=GEN)
    with pytest.raises(RevokeAboveBalance) as revoke:
        await ledger.adjust(ALICE, "revoke", 30, actor="admin", request_id="a1")
    assert (revoke.value.amount, revoke.value.balance) == (30, 29)
    with pytest.raises(AboveMaxBalance) as grant:
        await ledger.adjust(ALICE, "grant", MAX_BALANCE, actor="admin", request_id="a2")
    assert (grant.value.amount, grant.value.balance, grant.value.maximum) == (MAX_BALANCE, 29, MAX_BALANCE)
    with pytest.raises(AboveMaxBalance):
        await ledger.adjust(ALICE, "set", MAX_BALANCE + 1, actor="admin", request_id="a3")
    # a refusal for someone never seen opens no account
    with pytest.raises(ShortBalance):
        await ledger.reserve(BOB, "b1", 51, max_concurrent=2, lease=LEASE, generation=GEN)
    with pytest.raises(RevokeAboveBalance):
        await ledger.adjust(BOB, "revoke", 51, actor="admin", request_id="b2")
    assert await snapshot(ledger, ALICE, BOB) == before
    assert await ledger.generation("r2") is None and await ledger.generation("b1") is None
    assert await ledger.audit() == []


async def test_refusals_inside_a_crowd_leave_the_others_whole(world: World) -> None:
    ledger = await world.ledger()
    users = [Identity("discord", "g1", f"u{i}") for i in range(6)]

    async def attempt(i: int) -> int | str:
        try:
            return await ledger.reserve(users[i], f"g{i}", 60 if i % 3 == 1 else 20, max_concurrent=2,
                                        lease=LEASE, generation=GEN)
        except ShortBalance:
            return "refused"

    assert await asyncio.gather(*(attempt(i) for i in range(6))) == [30, "refused", 30, 30, "refused", 30]
    for i, user in enumerate(users):
        assert [r["kind"] for r in await ledger.ledger_rows(user)] == ([] if i % 3 == 1 else ["initial", "reserve"])


# -- leases and fencing ------------------------------------------------------------------------------


async def test_a_lease_expires_unless_renewed_and_then_is_released_once(world: World) -> None:
    ledger = await world.ledger()
    sweeper = await world.ledger()
    await ledger.reserve(ALICE, "r1", 20, max_concurrent=2, lease=LEASE, generation=GEN)
    world.clock.advance(LEASE - 1)
    assert await sweeper.release_expired() == 0
    assert await ledger.renew("r1", lease=LEASE) is True
    world.clock.advance(LEASE - 1)
    assert await sweeper.release_expired() == 0  # renewed: still alive
    world.clock.advance(2)
    assert await sweeper.release_expired() == 1
    assert await sweeper.release_expired() == 0
    assert await ledger.balance(ALICE) == 50 and await ledger.held(ALICE) == 0
    gen = await ledger.generation("r1")
    assert gen is not None and (gen.status, gen.error_code) == ("FAILED", "IMG-INTERRUPTED")
    after = await snapshot(ledger, ALICE)
    assert await ledger.renew("r1", lease=LEASE) is False
    late = await ledger.settle("r1", 20, status="COMPLETED", images=[ImageRow("cd" * 32, "image/png", 1, 1, 1)])
    assert (late.charged, late.consumed, late.released, late.balance) == (False, 0, 0, 50)
    assert (await ledger.refund("r1", code="IMG-PROV-DOWN")).charged is False
    assert await snapshot(ledger, ALICE) == after  # the late holder changed nothing
    assert await ledger.audit() == []


async def test_another_holder_can_neither_settle_nor_renew_a_live_lease(world: World) -> None:
    mine, theirs = await world.ledger(), await world.ledger()
    await mine.reserve(ALICE, "r1", 20, max_concurrent=2, lease=LEASE, generation=GEN)
    before = await snapshot(mine, ALICE)
    assert (await theirs.settle("r1", 20, status="COMPLETED")).charged is False
    assert (await theirs.refund("r1", code="X")).charged is False
    assert await theirs.renew("r1", lease=LEASE) is False
    assert await theirs.release_expired() == 0
    assert await snapshot(mine, ALICE) == before
    assert (await mine.settle("r1", 20, status="COMPLETED")).charged is True
    assert await mine.balance(ALICE) == 30


async def test_an_expired_lease_fences_its_holder_even_before_anyone_sweeps(world: World) -> None:
    mine = await world.ledger()
    await mine.reserve(ALICE, "r1", 20, max_concurrent=2, lease=LEASE, generation=GEN)
    world.clock.advance(LEASE)
    before = await snapshot(mine, ALICE)
    assert (await mine.settle("r1", 20, status="COMPLETED")).charged is False
    assert await mine.renew("r1", lease=LEASE) is False
    assert await snapshot(mine, ALICE) == before  # still held, awaiting the sweep
    assert await (await world.ledger()).release_expired() == 1
    assert await mine.balance(ALICE) == 50


async def test_the_concurrent_jobs_limit_counts_live_leases_only(world: World) -> None:
    ledger = await world.ledger()
    for rid in ("r1", "r2"):
        await ledger.reserve(ALICE, rid, 1, max_concurrent=2, lease=LEASE, generation=GEN)
    with pytest.raises(TooManyJobs):
        await ledger.reserve(ALICE, "r3", 1, max_concurrent=2, lease=LEASE, generation=GEN)
    world.clock.advance(LEASE)  # their process died: its jobs no longer count
    await ledger.reserve(ALICE, "r3", 1, max_concurrent=2, lease=LEASE, generation=GEN)


# -- idempotent movements ----------------------------------------------------------------------------


async def test_every_movement_happens_once(world: World) -> None:
    ledger = await world.ledger()
    await ledger.reserve(ALICE, "s", 10, max_concurrent=5, lease=LEASE, generation=GEN)
    await ledger.reserve(ALICE, "f", 10, max_concurrent=5, lease=LEASE, generation=GEN)
    await ledger.reserve(ALICE, "x", 10, max_concurrent=5, lease=LEASE, generation=GEN)
    assert (await ledger.settle("s", 10, status="COMPLETED")).charged is True
    assert (await ledger.refund("f", code="IMG-PROV-DOWN")).charged is True
    world.clock.advance(LEASE)
    assert await ledger.release_expired() == 1
    before = await snapshot(ledger, ALICE)
    for rid in ("s", "f", "x"):
        assert (await ledger.settle(rid, 10, status="COMPLETED")).charged is False
        assert (await ledger.refund(rid, code="IMG-PROV-DOWN")).charged is False
    assert await ledger.release_expired() == 0
    assert await snapshot(ledger, ALICE) == before

    assert await ledger.refund_completed("s", code="IMG-DELIVERY-001") == 10
    assert await ledger.refund_completed("s", code="IMG-DELIVERY-001") == 0
    assert await ledger.refund_completed("f", code="IMG-DELIVERY-001") == 0  # never completed
    assert await ledger.adjust(ALICE, "grant", 5, actor="admin", request_id="grant:1") == (50, 55)
    assert await ledger.adjust(ALICE, "grant", 5, actor="admin", request_id="grant:1") == (50, 55)  # a retry
    assert await ledger.balance(ALICE) == 55
    kinds = [(r["request_id"], r["kind"]) for r in await ledger.ledger_rows(ALICE)]
    assert len(kinds) == len(set(kinds))
    assert await ledger.audit() == []


# -- looking writes nothing --------------------------------------------------------------------------


async def test_a_read_only_ledger_reads_and_refuses_to_write(world: World) -> None:
    writer = await world.ledger()
    await writer.reserve(ALICE, "r1", 20, max_concurrent=2, lease=LEASE, generation=GEN)
    looker = await world.ledger(read_only=True)
    assert (await looker.balance(ALICE), await looker.held(ALICE)) == (30, 20)
    assert await looker.balance(BOB) == 50
    assert [g.id for g in await looker.recent_generations(ALICE)] == ["r1"]
    assert len(await looker.usage(0)) == 1
    world.clock.advance(LEASE + 1)
    with pytest.raises(ReadOnlyLedger):
        await looker.release_expired()
    with pytest.raises(ReadOnlyLedger):
        await looker.adjust(ALICE, "grant", 1, actor="admin", request_id="a1")
    assert await writer.held(ALICE) == 20


async def test_a_read_only_look_at_a_missing_sqlite_file_creates_nothing(tmp_path: Path) -> None:
    path = tmp_path / "none" / "imagebot.sqlite3"
    ledger = open_ledger(path, starting_credits=7, read_only=True)
    await ledger.open()
    try:
        assert await ledger.balance(ALICE) == 7 and await ledger.usage(0) == []
    finally:
        await ledger.close()
    assert not path.parent.exists()


# -- the engine from the URL -------------------------------------------------------------------------


def test_open_ledger_picks_the_engine_from_the_url(tmp_path: Path) -> None:
    plain = open_ledger(tmp_path / "a.sqlite3")
    assert isinstance(plain, SqliteStore) and plain.path == tmp_path / "a.sqlite3"
    absolute = open_ledger(f"sqlite:///{tmp_path}/b.sqlite3")
    assert isinstance(absolute, SqliteStore) and absolute.path == tmp_path / "b.sqlite3"
    relative = open_ledger("sqlite:///data/c.sqlite3")
    assert isinstance(relative, SqliteStore) and relative.path == Path("data/c.sqlite3")
    assert isinstance(open_ledger("memory://", starting_credits=3), MemoryLedger)
    postgres = open_ledger("postgresql://u@db/imagebot?pgbouncer=true&schema=bot", starting_credits=3)
    assert isinstance(postgres, PostgresLedger) and (postgres.schema, postgres.pgbouncer) == ("bot", True)
    assert isinstance(open_ledger("postgres://u@db/imagebot"), PostgresLedger)
    for url, words in (("postgresql+asyncpg://db/x", "PostgreSQL"), ("mysql://db", "unknown database scheme"),
                       ("sqlite:///", "needs a file path"), ("  ", "empty")):
        with pytest.raises(ConfigError, match=words):
            open_ledger(url)


# -- SQLite only: schema, migrations, durability ------------------------------------------------------


def _schema_and_data(path: Path) -> tuple[list[Any], list[Any]]:
    conn = sqlite3.connect(path)
    try:
        schema = conn.execute("SELECT type, name, sql FROM sqlite_master ORDER BY name").fetchall()
        data = [conn.execute(f"SELECT * FROM {t} ORDER BY 1").fetchall()  # noqa: S608 - our own table names
                for t in ("accounts", "ledger", "reservations", "generations", "generation_images")]
        names = conn.execute("SELECT name, applied_at FROM _migrations ORDER BY name").fetchall()
    finally:
        conn.close()
    return schema + names, data


async def test_migrations_applied_twice_change_nothing(tmp_path: Path) -> None:
    path = tmp_path / "m.sqlite3"
    store = SqliteStore(path)
    await store.open()
    await store.reserve(ALICE, "r1", 5, max_concurrent=2, lease=LEASE, generation=GEN)
    await store.close()
    first = _schema_and_data(path)
    for _ in range(2):
        again = SqliteStore(path)
        await again.open()
        await again.close()
        conn = sqlite3.connect(path)
        assert apply_migrations(conn) == []
        conn.close()
    assert _schema_and_data(path) == first
    assert [n for n, _ in first[0][-len(MIGRATIONS):]] == [name for name, _ in MIGRATIONS]


def old_database(path: Path, *, applied: int, holder: str) -> sqlite3.Connection:
    """A SQLite file as an older imagebot left it: the first ``applied`` migrations, one account (alice, 30
    credits) and one reservation ``r1`` of 20 held by ``holder`` with its PENDING generation."""
    conn = sqlite3.connect(path, isolation_level=None)
    conn.execute("CREATE TABLE _migrations (name TEXT PRIMARY KEY, applied_at REAL NOT NULL)")
    for name, sql in MIGRATIONS[:applied]:
        for statement in sql.split(";"):
            if statement.strip():
                conn.execute(statement)
        conn.execute("INSERT INTO _migrations VALUES (?, 0)", (name,))
    key = ("discord", "g1", "alice")
    conn.execute("INSERT INTO accounts VALUES (?, ?, ?, 30, 0, 0)", key)
    conn.execute("INSERT INTO ledger (platform, server_id, user_id, kind, delta, amount, balance_after, request_id,"
                 " actor, note, created_at) VALUES (?, ?, ?, 'initial', 50, 50, 50, 'initial:x', 'system', NULL, 0),"
                 " (?, ?, ?, 'reserve', -20, 20, 30, 'r1', 'u', NULL, 1)", key + key)
    conn.execute("INSERT INTO reservations VALUES ('r1', ?, ?, ?, 20, 'held', ?, 1, 1000, NULL)", (*key, holder))
    conn.execute("INSERT INTO generations (id, platform, server_id, user_id, command, prompt, status, created_at)"
                 " VALUES ('r1', ?, ?, ?, 'imagine', 'fox', 'PENDING', 1)", key)
    return conn


async def test_m003_moves_held_reservations_from_instance_names_to_leases_keeping_every_row(tmp_path: Path) -> None:
    path = tmp_path / "old.sqlite3"
    conn = old_database(path, applied=2, holder="default")
    conn.close()

    clock = Clock()
    clock.now = 999.0
    store = SqliteStore(path, clock=clock)
    await store.open()
    try:
        assert [r["kind"] for r in await store.ledger_rows(ALICE)] == ["initial", "reserve"]
        assert await store.release_expired() == 0  # its old expiry is its lease
        clock.now = 1000.0
        assert await store.release_expired() == 1
        assert await store.balance(ALICE) == 50 and await store.audit() == []
    finally:
        await store.close()
    conn = sqlite3.connect(path)
    assert conn.execute("SELECT holder FROM reservations").fetchone() == ("default",)
    with pytest.raises(sqlite3.IntegrityError):  # one row per (request id, movement kind)
        conn.execute("INSERT INTO ledger (platform, server_id, user_id, kind, delta, amount, balance_after,"
                     " request_id, actor, created_at) VALUES ('discord', 'g1', 'alice', 'refund', 20, 20, 70,"
                     " 'r1', 'system', 0)")
    conn.close()


async def test_sqlite_commits_with_synchronous_full(tmp_path: Path) -> None:
    store = SqliteStore(tmp_path / "d.sqlite3")
    await store.open()
    try:
        mode = await store._tx(lambda conn: conn.execute("PRAGMA synchronous").fetchone()[0])  # noqa: SLF001
        assert mode == 2  # FULL
    finally:
        await store.close()

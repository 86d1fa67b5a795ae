"""What only the PostgreSQL ledger needs proving, on the real server (each test in its own schema):
several processes racing for one account, migrations started at once, durability settings, PgBouncer
mode, a server that is not there, and the URL reaching it through the config.

The shared contract (every case on every engine) is ``tests/test_ledger_contract.py``.
"""

from __future__ import annotations

import asyncio
import json
import subprocess
import sys
import textwrap
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import psycopg
import pytest

from bot.errors import StorageError
from bot.models import Identity
from storage.ledger import LedgerRefused, ReadOnlyLedger, ShortBalance, TooManyJobs, open_ledger
from storage.migrations_pg import MIGRATIONS, apply_migrations
from storage.postgres import PostgresLedger, parse_url

ALICE = Identity("discord", "g1", "alice")
GEN = {"command": "imagine", "channel_id": "c1", "prompt": "a fox", "provider": "fake", "model": "m"}
LEASE = 30.0


class Ledgers:
    """Ledgers opened on one schema, each with its own pool (its own process, as far as the server
    can tell); closed at the end of the test."""

    def __init__(self, url: str) -> None:
        self.url = url
        self.opened: list[PostgresLedger] = []

    async def open(self, suffix: str = "", **kwargs: Any) -> PostgresLedger:
        ledger = PostgresLedger(self.url + suffix, **kwargs)
        await ledger.open()
        self.opened.append(ledger)
        return ledger


@pytest.fixture
async def ledgers(postgres_url: str) -> AsyncIterator[Ledgers]:
    made = Ledgers(postgres_url)
    yield made
    for ledger in made.opened:
        await ledger.close()


def _schema(url: str) -> str:
    return parse_url(url)[1]["schema"]


def _admin(url: str) -> psycopg.Connection[Any]:
    conn = psycopg.connect(parse_url(url)[0], autocommit=True)
    conn.execute(f'SET search_path TO "{_schema(url)}"')
    return conn


# -- several processes, one account ------------------------------------------------------------------


async def _race(ledgers: list[PostgresLedger], attempts: int, amount: int, limit: int) -> list[int | str]:
    async def attempt(i: int) -> int | str:
        try:
            return await ledgers[i % len(ledgers)].reserve(ALICE, f"r{i}", amount, max_concurrent=limit,
                                                           lease=LEASE, generation=GEN)
        except LedgerRefused as exc:
            return type(exc).__name__

    return list(await asyncio.gather(*(attempt(i) for i in range(attempts))))


async def test_two_processes_racing_for_a_new_account_never_pass_its_balance(ledgers: Ledgers) -> None:
    """60 reserves of 7 from two pools at once, on an account neither has opened: exactly 7 fit in 50."""
    a, b = await ledgers.open("&pool_size=8"), await ledgers.open("&pool_size=8")
    outcomes = await _race([a, b], 60, 7, 100)
    assert sum(isinstance(o, int) for o in outcomes) == 7
    assert {o for o in outcomes if isinstance(o, str)} == {ShortBalance.__name__}
    assert await a.balance(ALICE) == 1 and await b.held(ALICE) == 49
    kinds = [r["kind"] for r in await a.ledger_rows(ALICE)]
    assert kinds == ["initial"] + ["reserve"] * 7  # opened once, although every racer tried
    assert await a.audit() == []


async def test_two_processes_racing_never_pass_the_concurrent_jobs_limit(ledgers: Ledgers) -> None:
    a, b = await ledgers.open("&pool_size=8"), await ledgers.open("&pool_size=8")
    await a.adjust(ALICE, "grant", 100, actor="admin", request_id="grant:1")  # the account exists now
    outcomes = await _race([a, b], 40, 1, 3)
    assert sum(isinstance(o, int) for o in outcomes) == 3
    assert {o for o in outcomes if isinstance(o, str)} == {TooManyJobs.__name__}
    assert await a.held(ALICE) == 3 and await b.balance(ALICE) == 147


_WORKER = textwrap.dedent(
    """
    import asyncio, json, sys
    from bot.models import Identity
    from storage.ledger import LedgerRefused
    from storage.postgres import PostgresLedger

    async def main(url, tag):
        ledger = PostgresLedger(url)
        await ledger.open()
        who = Identity("discord", "g1", "alice")
        gen = {"command": "imagine", "prompt": "a fox"}
        sys.stdout.write("ready\\n"); sys.stdout.flush()
        sys.stdin.readline()  # both processes start reserving at the same moment

        async def one(i):
            try:
                await ledger.reserve(who, f"{tag}{i}", 3, max_concurrent=12, lease=60, generation=gen)
                return 1
            except LedgerRefused:
                return 0

        won = sum(await asyncio.gather(*(one(i) for i in range(30))))
        await ledger.close()
        print(json.dumps({"won": won}))

    asyncio.run(main(sys.argv[1], sys.argv[2]))
    """
)


def _two_workers(url: str) -> list[dict[str, Any]]:
    """Start both workers, let them reserve at the same moment, and collect what each won."""
    root = Path(__file__).resolve().parents[1]
    procs = [
        subprocess.Popen([sys.executable, "-c", _WORKER, url, tag], cwd=root,
                         stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
        for tag in ("a", "b")
    ]
    try:
        for proc in procs:
            assert proc.stdout is not None and proc.stdout.readline().strip() == "ready"
        for proc in procs:
            assert proc.stdin is not None
            proc.stdin.write("go\n")
            proc.stdin.flush()
        results = [json.loads(proc.communicate(timeout=60)[0].strip().splitlines()[-1]) for proc in procs]
    finally:
        for proc in procs:
            if proc.poll() is None:
                proc.kill()
    assert all(proc.returncode == 0 for proc in procs)
    return results


async def test_two_os_processes_share_the_balance_and_the_limit(postgres_url: str) -> None:
    """Real processes, each with its own pool, 30 reserves of 3 each at once: the limit (12) binds
    before the balance (50 allows 16), across both."""
    results = await asyncio.to_thread(_two_workers, postgres_url + "&pool_size=6")
    assert sum(r["won"] for r in results) == 12
    ledger = PostgresLedger(postgres_url)
    await ledger.open()
    try:
        assert (await ledger.balance(ALICE), await ledger.held(ALICE)) == (14, 36)
        assert await ledger.audit() == []
    finally:
        await ledger.close()


async def test_two_sweepers_release_each_expired_reservation_once(ledgers: Ledgers) -> None:
    clock = _Clock()
    owner = await ledgers.open(clock=clock)
    for i in range(20):
        await owner.reserve(Identity("discord", "g1", f"u{i % 4}"), f"r{i}", 2, max_concurrent=10, lease=LEASE,
                            generation=GEN)
    clock.now += LEASE
    sweepers = [await ledgers.open(clock=clock) for _ in range(3)]
    counts = await asyncio.gather(*(s.release_expired() for _ in range(3) for s in sweepers))
    assert sum(counts) == 20
    for i in range(4):
        user = Identity("discord", "g1", f"u{i}")
        assert (await owner.balance(user), await owner.held(user)) == (50, 0)
    assert await owner.audit() == []


class _Clock:
    def __init__(self) -> None:
        self.now = 1_700_000_000.0

    def __call__(self) -> float:
        return self.now


# -- migrations ----------------------------------------------------------------------------------------


def _schema_and_data(url: str) -> tuple[list[Any], list[Any]]:
    schema = _schema(url)
    with _admin(url) as conn:
        shape = conn.execute(
            "SELECT table_name, column_name, data_type, is_nullable, column_default FROM information_schema.columns"
            " WHERE table_schema = %s ORDER BY 1, 2", (schema,)).fetchall()
        shape += conn.execute("SELECT indexname, indexdef FROM pg_indexes WHERE schemaname = %s ORDER BY 1",
                              (schema,)).fetchall()
        data = [conn.execute(f"SELECT * FROM {t} ORDER BY 1").fetchall()  # noqa: S608 - our own table names
                for t in ("accounts", "ledger", "reservations", "generations", "generation_images", "_migrations")]
    return shape, data


async def test_migrations_started_at_once_by_several_ledgers_apply_once(ledgers: Ledgers) -> None:
    opened = await asyncio.gather(*(ledgers.open() for _ in range(4)))
    applied = [name for ledger in opened for name in ledger.applied]
    assert sorted(applied) == sorted(name for name, _ in MIGRATIONS)  # each by exactly one of them
    with _admin(ledgers.url) as conn:
        names = [r[0] for r in conn.execute("SELECT name FROM _migrations ORDER BY applied_at").fetchall()]
    assert names == [name for name, _ in MIGRATIONS]
    await opened[0].reserve(ALICE, "r1", 5, max_concurrent=2, lease=LEASE, generation=GEN)
    assert await opened[3].held(ALICE) == 5


async def test_migrations_applied_twice_change_nothing(ledgers: Ledgers) -> None:
    first_ledger = await ledgers.open()
    await first_ledger.reserve(ALICE, "r1", 5, max_concurrent=2, lease=LEASE, generation=GEN)
    first = _schema_and_data(ledgers.url)
    assert len(first[1][-1]) == len(MIGRATIONS)
    for _ in range(2):
        again = await ledgers.open()
        assert again.applied == []
        async with await psycopg.AsyncConnection.connect(parse_url(ledgers.url)[0], autocommit=True) as conn:
            await conn.execute(f'SET search_path TO "{_schema(ledgers.url)}"')
            assert await apply_migrations(conn) == []
    assert _schema_and_data(ledgers.url) == first


async def test_m003_keeps_rows_held_under_an_instance_name_as_their_holder(postgres_url: str) -> None:
    with _admin(postgres_url) as conn:
        conn.execute("CREATE TABLE _migrations (name TEXT PRIMARY KEY, applied_at DOUBLE PRECISION NOT NULL)")
        for name, sql in MIGRATIONS[:2]:
            for statement in sql.split(";"):
                if statement.strip():
                    conn.execute(statement)  # type: ignore[call-overload]
            conn.execute("INSERT INTO _migrations VALUES (%s, 0)", (name,))
        key = ("discord", "g1", "alice")
        conn.execute("INSERT INTO accounts VALUES (%s, %s, %s, 30, 0, 0)", key)
        conn.execute("INSERT INTO ledger (platform, server_id, user_id, kind, delta, amount, balance_after,"
                     " request_id, actor, note, created_at) VALUES (%s, %s, %s, 'initial', 50, 50, 50, 'initial:x',"
                     " 'system', NULL, 0), (%s, %s, %s, 'reserve', -20, 20, 30, 'r1', 'u', NULL, 1)", key + key)
        conn.execute("INSERT INTO reservations VALUES ('r1', %s, %s, %s, 20, 'held', 'default', 1, 1000, NULL)", key)
        conn.execute("INSERT INTO generations (id, platform, server_id, user_id, command, prompt, status, created_at)"
                     " VALUES ('r1', %s, %s, %s, 'imagine', 'fox', 'PENDING', 1)", key)
    clock = _Clock()
    clock.now = 999.0
    store = PostgresLedger(postgres_url, clock=clock)
    await store.open()
    try:
        assert store.applied == ["m003_leases", "m004_jobs", "m005_settings_history", "m006_proposals"]
        assert [r["kind"] for r in await store.ledger_rows(ALICE)] == ["initial", "reserve"]
        assert await store.release_expired() == 0  # its old expiry is its lease
        clock.now = 1000.0
        assert await store.release_expired() == 1
        assert await store.balance(ALICE) == 50 and await store.audit() == []
    finally:
        await store.close()
    with _admin(postgres_url) as conn:
        assert conn.execute("SELECT holder FROM reservations").fetchone() == ("default",)
        with pytest.raises(psycopg.errors.UniqueViolation):  # one row per (request id, movement kind)
            conn.execute("INSERT INTO ledger (platform, server_id, user_id, kind, delta, amount, balance_after,"
                         " request_id, actor, created_at) VALUES ('discord', 'g1', 'alice', 'refund', 20, 20, 70,"
                         " 'r1', 'system', 0)")


# -- durability, PgBouncer, read-only, a missing server ----------------------------------------------


async def _show(ledger: PostgresLedger, setting: str, *, in_transaction: bool = False) -> str:
    assert ledger._pool is not None  # noqa: SLF001
    async with ledger._pool.connection() as conn:  # noqa: SLF001
        if in_transaction and ledger.pgbouncer:
            async with conn.transaction():
                await conn.execute(ledger._settings_sql(local=True))  # noqa: SLF001
                row = await (await conn.execute(f"SHOW {setting}")).fetchone()  # type: ignore[call-overload]
        else:
            row = await (await conn.execute(f"SHOW {setting}")).fetchone()  # type: ignore[call-overload]
    assert row is not None
    return str(row[0])


async def test_synchronous_commit_is_on_whatever_the_connection_asked(ledgers: Ledgers) -> None:
    ledger = await ledgers.open("&options=-c%20synchronous_commit%3Doff")
    assert await _show(ledger, "synchronous_commit") == "on"
    assert await _show(ledger, "search_path") == _schema(ledgers.url)


async def test_pgbouncer_mode_prepares_nothing_and_keeps_no_session_state(ledgers: Ledgers) -> None:
    ledger = await ledgers.open("&pgbouncer=true&pool_size=1")
    for i in range(8):  # past psycopg's default prepare threshold (5 runs of one query)
        await ledger.reserve(ALICE, f"r{i}", 1, max_concurrent=10, lease=LEASE, generation=GEN)
        await ledger.settle(f"r{i}", 1, status="COMPLETED")
        await ledger.balance(ALICE)
    assert await ledger.balance(ALICE) == 42 and await ledger.audit() == []
    assert ledger._pool is not None  # noqa: SLF001
    async with ledger._pool.connection() as conn:  # noqa: SLF001
        assert conn.prepare_threshold is None
        prepared = await (await conn.execute("SELECT count(*) FROM pg_prepared_statements")).fetchone()
        assert prepared == (0,)
    # nothing set on the session (a PgBouncer server connection is shared); each transaction sets it
    assert await _show(ledger, "search_path") != _schema(ledgers.url)
    assert await _show(ledger, "search_path", in_transaction=True) == _schema(ledgers.url)
    assert await _show(ledger, "synchronous_commit", in_transaction=True) == "on"
    with _admin(ledgers.url) as admin:  # the rows are in the ledger's own schema
        assert admin.execute("SELECT count(*) FROM ledger").fetchone() == (17,)
        assert admin.execute("SELECT count(*) FROM _migrations").fetchone() == (len(MIGRATIONS),)


async def test_a_read_only_look_at_an_empty_database_creates_nothing(postgres_url: str) -> None:
    looker = PostgresLedger(postgres_url, starting_credits=7, read_only=True)
    await looker.open()
    try:
        assert await looker.balance(ALICE) == 7 and await looker.usage(0) == [] and await looker.audit() == []
        assert await looker.held(ALICE) == 0 and await looker.recent_generations(ALICE) == []
        with pytest.raises(ReadOnlyLedger):
            await looker.release_expired()
    finally:
        await looker.close()
    with _admin(postgres_url) as conn:
        assert conn.execute("SELECT to_regclass('_migrations')").fetchone() == (None,)


async def test_a_read_only_look_cannot_write_even_by_accident(ledgers: Ledgers) -> None:
    await ledgers.open()
    looker = await ledgers.open(read_only=True)
    assert await _show(looker, "default_transaction_read_only") == "on"


async def test_a_server_that_is_not_there_is_a_clear_error_without_the_password() -> None:
    ledger = open_ledger("postgresql://imagebot:s3cret@127.0.0.1:1/imagebot")
    assert isinstance(ledger, PostgresLedger)
    ledger.connect_timeout = 1.0
    with pytest.raises(StorageError) as failed:
        await ledger.open()
    assert "127.0.0.1:1/imagebot" in str(failed.value) and "s3cret" not in str(failed.value)


def test_imagebots_own_url_parameters_stay_out_of_libpq() -> None:
    conninfo, ours = parse_url("postgres://u@db:6432/bot?sslmode=require&pgbouncer=true&schema=s&pool_size=4")
    assert conninfo == "postgresql://u@db:6432/bot?sslmode=require"
    assert ours == {"pgbouncer": "true", "schema": "s", "pool_size": "4"}
    for bad in ("schema=a;drop", "pool_size=many"):
        with pytest.raises(Exception, match="IMAGEBOT_DATABASE"):
            PostgresLedger(f"postgresql://u@db/bot?{bad}")


async def test_imagebot_database_selects_postgres_through_the_config(postgres_url: str, tmp_path: Path) -> None:
    from bot.app import build_ledger
    from bot.config import load_config

    (tmp_path / "imagebot.toml").write_text("")
    config = load_config(env={"IMAGEBOT_DATABASE": postgres_url, "IMAGEBOT_DATA_DIR": str(tmp_path)},
                         path=tmp_path / "imagebot.toml")
    ledger = build_ledger(config)
    assert isinstance(ledger, PostgresLedger)
    await ledger.open()
    try:
        assert await ledger.reserve(ALICE, "r1", 5, max_concurrent=2, lease=LEASE, generation=GEN) == 45
    finally:
        await ledger.close()
    looker = build_ledger(config, read_only=True)
    await looker.open()
    try:
        assert await looker.held(ALICE) == 5
    finally:
        await looker.close()

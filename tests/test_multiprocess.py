"""Several bot processes on one SQLite file: credits stay exact across processes."""

from __future__ import annotations

import os
import sqlite3
import subprocess
import sys
import textwrap
import threading
import time
from pathlib import Path

import pytest

from storage.sqlite import _while_locked

ROOT = Path(__file__).resolve().parents[1]

WORKER = textwrap.dedent(
    """
    import asyncio, random, sys
    from pathlib import Path
    from bot.errors import UserError
    from bot.models import ImagineOptions
    from tests.doubles import ScriptedProvider, ctx_for, make_config, make_core, random_failures
    from bot.errors import ProviderUnavailable

    async def main():
        tmp, instance = Path(sys.argv[1]), sys.argv[2]
        flaky = ScriptedProvider(max_per_call=1, behaviour=random_failures(0.25, sum(map(ord, instance)),
                                                                          lambda: ProviderUnavailable("down")))
        core = make_core(make_config(tmp, IMAGEBOT_STARTING_CREDITS="60",
                                     IMAGEBOT_MAX_CONCURRENT="10"), [flaky])
        rng = random.Random(instance)
        async with core:
            async def one(i):
                try:
                    await core.imagine(ctx_for(f"u{i % 5}"), ImagineOptions(prompt=f"{instance} {i}",
                                       size="256x256", count=rng.randint(1, 3)))
                except UserError:
                    pass
            await asyncio.gather(*(one(i) for i in range(60)))
        print("done", flush=True)

    asyncio.run(main())
    """
)


def test_two_processes_share_one_ledger_without_losing_a_credit(tmp_path: Path) -> None:
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    procs = [
        subprocess.Popen([sys.executable, "-c", WORKER, str(tmp_path), name], cwd=tmp_path, env=env,
                         stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        for name in ("worker-a", "worker-b")
    ]
    for proc in procs:
        out, err = proc.communicate(timeout=120)
        assert proc.returncode == 0, err[-2000:]
        assert out.strip() == "done"

    conn = sqlite3.connect(tmp_path / "imagebot.sqlite3")
    accounts, total, lowest = conn.execute("SELECT COUNT(*), SUM(balance), MIN(balance) FROM accounts").fetchone()
    consumed = conn.execute("SELECT COALESCE(SUM(amount), 0) FROM ledger WHERE kind = 'consume'").fetchone()[0]
    assert accounts == 5 and lowest >= 0
    assert total + consumed == 5 * 60
    assert consumed > 0
    mismatch = conn.execute(
        "SELECT a.user_id FROM accounts a JOIN ledger l USING (platform, server_id, user_id)"
        " GROUP BY a.platform, a.server_id, a.user_id HAVING MAX(a.balance) != SUM(l.delta)"
    ).fetchall()
    assert mismatch == []
    assert conn.execute("SELECT COUNT(*) FROM reservations WHERE status = 'held'").fetchone()[0] == 0
    conn.close()


OPENER = textwrap.dedent(
    """
    import asyncio, sys, time
    from pathlib import Path
    from bot.models import Identity
    from storage.sqlite import SqliteStore

    async def main():
        path, start, name = Path(sys.argv[1]), float(sys.argv[2]), sys.argv[3]
        await asyncio.sleep(max(0.0, start - time.time()))  # every process opens the new file at once
        store = SqliteStore(path, starting_credits=10)
        await store.open()
        try:
            await store.reserve(Identity("test", "s1", name), f"r-{name}", 3, max_concurrent=5, lease=30.0,
                                generation={"command": "imagine", "prompt": name})
            await store.settle(f"r-{name}", 3, status="COMPLETED")
        finally:
            await store.close()
        print("done", flush=True)

    asyncio.run(main())
    """
)


def test_processes_that_open_one_new_ledger_file_at_once_all_start(tmp_path: Path) -> None:
    """Two replicas started together on a new file: switching it to WAL can be refused at once, without
    the busy timeout, when SQLite sees a possible deadlock; neither may fail to start."""
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    for round_ in range(2):
        path = tmp_path / f"round-{round_}.sqlite3"
        start = time.time() + 1.5
        procs = [subprocess.Popen([sys.executable, "-c", OPENER, str(path), str(start), f"p{i}"], cwd=tmp_path,
                                  env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
                 for i in range(6)]
        for proc in procs:
            out, err = proc.communicate(timeout=60)
            assert proc.returncode == 0, err[-2000:]
            assert out.strip() == "done"
        with sqlite3.connect(path) as conn:
            assert conn.execute("PRAGMA journal_mode").fetchone()[0] == "wal"
            assert conn.execute("SELECT COUNT(*), SUM(balance) FROM accounts").fetchone() == (6, 6 * 7)
        conn.close()


def test_a_locked_file_is_tried_again_until_the_other_connection_lets_go(tmp_path: Path) -> None:
    """What ``open`` does when SQLite refuses at once: here a connection with no busy timeout, and another
    holding the file's exclusive lock for a moment."""
    path = tmp_path / "held.sqlite3"
    holder = sqlite3.connect(path, isolation_level=None, check_same_thread=False)
    holder.execute("CREATE TABLE t (x)")
    holder.execute("BEGIN EXCLUSIVE")
    threading.Timer(0.3, lambda: holder.execute("COMMIT")).start()
    impatient = sqlite3.connect(path, isolation_level=None, timeout=0)
    try:
        with pytest.raises(sqlite3.OperationalError, match="locked"):
            impatient.execute("PRAGMA journal_mode=WAL")  # refused at once
        assert _while_locked(lambda: impatient.execute("PRAGMA journal_mode=WAL").fetchone()[0]) == "wal"
        with pytest.raises(sqlite3.OperationalError, match="no such table"):
            _while_locked(lambda: impatient.execute("SELECT * FROM missing"))  # not a lock: raised at once
    finally:
        impatient.close()
        holder.close()

"""Several bot processes on one SQLite file: credits stay exact across processes."""

from __future__ import annotations

import os
import sqlite3
import subprocess
import sys
import textwrap
from pathlib import Path

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

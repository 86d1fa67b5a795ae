"""Credit conservation under load: 240 concurrent /imagine with random provider failures.

No double spend, no negative balance, each balance equals the sum of its ledger rows, every
reservation settled, and the total of credits is conserved: start + grants = balances + consumed.
"""

from __future__ import annotations

import asyncio
import random
import sqlite3
from pathlib import Path

from bot.errors import (
    GenerationFailed,
    InsufficientCredits,
    ProviderTimeout,
    ProviderUnavailable,
    RateLimited,
)
from bot.models import ImagineOptions
from tests.doubles import ScriptedProvider, ctx_for, make_config, make_core


async def test_credits_are_conserved_under_concurrent_load_with_failures(tmp_path: Path) -> None:
    rng = random.Random(1234)

    def flaky(request, index):  # type: ignore[no-untyped-def]
        if request.prompt.startswith("doomed"):
            return ProviderUnavailable("down")
        roll = rng.random()
        if roll < 0.2:
            return ProviderUnavailable("down")
        if roll < 0.3:
            return ProviderTimeout("slow")
        return None

    first = ScriptedProvider("first", max_per_call=2, behaviour=flaky, concurrency=8)
    second = ScriptedProvider("second", max_per_call=1, behaviour=flaky, concurrency=8)
    config = make_config(tmp_path, IMAGEBOT_STARTING_CREDITS="40", IMAGEBOT_MAX_CONCURRENT="50")
    core = make_core(config, [first, second])
    users = [ctx_for(f"u{i % 12}", f"s{i % 4}") for i in range(240)]
    async with core:
        await core.adjust("admin", users[0].identity, "grant", 25)

        async def one(i: int) -> str:
            await asyncio.sleep(rng.random() * 0.01)
            options = ImagineOptions(prompt=f"{'doomed' if i % 10 == 0 else 'prompt'} {i}", size=rng.choice(["256x256", "512x512"]),
                                     count=rng.randint(1, 4))
            try:
                await core.imagine(users[i], options)
                return "ok"
            except GenerationFailed:
                return "failed"
            except InsufficientCredits:
                return "broke"
            except RateLimited:
                return "limited"

        outcomes = await asyncio.gather(*(one(i) for i in range(240)))
        assert {"ok", "failed", "broke"} <= set(outcomes)
        assert await core.store.audit() == []

    conn = sqlite3.connect(config.database)
    accounts = conn.execute("SELECT COUNT(*), SUM(balance), MIN(balance) FROM accounts").fetchone()
    n_accounts, total_balance, min_balance = accounts
    consumed = conn.execute("SELECT COALESCE(SUM(amount), 0) FROM ledger WHERE kind = 'consume'").fetchone()[0]
    assert min_balance >= 0
    assert total_balance + consumed == n_accounts * 40 + 25
    assert conn.execute("SELECT COUNT(*) FROM reservations WHERE status = 'held'").fetchone()[0] == 0
    assert conn.execute("SELECT COUNT(*) FROM generations WHERE status = 'PENDING'").fetchone()[0] == 0
    # every reservation is exactly consumed + released/refunded
    bad = conn.execute(
        "SELECT r.id FROM reservations r JOIN ledger l ON l.request_id = r.id"
        " GROUP BY r.id HAVING SUM(CASE WHEN l.kind IN ('consume', 'release', 'refund') THEN l.amount ELSE 0 END)"
        " != MAX(r.amount)"
    ).fetchall()
    assert bad == []
    # consumed credits match the images recorded, at their price
    mismatched = conn.execute(
        "SELECT id FROM generations WHERE status = 'COMPLETED' AND credits_consumed !="
        " image_count * (CASE json_extract(options, '$.size') WHEN '256x256' THEN 3 ELSE 5 END)"
    ).fetchall()
    assert mismatched == []
    conn.close()

"""A process killed mid-generation leaves a reservation; the next start releases it."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import textwrap
from pathlib import Path

from bot.models import ImagineOptions
from tests.doubles import ScriptedProvider, ctx_for, make_config, make_core

ROOT = Path(__file__).resolve().parents[1]

CHILD = textwrap.dedent(
    """
    import asyncio, sys
    from pathlib import Path
    from bot.models import ImagineOptions
    from tests.doubles import ScriptedProvider, ctx_for, make_config, make_core

    async def main():
        tmp = Path(sys.argv[1])
        core = make_core(make_config(tmp, IMAGEBOT_INSTANCE=sys.argv[2]), [ScriptedProvider(delay=60)])
        async def progress(stage, details):
            if stage == "generating":
                print("generating", flush=True)
        async with core:
            await core.imagine(ctx_for(), ImagineOptions(prompt="fox", size="1024x1024", count=3),
                               progress=progress)

    asyncio.run(main())
    """
)


def start_child(tmp: Path, instance: str) -> subprocess.Popen[str]:
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    proc = subprocess.Popen([sys.executable, "-c", CHILD, str(tmp), instance], stdout=subprocess.PIPE,
                            text=True, env=env, cwd=tmp)
    assert proc.stdout is not None
    assert proc.stdout.readline().strip() == "generating"
    return proc


async def test_killed_process_reservation_is_released_on_restart(tmp_path: Path) -> None:
    proc = start_child(tmp_path, "default")
    proc.send_signal(signal.SIGKILL)
    proc.wait(timeout=10)

    config = make_config(tmp_path)
    core = make_core(config, [ScriptedProvider()])
    await core.store.open()
    held_before = await core.store.held(ctx_for().identity)
    await core.store.close()
    assert held_before == 30

    async with core:
        summary = await core.credits(ctx_for().identity)
        assert summary.balance == 50 and summary.held == 0
        gen = summary.recent[0]
        assert (gen.status, gen.credits) == ("FAILED", 0)
        kinds = [r["kind"] for r in await core.store.ledger_rows(ctx_for().identity)]
        assert kinds == ["initial", "reserve", "refund"]
        assert await core.store.audit() == []
        # and the user can go on at once
        await core.imagine(ctx_for(), ImagineOptions(prompt="fox", size="256x256"))


async def test_a_live_process_with_another_instance_name_keeps_its_reservation(tmp_path: Path) -> None:
    proc = start_child(tmp_path, "worker-2")
    try:
        core = make_core(make_config(tmp_path, IMAGEBOT_INSTANCE="worker-1"), [ScriptedProvider()])
        async with core:
            summary = await core.credits(ctx_for().identity)
            assert summary.held == 30 and summary.balance == 20
    finally:
        proc.send_signal(signal.SIGKILL)
        proc.wait(timeout=10)

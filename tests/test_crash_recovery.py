"""Leases, with real processes on one SQLite file.

- A job in flight keeps its charge while an operator runs ``imagebot credits show``, ``imagebot usage``
  or a second ``imagebot run`` on the same database (the bug of issue 10: a name is not a sign of life).
- A process killed mid-generation leaves a reservation; it is released once its lease expires, not before.
- A process paused past its lease (SIGSTOP), whose reservation another process released, settles and
  refunds nothing when it resumes, and tells its user they were not charged.
"""

from __future__ import annotations

import asyncio
import json
import os
import signal
import sqlite3
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pytest

from bot.models import ImagineOptions
from providers.base import GeneratedImage, GenerationRequest
from storage.sqlite import SqliteStore
from tests.doubles import ScriptedProvider, ctx_for, make_config, make_core

ROOT = Path(__file__).resolve().parents[1]
USER = ctx_for().identity

CHILD = textwrap.dedent(
    """
    import asyncio, json, sys
    from pathlib import Path
    from bot.errors import ImagebotError, ProviderUnavailable
    from bot.models import ImagineOptions
    from tests.doubles import ScriptedProvider, ctx_for, make_config, make_core

    async def main():
        tmp, lease, delay, mode = Path(sys.argv[1]), sys.argv[2], float(sys.argv[3]), sys.argv[4]
        behaviour = (lambda request, index: ProviderUnavailable("down")) if mode == "fail" else None
        core = make_core(make_config(tmp, IMAGEBOT_LEASE_SECONDS=lease),
                         [ScriptedProvider(delay=delay, behaviour=behaviour)])
        async def progress(stage, details):
            if stage == "generating":
                print("generating", flush=True)
        async with core:
            try:
                result = await core.imagine(ctx_for(), ImagineOptions(prompt="fox", size="1024x1024", count=3),
                                            progress=progress)
                print(json.dumps({"ok": True, "spent": result.credits_spent}), flush=True)
            except ImagebotError as exc:
                print(json.dumps({"ok": False, "code": exc.code, "message": exc.message}), flush=True)

    asyncio.run(main())
    """
)


def start_child(tmp: Path, *, lease: float, delay: float, mode: str = "succeed") -> subprocess.Popen[str]:
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    proc = subprocess.Popen([sys.executable, "-c", CHILD, str(tmp), str(lease), str(delay), mode],
                            stdout=subprocess.PIPE, text=True, env=env, cwd=tmp)
    assert proc.stdout is not None
    assert proc.stdout.readline().strip() == "generating"
    return proc


def lease_of(db: Path) -> tuple[str, float]:
    with sqlite3.connect(db) as conn:
        row = conn.execute("SELECT status, expires_at FROM reservations").fetchone()
    conn.close()
    return row[0], float(row[1])


async def wait_until(moment: float) -> None:
    await asyncio.sleep(max(0.0, moment - time.time()))


def imagebot_cmd() -> list[str]:
    script = Path(sys.executable).with_name("imagebot")
    return [str(script)] if script.exists() else [sys.executable, "-m", "bot"]


async def imagebot(tmp: Path, *args: str, stdin: str = "") -> tuple[int, str, str]:
    """The real CLI in a real process; awaited without blocking this loop (the job's heartbeat runs)."""
    env = {
        **{k: v for k, v in os.environ.items() if not k.startswith(("IMAGEBOT_", "SLACK_", "DISCORD_"))},
        "IMAGEBOT_DATABASE": str(tmp / "imagebot.sqlite3"), "IMAGEBOT_DATA_DIR": str(tmp / "data"),
        "IMAGEBOT_LEASE_SECONDS": "1", "PYTHONPATH": str(ROOT),
    }
    proc = await asyncio.create_subprocess_exec(
        *imagebot_cmd(), *args, cwd=tmp, env=env, stdin=asyncio.subprocess.PIPE,
        stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE,
    )
    out, err = await asyncio.wait_for(proc.communicate(stdin.encode()), 60)
    assert proc.returncode is not None
    return proc.returncode, out.decode(), err.decode()


class GatedProvider(ScriptedProvider):
    """Generates only once the test opens the gate: a job held in flight for as long as needed."""

    def __init__(self) -> None:
        super().__init__()
        self.gate = asyncio.Event()
        self.entered = asyncio.Event()

    async def generate(self, request: GenerationRequest) -> list[GeneratedImage]:
        self.entered.set()
        await self.gate.wait()
        return await super().generate(request)


async def test_operator_commands_and_a_second_run_do_not_release_a_live_job(tmp_path: Path) -> None:
    """Issue 10's sequence: a job in flight, then `imagebot credits show` (a real CLI process on the same
    database), `imagebot usage` and a second `imagebot run`; the job then settles and the user is charged."""
    ctx = ctx_for(platform="discord")  # the CLI takes only the platforms that exist
    who = ctx.identity
    provider = GatedProvider()
    core = make_core(make_config(tmp_path, IMAGEBOT_LEASE_SECONDS="1"), [provider])
    await core.start(sweep=True)  # this process is the running bot
    try:
        job = asyncio.create_task(core.imagine(ctx, ImagineOptions(prompt="fox", size="1024x1024", count=3)))
        await asyncio.wait_for(provider.entered.wait(), 10)
        started = time.time()

        code, out, err = await imagebot(tmp_path, "credits", "show", "--platform", who.platform, "--server",
                                        who.server_id, "--user", who.user_id, "--json")
        assert code == 0, err
        shown = json.loads(out)
        assert (shown["balance"], shown["held"]) == (20, 30)

        code, out, err = await imagebot(tmp_path, "usage", "--json")
        assert code == 0, err
        assert [r["status"] for r in json.loads(out)["rows"]] == ["PENDING"]

        code, out, err = await imagebot(tmp_path, "run", stdin="/quit\n")
        assert code == 0, err
        assert "released" not in err

        await wait_until(started + 3.5)  # several leases long: only the heartbeat keeps it alive
        assert lease_of(Path(core.config.database))[0] == "held"
        provider.gate.set()
        result = await asyncio.wait_for(job, 20)
    finally:
        await core.close()

    assert (result.credits_spent, result.balance) == (30, 20)
    store = SqliteStore(Path(core.config.database))
    await store.open()
    try:
        kinds = [r["kind"] for r in await store.ledger_rows(who)]
        assert kinds == ["initial", "reserve", "consume"]
        assert await store.balance(who) == 20 and await store.held(who) == 0
        assert await store.audit() == []
    finally:
        await store.close()


async def test_a_killed_process_reservation_is_released_when_its_lease_expires_not_before(tmp_path: Path) -> None:
    proc = start_child(tmp_path, lease=2, delay=60)
    proc.send_signal(signal.SIGKILL)
    proc.wait(timeout=10)
    db = tmp_path / "imagebot.sqlite3"
    status, expires = lease_of(db)  # read after the kill: no heartbeat can move it any more
    assert status == "held"

    store = SqliteStore(db, starting_credits=50)  # a running bot's sweep
    await store.open()
    try:
        assert time.time() < expires
        assert await store.release_expired() == 0  # its holder is gone, but its lease still runs
        assert await store.held(USER) == 30 and await store.balance(USER) == 20
        await wait_until(expires + 0.05)
        assert await store.release_expired() == 1
        assert await store.release_expired() == 0  # once
        assert await store.balance(USER) == 50 and await store.held(USER) == 0
        gen = (await store.recent_generations(USER))[0]
        assert (gen.status, gen.error_code, gen.credits_consumed) == ("FAILED", "IMG-INTERRUPTED", 0)
        assert [r["kind"] for r in await store.ledger_rows(USER)] == ["initial", "reserve", "refund"]
        assert await store.audit() == []
    finally:
        await store.close()

    # and the user can go on at once
    core = make_core(make_config(tmp_path), [ScriptedProvider()])
    async with core:
        await core.imagine(ctx_for(), ImagineOptions(prompt="fox", size="256x256"))


@pytest.mark.parametrize("mode", ["succeed", "fail"])
async def test_a_process_paused_past_its_lease_settles_and_refunds_nothing(tmp_path: Path, mode: str) -> None:
    proc = start_child(tmp_path, lease=1.5, delay=1.0, mode=mode)
    proc.send_signal(signal.SIGSTOP)
    try:
        db = tmp_path / "imagebot.sqlite3"
        _, expires = lease_of(db)
        store = SqliteStore(db, starting_credits=50)  # another process: a running bot's sweep
        await store.open()
        await wait_until(expires + 0.05)
        assert await store.release_expired() == 1
        after_release = await store.ledger_rows(USER)
        assert [r["kind"] for r in after_release] == ["initial", "reserve", "refund"]
    finally:
        proc.send_signal(signal.SIGCONT)
    assert proc.stdout is not None
    outcome = json.loads(proc.stdout.readline())
    proc.wait(timeout=20)
    try:
        assert outcome["ok"] is False
        assert outcome["code"] == ("IMG-LEASE-LOST" if mode == "succeed" else "IMG-PROV-DOWN")
        assert "not charged" in outcome["message"]
        assert await store.ledger_rows(USER) == after_release  # its settle or refund changed nothing
        assert await store.balance(USER) == 50 and await store.held(USER) == 0
        gen = (await store.recent_generations(USER))[0]
        assert (gen.status, gen.error_code, gen.image_count) == ("FAILED", "IMG-INTERRUPTED", 0)
        assert await store.audit() == []
    finally:
        await store.close()

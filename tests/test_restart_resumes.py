"""One process on SQLite, killed mid-job and started again: its user still gets exactly one outcome.

``imagebot run`` in Slack HTTP mode (the real entry point, a real subprocess) against the loopback fakes
of Slack and OpenAI. A signed /imagine is acknowledged; while the provider is drawing, the bot is
SIGKILLed. Started again on the same database, its worker finds the job once the dead process's lease
expires, draws it again and posts it: one upload, one charge, nothing held.
"""

from __future__ import annotations

import asyncio
import os
import signal
import socket
import sqlite3
import sys
from pathlib import Path

import aiohttp

from tests.fakes.harness import openai_env
from tests.fakes.openai_api import FakeOpenAI
from tests.fakes.slack_api import FakeSlack, command_payload, form_body, signed_headers
from tests.fakes.slack_harness import BOT_TOKEN, SECRET

ROOT = Path(__file__).resolve().parents[1]


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


async def start_bot(env: dict[str, str], workdir: Path) -> asyncio.subprocess.Process:
    return await asyncio.create_subprocess_exec(
        sys.executable, "-m", "bot", "run", cwd=workdir, env=env,
        stdout=asyncio.subprocess.DEVNULL, stderr=open(workdir / "bot.log", "ab"))  # noqa: SIM115, ASYNC230


async def until_healthy(http: aiohttp.ClientSession, url: str) -> None:
    for _ in range(600):
        try:
            async with http.get(f"{url}/healthz") as resp:
                if resp.status == 200:
                    return
        except aiohttp.ClientConnectionError:
            pass
        await asyncio.sleep(0.05)
    raise AssertionError("the bot did not start")


async def test_a_job_cut_by_sigkill_is_finished_after_the_restart(tmp_path: Path) -> None:
    slack = await FakeSlack().start()
    openai = await FakeOpenAI().start()
    openai.slow_seconds = 4.0
    openai.queue("generations", "slow")  # the first call is still drawing when the bot is killed
    port = free_port()
    url = f"http://127.0.0.1:{port}"
    (tmp_path / "imagebot.toml").write_text("")
    env = {
        **{k: v for k, v in os.environ.items() if not k.startswith(("IMAGEBOT_", "SLACK_", "DISCORD_", "OPENAI_"))},
        "PYTHONPATH": str(ROOT), "IMAGEBOT_CONFIG": str(tmp_path / "imagebot.toml"),
        "IMAGEBOT_DATABASE": str(tmp_path / "imagebot.sqlite3"), "IMAGEBOT_DATA_DIR": str(tmp_path / "data"),
        "IMAGEBOT_LEASE_SECONDS": "2", "IMAGEBOT_PROVIDERS": "openai",
        "SLACK_BOT_TOKEN": BOT_TOKEN, "SLACK_SIGNING_SECRET": SECRET, "SLACK_API_URL": slack.api_url,
        "IMAGEBOT_HTTP_PORT": str(port), "IMAGEBOT_HTTP_HOST": "127.0.0.1",
        **openai_env(openai.base_url),
    }
    bot = await start_bot(env, tmp_path)
    try:
        async with aiohttp.ClientSession() as http:
            await until_healthy(http, url)
            body = form_body(command_payload(slack, "/imagine", "a lighthouse at dusk --size 1024x1024",
                                             user="U0CRASH01", key="crash"))
            async with http.post(f"{url}/slack/events", data=body, headers=signed_headers(SECRET, body)) as resp:
                assert resp.status == 200
            await openai_until(openai, 1)
            bot.send_signal(signal.SIGKILL)
            await bot.wait()
            assert slack.uploads == []

            bot = await start_bot(env, tmp_path)
            await until_healthy(http, url)
            await slack.until(lambda: slack.uploads, timeout=30)
            await asyncio.sleep(1.0)  # nothing more may arrive
    finally:
        if bot.returncode is None:
            bot.send_signal(signal.SIGTERM)
            await asyncio.wait_for(bot.wait(), 60)
        await slack.close()
        await openai.stop()

    assert len(slack.uploads) == 1 and "<@U0CRASH01>" in slack.uploads[0].initial_comment
    assert len(openai.calls("generations")) == 2  # drawn again by the restarted process
    conn = sqlite3.connect(tmp_path / "imagebot.sqlite3")
    [(request_id, status, consumed)] = conn.execute(
        "SELECT id, status, credits_consumed FROM generations").fetchall()
    assert status == "COMPLETED" and consumed > 0
    kinds = [k for (k,) in conn.execute("SELECT kind FROM ledger WHERE request_id = ? ORDER BY id", (request_id,))]
    assert kinds.count("consume") == 1 and "refund" not in kinds
    [(balance,)] = conn.execute("SELECT balance FROM accounts").fetchall()
    [(total,)] = conn.execute("SELECT SUM(delta) FROM ledger").fetchall()
    assert balance == total == 50 - consumed
    assert conn.execute("SELECT COUNT(*) FROM reservations WHERE status = 'held'").fetchone()[0] == 0
    assert conn.execute("SELECT state, outcome, address FROM jobs").fetchall() == [("done", "delivered", "{}")]
    log = (tmp_path / "bot.log").read_text()
    assert "resumed" in log and BOT_TOKEN not in log


async def openai_until(openai: FakeOpenAI, calls: int, timeout: float = 30.0) -> None:
    async with asyncio.timeout(timeout):
        while len(openai.calls("generations")) < calls:  # noqa: ASYNC110 - polling what the fake saw
            await asyncio.sleep(0.05)

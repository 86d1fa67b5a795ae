"""Stopping the local console as a person does: SIGTERM (a service manager) or Ctrl-C (SIGINT), on a real
``python -m bot run`` whose standard input stays open.

While it waits for input it stops at once: no Enter needed. Mid-command, the command finishes and its
result is printed; stopped a second time, the command is cancelled, its credits go back and the person
is told so. Every way out exits 0.
"""

from __future__ import annotations

import asyncio
import json
import os
import signal
import sys
from collections.abc import AsyncIterator
from pathlib import Path

import pytest
from aiohttp import web

from tests.fakes.harness import OPENAI_KEY
from tests.fakes.openai_api import FakeOpenAI

ROOT = Path(__file__).resolve().parents[1]
START = 100
#: Bounds a wait so a broken build fails instead of hanging the suite; never what a test asserts.
PATIENCE = 60.0


class GatedOpenAI(FakeOpenAI):
    """The OpenAI fake holding each image call until the test opens ``gate`` (a command stays in flight)."""

    def __init__(self) -> None:
        super().__init__()
        self.arrived = asyncio.Event()
        self.gate = asyncio.Event()

    async def _generations(self, request: web.Request) -> web.StreamResponse:
        try:
            await request.read()  # kept by aiohttp for the fake's own read
        except ConnectionError:
            return web.Response(status=499)
        self.arrived.set()
        await self.gate.wait()
        return await super()._generations(request)


class Console:
    """``python -m bot run`` with no chat token (the console), its stdin a pipe the test keeps open."""

    def __init__(self, tmp: Path, env: dict[str, str]) -> None:
        self.tmp = tmp
        self.env = {
            **{k: v for k, v in os.environ.items()
               if not k.startswith(("IMAGEBOT_", "SLACK_", "DISCORD_", "OPENAI_", "GOOGLE_", "XAI_"))},
            "IMAGEBOT_DATABASE": str(tmp / "db.sqlite3"),
            "IMAGEBOT_DATA_DIR": str(tmp / "data"),
            "IMAGEBOT_STARTING_CREDITS": str(START),
            "USER": "tester", "LOGNAME": "tester",
            "PYTHONPATH": str(ROOT),
            **env,
        }
        self.out = ""
        self.pos = 0
        self.proc: asyncio.subprocess.Process | None = None

    async def start(self) -> Console:
        self.log = (self.tmp / "console.log").open("wb")
        self.proc = await asyncio.create_subprocess_exec(
            sys.executable, "-m", "bot", "run", cwd=self.tmp, env=self.env,
            stdin=asyncio.subprocess.PIPE, stdout=asyncio.subprocess.PIPE, stderr=self.log)
        await self.until("> ")
        return self

    async def until(self, text: str) -> str:
        """Read what the console prints until ``text`` appears after the last text waited for."""
        assert self.proc is not None and self.proc.stdout is not None

        async def read() -> None:
            assert self.proc is not None and self.proc.stdout is not None
            while text not in self.out[self.pos:]:
                chunk = await self.proc.stdout.read(4096)
                if not chunk:
                    raise AssertionError(f"the console ended before printing {text!r}:\n{self.out}")
                self.out += chunk.decode()

        await asyncio.wait_for(read(), PATIENCE)
        self.pos = self.out.index(text, self.pos) + len(text)
        return self.out

    def type(self, line: str) -> None:
        assert self.proc is not None and self.proc.stdin is not None
        self.proc.stdin.write(line.encode() + b"\n")

    def signal(self, sig: signal.Signals) -> None:
        assert self.proc is not None
        self.proc.send_signal(sig)

    async def exit_code(self) -> int:
        """Wait for the process to end by itself: stdin stays open, so nothing but the signal ends it."""
        assert self.proc is not None and self.proc.stdout is not None
        rest = await asyncio.wait_for(self.proc.stdout.read(), PATIENCE)
        self.out += rest.decode()
        code = await asyncio.wait_for(self.proc.wait(), PATIENCE)
        return code

    async def close(self) -> None:
        if self.proc is not None and self.proc.returncode is None:
            self.proc.kill()
            await self.proc.wait()
        self.log.close()

    def stderr(self) -> str:
        return (self.tmp / "console.log").read_text(errors="replace")

    async def balance(self) -> dict[str, int]:
        """``imagebot credits show`` of the console's person, after the console ended."""
        proc = await asyncio.create_subprocess_exec(
            sys.executable, "-m", "bot", "credits", "show", "--platform", "console", "--server", "local",
            "--user", "tester", "--json", cwd=self.tmp, env=self.env, stdout=asyncio.subprocess.PIPE,
            stderr=asyncio.subprocess.PIPE)
        out, err = await asyncio.wait_for(proc.communicate(), PATIENCE)
        assert proc.returncode == 0, err.decode()
        shown: dict[str, int] = json.loads(out)
        return shown


@pytest.fixture
async def openai() -> AsyncIterator[GatedOpenAI]:
    fake = GatedOpenAI()
    await fake.start()
    try:
        yield fake
    finally:
        fake.gate.set()
        await fake.stop()


def openai_env(fake: GatedOpenAI) -> dict[str, str]:
    return {"OPENAI_API_KEY": OPENAI_KEY, "OPENAI_BASE_URL": fake.base_url, "IMAGEBOT_PROVIDERS": "openai"}


@pytest.mark.parametrize("sig", [signal.SIGTERM, signal.SIGINT], ids=["SIGTERM", "SIGINT"])
async def test_stopped_while_waiting_for_input_it_ends_at_once_without_enter(tmp_path: Path, sig: signal.Signals) -> None:
    console = await Console(tmp_path, {}).start()
    try:
        console.type("/credits")
        await console.until("Balance: 100 credits")
        await console.until("> ")
        console.signal(sig)
        assert await console.exit_code() == 0
        assert console.out.rstrip().endswith("Stopped.")
        assert "Traceback" not in console.stderr()
    finally:
        await console.close()


@pytest.mark.parametrize("sig", [signal.SIGTERM, signal.SIGINT], ids=["SIGTERM", "SIGINT"])
async def test_stopped_mid_command_the_command_finishes_and_is_shown(
    tmp_path: Path, openai: GatedOpenAI, sig: signal.Signals
) -> None:
    console = await Console(tmp_path, openai_env(openai)).start()
    try:
        console.type("/imagine a lighthouse at dusk")
        await asyncio.wait_for(openai.arrived.wait(), PATIENCE)  # the provider is drawing
        console.signal(sig)
        await console.until("Stopping: waiting up to 30 s for the command in progress to finish")
        openai.gate.set()
        assert await console.exit_code() == 0
        assert "1 image · openai" in console.out and "10 credits spent · 90 left" in console.out
        assert "Saved:" in console.out
    finally:
        await console.close()
    shown = await console.balance()
    assert (shown["balance"], shown["held"], shown["spent"]) == (START - 10, 0, 10)


async def test_stopped_twice_mid_command_it_is_cancelled_refunded_and_said(tmp_path: Path, openai: GatedOpenAI) -> None:
    console = await Console(tmp_path, openai_env(openai)).start()
    try:
        console.type("/imagine a lighthouse at dusk")
        await asyncio.wait_for(openai.arrived.wait(), PATIENCE)
        console.signal(signal.SIGTERM)
        await console.until("press Ctrl-C again to stop it now")
        console.signal(signal.SIGINT)  # Ctrl-C: stop now
        assert await console.exit_code() == 0
        assert "you were not charged" in console.out
        assert "credits spent" not in console.out
    finally:
        await console.close()
    shown = await console.balance()
    assert (shown["balance"], shown["held"], shown["spent"]) == (START, 0, 0)

"""Real ``imagebot run`` processes (ingress and workers) on PostgreSQL and Redis, against the loopback
fakes of Slack, Discord and OpenAI run by the calling process: the parts the scale test and the scale
benchmark share.

Each bot is ``python -m bot run`` in its own OS process with its own environment, so nothing is shared
with the caller or with the other bots but the database, Redis, the data directory and the fakes, as
in a deployment of N ingress and M workers.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import signal
import socket
import sys
import time
import uuid
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import aiohttp
import psycopg
from aiohttp import web
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from cryptography.hazmat.primitives.serialization import Encoding, PublicFormat

from .discord_api import APP_ID, FakeDiscord
from .openai_api import FakeOpenAI
from .slack_api import FakeSlack

ROOT = Path(__file__).resolve().parents[2]
#: The machine's test servers (trust auth); IMAGEBOT_TEST_POSTGRES overrides the PostgreSQL one.
POSTGRES = os.environ.get("IMAGEBOT_TEST_POSTGRES", "postgresql://postgres@127.0.0.1:5432/test")
REDIS = "redis://127.0.0.1:6379"
SLACK_SECRET = "scale-signing-secret-0123456789"
SLACK_TOKEN = "xoxb-scale-token-abcdef"
DISCORD_TOKEN = "scale-discord-token"
OPENAI_KEY = "sk-scale-test-key"


# -- the servers this needs: down is a failure, not a skip ---------------------------------------------

def servers_problem() -> str | None:
    """Why PostgreSQL or Redis cannot be used (None when both answer)."""
    try:
        with psycopg.connect(POSTGRES, connect_timeout=5, autocommit=True) as conn:
            conn.execute("SELECT 1")
    except Exception as exc:  # noqa: BLE001 - any reason is reported to the caller
        return f"PostgreSQL not usable at {POSTGRES}: {type(exc).__name__}: {' '.join(str(exc).split())}"
    try:
        with socket.create_connection(("127.0.0.1", 6379), timeout=2.0) as sock:
            sock.sendall(b"PING\r\n")
            if not sock.recv(16).startswith(b"+PONG"):
                return "Redis on 127.0.0.1:6379 did not answer PING"
    except OSError as exc:
        return f"no Redis answering on 127.0.0.1:6379 ({exc}): start redis-server"
    return None


@contextlib.contextmanager
def pg_schema(prefix: str = "imagebot_scale") -> Iterator[str]:
    """A ledger URL on a new schema of its own, dropped afterwards."""
    schema = f"{prefix}_{uuid.uuid4().hex[:12]}"
    with psycopg.connect(POSTGRES, autocommit=True) as conn:
        conn.execute(f'CREATE SCHEMA "{schema}"')
    sep = "&" if "?" in POSTGRES else "?"
    try:
        yield f"{POSTGRES}{sep}schema={schema}"
    finally:
        with psycopg.connect(POSTGRES, autocommit=True) as conn:
            conn.execute(f'DROP SCHEMA IF EXISTS "{schema}" CASCADE')


def schema_of(url: str) -> str:
    return url.rsplit("schema=", 1)[1].split("&", 1)[0]


def query(url: str, sql: str, params: tuple[Any, ...] = ()) -> list[tuple[Any, ...]]:
    """Rows of one read on the bots' schema."""
    with psycopg.connect(POSTGRES, autocommit=True) as conn:
        conn.execute(f'SET search_path TO "{schema_of(url)}"')
        return list(conn.execute(sql, params).fetchall())  # type: ignore[arg-type]


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


# -- Discord's request signature -------------------------------------------------------------------------

class DiscordSigner:
    """An application key pair: the public key (hex) for ``DISCORD_PUBLIC_KEY``, and Discord's signature
    of each request (Ed25519 over timestamp + body) as the two headers Discord sends."""

    def __init__(self) -> None:
        self._key = Ed25519PrivateKey.generate()
        self.public_hex = self._key.public_key().public_bytes(Encoding.Raw, PublicFormat.Raw).hex()

    def headers(self, body: bytes, *, timestamp: str | None = None) -> dict[str, str]:
        ts = timestamp or str(int(time.time()))
        return {"X-Signature-Ed25519": self._key.sign(ts.encode() + body).hex(), "X-Signature-Timestamp": ts,
                "Content-Type": "application/json"}


# -- the fakes -------------------------------------------------------------------------------------------

class SlowOpenAI(FakeOpenAI):
    """The OpenAI fake answering each image call only after ``delay`` seconds (jobs stay in flight)."""

    def __init__(self, delay: float = 0.0) -> None:
        super().__init__()
        self.delay = delay

    async def _generations(self, request: web.Request) -> web.StreamResponse:
        try:
            await request.read()  # kept by aiohttp for the fake's own read: a client killed later is no error
        except ConnectionError:
            return web.Response(status=499)
        if self.delay:
            await asyncio.sleep(self.delay)
        return await super()._generations(request)


@dataclass
class Fakes:
    slack: FakeSlack
    discord: FakeDiscord
    openai: SlowOpenAI

    @classmethod
    async def start(cls, delay: float) -> Fakes:
        slack = await FakeSlack().start()
        discord = await FakeDiscord().start()
        openai = await SlowOpenAI(delay).start()
        return cls(slack, discord, openai)

    async def close(self) -> None:
        await self.slack.close()
        await self.discord.stop()
        await self.openai.stop()


# -- the bot processes -----------------------------------------------------------------------------------

@dataclass
class Bot:
    """One ``python -m bot run`` process; its log (stderr) goes to ``log``."""

    name: str
    role: str
    env: dict[str, str]
    workdir: Path
    log: Path
    port: int
    proc: asyncio.subprocess.Process | None = None
    starts: int = 0

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    async def start(self, timeout: float = 60.0) -> Bot:
        self.starts += 1
        log = self.log.with_suffix(f".{self.starts}.log")
        with log.open("wb") as out:
            self.proc = await asyncio.create_subprocess_exec(
                sys.executable, "-m", "bot", "run", cwd=self.workdir, env=self.env,
                stdin=asyncio.subprocess.DEVNULL, stdout=out, stderr=out)
        await self._ready(log, timeout)
        return self

    async def _ready(self, log: Path, timeout: float) -> None:
        """Until its HTTP server answers (ingress) or its worker takes jobs; its log on failure. (A worker
        serves /healthz too, but before its worker claims anything.)"""
        deadline = time.monotonic() + timeout
        async with aiohttp.ClientSession() as http:
            while True:
                assert self.proc is not None
                if self.proc.returncode is not None:
                    raise AssertionError(f"{self.name} exited with {self.proc.returncode}:\n{tail(log)}")
                if self.role != "worker":
                    with contextlib.suppress(aiohttp.ClientError):
                        async with http.get(f"{self.url}/healthz") as resp:
                            if resp.status == 200:
                                return
                elif b"worker: taking jobs" in await asyncio.to_thread(log.read_bytes):
                    return
                if time.monotonic() > deadline:
                    raise AssertionError(f"{self.name} not ready after {timeout:.0f} s:\n{tail(log)}")
                await asyncio.sleep(0.05)

    def kill(self) -> None:
        """SIGKILL: no shutdown, no lease given back, as when a machine dies."""
        if self.proc is not None and self.proc.returncode is None:
            self.proc.send_signal(signal.SIGKILL)

    async def wait_killed(self) -> None:
        if self.proc is not None:
            await self.proc.wait()

    async def stop(self, grace: float = 30.0) -> int | None:
        """SIGTERM, then SIGKILL after ``grace`` seconds; the exit code."""
        if self.proc is None:
            return None
        if self.proc.returncode is None:
            self.proc.terminate()
            try:
                await asyncio.wait_for(self.proc.wait(), grace)
            except TimeoutError:
                self.proc.kill()
                await self.proc.wait()
        return self.proc.returncode

    def logs(self) -> str:
        return "\n".join(f"--- {p.name}\n{p.read_text(errors='replace')}"
                         for p in sorted(self.workdir.glob(f"{self.log.stem}.*.log")))


def tail(path: Path, lines: int = 60) -> str:
    return "\n".join(path.read_text(errors="replace").splitlines()[-lines:])


def bot_env(database: str, data_dir: Path, fakes: Fakes, role: str, *, signer: DiscordSigner | None,
            slack: bool = True, lease: float = 3.0, port: int | None = None,
            starting_credits: int = 1000, **extra: str) -> dict[str, str]:
    """One bot's environment: the shared database, Redis, data dir and fakes; the tokens every role
    needs (a worker delivers with the bot tokens); generous limits, so every command is taken."""
    env = {k: v for k, v in os.environ.items() if not k.startswith(("IMAGEBOT_", "SLACK_", "DISCORD_", "OPENAI_"))}
    env.update({
        "PYTHONPATH": str(ROOT), "PYTHONUNBUFFERED": "1",
        "IMAGEBOT_ROLE": role, "IMAGEBOT_DATABASE": database, "IMAGEBOT_DATA_DIR": str(data_dir),
        "IMAGEBOT_RATELIMIT_STORAGE": REDIS, "IMAGEBOT_USER_RATE": "100000/minute",
        "IMAGEBOT_SERVER_RATE": "1000000/hour", "IMAGEBOT_MAX_CONCURRENT": "100",
        "IMAGEBOT_STARTING_CREDITS": str(starting_credits), "IMAGEBOT_LEASE_SECONDS": str(lease),
        "IMAGEBOT_PROVIDERS": "openai", "OPENAI_API_KEY": OPENAI_KEY, "OPENAI_BASE_URL": fakes.openai.base_url,
    })
    if slack:
        env.update({"SLACK_BOT_TOKEN": SLACK_TOKEN, "SLACK_SIGNING_SECRET": SLACK_SECRET,
                    "SLACK_API_URL": fakes.slack.api_url})
    if signer is not None:
        env.update({"DISCORD_TOKEN": DISCORD_TOKEN, "DISCORD_PUBLIC_KEY": signer.public_hex,
                    "DISCORD_APPLICATION_ID": str(APP_ID),
                    "DISCORD_API_BASE_URL": f"http://127.0.0.1:{fakes.discord.port}/api/v10"})
    if port is not None:
        env.update({"IMAGEBOT_HTTP_PORT": str(port), "IMAGEBOT_HTTP_HOST": "127.0.0.1"})
    env.update(extra)
    return env


#: Every bot's imagebot.toml: the fake answers one image call at a time per request, so the provider's
#: own limit is the bot's worker concurrency; no streamed previews (nobody watches them in a worker).
TOML = "[providers.openai]\nconcurrency = 64\npreviews = 0\n"


@dataclass
class Deployment:
    """Ingress and workers of one run, in one work directory (each bot its own cwd and log)."""

    root: Path
    database: str
    fakes: Fakes
    signer: DiscordSigner | None
    lease: float = 3.0
    slack: bool = True
    starting_credits: int = 1000
    bots: list[Bot] = field(default_factory=list)

    @property
    def data_dir(self) -> Path:
        return self.root / "data"

    def bot(self, name: str, role: str, **extra: str) -> Bot:
        """A bot of ``role`` with its own HTTP port (every ``imagebot run`` serves /healthz, /metrics: two
        on one machine must not both take the default port)."""
        workdir = self.root / name
        workdir.mkdir(parents=True, exist_ok=True)
        (workdir / "imagebot.toml").write_text(TOML)
        port = free_port()
        env = bot_env(self.database, self.data_dir, self.fakes, role, signer=self.signer, slack=self.slack,
                      lease=self.lease, port=port, starting_credits=self.starting_credits, **extra)
        made = Bot(name, role, env, workdir, workdir / name, port)
        self.bots.append(made)
        return made

    async def stop(self, grace: float = 30.0) -> dict[str, int | None]:
        codes = await asyncio.gather(*(b.stop(grace) for b in self.bots))
        return {b.name: c for b, c in zip(self.bots, codes, strict=True)}

    def logs(self) -> str:
        return "\n".join(b.logs() for b in self.bots)


def address_of(row: Mapping[str, Any] | str) -> dict[str, Any]:
    value = json.loads(row) if isinstance(row, str) else dict(row)
    assert isinstance(value, dict)
    return value

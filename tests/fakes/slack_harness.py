"""The real Slack adapter (Bolt AsyncApp, HTTP or Socket Mode) on a real core (SQLite file, local renderer
or a test-double provider in the real registry), wired to the loopback ``FakeSlack``."""

from __future__ import annotations

import asyncio
import sqlite3
import time
from contextlib import closing
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import aiohttp

from bot.app import build_core
from bot.config import Config, load_config
from bot.core import Imagebot
from bot.models import Identity
from bot.ratelimit import RateLimiter
from bot.slack_app import SlackBot, SlackSettings, build_bot
from bot.slack_app.http_mode import EVENTS_PATH, serve_http
from providers.base import ImageProvider
from providers.local_text import LocalEnhancer
from providers.registry import ProviderRegistry
from storage.images import ImageStore
from storage.sqlite import SqliteStore

from .slack_api import (
    TEAM_ID,
    FakeSlack,
    action_body,
    action_payload,
    command_payload,
    form_body,
    select_payload,
    signed_headers,
    view_submission_payload,
)

SECRET = "test-signing-secret-0123456789"
BOT_TOKEN = "xoxb-test-token-abcdef"


def slack_config(tmp: Path, fake: FakeSlack, **env: str) -> Config:
    base = {
        "IMAGEBOT_DATABASE": str(tmp / "imagebot.sqlite3"), "IMAGEBOT_DATA_DIR": str(tmp / "data"),
        "IMAGEBOT_USER_RATE": "1000/minute", "IMAGEBOT_SERVER_RATE": "100000/hour",
        "SLACK_BOT_TOKEN": BOT_TOKEN, "SLACK_SIGNING_SECRET": SECRET, "SLACK_API_URL": fake.api_url,
    }
    base.update(env)
    toml = tmp / "imagebot.toml"
    if not toml.exists():
        toml.write_text("")
    return load_config(env=base, path=toml)


def make_core(config: Config, providers: list[ImageProvider] | None) -> Imagebot:
    """The real core; with ``providers``, a registry holding those doubles instead of the configured ones."""
    if providers is None:
        return build_core(config)
    store = SqliteStore(config.database, starting_credits=config.starting_credits)
    registry = ProviderRegistry(providers, [p.name for p in providers], LocalEnhancer())
    limiter = RateLimiter(config.limits.user_rate, config.limits.server_rate, config.limits.storage_uri)
    return Imagebot(config, store, ImageStore(config.data_dir), registry, limiter)


@dataclass
class SlackHarness:
    fake: FakeSlack
    config: Config
    core: Imagebot
    bot: SlackBot
    providers: list[ImageProvider] | None = None
    runner: Any = None
    events_url: str = ""
    #: No connection cap: Slack's requests arrive independently, not through one client's pool.
    session: aiohttp.ClientSession = field(
        default_factory=lambda: aiohttp.ClientSession(connector=aiohttp.TCPConnector(limit=0)))

    @classmethod
    async def start(cls, tmp: Path, *, providers: list[ImageProvider] | None = None, http: bool = True,
                    **env: str) -> SlackHarness:
        fake = await FakeSlack().start()
        config = slack_config(tmp, fake, **env)
        core = make_core(config, providers)
        await core.start()
        bot = build_bot(core, SlackSettings.from_config(config), grace=5)
        harness = cls(fake, config, core, bot, providers)
        if http:
            await harness._serve()
        return harness

    async def _serve(self) -> None:
        self.runner, port = await serve_http(self.bot.app, "127.0.0.1", 0, self.bot.jobs.acks)
        self.events_url = f"http://127.0.0.1:{port}{EVENTS_PATH}"

    async def restart(self) -> None:
        """A new process on the same database: new core, new Bolt app, nothing kept in memory."""
        await self._stop_bot()
        self.core = make_core(self.config, self.providers)
        await self.core.start()
        self.bot = build_bot(self.core, SlackSettings.from_config(self.config), grace=5)
        await self._serve()

    async def _stop_bot(self) -> None:
        if self.runner is not None:
            await self.runner.cleanup()
            self.runner = None
        await self.bot.close(timeout=5)
        await self.core.close()

    async def close(self) -> None:
        await self._stop_bot()
        await self.session.close()
        await self.fake.close()

    # -- requests as Slack sends them ------------------------------------------------------------

    async def post(self, body: str, headers: dict[str, str]) -> tuple[int, str, float]:
        started = time.perf_counter()
        async with self.session.post(self.events_url, data=body.encode(), headers=headers) as resp:
            text = await resp.text()
            return resp.status, text, time.perf_counter() - started

    async def command(self, command: str, text: str, *, signed: bool = True, **kw: Any) -> tuple[int, str]:
        body = form_body(command_payload(self.fake, command, text, **kw))
        headers = signed_headers(SECRET, body) if signed else {"Content-Type": "application/x-www-form-urlencoded"}
        status, reply, _ = await self.post(body, headers)
        return status, reply

    async def click(self, action_id: str, value: str, **kw: Any) -> int:
        body = action_body(action_payload(self.fake, action_id, value, **kw))
        status, _, _ = await self.post(body, signed_headers(SECRET, body))
        return status

    async def interact(self, payload: dict[str, Any]) -> tuple[int, str]:
        """Any interactivity payload (a menu choice, a modal submission), signed; (status, the ack's body)."""
        body = action_body(payload)
        status, reply, _ = await self.post(body, signed_headers(SECRET, body))
        return status, reply

    async def choose(self, action_id: str, value: str, **kw: Any) -> int:
        """A choice in a static_select menu."""
        status, _ = await self.interact(select_payload(self.fake, action_id, value, **kw))
        return status

    async def submit(self, view: dict[str, Any], values: dict[str, dict[str, str]], **kw: Any) -> tuple[int, str]:
        """Submit a modal ``views.open`` showed, with what was typed; (status, the ack's body)."""
        return await self.interact(view_submission_payload(self.fake, view, values, **kw))

    def db_counts(self) -> dict[str, int]:
        """Rows per table, read straight from the SQLite file."""
        with closing(sqlite3.connect(self.config.database)) as conn:
            return {t: int(conn.execute(f"SELECT COUNT(*) FROM {t}").fetchone()[0])
                    for t in ("accounts", "ledger", "generations", "reservations")}

    async def balance(self, user: str, team: str = TEAM_ID) -> int:
        return await self.core.store.balance(Identity("slack", team, user))

    async def idle(self, timeout: float = 10.0) -> None:
        """Wait until every job started by an ack has finished."""
        deadline = time.monotonic() + timeout
        while self.bot.busy:
            if time.monotonic() > deadline:
                raise AssertionError("Slack jobs still running")
            await asyncio.sleep(0.01)

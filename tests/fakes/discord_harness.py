"""Runs the real bot (``run_discord``: discord.py client + core + SQLite) against ``FakeDiscord``.

``async with DiscordHarness(tmp_path) as h`` starts the fake and the bot; ``h.restart()`` stops the
client and the core and starts new ones on the same database (buttons after a restart). On exit the
discord.py endpoints that DISCORD_API_BASE_URL / DISCORD_GATEWAY_URL changed are put back, so tests
never leak into each other.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

import discord
import discord.gateway
import discord.http

from bot.core import Imagebot
from bot.discord_app import run_discord
from providers.base import (
    FORMATS,
    QUALITIES,
    Capabilities,
    FreeSizes,
    GeneratedImage,
    GenerationRequest,
    ModelInfo,
)
from tests.doubles import ScriptedProvider, make_config, make_core, tiny_png

from .discord_api import Call, FakeDiscord, Payloads


class StreamingProvider(ScriptedProvider):
    """A vendor double whose model streams like OpenAI's image streaming: ``previews`` partial images,
    ``gap`` seconds apart, then the final images ``delay`` seconds later. Its model takes every format,
    background and quality tier, and any size (free sizes), so the options arrive as the user gave them.
    Shared by the Discord, Slack and console tests. Records each request (``requests``) and when the final
    images were handed back (``finished``, ``time.perf_counter``)."""

    def __init__(self, name: str = "stream", *, previews: int = 2, gap: float = 0.05, delay: float = 0.0,
                 concurrency: int = 4) -> None:
        super().__init__(name, delay=delay, concurrency=concurrency)
        model = ModelInfo(name=f"{name}-model", sizes=("1024x1024", "256x256"), max_per_call=4, streaming=True,
                          qualities=QUALITIES, formats=FORMATS, backgrounds=("transparent", "opaque"),
                          free_sizes=FreeSizes(multiple=16, max_edge=2048, max_pixels=2048 * 2048))
        self.capabilities = Capabilities(models=(model,), default_model=model.name, concurrency=concurrency)
        self.previews = previews
        self.gap = gap
        self.requests: list[GenerationRequest] = []
        self.finished: list[float] = []

    async def generate(self, request: GenerationRequest) -> list[GeneratedImage]:
        self.requests.append(request)
        if request.on_preview is not None:
            for i in range(request.previews):
                await asyncio.sleep(self.gap)
                await request.on_preview(tiny_png(900 + i), i)
        images = await super().generate(request)  # small drawings (256x256) whatever the size
        self.finished.append(time.perf_counter())
        return images


def is_preview(call: Call) -> bool:
    return bool(call.files) and all(name.startswith("preview-") for name, _ in call.files)


def delivered(calls: list[Call]) -> Call | None:
    """The first accepted call that carried the result's images (previews are not results)."""
    return next((c for c in calls if c.files and c.status < 300 and not is_preview(c)), None)


class DiscordHarness:
    def __init__(self, tmp_path: Path, *, providers: list[Any] | None = None, shards: int = 1,
                 connections: int | None = None, grace: float = 5.0, finish_timeout: float = 5.0,
                 **env: str) -> None:
        self.tmp_path = tmp_path
        self.fake = FakeDiscord(shards=shards)
        self.payloads = Payloads(self.fake)
        self.providers = providers
        self.env = env
        self.connections = connections or shards  # gateway connections this process opens
        self.grace = grace  # seconds jobs in flight get when the bot stops
        self.finish_timeout = finish_timeout  # and a delivery under way, after that
        self.core: Imagebot | None = None
        self._task: asyncio.Task[None] | None = None
        self._saved = (discord.http.Route.BASE, discord.gateway.DiscordWebSocket.DEFAULT_GATEWAY)

    async def __aenter__(self) -> DiscordHarness:
        await self.fake.start()
        try:
            await self.start_bot()
        except BaseException:
            await self.aclose()
            raise
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.aclose()

    async def aclose(self) -> None:
        try:
            await self.stop_bot()
            await self.fake.stop()
        finally:
            discord.http.Route.BASE, discord.gateway.DiscordWebSocket.DEFAULT_GATEWAY = self._saved

    async def start_bot(self) -> None:
        config = make_config(self.tmp_path, **self.fake.env(), **self.env)
        if self.providers is None:
            from bot.app import build_core

            self.core = build_core(config)
        else:
            self.core = make_core(config, self.providers)
        await self.core.start()
        seen = len(self.fake.identifies)
        expected = self.connections
        self._task = asyncio.create_task(run_discord(
            self.core, config, grace=self.grace, finish_timeout=self.finish_timeout, guild_ready_timeout=0.05,
            identify_delay=0))

        def ready() -> bool:
            if self._task is not None and self._task.done():
                self._task.result()  # surface a startup error
            return len(self.fake.identifies) >= seen + expected

        await self.fake.wait_for(ready, timeout=10)

    async def stop_bot(self) -> None:
        if self._task is not None:
            self._task.cancel()
            await asyncio.gather(self._task, return_exceptions=True)
            self._task = None
            await asyncio.sleep(0.02)  # let discord.py's last scheduled events run before the loop ends
        if self.core is not None:
            await self.core.close()
            self.core = None

    async def restart(self) -> None:
        await self.stop_bot()
        await self.start_bot()

    # -- driving -----------------------------------------------------------------------------------

    async def send(self, payload: dict[str, Any]) -> str:
        await self.fake.dispatch(payload)
        return str(payload["token"])

    async def command(self, name: str, options: list[dict[str, Any]] | None = None, **kw: Any) -> str:
        return await self.send(self.payloads.command(name, options, **kw))

    async def imagine(self, prompt: str, **kw: Any) -> str:
        options = [self.payloads.opt("prompt", prompt)]
        for key in ("size", "style", "quality", "provider", "format", "background"):
            if key in kw:
                options.append(self.payloads.opt(key, kw.pop(key)))
        if "count" in kw:
            options.append(self.payloads.opt("count", kw.pop("count"), 4))
        return await self.command("imagine", options, **kw)

    async def result(self, token: str, timeout: float = 10.0) -> Any:
        """The call that delivered images for this interaction (anywhere), once it happened."""
        return await self.fake.wait_for(lambda: delivered(self.fake.for_token(token)), timeout)

    def previews(self, token: str) -> list[Any]:
        """Edits of the original response that carried a preview (a partial image) rather than the result."""
        return [c for c in self.fake.for_token(token) if c.files and is_preview(c)]

    def texts(self, token: str) -> list[str]:
        return [c.content for c in self.fake.for_token(token) if c.content]

    async def balance(self, user_id: int, server: str | None = None) -> int:
        from bot.models import Identity

        from .discord_api import GUILD_ID

        assert self.core is not None
        return await self.core.store.balance(Identity("discord", server or str(GUILD_ID), str(user_id)))

    async def until(self, check: Callable[[], Awaitable[bool]], timeout: float = 10.0) -> None:
        """Poll an async check (a database read) until it holds."""
        deadline = asyncio.get_running_loop().time() + timeout
        while not await check():
            if asyncio.get_running_loop().time() > deadline:
                raise AssertionError("timed out; calls so far:\n" + self.fake.describe())
            await asyncio.sleep(0.02)

    def core_identity(self, user_id: int, server: str | None = None) -> Any:
        from bot.models import Identity

        from .discord_api import GUILD_ID

        return Identity("discord", server or str(GUILD_ID), str(user_id))

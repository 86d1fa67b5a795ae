"""Test-double providers, registered through the real registry: they stand in for vendors, never for our code."""

from __future__ import annotations

import asyncio
import random
from collections.abc import Callable
from pathlib import Path

from bot.config import Config, load_config
from bot.core import Imagebot
from bot.models import Context, Identity
from bot.ratelimit import RateLimiter
from providers.base import QUALITIES, Capabilities, GeneratedImage, GenerationRequest, ModelInfo
from providers.local import LOCAL_SIZES, render
from providers.local_text import LocalEnhancer
from providers.registry import ProviderRegistry
from storage.images import ImageStore
from storage.sqlite import SqliteStore

Behaviour = Callable[[GenerationRequest, int], "list[GeneratedImage] | BaseException | None"]


def tiny_png(seed: int = 0) -> bytes:
    return render(f"double-{seed}", "256x256", "natural", seed, 0)


class ScriptedProvider:
    """Returns images or raises as its ``behaviour`` says; counts calls and tracks concurrency."""

    def __init__(
        self,
        name: str = "fake",
        *,
        max_per_call: int = 10,
        sizes: tuple[str, ...] = LOCAL_SIZES,
        delay: float = 0.0,
        behaviour: Behaviour | None = None,
        concurrency: int = 4,
    ) -> None:
        self.name = name
        self.capabilities = Capabilities(
            models=(ModelInfo(name=f"{name}-model", sizes=sizes, max_per_call=max_per_call, qualities=QUALITIES),),
            default_model=f"{name}-model",
            concurrency=concurrency,
        )
        self.delay = delay
        self.behaviour = behaviour
        self.calls = 0
        self.active = 0
        self.peak = 0
        self.started: list[float] = []

    async def generate(self, request: GenerationRequest) -> list[GeneratedImage]:
        index = self.calls
        self.calls += 1
        self.active += 1
        self.peak = max(self.peak, self.active)
        self.started.append(asyncio.get_running_loop().time())
        try:
            if self.delay:
                await asyncio.sleep(self.delay)
            outcome = self.behaviour(request, index) if self.behaviour else None
            if isinstance(outcome, BaseException):
                raise outcome
            if outcome is not None:
                return outcome
            return [GeneratedImage(tiny_png(index * 100 + i)) for i in range(request.count)]
        finally:
            self.active -= 1

    async def aclose(self) -> None:
        return None


def random_failures(rate: float, seed: int, error: Callable[[], BaseException]) -> Behaviour:
    rng = random.Random(seed)

    def behaviour(request: GenerationRequest, index: int) -> list[GeneratedImage] | BaseException | None:
        return error() if rng.random() < rate else None

    return behaviour


def make_config(tmp: Path, **env: str) -> Config:
    base = {"IMAGEBOT_DATABASE": str(tmp / "imagebot.sqlite3"), "IMAGEBOT_DATA_DIR": str(tmp / "data"),
            "IMAGEBOT_CONFIG": "", "IMAGEBOT_USER_RATE": "1000/minute", "IMAGEBOT_SERVER_RATE": "100000/hour"}
    base.update(env)
    (tmp / "empty.toml").write_text("")
    return load_config(env=base, path=tmp / "empty.toml")


def make_core(config: Config, providers: list, order: list[str] | None = None) -> Imagebot:  # type: ignore[type-arg]
    store = SqliteStore(config.database, starting_credits=config.starting_credits)
    registry = ProviderRegistry(providers, order or [p.name for p in providers], LocalEnhancer())
    limiter = RateLimiter(config.limits.user_rate, config.limits.server_rate, config.limits.storage_uri)
    return Imagebot(config, store, ImageStore(config.data_dir), registry, limiter)


def ctx_for(user: str = "u1", server: str = "s1", platform: str = "test", *, admin: bool = False) -> Context:
    return Context(Identity(platform, server, user), channel_id="c1", is_admin=admin, display_name=user)

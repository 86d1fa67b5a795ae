"""Builds the core from the config: everything is made here and passed in, nothing at import time."""

from __future__ import annotations

from providers.registry import build_registry
from storage.images import ImageStore
from storage.sqlite import SqliteStore

from .config import Config
from .core import Imagebot
from .ratelimit import RateLimiter


def build_core(config: Config) -> Imagebot:
    """Wire storage, providers and limits. Call ``await core.start()`` (or ``async with``) to open."""
    store = SqliteStore(config.database, starting_credits=config.starting_credits, instance=config.instance)
    images = ImageStore(config.data_dir)
    registry = build_registry(config)
    limiter = RateLimiter(config.limits.user_rate, config.limits.server_rate, config.limits.storage_uri)
    return Imagebot(config, store, images, registry, limiter)

"""Builds the core from the config: everything is made here and passed in, nothing at import time."""

from __future__ import annotations

from providers.moderation import build_moderator
from providers.registry import build_registry
from storage.images import ImageStore
from storage.ledger import Ledger, open_ledger

from .config import Config
from .core import Imagebot
from .moderation import Moderation
from .ratelimit import RateLimiter


def build_ledger(config: Config, *, read_only: bool = False) -> Ledger:
    """The ledger the config names (SQLite by default); ``read_only`` for an operator's look."""
    return open_ledger(config.database, starting_credits=config.starting_credits, read_only=read_only)


def build_core(config: Config, *, read_only: bool = False) -> Imagebot:
    """Wire storage, providers and limits. Call ``await core.start()`` (or ``async with``) to open.

    ``read_only``: the ledger is opened for looking only (``imagebot credits show``, ``imagebot usage``)."""
    store = build_ledger(config, read_only=read_only)
    images = ImageStore(config.data_dir)
    registry = build_registry(config)
    limiter = RateLimiter(config.limits.user_rate, config.limits.server_rate, config.limits.storage_uri,
                          on_outage=config.limits.on_outage)
    core = Imagebot(config, store, images, registry, limiter)
    # ``[moderation] enabled`` (IMAGEBOT_MODERATION) without an OpenAI key stops load_config, naming the key.
    core.moderation = Moderation(build_moderator(config))
    core.moderation_default = config.moderation.enabled
    return core

"""Per-user and per-server rate limits, on the ``limits`` library's public API.

State lives behind a ``limits`` storage URI: ``memory://`` for one process, ``redis://`` when several
processes share the work. In memory the synchronous ``limits`` API is used (plain dictionary work;
the async in-memory storage hands each key to a thread on every expiry sweep); any other storage goes
through ``limits.aio``, so a network round trip never blocks the event loop. Concurrent jobs per
user are counted in the ledger's held reservations instead (see ``Ledger.reserve``), so that limit
survives restarts and spans processes.
"""

from __future__ import annotations

import time
from typing import Any

from limits import RateLimitItem, parse
from limits import strategies as sync_strategies
from limits.aio import strategies as async_strategies
from limits.errors import ConfigurationError
from limits.storage import storage_from_string

from .errors import ConfigError, RateLimited
from .models import Identity


class RateLimiter:
    """A moving window per user and per server; a refused request takes nothing from either."""

    def __init__(self, user_rate: str, server_rate: str, storage_uri: str = "memory://") -> None:
        uri = storage_uri.removeprefix("async+")
        self._sync = uri.startswith("memory://")
        try:
            self._storage: Any = storage_from_string(uri if self._sync else f"async+{uri}")
        except (ConfigurationError, ValueError) as exc:
            raise ConfigError(f"IMAGEBOT_RATELIMIT_STORAGE is not usable: {exc}") from None
        strategies: Any = sync_strategies if self._sync else async_strategies
        self._limiter = strategies.MovingWindowRateLimiter(self._storage)
        self.user_item = parse(user_rate)
        self.server_item = parse(server_rate)

    async def _test(self, item: RateLimitItem, keys: tuple[str, ...], cost: int) -> bool:
        result = self._limiter.test(item, *keys, cost=cost)
        return bool(result if self._sync else await result)

    async def _hit(self, item: RateLimitItem, keys: tuple[str, ...], cost: int) -> bool:
        result = self._limiter.hit(item, *keys, cost=cost)
        return bool(result if self._sync else await result)

    async def _retry_after(self, item: RateLimitItem, keys: tuple[str, ...]) -> float:
        result = self._limiter.get_window_stats(item, *keys)
        stats = result if self._sync else await result
        return max(1.0, float(stats.reset_time) - time.time())

    async def check(self, identity: Identity, *, cost: int = 1) -> None:
        """Count one request, or raise ``RateLimited`` (changing nothing) with the time to wait."""
        user_keys = ("user", identity.platform, identity.server_id, identity.user_id)
        server_keys = ("server", identity.platform, identity.server_id)
        # Test the server first so a request refused for the server's sake costs the user nothing;
        # then take the user's slot and the server's (a hit is itself an atomic test-and-take).
        if not await self._test(self.server_item, server_keys, cost):
            raise await self._limited("server", server_keys)
        if not await self._hit(self.user_item, user_keys, cost):
            raise await self._limited("user", user_keys)
        if not await self._hit(self.server_item, server_keys, cost):
            raise await self._limited("server", server_keys)

    async def _limited(self, scope: str, keys: tuple[str, ...]) -> RateLimited:
        item = self.user_item if scope == "user" else self.server_item
        wait = await self._retry_after(item, keys)
        if scope == "user":
            return RateLimited(f"You have reached the limit of {item}. Try again in {wait:.0f} s.",
                               retry_after=wait, code="IMG-RATE-001")
        return RateLimited(f"This server has reached its limit of {item}. Try again in {wait:.0f} s.",
                           retry_after=wait, code="IMG-RATE-002")

    async def reset(self) -> None:
        result = self._storage.reset()
        if not self._sync:
            await result

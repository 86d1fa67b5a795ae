"""Per-user and per-server rate limits, on the ``limits`` library.

State lives behind a ``limits`` storage URI: ``memory://`` for one process, ``redis://`` when several
processes share the work. In memory the synchronous ``limits`` API is used: it is plain dictionary
work, while the async in-memory storage hops to a thread for every key on each expiry sweep.
Concurrent jobs per user are counted in the ledger's held reservations instead (see
``SqliteStore.reserve``), so that limit survives restarts and spans processes.
"""

from __future__ import annotations

import time
from typing import Any

from limits import RateLimitItem, parse
from limits import strategies as sync_strategies
from limits.aio import strategies as async_strategies
from limits.errors import ConfigurationError
from limits.storage import MemoryStorage, storage_from_string

from .errors import ConfigError, RateLimited
from .models import Identity

#: How often the in-memory limits drop entries that have left their window (memory only: every
#: check compares timestamps, so stale entries never count).
SWEEP_EVERY = 5.0


class SweptMemoryStorage(MemoryStorage):
    """``limits``' memory storage, swept every few seconds from the caller instead of every 10 ms.

    The stock storage starts a timer thread each 10 ms while busy; under load that thread takes the
    GIL on every tick, which cost the bot about 7% of its commands per second. The hook below is
    ``MemoryStorage``'s own (private) scheduling method; ``RateLimiter`` falls back to the stock
    storage if a release of ``limits`` renames it.
    """

    HOOK = "_MemoryStorage__schedule_expiry"

    def __init__(self, uri: str | None = None, **options: Any) -> None:
        super().__init__(uri, **options)
        self.timer.cancel()
        self._next_sweep = time.monotonic() + SWEEP_EVERY

    def _MemoryStorage__schedule_expiry(self) -> None:  # noqa: N802 - overrides the private hook
        now = time.monotonic()
        if now >= self._next_sweep:
            self._next_sweep = now + SWEEP_EVERY
            self._MemoryStorage__expire_events()  # type: ignore[attr-defined]

    @classmethod
    def fits(cls) -> bool:
        return callable(getattr(MemoryStorage, cls.HOOK, None)) and callable(
            getattr(MemoryStorage, "_MemoryStorage__expire_events", None)
        )


class RateLimiter:
    def __init__(self, user_rate: str, server_rate: str, storage_uri: str = "memory://") -> None:
        uri = storage_uri.removeprefix("async+")
        self._sync = uri.startswith("memory://")
        try:
            if self._sync and uri == "memory://" and SweptMemoryStorage.fits():
                self._storage: Any = SweptMemoryStorage(uri)
            else:
                self._storage = storage_from_string(uri if self._sync else f"async+{uri}")
        except (ConfigurationError, ValueError) as exc:
            raise ConfigError(f"IMAGEBOT_RATELIMIT_STORAGE is not usable: {exc}") from None
        strategies: Any = sync_strategies if self._sync else async_strategies
        self._limiter = strategies.MovingWindowRateLimiter(self._storage)
        self.user_item = parse(user_rate)
        self.server_item = parse(server_rate)

    async def _ask(self, method: str, item: RateLimitItem, keys: tuple[str, ...], cost: int = 1) -> Any:
        call = getattr(self._limiter, method)
        result = call(item, *keys, cost=cost) if method != "get_window_stats" else call(item, *keys)
        return result if self._sync else await result

    async def _retry_after(self, item: RateLimitItem, *keys: str) -> float:
        stats = await self._ask("get_window_stats", item, keys)
        return max(1.0, stats.reset_time - time.time())

    async def check(self, identity: Identity, *, cost: int = 1) -> None:
        """Count one request, or raise ``RateLimited`` (changing nothing) with the time to wait."""
        user_keys = ("user", identity.platform, identity.server_id, identity.user_id)
        server_keys = ("server", identity.platform, identity.server_id)
        # Test the server first so a request refused for the server's sake costs the user nothing;
        # then take the user's slot and the server's (a hit is itself an atomic test-and-take).
        if not await self._ask("test", self.server_item, server_keys, cost):
            raise await self._limited("server", server_keys, cost)
        if not await self._ask("hit", self.user_item, user_keys, cost):
            raise await self._limited("user", user_keys, cost)
        if not await self._ask("hit", self.server_item, server_keys, cost):
            raise await self._limited("server", server_keys, cost)

    async def _limited(self, scope: str, keys: tuple[str, ...], cost: int) -> RateLimited:
        item = self.user_item if scope == "user" else self.server_item
        wait = await self._retry_after(item, *keys)
        if scope == "user":
            return RateLimited(f"You have reached the limit of {item}. Try again in {wait:.0f} s.",
                               retry_after=wait, code="IMG-RATE-001")
        return RateLimited(f"This server has reached its limit of {item}. Try again in {wait:.0f} s.",
                           retry_after=wait, code="IMG-RATE-002")

    async def reset(self) -> None:
        result = self._storage.reset()
        if not self._sync:
            await result

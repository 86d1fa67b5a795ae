"""Per-user and per-server rate limits, on the ``limits`` library's public API.

State lives behind a ``limits`` storage URI: ``memory://`` for one process, ``redis://`` when several
processes share the work. In memory the synchronous ``limits`` API is used (plain dictionary work;
the async in-memory storage hands each key to a thread on every expiry sweep); any other storage goes
through ``limits.aio``, so a network round trip never blocks the event loop. Concurrent jobs per
user are counted in the ledger's held reservations instead (see ``Ledger.reserve``), so that limit
survives restarts and spans processes.

A networked store can go away. Every check is bounded by a short timeout; while the store does not
answer, ``on_outage`` decides: ``"closed"`` refuses the command (``LimitsUnavailable``, raised before the
core reserves anything, so nothing is charged), ``"open"`` lets it through unchecked. The outage is
logged once when it starts and once when it ends, with any credentials in the URI redacted. After a
failure the next check builds a fresh client, so a connection the Redis client kept from before the
outage can never wedge the limiter: it recovers by itself as soon as the store answers again.
"""

from __future__ import annotations

import asyncio
import inspect
import logging
import re
import time
from typing import Any
from urllib.parse import unquote, urlsplit

from limits import RateLimitItem, parse
from limits import strategies as sync_strategies
from limits.aio import strategies as async_strategies
from limits.errors import ConfigurationError
from limits.errors import StorageError as LimitsStorageError
from limits.storage import storage_from_string

from .errors import ConfigError, LimitsUnavailable, RateLimited
from .models import Identity

log = logging.getLogger(__name__)

#: ``config.limits.on_outage``: refuse commands while the store is unreachable, or let them through.
OUTAGE_POLICIES = ("closed", "open")
#: Seconds one check (or readiness ping) may wait for the store: a blackholed Redis costs a command no more.
DEFAULT_TIMEOUT = 1.5

_USERINFO = re.compile(r"^([A-Za-z][A-Za-z0-9+.-]*://)(.*)@")


def redact(uri: str) -> str:
    """The URI with its credentials (everything before the last ``@`` of the authority) as ``***``,
    so log lines and errors never show a password."""
    return _USERINFO.sub(r"\1***@", uri, count=1)


def _secrets(uri: str) -> tuple[str, ...]:
    """The credential strings of a URI (raw and percent-decoded), longest first, to scrub from any text."""
    found: set[str] = set()
    match = _USERINFO.match(uri)
    if match and match.group(2):
        found.add(match.group(2))
    try:
        password = urlsplit(uri).password
    except ValueError:
        password = None
    if password:
        found.add(password)
    found.update({unquote(s) for s in found})
    return tuple(sorted((s for s in found if s), key=len, reverse=True))


class RateLimiter:
    """A moving window per user and per server; a refused request takes nothing from either."""

    def __init__(self, user_rate: str, server_rate: str, storage_uri: str = "memory://",
                 on_outage: str = "closed", *, timeout: float = DEFAULT_TIMEOUT) -> None:
        if on_outage not in OUTAGE_POLICIES:
            raise ConfigError("IMAGEBOT_RATELIMIT_ON_OUTAGE must be 'closed' or 'open'")
        uri = storage_uri.removeprefix("async+")
        self._sync = uri.startswith("memory://")
        self._uri = uri if self._sync else f"async+{uri}"
        self._shown = redact(uri)
        self._secrets = _secrets(uri)
        self.on_outage = on_outage
        self.timeout = timeout
        self._storage: Any
        self._limiter: Any
        self._storage, self._limiter = self._build()
        #: Which client the current attempt uses; a late failure of an older one changes nothing.
        self._generation = 0
        self._stale = False
        self._down_since: float | None = None
        self.user_item = parse(user_rate)
        self.server_item = parse(server_rate)

    @property
    def storage_shown(self) -> str:
        """The storage URI as it may be shown (credentials redacted)."""
        return self._shown

    def _build(self) -> tuple[Any, Any]:
        try:
            if self._sync:
                storage: Any = storage_from_string(self._uri)
            else:
                storage = storage_from_string(self._uri, wrap_exceptions=True, **_client_options(self._uri))
        except (ConfigurationError, ValueError) as exc:
            raise ConfigError(f"IMAGEBOT_RATELIMIT_STORAGE is not usable: {self._scrub(str(exc))}") from None
        strategies: Any = sync_strategies if self._sync else async_strategies
        try:
            backend: tuple[type[BaseException], ...] = tuple(_as_tuple(storage.base_exceptions))
        except (AttributeError, NotImplementedError):
            backend = ()
        self._outage_errors: tuple[type[BaseException], ...] = (LimitsStorageError, OSError, TimeoutError,
                                                                 *backend)
        return storage, strategies.MovingWindowRateLimiter(storage)

    def _scrub(self, text: str) -> str:
        text = text.replace(self._uri, self._shown).replace(self._uri.removeprefix("async+"), self._shown)
        for secret in self._secrets:
            text = text.replace(secret, "***")
        return text

    # -- the check ---------------------------------------------------------------------------------

    async def _test(self, limiter: Any, item: RateLimitItem, keys: tuple[str, ...], cost: int) -> bool:
        result = limiter.test(item, *keys, cost=cost)
        return bool(result if self._sync else await result)

    async def _hit(self, limiter: Any, item: RateLimitItem, keys: tuple[str, ...], cost: int) -> bool:
        result = limiter.hit(item, *keys, cost=cost)
        return bool(result if self._sync else await result)

    async def _retry_after(self, limiter: Any, item: RateLimitItem, keys: tuple[str, ...]) -> float:
        result = limiter.get_window_stats(item, *keys)
        stats = result if self._sync else await result
        return max(1.0, float(stats.reset_time) - time.time())

    async def check(self, identity: Identity, *, cost: int = 1) -> None:
        """Count one request, or raise ``RateLimited`` (changing nothing) with the time to wait.

        Store unreachable: ``LimitsUnavailable`` when failing closed, nothing when failing open."""
        if self._sync:
            await self._count(self._limiter, identity, cost)
            return
        limiter, generation = await self._current()
        try:
            async with asyncio.timeout(self.timeout):
                await self._count(limiter, identity, cost)
        except RateLimited:
            self._up(generation)  # the store answered: it is there
            raise
        except self._outage_errors as exc:
            self._down(generation, exc)
            if self.on_outage == "open":
                return
            raise LimitsUnavailable() from None
        self._up(generation)

    async def _count(self, limiter: Any, identity: Identity, cost: int) -> None:
        user_keys = ("user", identity.platform, identity.server_id, identity.user_id)
        server_keys = ("server", identity.platform, identity.server_id)
        # Test the server first so a request refused for the server's sake costs the user nothing;
        # then take the user's slot and the server's (a hit is itself an atomic test-and-take).
        if not await self._test(limiter, self.server_item, server_keys, cost):
            raise await self._limited(limiter, "server", server_keys)
        if not await self._hit(limiter, self.user_item, user_keys, cost):
            raise await self._limited(limiter, "user", user_keys)
        if not await self._hit(limiter, self.server_item, server_keys, cost):
            raise await self._limited(limiter, "server", server_keys)

    async def _limited(self, limiter: Any, scope: str, keys: tuple[str, ...]) -> RateLimited:
        item = self.user_item if scope == "user" else self.server_item
        wait = await self._retry_after(limiter, item, keys)
        if scope == "user":
            return RateLimited(f"You have reached the limit of {item}. Try again in {wait:.0f} s.",
                               retry_after=wait, code="IMG-RATE-001")
        return RateLimited(f"This server has reached its limit of {item}. Try again in {wait:.0f} s.",
                           retry_after=wait, code="IMG-RATE-002")

    # -- outage bookkeeping ------------------------------------------------------------------------

    async def _current(self) -> tuple[Any, int]:
        """The limiter to use now: after a failure, one on a fresh client (the old one's connections
        are closed), so nothing the client cached from before the outage is reused."""
        if self._stale:
            self._stale = False
            old = self._storage
            self._storage, self._limiter = self._build()
            self._generation += 1
            await _discard(old)
        return self._limiter, self._generation

    def _down(self, generation: int, exc: BaseException | None) -> None:
        if generation != self._generation:
            return  # a client already replaced: its late failure says nothing about the store now
        self._stale = True
        if self._down_since is not None:
            return
        self._down_since = time.monotonic()
        cause = getattr(exc, "storage_error", exc)
        detail = self._scrub(str(cause)) if cause is not None else "PING failed"
        if not detail:
            detail = f"no answer within {self.timeout:g} s"
        what = f"{type(cause).__name__}: {detail}" if cause is not None else detail
        if self.on_outage == "open":
            policy = "failing open: commands pass without rate limits until it answers again"
        else:
            policy = "failing closed: commands are refused (nothing charged) until it answers again"
        log.warning("rate-limit store %s is unreachable (%s); %s", self._shown, what, policy)

    def _up(self, generation: int) -> None:
        if generation != self._generation or self._down_since is None:
            return
        down_for = time.monotonic() - self._down_since
        self._down_since = None
        log.info("rate-limit store %s is reachable again after %.0f s; limits are checked again",
                 self._shown, down_for)

    # -- operator helpers --------------------------------------------------------------------------

    async def reachable(self) -> bool:
        """For readiness checks: ``memory://`` is always there; any other store must answer a PING
        within the timeout. Feeds the same once-per-outage logging as the checks."""
        if self._sync:
            return True
        await self._current()
        storage, generation = self._storage, self._generation
        try:
            async with asyncio.timeout(self.timeout):
                ok = bool(await storage.check())
        except self._outage_errors as exc:
            self._down(generation, exc)
            return False
        if ok:
            self._up(generation)
        else:
            self._down(generation, None)
        return ok

    async def aclose(self) -> None:
        """Close the store's connections (Redis) on the way out."""
        if not self._sync:
            await _discard(self._storage)

    async def reset(self) -> None:
        result = self._storage.reset()
        if not self._sync:
            await result


def _client_options(uri: str) -> dict[str, Any]:
    """Options for the Redis client. A plain server gets no client-side retries: the client would log
    every retried command (one outage, a line per command), and this limiter already starts each check
    after a failure on a fresh client. Cluster and sentinel keep their client's retries, which follow
    topology changes."""
    if not uri.startswith(("async+redis://", "async+rediss://")):
        return {}
    from coredis.retry import NoRetryPolicy

    return {"retry_policy": NoRetryPolicy()}


def _as_tuple(value: Any) -> tuple[type[BaseException], ...]:
    return tuple(value) if isinstance(value, tuple) else (value,)


async def _discard(storage: Any) -> None:
    """Close the connections of a client that failed, so the next attempt opens fresh ones."""
    pool = getattr(getattr(getattr(storage, "bridge", None), "storage", None), "connection_pool", None)
    disconnect = getattr(pool, "disconnect", None)
    if disconnect is None:
        return
    try:
        result = disconnect()
        if inspect.isawaitable(result):
            async with asyncio.timeout(DEFAULT_TIMEOUT):
                await result
    except Exception as exc:  # noqa: BLE001 - a client already broken may fail to close; it is dropped anyway
        log.debug("closing the old rate-limit store client failed: %s", type(exc).__name__)

"""The one HTTP server of a process: Slack's ``/slack/events``, Discord's ``/discord/interactions`` and
the operator's endpoints share ``IMAGEBOT_HTTP_PORT``, so an operator opens one port per process
whatever it serves:

    GET /healthz   200 "ok" while the event loop runs (liveness: restart the process when it fails)
    GET /readyz    200 when the database answers a cheap read and the rate-limit store (when not
                   memory://) answers a PING; else 503 with {"status": "unavailable", "down": [...]}
                   naming the parts (never an address, a URI or an error text)
                   (``shutting_down`` once ``draining`` is set)
    GET /metrics   Prometheus text exposition of ``bot.metrics``

Adapters add their routes (``add``) whenever they start, before or after the server listens: one
catch-all route dispatches to them, so the order in which a process starts its parts does not matter.
The core (for /readyz and the gauges of /metrics) comes with the constructor or ``attach``.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable
from typing import TYPE_CHECKING

from aiohttp import web

from . import metrics
from .errors import ConfigError

if TYPE_CHECKING:
    from .core import Imagebot

log = logging.getLogger(__name__)

Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]
#: Chat platforms' payloads are small; anything larger is not from them.
MAX_BODY = 256 * 1024


class WebServer:
    def __init__(self, host: str = "0.0.0.0", port: int = 3000, core: Imagebot | None = None, *,
                 required: bool = True) -> None:
        self.host = host
        self.port = port
        self.core = core
        #: False: the server only carries the operator's endpoints on a port nobody chose, so a port
        #: already taken is a warning (the process runs without them), not a stop.
        self.required = required
        self.listening = False
        #: Set when the process starts shutting down: /readyz answers 503 ("shutting_down") so a load
        #: balancer stops sending new commands while in-flight ones finish; /healthz stays 200.
        self.draining = False
        self.app = web.Application(client_max_size=MAX_BODY)
        self.app.router.add_route("*", "/{tail:.*}", self._dispatch)
        self._runner: web.AppRunner | None = None
        self._routes: dict[tuple[str, str], Handler] = {
            ("GET", "/healthz"): self._health, ("GET", "/readyz"): self._ready, ("GET", "/metrics"): self._metrics,
        }

    def attach(self, core: Imagebot) -> None:
        """The core whose database and rate-limit store /readyz checks and /metrics reads."""
        self.core = core

    @property
    def paths(self) -> list[str]:
        return [path for _, path in self._routes]

    def add(self, method: str, path: str, handler: Handler) -> None:
        self._routes[(method.upper(), path)] = handler
        log.info("HTTP: serving %s %s", method.upper(), path)

    async def _dispatch(self, request: web.Request) -> web.StreamResponse:
        handler = self._routes.get((request.method, request.path))
        if handler is None:
            if any(path == request.path for _, path in self._routes):
                return web.Response(status=405, text="method not allowed")
            return web.Response(status=404, text="not found")
        return await handler(request)

    async def start(self) -> int:
        """Listen; return the bound port (``port`` 0 picks a free one). A taken port stops the bot naming
        the key, or, when the server is not ``required``, is logged and 0 returned."""
        runner = web.AppRunner(self.app, access_log=None)
        await runner.setup()
        # A burst of commands opens many connections at once; the default backlog (128) drops SYNs past it,
        # and a dropped SYN costs the client a 1 s retransmit: too much of a platform's 3 s.
        site = web.TCPSite(runner, self.host, self.port, backlog=1024)
        try:
            await site.start()
        except OSError as exc:
            await runner.cleanup()
            if not self.required:
                log.warning("HTTP: cannot listen on %s:%d (%s): this process serves no /healthz, /readyz or "
                            "/metrics; set IMAGEBOT_HTTP_PORT to a free port (or 'off')", self.host, self.port,
                            exc.strerror or exc)
                return 0
            raise ConfigError(f"IMAGEBOT_HTTP_PORT: cannot listen on {self.host}:{self.port} "
                              f"({exc.strerror or exc}); pick a free port") from None
        self._runner = runner
        self.listening = True
        server = site._server  # noqa: SLF001 - the only way to learn the port when 0 was asked for
        sockets = getattr(server, "sockets", None)
        self.port = int(sockets[0].getsockname()[1]) if sockets else self.port
        log.info("HTTP: listening on %s:%d", self.host, self.port)
        return self.port

    async def stop(self) -> None:
        if self._runner is not None:
            await self._runner.cleanup()
            self._runner = None
            self.listening = False

    async def _health(self, request: web.Request) -> web.Response:
        return web.Response(text="ok")

    async def _ready(self, request: web.Request) -> web.Response:
        """Both probes at once, each bounded (the database's by ``metrics.PROBE_TIMEOUT``, the store's by
        the limiter's own timeout), so a blackholed dependency answers 503 within seconds."""
        core = self.core
        if self.draining:
            return web.json_response({"status": "unavailable", "down": ["shutting_down"]}, status=503)
        if core is None:
            return web.json_response({"status": "unavailable", "down": ["core"]}, status=503)
        store_name = _store_name(core.limiter.storage_shown)
        checks: dict[str, Awaitable[bool]] = {"database": metrics.database_ok(core)}
        if store_name is not None:
            checks[store_name] = metrics.ratelimit_ok(core)
        results = await asyncio.gather(*checks.values())
        down = [name for name, ok in zip(checks, results, strict=True) if not ok]
        body = {"status": "unavailable" if down else "ready", "down": down,
                "checks": {name: "ok" if ok else "down" for name, ok in zip(checks, results, strict=True)}}
        return web.json_response(body, status=503 if down else 200)

    async def _metrics(self, request: web.Request) -> web.Response:
        await metrics.refresh(self.core)
        body, content_type = metrics.exposition()
        response = web.Response(body=body)
        response.headers["Content-Type"] = content_type
        return response


def _store_name(shown: str) -> str | None:
    """How /readyz names the rate-limit store: ``redis`` for any Redis URI, None for ``memory://``
    (nothing to reach). Only the scheme is looked at, never the rest of the URI."""
    scheme = shown.split("://", 1)[0].lower().removeprefix("async+")
    if scheme == "memory":
        return None
    return "redis" if scheme.startswith("redis") else "ratelimit_store"

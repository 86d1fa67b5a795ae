"""The one HTTP server of a process: Slack's ``/slack/events``, Discord's ``/discord/interactions`` and
``/healthz`` share ``IMAGEBOT_HTTP_PORT``, so an operator opens one port per process whatever it serves.

Adapters add their routes (``add``) whenever they start, before or after the server listens: one
catch-all route dispatches to them, so the order in which a process starts its parts does not matter.
"""

from __future__ import annotations

import logging
from collections.abc import Awaitable, Callable

from aiohttp import web

from .errors import ConfigError

log = logging.getLogger(__name__)

Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]
#: Chat platforms' payloads are small; anything larger is not from them.
MAX_BODY = 256 * 1024


class WebServer:
    def __init__(self, host: str = "0.0.0.0", port: int = 3000) -> None:
        self.host = host
        self.port = port
        self.app = web.Application(client_max_size=MAX_BODY)
        self.app.router.add_route("*", "/{tail:.*}", self._dispatch)
        self._runner: web.AppRunner | None = None
        self._routes: dict[tuple[str, str], Handler] = {("GET", "/healthz"): self._health}

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
        """Listen; return the bound port (``port`` 0 picks a free one). A taken port stops the bot naming the key."""
        runner = web.AppRunner(self.app, access_log=None)
        await runner.setup()
        # A burst of commands opens many connections at once; the default backlog (128) drops SYNs past it,
        # and a dropped SYN costs the client a 1 s retransmit: too much of a platform's 3 s.
        site = web.TCPSite(runner, self.host, self.port, backlog=1024)
        try:
            await site.start()
        except OSError as exc:
            await runner.cleanup()
            raise ConfigError(f"IMAGEBOT_HTTP_PORT: cannot listen on {self.host}:{self.port} "
                              f"({exc.strerror or exc}); pick a free port") from None
        self._runner = runner
        server = site._server  # noqa: SLF001 - the only way to learn the port when 0 was asked for
        sockets = getattr(server, "sockets", None)
        self.port = int(sockets[0].getsockname()[1]) if sockets else self.port
        log.info("HTTP: listening on %s:%d", self.host, self.port)
        return self.port

    async def stop(self) -> None:
        if self._runner is not None:
            await self._runner.cleanup()
            self._runner = None

    async def _health(self, request: web.Request) -> web.Response:
        return web.Response(text="ok")

"""HTTP mode: Slack POSTs commands, interactivity and events to ``/slack/events`` on our aiohttp server.

Bolt checks each request's signature and timestamp (forged, unsigned or older than five minutes -> 401)
before any listener runs, and answers once the listener has called ``ack()``.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Awaitable, Callable

from aiohttp import web
from slack_bolt.adapter.aiohttp import to_aiohttp_response, to_bolt_request
from slack_bolt.async_app import AsyncApp

from bot.jobs import AckGate

EVENTS_PATH = "/slack/events"
#: Slack's payloads are small; anything larger is not from Slack.
MAX_BODY = 256 * 1024


def events_handler(app: AsyncApp, acks: AckGate | None = None) -> Callable[[web.Request], Awaitable[web.Response]]:
    """``POST /slack/events``: Bolt checks the signature, runs the listener, answers with its ack."""
    gate = acks or AckGate()

    async def events(request: web.Request) -> web.Response:
        with gate:  # jobs started by earlier acks wait while this request is being answered
            return await to_aiohttp_response(await app.async_dispatch(await to_bolt_request(request)))

    return events


class LateEvents:
    """``/slack/events`` on the process's shared server (``bot.web``), added before that server starts
    and before the Slack app exists: a request that arrives in between waits for it (``READY_WAIT`` s at
    most, then 503, which Slack retries)."""

    READY_WAIT = 2.0

    def __init__(self) -> None:
        self._handler: Callable[[web.Request], Awaitable[web.Response]] | None = None
        self._ready = asyncio.Event()

    def serve(self, app: AsyncApp, acks: AckGate) -> None:
        self._handler = events_handler(app, acks)
        self._ready.set()

    def stop(self) -> None:
        self._handler = None
        self._ready.clear()

    async def __call__(self, request: web.Request) -> web.Response:
        if self._handler is None:
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(self.READY_WAIT):
                    await self._ready.wait()
        handler = self._handler
        if handler is None:
            return web.Response(status=503, text="the Slack app is not ready")
        return await handler(request)


def web_application(app: AsyncApp, path: str = EVENTS_PATH, acks: AckGate | None = None) -> web.Application:
    events = events_handler(app, acks)

    async def health(request: web.Request) -> web.Response:
        return web.Response(text="ok")

    web_app = web.Application(client_max_size=MAX_BODY)
    web_app.add_routes([web.post(path, events), web.get("/healthz", health)])
    return web_app


async def serve_http(app: AsyncApp, host: str, port: int,
                     acks: AckGate | None = None) -> tuple[web.AppRunner, int]:
    """Start serving; returns the runner (``await runner.cleanup()`` to stop) and the bound port. ``acks``:
    the job runner's gate, which counts each request being answered so jobs let it go first."""
    runner = web.AppRunner(web_application(app, acks=acks), access_log=None)
    await runner.setup()
    # A burst of commands opens many connections at once; the default backlog (128) drops SYNs past it,
    # and a dropped SYN costs the client a 1 s retransmit: too much of Slack's 3 s.
    site = web.TCPSite(runner, host, port, backlog=1024)
    await site.start()
    server = site._server  # noqa: SLF001 - the only way to learn the port when 0 was asked for
    sockets = getattr(server, "sockets", None)  # an asyncio.Server once started
    bound = sockets[0].getsockname()[1] if sockets else port
    return runner, int(bound)

"""HTTP mode: Slack POSTs commands, interactivity and events to ``/slack/events`` on our aiohttp server.

Bolt checks each request's signature and timestamp (forged, unsigned or older than five minutes -> 401)
before any listener runs, and answers once the listener has called ``ack()``.
"""

from __future__ import annotations

from aiohttp import web
from slack_bolt.adapter.aiohttp import to_aiohttp_response, to_bolt_request
from slack_bolt.async_app import AsyncApp

from bot.jobs import AckGate

EVENTS_PATH = "/slack/events"
#: Slack's payloads are small; anything larger is not from Slack.
MAX_BODY = 256 * 1024


def web_application(app: AsyncApp, path: str = EVENTS_PATH, acks: AckGate | None = None) -> web.Application:
    acks = acks or AckGate()

    async def events(request: web.Request) -> web.Response:
        with acks:  # jobs started by earlier acks wait while this request is being answered
            return await to_aiohttp_response(await app.async_dispatch(await to_bolt_request(request)))

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

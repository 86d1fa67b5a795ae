"""HTTP mode: Slack POSTs commands, interactivity and events to ``/slack/events`` on our aiohttp server.

Each request is checked here before Bolt sees it, so nothing a sender controls can reach a 5xx:
headers missing or malformed (a timestamp that is not a number), a bad signature, a timestamp more than
five minutes off (stale or from the future) or a signature already used (a replay) -> 401; a signed body
that is not what Slack sends (not UTF-8, JSON that does not parse or is not an object, a JSON content
type on a form body) -> 400. Then Bolt checks the signature again, runs the listener and answers once the
listener has called ``ack()``.

Replays are remembered by this process only (a captured request replayed to another ingress within the
five minutes is not caught); Slack never sends one request twice with the same signature.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import hmac
import logging
import re
import time
from collections import OrderedDict
from collections.abc import Awaitable, Callable, Mapping
from typing import Any

from aiohttp import web
from slack_bolt.adapter.aiohttp import to_aiohttp_response
from slack_bolt.async_app import AsyncApp
from slack_bolt.request import payload_utils as pu
from slack_bolt.request.async_request import AsyncBoltRequest

from bot.jobs import AckGate

log = logging.getLogger(__name__)

EVENTS_PATH = "/slack/events"
#: Slack's payloads are small; anything larger is not from Slack.
MAX_BODY = 256 * 1024
#: Slack's rule: a request whose timestamp is further than this from now is refused.
MAX_SKEW = 300
#: Signatures remembered to refuse replays (those within ``MAX_SKEW``); the oldest go first past this.
REPLAY_MEMORY = 100_000
TIMESTAMP_RE = re.compile(r"[0-9]{1,12}")
SIGNATURE_RE = re.compile(r"v0=[0-9a-f]{64}")


class Refused(Exception):
    """A request refused at the edge, with its status (401 or 400) and a short reason for the sender."""

    def __init__(self, status: int, reason: str) -> None:
        super().__init__(reason)
        self.status = status
        self.reason = reason


class ReplayGuard:
    """Signatures seen in the last ``MAX_SKEW`` seconds: the same signed request twice is a replay."""

    def __init__(self, limit: int = REPLAY_MEMORY) -> None:
        self._seen: OrderedDict[str, float] = OrderedDict()
        self._limit = limit

    def first_time(self, signature: str, now: float) -> bool:
        while self._seen and (len(self._seen) >= self._limit or next(iter(self._seen.values())) < now):
            self._seen.popitem(last=False)
        if signature in self._seen:
            return False
        self._seen[signature] = now + 2 * MAX_SKEW  # past the stamp's window either side
        return True


def check_signed(secret: str, headers: Mapping[str, str], body: bytes, replays: ReplayGuard, *,
                 now: float | None = None) -> str:
    """The body as text when Slack signed it within the last five minutes and it was not seen before;
    else ``Refused`` (401, or 400 for a signed body that is not UTF-8)."""
    stamp = headers.get("X-Slack-Request-Timestamp", "").strip()
    signature = headers.get("X-Slack-Signature", "").strip()
    if not secret or not TIMESTAMP_RE.fullmatch(stamp) or not SIGNATURE_RE.fullmatch(signature):
        raise Refused(401, "missing or malformed signature headers")
    current = time.time() if now is None else now
    if abs(current - int(stamp)) > MAX_SKEW:
        raise Refused(401, "stale or future timestamp")
    expected = hmac.new(secret.encode(), b"v0:" + stamp.encode() + b":" + body, hashlib.sha256).hexdigest()
    if not hmac.compare_digest(f"v0={expected}", signature):
        raise Refused(401, "bad signature")
    if not replays.first_time(signature, current):
        raise Refused(401, "replayed request")
    try:
        return body.decode("utf-8")
    except UnicodeDecodeError:
        raise Refused(400, "the body is not UTF-8") from None


#: Where Bolt reads each request's parts before any listener runs (its kwargs and matchers): a part of
#: the wrong type there is an exception inside Bolt, answered 500, so it is tried here first.
_BOLT_READS = (pu.to_options, pu.to_shortcut, pu.to_action, pu.to_view, pu.to_command, pu.to_event,
               pu.to_message, pu.to_step, pu.is_message_event, pu.is_workflow_step_save)


def _shape_problem(body: dict[str, Any]) -> str | None:
    """What Slack never sends but Bolt's matchers would trip on: a button press whose ``actions`` is not a
    list of objects with a string ``action_id``, an event or view that is not an object."""
    if body.get("type") == "block_actions" and "actions" in body:
        actions = body["actions"]
        if not isinstance(actions, list) or not actions or not all(
                isinstance(a, dict) and isinstance(a.get("action_id"), str)
                and isinstance(a.get("block_id", ""), str) for a in actions):
            return "block_actions without a list of actions"
    for part in ("event", "view"):
        if part in body and not isinstance(body[part], dict):
            return f"{part} is not an object"
    if "command" in body and not isinstance(body["command"], str):
        return "command is not a string"
    for read in _BOLT_READS:
        read(body)
    return None


def bolt_request(text: str, request: web.Request) -> AsyncBoltRequest:
    """Bolt's request for a signed body; ``Refused`` (400) when Bolt could not read it (a JSON content type
    on a form body, JSON that is not an object, fields of the wrong type where Bolt looks for ids or
    matches listeners)."""
    try:
        bolt = AsyncBoltRequest(body=text, query=request.query_string, headers=dict(request.headers))
        problem = _shape_problem(bolt.body) if isinstance(bolt.body, dict) else "not a JSON object"
    except (ValueError, TypeError, AttributeError, KeyError, IndexError):  # json.JSONDecodeError is a ValueError
        problem = "unreadable"
    if problem is not None:
        raise Refused(400, f"the body is not a Slack payload ({problem})")
    return bolt


def signing_secret(app: AsyncApp) -> str:
    """The secret Bolt verifies with (HTTP mode always has one: ``SlackSettings`` requires it)."""
    return str(getattr(app, "_signing_secret", "") or "")


def events_handler(app: AsyncApp, acks: AckGate | None = None) -> Callable[[web.Request], Awaitable[web.Response]]:
    """``POST /slack/events``: checked here (401/400, see the module), then Bolt runs the listener and answers
    with its ack."""
    gate = acks or AckGate()
    replays = ReplayGuard()
    secret = signing_secret(app)

    async def events(request: web.Request) -> web.Response:
        with gate:  # jobs started by earlier acks wait while this request is being answered
            try:
                body = await request.read()
                bolt = bolt_request(check_signed(secret, request.headers, body, replays), request)
            except Refused as exc:
                log.debug("Slack request refused (%d): %s", exc.status, exc.reason)
                return web.json_response({"error": exc.reason}, status=exc.status)
            return await to_aiohttp_response(await app.async_dispatch(bolt))

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

"""A loopback fake of Discord: the gateway websocket and the REST routes the bot uses.

The real discord.py client connects to it through DISCORD_API_BASE_URL / DISCORD_GATEWAY_URL. Tests
push INTERACTION_CREATE dispatches built by ``Payloads`` (one factory for every interaction shape) and
read back every REST call the client made (``fake.calls``). ``fake.fail(...)`` makes a route answer
with Discord's error shapes (10062 unknown interaction, 40005 too large, 50013 missing permissions...).
Nothing here imports the bot's code.
"""

from __future__ import annotations

import asyncio
import json
import re
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import aiohttp
from aiohttp import WSMsgType, web
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from cryptography.hazmat.primitives.serialization import Encoding, PublicFormat

from .multipart import media_type, parse_form

APP_ID = 900000000000000001
GUILD_ID = 800000000000000001
CHANNEL_ID = 700000000000000001
DEFAULT_LIMIT = 10 * 1024 * 1024
EVERYONE = 0x0000_0000_0004_0C41  # a plain member: view, send, read history, add reactions, use commands
MANAGE_GUILD = 1 << 5
DISCORD_EPOCH = 1_420_070_400_000
TIMESTAMP = "2026-01-01T00:00:00.000000+00:00"


def user(uid: int, name: str | None = None, *, bot: bool = False) -> dict[str, Any]:
    name = name or f"user{uid % 10000}"
    return {"id": str(uid), "username": name, "discriminator": "0", "global_name": name.title(),
            "avatar": None, "bot": bot, "public_flags": 0}


BOT_USER = user(APP_ID, "imagebot", bot=True)


@dataclass
class Call:
    method: str
    path: str
    json: Any = None
    files: list[tuple[str, bytes]] = field(default_factory=list)
    query: dict[str, str] = field(default_factory=dict)
    at: float = 0.0
    status: int = 200

    @property
    def token(self) -> str | None:
        m = re.match(r"/api/v10/(?:interactions/\d+|webhooks/\d+)/([^/]+)", self.path)
        return m[1] if m else None

    @property
    def content(self) -> str | None:
        if not isinstance(self.json, dict):
            return None
        # A message's own content, or an interaction response's (``{"type": 4, "data": {"content": ...}}``).
        data = self.json.get("data")
        return self.json.get("content") or (data.get("content") if isinstance(data, dict) else None)

    @property
    def embeds(self) -> list[dict[str, Any]]:
        return (self.json or {}).get("embeds") or [] if isinstance(self.json, dict) else []

    @property
    def ephemeral(self) -> bool:
        flags = (self.json or {}).get("flags") or (self.json or {}).get("data", {}).get("flags") or 0
        return bool(int(flags) & 64)


@dataclass
class Rule:
    method: str
    pattern: re.Pattern[str]
    status: int
    code: int
    message: str
    times: int
    when: Callable[[Call], bool]


@dataclass
class Stall:
    method: str
    pattern: re.Pattern[str]
    seconds: float
    times: int
    when: Callable[[Call], bool]


ERRORS = {
    0: (401, "401: Unauthorized"),
    10062: (404, "Unknown interaction"),
    50027: (401, "Invalid Webhook Token"),
    40005: (413, "Request entity too large"),
    50013: (403, "Missing Permissions"),
    50001: (403, "Missing Access"),
    50007: (403, "Cannot send messages to this user"),
}


class FakeDiscord:
    def __init__(self, *, shards: int = 1) -> None:
        self.calls: list[Call] = []
        self.by_token: dict[str, list[Call]] = {}
        self.rules: list[Rule] = []
        self.stalls: list[Stall] = []
        self.commands: dict[str, list[dict[str, Any]]] = {}
        self.messages: dict[str, dict[str, Any]] = {}
        self.originals: dict[str, str] = {}
        self.dispatched: dict[str, float] = {}
        self.cdn: dict[str, tuple[bytes, str]] = {}
        self.dm_channels: set[str] = set()
        #: Messages deleted through an interaction webhook (``DELETE .../messages/@original``).
        self.deleted: list[str] = []
        #: Every interaction sent to the bot, by id (a component's callback finds the message it is on).
        self.interactions: dict[str, dict[str, Any]] = {}
        self.identifies: list[list[int]] = []
        self.shards = shards
        #: What GET /gateway/bot names as the gateway (default: this fake's own).
        self.bot_gateway_url: str | None = None
        self._sockets: dict[int, tuple[web.WebSocketResponse, list[int]]] = {}
        self._last_id = 0
        #: The application's key pair: the fake signs the interactions it POSTs to the bot's endpoint.
        self.signing_key = Ed25519PrivateKey.generate()
        #: Each interaction POSTed to the bot: (status, parsed answer or text, the payload).
        self.answers: list[tuple[int, Any, dict[str, Any]]] = []
        self._runner: web.AppRunner | None = None
        self.port = 0
        self.app = web.Application(client_max_size=256 * 1024 * 1024)
        r = self.app.router
        r.add_get("/gateway", self._gateway)
        r.add_get("/cdn/{name}", self._cdn)
        r.add_route("*", "/api/v10/{tail:.*}", self._rest)

    # -- lifecycle ---------------------------------------------------------------------------------

    async def start(self) -> FakeDiscord:
        self._runner = web.AppRunner(self.app, handle_signals=False, shutdown_timeout=0.1)
        await self._runner.setup()
        site = web.TCPSite(self._runner, "127.0.0.1", 0)
        await site.start()
        self.port = site._server.sockets[0].getsockname()[1]  # type: ignore[union-attr]
        return self

    async def stop(self) -> None:
        for ws, _ in list(self._sockets.values()):
            await ws.close()
        if self._runner is not None:
            await self._runner.cleanup()
            self._runner = None

    @property
    def api_base(self) -> str:
        return f"http://127.0.0.1:{self.port}/api/v10"

    @property
    def gateway_url(self) -> str:
        return f"ws://127.0.0.1:{self.port}/gateway"

    def env(self) -> dict[str, str]:
        return {"DISCORD_TOKEN": "fake-bot-token", "DISCORD_API_BASE_URL": self.api_base,
                "DISCORD_GATEWAY_URL": self.gateway_url}

    @property
    def public_key(self) -> str:
        """DISCORD_PUBLIC_KEY for the bot: hex, as the Developer Portal shows it."""
        return self.signing_key.public_key().public_bytes(Encoding.Raw, PublicFormat.Raw).hex()

    def signed(self, body: bytes, timestamp: int | None = None) -> dict[str, str]:
        """Discord's signature headers: Ed25519 over timestamp + body."""
        stamp = str(int(time.time()) if timestamp is None else timestamp)
        signature = self.signing_key.sign(stamp.encode() + body).hex()
        return {"X-Signature-Ed25519": signature, "X-Signature-Timestamp": stamp,
                "Content-Type": "application/json"}

    async def interact(self, url: str, payload: dict[str, Any], *, session: aiohttp.ClientSession | None = None,
                       headers: dict[str, str] | None = None) -> tuple[int, Any]:
        """POST an interaction to the bot's endpoint the way Discord does (signed) and read its answer."""
        body = json.dumps(payload).encode()
        own = session is None
        session = session or aiohttp.ClientSession()
        try:
            if "token" in payload:
                self.dispatched[payload["token"]] = time.perf_counter()
            if isinstance(payload.get("id"), str):
                self.interactions[payload["id"]] = payload
            async with session.post(url, data=body, headers=self.signed(body) if headers is None else headers) as resp:
                answer: Any
                if media_type(resp.headers).startswith("multipart/"):
                    answer = await self._multipart_answer(resp)
                else:
                    text = await resp.text()
                    try:
                        answer = json.loads(text)
                    except ValueError:
                        answer = text
                self.answers.append((resp.status, answer, payload))
                return resp.status, answer
        finally:
            if own:
                await session.close()

    @staticmethod
    async def _multipart_answer(resp: aiohttp.ClientResponse) -> Any:
        """An interaction response with attachments: its ``payload_json``, plus ``"files"``: (name, bytes)."""
        answer: dict[str, Any] = {}
        files: list[tuple[str, bytes]] = []
        for part in parse_form(await resp.read(), resp.headers["Content-Type"]):
            if part.name == "payload_json":
                answer.update(json.loads(part.data))
            else:
                files.append((part.filename or "", part.data))
        answer["files"] = files
        return answer

    def new_id(self) -> int:
        """A snowflake of the current time, as Discord's are: the bot reads an interaction's age from its id
        (the token's 15 minutes), so ids from the past would make every interaction look expired."""
        now = (int(time.time() * 1000) - DISCORD_EPOCH) << 22
        self._last_id = max(self._last_id + 1, now)
        return self._last_id

    # -- scripting and reading back ----------------------------------------------------------------

    def fail(self, method: str, pattern: str, code: int, *, times: int = 1,
             when: Callable[[Call], bool] = lambda call: True) -> None:
        """The next ``times`` matching requests get Discord's error ``code`` (its usual HTTP status)."""
        status, message = ERRORS[code]
        self.rules.append(Rule(method, re.compile(pattern), status, code, message, times, when))

    def stall(self, method: str, pattern: str, seconds: float, *, times: int = 1,
              when: Callable[[Call], bool] = lambda call: True) -> None:
        """The next ``times`` matching requests are answered only after ``seconds`` (a slow upload); the
        call is recorded when it is answered, so one the client abandons meanwhile is never seen."""
        self.stalls.append(Stall(method, re.compile(pattern), seconds, times, when))

    def for_token(self, token: str) -> list[Call]:
        return list(self.by_token.get(token, ()))

    def to_channel(self, channel_id: str | int) -> list[Call]:
        return [c for c in self.calls if c.path == f"/api/v10/channels/{channel_id}/messages"]

    def dms(self) -> list[Call]:
        return [c for c in self.calls if c.method == "POST" and c.status < 300 and
                (m := re.fullmatch(r"/api/v10/channels/(\d+)/messages", c.path)) and m[1] in self.dm_channels]

    async def wait_for(self, check: Callable[[], Any], timeout: float = 10.0) -> Any:
        deadline = time.monotonic() + timeout
        while True:
            value = check()
            if value:
                return value
            if time.monotonic() > deadline:
                raise AssertionError("timed out waiting for the bot; calls so far:\n" + self.describe())
            await asyncio.sleep(0.01)

    def describe(self) -> str:
        return "\n".join(f"{c.status} {c.method} {c.path} {str(c.json)[:160]} files={len(c.files)}"
                         for c in self.calls[-40:])

    def serve(self, name: str, data: bytes, mime: str = "image/png") -> str:
        self.cdn[name] = (data, mime)
        return f"http://127.0.0.1:{self.port}/cdn/{name}"

    # -- gateway -----------------------------------------------------------------------------------

    async def dispatch(self, payload: dict[str, Any], event: str = "INTERACTION_CREATE") -> None:
        guild = int(payload.get("guild_id") or 0)
        shard = (guild >> 22) % max(1, self.shards)
        await self.wait_for(lambda: shard in self._sockets, timeout=10)
        ws, seq = self._sockets[shard]
        seq[0] += 1
        if "token" in payload:
            self.dispatched[payload["token"]] = time.perf_counter()
        if "id" in payload:
            self.interactions[str(payload["id"])] = payload
        await ws.send_str(json.dumps({"op": 0, "t": event, "s": seq[0], "d": payload}))

    async def _gateway(self, request: web.Request) -> web.WebSocketResponse:
        ws = web.WebSocketResponse(max_msg_size=0)
        await ws.prepare(request)
        await ws.send_str(json.dumps({"op": 10, "d": {"heartbeat_interval": 45000}}))
        seq = [0]
        shard_id = -1
        async for msg in ws:
            if msg.type != WSMsgType.TEXT:
                continue
            data = json.loads(msg.data)
            op = data.get("op")
            if op == 1:
                await ws.send_str(json.dumps({"op": 11}))
            elif op == 2:
                shard = data["d"].get("shard") or [0, 1]
                shard_id = shard[0]
                self.identifies.append(shard)
                self._sockets[shard_id] = (ws, seq)
                seq[0] += 1
                ready = {"v": 10, "user": BOT_USER, "guilds": [], "session_id": f"session-{shard_id}",
                         "resume_gateway_url": self.gateway_url, "shard": shard,
                         "application": {"id": str(APP_ID), "flags": 0}}
                await ws.send_str(json.dumps({"op": 0, "t": "READY", "s": seq[0], "d": ready}))
            elif op == 6:  # resume: start over
                await ws.send_str(json.dumps({"op": 9, "d": False}))
        if self._sockets.get(shard_id, (None,))[0] is ws:
            del self._sockets[shard_id]
        return ws

    async def _cdn(self, request: web.Request) -> web.Response:
        item = self.cdn.get(request.match_info["name"])
        if item is None:
            return web.Response(status=404)
        return web.Response(body=item[0], headers={"Content-Type": item[1]})

    # -- REST --------------------------------------------------------------------------------------

    @staticmethod
    def _json(data: Any, status: int = 200) -> web.Response:
        return web.Response(body=json.dumps(data).encode(), status=status,
                            headers={"Content-Type": "application/json"})

    async def _read(self, request: web.Request) -> Call:
        call = Call(request.method, request.path, query=dict(request.query), at=time.perf_counter())
        if media_type(request.headers).startswith("multipart/"):
            for part in parse_form(await request.read(), request.headers["Content-Type"]):
                if part.name == "payload_json":
                    call.json = json.loads(part.data)
                else:
                    call.files.append((part.filename or "", part.data))
        elif request.can_read_body:
            raw = await request.read()
            call.json = json.loads(raw) if raw else None
        return call

    async def _rest(self, request: web.Request) -> web.Response:
        call = await self._read(request)
        for stall in self.stalls:
            if stall.times and stall.method == call.method and stall.pattern.search(call.path) and stall.when(call):
                stall.times -= 1
                await asyncio.sleep(stall.seconds)  # a client that gives up meanwhile leaves no call behind
                call.at = time.perf_counter()
        self.calls.append(call)
        if call.token:
            self.by_token.setdefault(call.token, []).append(call)
        for rule in self.rules:
            if rule.times and rule.method == call.method and rule.pattern.search(call.path) and rule.when(call):
                rule.times -= 1
                call.status = rule.status
                return self._json({"message": rule.message, "code": rule.code}, rule.status)
        path, m = call.path[len("/api/v10"):], None
        if path == "/users/@me":
            return self._json(BOT_USER)
        if path == "/oauth2/applications/@me":
            return self._json({"id": str(APP_ID), "name": "imagebot", "icon": None, "description": "",
                               "bot_public": True, "bot_require_code_grant": False, "owner": user(1, "owner"),
                               "verify_key": "00", "flags": 0, "team": None, "summary": ""})
        if path in ("/gateway", "/gateway/bot"):
            return self._json({"url": self.bot_gateway_url or self.gateway_url, "shards": self.shards,
                               "session_start_limit": {
                "total": 1000, "remaining": 1000, "reset_after": 0, "max_concurrency": 1}})
        if m := re.fullmatch(r"/applications/\d+(?:/guilds/(\d+))?/commands", path):
            body = [{**c, "id": str(self.new_id()), "application_id": str(APP_ID), "version": "1"}
                    for c in call.json or []]
            self.commands[m[1] or "global"] = body
            return self._json(body)
        if m := re.fullmatch(r"/interactions/(\d+)/([^/]+)/callback", path):
            return self._callback(call, m[1], m[2])
        if m := re.fullmatch(r"/webhooks/\d+/([^/]+)/messages/@original", path):
            if call.method == "DELETE":
                self.deleted.append(self.originals.get(m[1], ""))
                self.messages.pop(self.originals.get(m[1], ""), None)
                return web.Response(status=204)
            if call.method == "PATCH":
                return self._json(self._store(self.originals.setdefault(m[1], str(self.new_id())), call))
            return self._json(self.messages.get(self.originals.get(m[1], ""), {}))
        if m := re.fullmatch(r"/webhooks/\d+/([^/]+)", path):
            return self._json(self._store(str(self.new_id()), call))
        if path == "/users/@me/channels":
            recipient = (call.json or {}).get("recipient_id")
            channel = {"id": str(int(recipient) + 1), "type": 1, "recipients": [user(int(recipient))],
                       "last_message_id": None}
            self.dm_channels.add(channel["id"])
            return self._json(channel)
        if m := re.fullmatch(r"/channels/(\d+)/messages", path):
            return self._json(self._store(str(self.new_id()), call, channel_id=m[1]))
        return self._json({"message": f"fake has no route {call.method} {path}", "code": 0}, 404)

    def _callback(self, call: Call, interaction_id: str, token: str) -> web.Response:
        body = call.json or {}
        kind = body.get("type")
        data = body.get("data") or {}
        ephemeral = bool(int(data.get("flags") or 0) & 64)
        message = None
        clicked = (self.interactions.get(interaction_id) or {}).get("message") or {}
        if kind in (6, 7) and clicked.get("id"):
            # A component's deferred update (6) or update (7): its "@original" is the message it is on.
            self.originals[token] = str(clicked["id"])
            self.messages.setdefault(str(clicked["id"]), clicked)
            if kind == 7:
                message = self._store(str(clicked["id"]), Call("PATCH", call.path, json=data, files=call.files))
        if kind in (4, 5):
            msg_id = self.originals.setdefault(token, str(self.new_id()))
            message = self._store(msg_id, Call("POST", call.path, json=data, files=call.files))
        return self._json({
            "interaction": {"id": interaction_id, "type": 2, "response_message_id": message and message["id"],
                            "response_message_loading": kind == 5, "response_message_ephemeral": ephemeral},
            "resource": {"type": kind, **({"message": message} if kind == 4 and message else {})},
        })

    def _store(self, msg_id: str, call: Call, channel_id: str | None = None) -> dict[str, Any]:
        body = call.json if isinstance(call.json, dict) else {}
        old = self.messages.get(msg_id, {})
        attachments = [
            {"id": str(self.new_id()), "filename": name, "size": len(data), "url": f"http://cdn/{name}",
             "proxy_url": f"http://cdn/{name}", "content_type": "image/" + name.rsplit(".", 1)[-1]}
            for name, data in call.files
        ]
        if "attachments" in body:  # an edit lists the old attachments it keeps; the rest are removed
            keep = {str(a.get("id")) for a in body["attachments"] or []}
            attachments = [a for a in old.get("attachments", []) if a["id"] in keep] + attachments
        elif not attachments:
            attachments = old.get("attachments", [])
        message = {
            "id": msg_id, "channel_id": channel_id or str(CHANNEL_ID), "author": BOT_USER,
            "content": body.get("content", old.get("content", "")) or "",
            "timestamp": TIMESTAMP, "edited_timestamp": None, "tts": False, "mention_everyone": False,
            "mentions": [], "mention_roles": [], "attachments": attachments,
            "embeds": body.get("embeds", old.get("embeds", [])) or [],
            "components": body.get("components", old.get("components", [])) or [],
            "pinned": False, "type": 0, "flags": int(body.get("flags") or 0), "webhook_id": str(APP_ID),
        }
        self.messages[msg_id] = message
        return message


class Payloads:
    """Builds INTERACTION_CREATE payloads the way Discord sends them (discord.py 2.7 needs
    ``attachment_size_limit``, ``version``, ``token`` and ``application_id``)."""

    def __init__(self, fake: FakeDiscord) -> None:
        self.fake = fake

    def _base(self, kind: int, data: dict[str, Any], *, user_id: int, guild_id: int | None,
              permissions: int, roles: tuple[int, ...], limit: int, channel_id: int) -> dict[str, Any]:
        iid = self.fake.new_id()
        payload: dict[str, Any] = {
            "id": str(iid), "application_id": str(APP_ID), "type": kind, "data": data,
            "token": f"tok-{iid}", "version": 1, "locale": "en-US", "attachment_size_limit": limit,
            "app_permissions": str(EVERYONE | (1 << 14) | (1 << 15)), "entitlements": [],
            "authorizing_integration_owners": {"0": str(guild_id or user_id)},
        }
        if guild_id is None:
            payload.update(user=user(user_id), channel_id=str(user_id + 1), context=1,
                           channel={"id": str(user_id + 1), "type": 1, "recipients": [user(user_id)]})
        else:
            payload.update(
                guild_id=str(guild_id), channel_id=str(channel_id), context=0, guild_locale="en-US",
                guild={"id": str(guild_id), "locale": "en-US", "features": []},
                channel={"id": str(channel_id), "type": 0, "guild_id": str(guild_id), "name": "general",
                         "position": 0, "nsfw": False, "parent_id": None, "permissions": str(permissions),
                         "rate_limit_per_user": 0, "topic": None, "flags": 0, "last_message_id": None},
                member={"user": user(user_id), "roles": [str(r) for r in roles], "permissions": str(permissions),
                        "joined_at": TIMESTAMP, "deaf": False, "mute": False, "flags": 0, "nick": None,
                        "avatar": None, "pending": False},
            )
        return payload

    def command(self, name: str, options: list[dict[str, Any]] | None = None, *, user_id: int = 111,
                guild_id: int | None = GUILD_ID, permissions: int = EVERYONE, roles: tuple[int, ...] = (),
                limit: int = DEFAULT_LIMIT, resolved: dict[str, Any] | None = None, autocomplete: bool = False,
                channel_id: int = CHANNEL_ID) -> dict[str, Any]:
        data = {"id": str(self.fake.new_id()), "name": name, "type": 1, "options": options or []}
        if resolved:
            data["resolved"] = resolved
        return self._base(4 if autocomplete else 2, data, user_id=user_id, guild_id=guild_id,
                          permissions=permissions, roles=roles, limit=limit, channel_id=channel_id)

    def click(self, message: dict[str, Any], custom_id: str, **kw: Any) -> dict[str, Any]:
        payload = self.command("", **kw)
        payload.update(type=3, data={"custom_id": custom_id, "component_type": 2}, message=message)
        return payload

    def select(self, message: dict[str, Any], custom_id: str, values: list[str], **kw: Any) -> dict[str, Any]:
        """A string select's choice (component type 3)."""
        payload = self.command("", **kw)
        payload.update(type=3, data={"custom_id": custom_id, "component_type": 3, "values": values}, message=message)
        return payload

    def modal_submit(self, custom_id: str, fields: dict[str, str], *, message: dict[str, Any] | None = None,
                     **kw: Any) -> dict[str, Any]:
        """A modal's submit (type 5): each text input inside a label (component type 18), as Discord sends it."""
        payload = self.command("", **kw)
        components = [{"type": 18, "id": n * 2 + 1, "component": {"type": 4, "id": n * 2 + 2, "custom_id": key,
                                                                   "value": value}}
                      for n, (key, value) in enumerate(fields.items())]
        payload.update(type=5, data={"custom_id": custom_id, "components": components})
        if message is not None:
            payload["message"] = message
        return payload

    @staticmethod
    def opt(name: str, value: Any, kind: int = 3, *, focused: bool = False) -> dict[str, Any]:
        option = {"name": name, "type": kind, "value": value}
        if focused:
            option["focused"] = True
        return option

    @staticmethod
    def sub(name: str, options: list[dict[str, Any]]) -> dict[str, Any]:
        return {"name": name, "type": 1, "options": options}

    def member_resolved(self, uid: int) -> dict[str, Any]:
        return {"users": {str(uid): user(uid)},
                "members": {str(uid): {"roles": [], "joined_at": TIMESTAMP, "permissions": str(EVERYONE),
                                       "nick": None, "avatar": None, "flags": 0, "pending": False}}}

    def attachment_resolved(self, url: str, size: int, name: str = "ref.png",
                            mime: str = "image/png") -> tuple[str, dict[str, Any]]:
        aid = str(self.fake.new_id())
        return aid, {"attachments": {aid: {"id": aid, "filename": name, "size": size, "url": url,
                                           "proxy_url": url, "content_type": mime}}}

"""A loopback fake of Slack: the Web API, file upload URLs, response_url webhooks and the Socket Mode
websocket, served by aiohttp on 127.0.0.1 (port 0) inside the test process.

It speaks Slack's wire protocol so the real ``slack_sdk`` / ``slack_bolt`` clients run unchanged
against it. Tests script failures per method (``fail``), choose which channels the bot may post in
(``blocked``), and read back what arrived (``uploads``, ``messages``, ``responses``, ``calls``).
"""

from __future__ import annotations

import asyncio
import hashlib
import hmac
import itertools
import json
import time
import urllib.parse
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from aiohttp import WSMsgType, web

from .multipart import media_type

TEAM_ID = "T0TEAM001"
BOT_USER_ID = "UBOT00001"


@dataclass
class ApiCall:
    method: str
    args: dict[str, Any]
    authorized: bool
    at: float


@dataclass
class Upload:
    """One ``files.completeUploadExternal`` that Slack accepted: the images as a person would see them."""

    channel_id: str
    thread_ts: str | None
    initial_comment: str
    files: list[tuple[str, str, bytes]]  # (filename, title, bytes)
    at: float


@dataclass
class Failure:
    error: str
    status: int = 200
    headers: dict[str, str] = field(default_factory=dict)
    extra: dict[str, Any] = field(default_factory=dict)


class FakeSlack:
    def __init__(self, *, team_id: str = TEAM_ID) -> None:
        self.team_id = team_id
        self.calls: list[ApiCall] = []
        self.uploads: list[Upload] = []
        self.messages: list[dict[str, Any]] = []
        self.responses: dict[str, list[dict[str, Any]]] = {}
        #: ``chat.postEphemeral`` messages Slack accepted (seen by ``user`` only).
        self.ephemerals: list[dict[str, Any]] = []
        #: response_url keys Slack no longer takes (expired after 30 minutes, or used 5 times).
        self.dead_urls: set[str] = set()
        self.users: dict[str, dict[str, Any]] = {}
        #: channel id -> the error Slack gives when the bot posts there (``not_in_channel``...).
        self.blocked: dict[str, str] = {}
        self.acks: dict[str, dict[str, Any]] = {}
        #: ``views.open`` calls Slack accepted: the modals a person would see.
        self.views: list[dict[str, Any]] = []
        #: ``(channel, ts)`` of messages removed by ``chat.delete``, and file ids removed by ``files.delete``.
        self.deleted_messages: list[tuple[str, str]] = []
        self.deleted_files: list[str] = []
        self._failures: dict[str, list[Failure]] = {}
        self._blobs: dict[str, bytes] = {}
        self._pending: dict[str, dict[str, Any]] = {}
        self._ids = itertools.count(1)
        self._sockets: list[web.WebSocketResponse] = []
        self._runner: web.AppRunner | None = None
        self.url = ""

    # -- lifecycle -------------------------------------------------------------------------------

    async def start(self) -> FakeSlack:
        app = web.Application(client_max_size=64 * 1024 * 1024)
        app.add_routes([
            web.post("/api/{method}", self._api),
            web.get("/api/{method}", self._api),  # users.info and other readers are GETs
            web.post("/upload/{file_id}", self._upload),
            web.post("/respond/{key}", self._respond),
            web.get("/link/", self._socket),
        ])
        self._runner = web.AppRunner(app, access_log=None)
        await self._runner.setup()
        site = web.TCPSite(self._runner, "127.0.0.1", 0)
        await site.start()
        port = site._server.sockets[0].getsockname()[1]  # type: ignore[union-attr]
        self.url = f"http://127.0.0.1:{port}"
        return self

    async def close(self) -> None:
        for ws in list(self._sockets):
            await ws.close()
        if self._runner is not None:
            await self._runner.cleanup()

    @property
    def api_url(self) -> str:
        return f"{self.url}/api/"  # trailing slash: the SDK joins method names onto it

    def response_url(self, key: str) -> str:
        return f"{self.url}/respond/{key}"

    # -- scripting -------------------------------------------------------------------------------

    def fail(self, method: str, error: str, *, times: int = 1, status: int = 200,
             headers: dict[str, str] | None = None, **extra: Any) -> None:
        """The next ``times`` calls of ``method`` fail with ``error`` (429 + Retry-After for ``ratelimited``)."""
        self._failures.setdefault(method, []).extend(
            Failure(error, status, dict(headers or {}), extra) for _ in range(times))

    def user(self, user_id: str, *, admin: bool = False, owner: bool = False) -> None:
        self.users[user_id] = {"id": user_id, "team_id": self.team_id, "name": user_id.lower(),
                               "is_admin": admin, "is_owner": owner, "is_primary_owner": False}

    def called(self, method: str) -> list[ApiCall]:
        return [c for c in self.calls if c.method == method]

    def dms(self, user_id: str) -> list[dict[str, Any]]:
        """Messages posted in the user's DM (the channel ``conversations.open`` gives for them)."""
        return [m for m in self.messages if m.get("channel") == "D" + user_id.lstrip("UW")]

    def replies(self, key: str) -> list[str]:
        return [str(r.get("text", "")) for r in self.responses.get(key, [])]

    async def until(self, predicate: Callable[[], object], timeout: float = 5.0) -> None:
        """Poll until ``predicate()`` is truthy: Slack's HTTP ack returns before the work is done."""
        deadline = time.monotonic() + timeout
        while not predicate():
            if time.monotonic() > deadline:
                raise AssertionError("timed out waiting for the fake Slack to see the expected call")
            await asyncio.sleep(0.01)

    # -- Web API ---------------------------------------------------------------------------------

    async def _args(self, request: web.Request) -> dict[str, Any]:
        args: dict[str, Any] = dict(request.query)
        kind = media_type(request.headers)
        if kind == "application/json":
            args.update(await request.json())
        elif kind in ("application/x-www-form-urlencoded", "multipart/form-data"):
            form = await request.post()
            args.update({k: v for k, v in form.items() if isinstance(v, str)})
        return args

    async def _api(self, request: web.Request) -> web.Response:
        method = request.match_info["method"]
        args = await self._args(request)
        auth = request.headers.get("Authorization", "")
        self.calls.append(ApiCall(method, args, auth.startswith("Bearer x"), time.monotonic()))
        queued = self._failures.get(method)
        if queued:
            failure = queued.pop(0)
            headers = dict(failure.headers)
            status = failure.status
            if failure.error == "ratelimited":
                status = 429 if status == 200 else status
                headers.setdefault("Retry-After", "1")
            return web.json_response({"ok": False, "error": failure.error, **failure.extra},
                                     status=status, headers=headers)
        handler = getattr(self, "_m_" + method.replace(".", "_"), None)
        if handler is None:
            return web.json_response({"ok": False, "error": "unknown_method"}, status=404)
        return web.json_response(await handler(args))

    async def _m_auth_test(self, args: dict[str, Any]) -> dict[str, Any]:
        return {"ok": True, "url": "https://fake.slack/", "team": "Fake Team", "user": "imagebot",
                "team_id": self.team_id, "user_id": BOT_USER_ID, "bot_id": "BBOT00001", "is_enterprise_install": False}

    async def _m_users_info(self, args: dict[str, Any]) -> dict[str, Any]:
        user = self.users.get(str(args.get("user")))
        if user is None:
            user = {"id": args.get("user"), "team_id": self.team_id, "name": "someone",
                    "is_admin": False, "is_owner": False, "is_primary_owner": False}
        return {"ok": True, "user": user}

    async def _m_conversations_open(self, args: dict[str, Any]) -> dict[str, Any]:
        users = str(args.get("users", ""))
        return {"ok": True, "channel": {"id": "D" + users.lstrip("UW")}}

    async def _m_chat_postMessage(self, args: dict[str, Any]) -> dict[str, Any]:
        channel = str(args.get("channel", ""))
        if channel in self.blocked:
            return {"ok": False, "error": self.blocked[channel]}
        ts = f"{time.time():.6f}"
        self.messages.append({**args, "ts": ts})
        return {"ok": True, "channel": channel, "ts": ts, "message": {"text": args.get("text", ""), "ts": ts}}

    async def _m_chat_postEphemeral(self, args: dict[str, Any]) -> dict[str, Any]:
        channel = str(args.get("channel", ""))
        if channel in self.blocked:
            return {"ok": False, "error": self.blocked[channel]}
        if not args.get("user"):
            return {"ok": False, "error": "user_not_in_channel"}
        self.ephemerals.append(dict(args))
        return {"ok": True, "message_ts": f"{time.time():.6f}"}

    async def _m_chat_delete(self, args: dict[str, Any]) -> dict[str, Any]:
        channel, ts = str(args.get("channel", "")), str(args.get("ts", ""))
        if not any(m.get("channel") == channel and m.get("ts") == ts for m in self.messages):
            return {"ok": False, "error": "message_not_found"}
        self.messages = [m for m in self.messages if not (m.get("channel") == channel and m.get("ts") == ts)]
        self.deleted_messages.append((channel, ts))
        return {"ok": True, "channel": channel, "ts": ts}

    async def _m_files_delete(self, args: dict[str, Any]) -> dict[str, Any]:
        file_id = str(args.get("file", ""))
        if file_id not in self._blobs or file_id in self.deleted_files:
            return {"ok": False, "error": "file_not_found"}
        self.deleted_files.append(file_id)
        return {"ok": True}

    async def _m_views_open(self, args: dict[str, Any]) -> dict[str, Any]:
        view = args.get("view")
        if isinstance(view, str):
            view = json.loads(view)
        if not args.get("trigger_id"):
            return {"ok": False, "error": "invalid_trigger_id"}
        if not isinstance(view, dict) or view.get("type") != "modal":
            return {"ok": False, "error": "invalid_arguments"}
        opened = {**view, "id": f"V{next(self._ids):08d}", "team_id": self.team_id, "app_id": "A0APP0001",
                  "trigger_id": args["trigger_id"]}
        self.views.append(opened)
        return {"ok": True, "view": opened}

    async def _m_apps_connections_open(self, args: dict[str, Any]) -> dict[str, Any]:
        return {"ok": True, "url": self.url.replace("http://", "ws://") + "/link/"}

    async def _m_files_getUploadURLExternal(self, args: dict[str, Any]) -> dict[str, Any]:
        file_id = f"F{next(self._ids):08d}"
        self._pending[file_id] = {"filename": args.get("filename"), "length": int(args.get("length", 0))}
        return {"ok": True, "upload_url": f"{self.url}/upload/{file_id}", "file_id": file_id}

    async def _upload(self, request: web.Request) -> web.Response:
        file_id = request.match_info["file_id"]
        if file_id not in self._pending:
            return web.Response(status=404, text="unknown upload")
        self._blobs[file_id] = await request.read()
        return web.Response(text=f"OK - {len(self._blobs[file_id])}")

    async def _m_files_completeUploadExternal(self, args: dict[str, Any]) -> dict[str, Any]:
        files = json.loads(args.get("files", "[]"))
        channel = str(args.get("channel_id") or "")
        if channel in self.blocked:
            return {"ok": False, "error": self.blocked[channel]}
        if any(f["id"] not in self._blobs for f in files):
            return {"ok": False, "error": "file_not_found"}
        self.uploads.append(Upload(
            channel_id=channel, thread_ts=args.get("thread_ts") or None,
            initial_comment=str(args.get("initial_comment") or ""),
            files=[(self._pending[f["id"]]["filename"], f.get("title", ""), self._blobs[f["id"]]) for f in files],
            at=time.monotonic(),
        ))
        return {"ok": True, "files": [{"id": f["id"], "title": f.get("title", "")} for f in files]}

    # -- response_url ----------------------------------------------------------------------------

    async def _respond(self, request: web.Request) -> web.Response:
        if request.match_info["key"] in self.dead_urls:
            return web.Response(status=404, text="expired_url")
        self.responses.setdefault(request.match_info["key"], []).append(await request.json())
        return web.Response(text="ok")

    # -- Socket Mode -----------------------------------------------------------------------------

    async def _socket(self, request: web.Request) -> web.WebSocketResponse:
        ws = web.WebSocketResponse(autoping=True)
        await ws.prepare(request)
        self._sockets.append(ws)
        await ws.send_json({"type": "hello", "num_connections": 1,
                            "connection_info": {"app_id": "A0APP0001"}, "debug_info": {"host": "fake"}})
        try:
            async for msg in ws:
                if msg.type == WSMsgType.TEXT:
                    data = json.loads(msg.data)
                    if "envelope_id" in data:
                        self.acks[data["envelope_id"]] = data.get("payload") or {}
        finally:
            self._sockets.remove(ws)
        return ws

    async def send_envelope(self, kind: str, payload: dict[str, Any]) -> str:
        """Push a Socket Mode envelope (``slash_commands``, ``interactive``) to the connected app."""
        await self.until(lambda: self._sockets)
        envelope_id = f"env-{next(self._ids)}"
        answers = kind == "slash_commands" or payload.get("type") == "view_submission"
        await self._sockets[-1].send_json({"envelope_id": envelope_id, "type": kind,
                                           "accepts_response_payload": answers,
                                           "payload": payload})
        return envelope_id


# -- payloads as Slack sends them ---------------------------------------------------------------

def command_payload(fake: FakeSlack, command: str, text: str, *, user: str = "U0ANN0001", channel: str = "C0GEN0001",
                    key: str = "cmd", thread_ts: str | None = None, team_id: str | None = None) -> dict[str, str]:
    payload = {
        "token": "verification-token-unused", "team_id": team_id or fake.team_id, "team_domain": "fake",
        "channel_id": channel, "channel_name": "general", "user_id": user, "user_name": user.lower(),
        "command": command, "text": text, "api_app_id": "A0APP0001", "is_enterprise_install": "false",
        "response_url": fake.response_url(key), "trigger_id": "1.2.3",
    }
    if thread_ts:
        payload["thread_ts"] = thread_ts
    return payload


def action_payload(fake: FakeSlack, action_id: str, value: str, *, user: str = "U0ANN0001",
                   channel: str = "C0GEN0001", key: str = "act", thread_ts: str | None = None,
                   team_id: str | None = None) -> dict[str, Any]:
    team = team_id or fake.team_id
    container: dict[str, Any] = {"type": "message", "message_ts": "1700000000.000100", "channel_id": channel,
                                 "is_ephemeral": False}
    message: dict[str, Any] = {"type": "message", "ts": "1700000000.000100", "text": "buttons"}
    if thread_ts:
        container["thread_ts"] = thread_ts
        message["thread_ts"] = thread_ts
    return {
        "type": "block_actions", "token": "verification-token-unused", "api_app_id": "A0APP0001",
        "user": {"id": user, "username": user.lower(), "name": user.lower(), "team_id": team},
        "team": {"id": team, "domain": "fake"}, "container": container, "trigger_id": "1.2.3",
        "channel": {"id": channel, "name": "general"}, "message": message, "response_url": fake.response_url(key),
        "actions": [{"action_id": action_id, "block_id": "imagebot", "value": value, "type": "button",
                     "action_ts": "1700000001.000200"}],
    }


def select_payload(fake: FakeSlack, action_id: str, value: str, **kw: Any) -> dict[str, Any]:
    """A choice in a ``static_select`` menu: like a button press, the value in ``selected_option``."""
    payload = action_payload(fake, action_id, value, **kw)
    payload["actions"] = [{"action_id": action_id, "block_id": "imagebot", "type": "static_select",
                           "selected_option": {"text": {"type": "plain_text", "text": value}, "value": value},
                           "action_ts": "1700000001.000300"}]
    return payload


def view_submission_payload(fake: FakeSlack, view: dict[str, Any], values: dict[str, dict[str, str]], *,
                            user: str = "U0ANN0001", team_id: str | None = None) -> dict[str, Any]:
    """A modal submitted: the view as ``views.open`` made it, with what was typed (``{block_id: {action_id:
    text}}``). Slack sends no channel and no response_url with it."""
    team = team_id or fake.team_id
    state = {block: {action: {"type": "plain_text_input", "value": text} for action, text in inputs.items()}
             for block, inputs in values.items()}
    return {
        "type": "view_submission", "token": "verification-token-unused", "api_app_id": "A0APP0001",
        "team": {"id": team, "domain": "fake"},
        "user": {"id": user, "username": user.lower(), "name": user.lower(), "team_id": team},
        "trigger_id": "4.5.6", "response_urls": [], "is_enterprise_install": False,
        "view": {**view, "state": {"values": state}, "hash": "1700000002.abcdef"},
    }


def signed_headers(secret: str, body: str, *, timestamp: int | None = None) -> dict[str, str]:
    """Slack's request signature: ``v0=`` + HMAC-SHA256(secret, ``v0:{ts}:{body}``)."""
    ts = str(int(time.time()) if timestamp is None else timestamp)
    digest = hmac.new(secret.encode(), f"v0:{ts}:{body}".encode(), hashlib.sha256).hexdigest()
    return {"X-Slack-Request-Timestamp": ts, "X-Slack-Signature": f"v0={digest}",
            "Content-Type": "application/x-www-form-urlencoded"}


def form_body(payload: dict[str, str]) -> str:
    return urllib.parse.urlencode(payload)


def action_body(payload: dict[str, Any]) -> str:
    return urllib.parse.urlencode({"payload": json.dumps(payload)})

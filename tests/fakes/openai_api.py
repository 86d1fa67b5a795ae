"""A loopback fake of OpenAI's HTTP API (also xAI and other OpenAI-compatible services).

Routes: ``POST /v1/images/generations`` (JSON), ``POST /v1/images/edits`` (multipart: ``image`` or
``image[]``), ``POST /v1/chat/completions``. Behaviours per route, queued with ``fake.queue(route, ...)``:

ok, policy (400 content_policy_violation), moderation (400 moderation_blocked), rate (429 + retry-after-ms),
quota (429 insufficient_quota), auth (401), forbidden (403), notfound (404), down (503), slow (sleeps past
the client timeout), garbage (200, not JSON), empty (200, no data), notimage (200, base64 of text),
badurl (a URL to a non-image), bigurl (a URL to an oversized body), refusal (chat: content_filter).
"""

from __future__ import annotations

import asyncio
import base64
import itertools
import json
from typing import Any

from aiohttp import web

from .images import small_for
from .server import FakeServer, Seen

ERRORS: dict[str, tuple[int, str, str, dict[str, str]]] = {
    "policy": (400, "content_policy_violation", "Your request was rejected as a result of our safety system.", {}),
    "moderation": (400, "moderation_blocked", "Your request was rejected by the safety system.", {}),
    "rate": (429, "rate_limit_exceeded", "Rate limit reached for images per minute.", {"retry-after-ms": "20"}),
    "quota": (429, "insufficient_quota", "You exceeded your current quota.", {}),
    "auth": (401, "invalid_api_key", "Incorrect API key provided: {key}.", {}),
    "forbidden": (403, "model_not_allowed", "Your organization must be verified to use this model.", {}),
    "notfound": (404, "model_not_found", "The model does not exist.", {}),
    "down": (503, "server_error", "The server is overloaded.", {}),
    "badrequest": (400, "invalid_size", "Invalid size.", {}),
}


class FakeOpenAI(FakeServer):
    def __init__(self) -> None:
        super().__init__()
        self._ids = itertools.count(1)
        self.chat_reply: str | None = None
        self.app.router.add_post("/v1/images/generations", self._generations)
        self.app.router.add_post("/v1/images/edits", self._edits)
        self.app.router.add_post("/v1/chat/completions", self._chat)

    @property
    def base_url(self) -> str:
        return f"{self.origin}/v1"

    # -- shared ----------------------------------------------------------------------------------

    async def _scripted(self, route: str, seen: Seen) -> tuple[web.Response | None, str]:
        self.seen.append(seen)
        behaviour = self.next(route)
        if behaviour == "slow":
            await asyncio.sleep(self.slow_seconds)
            return None, "ok"
        if behaviour in ERRORS:
            status, code, message, headers = ERRORS[behaviour]
            # The vendor's 401 text quotes the key it got, as OpenAI's does (partly masked there).
            message = message.format(key=seen.headers.get("Authorization", "").removeprefix("Bearer "))
            body = {"error": {"message": message, "type": "invalid_request_error", "param": None, "code": code}}
            return web.json_response(body, status=status, headers=headers), behaviour
        if behaviour == "garbage":
            return web.Response(text="<html>oops</html>", content_type="application/json"), behaviour
        if behaviour == "empty":
            return web.json_response({"created": 1, "data": []}), behaviour
        if behaviour in ("ok", "notimage", "badurl", "bigurl", "refusal"):
            return None, behaviour
        raise AssertionError(f"unknown behaviour {behaviour!r}")

    def _image_items(self, body: dict[str, Any], n: int, mode: str) -> list[dict[str, Any]]:
        size = str(body.get("size") or "1024x1024")
        model = str(body.get("model") or "")
        fmt = body.get("response_format") or ("url" if model == "dall-e-3" else "b64_json")
        items = []
        for i in range(n):
            data = small_for(size, next(self._ids) + i)
            if mode == "notimage":
                data = b"this is not an image at all"
            if fmt == "url":
                name = f"img{next(self._ids)}.png"
                if mode == "bigurl":
                    url = f"{self.origin}/stream/{50 * 1024 * 1024}"
                elif mode == "badurl":
                    url = self.serve_file(name, b"<html>not an image</html>", "text/html")
                else:
                    url = self.serve_file(name, data)
                item: dict[str, Any] = {"url": url}
            else:
                item = {"b64_json": base64.b64encode(data).decode()}
            if model == "dall-e-3":
                item["revised_prompt"] = f"A richly detailed rendering of {body.get('prompt')}"
            items.append(item)
        return items

    # -- routes ----------------------------------------------------------------------------------

    async def _generations(self, request: web.Request) -> web.Response:
        body = await request.json()
        seen = Seen("generations", request.path, dict(request.headers), body)
        early, mode = await self._scripted("generations", seen)
        if early is not None:
            return early
        n = int(body.get("n") or 1)
        if body.get("model") == "dall-e-3" and n != 1:
            return web.json_response({"error": {"message": "n must be 1", "type": "invalid_request_error",
                                                "param": "n", "code": None}}, status=400)
        return web.json_response({"created": 1, "data": self._image_items(body, n, mode)})

    async def _edits(self, request: web.Request) -> web.Response:
        form = await request.post()
        fields = list(form.keys())
        body: dict[str, Any] = {}
        files: dict[str, bytes] = {}
        for key, value in form.items():
            if hasattr(value, "file"):
                files[key] = value.file.read()
            else:
                body[key] = value
        seen = Seen("edits", request.path, dict(request.headers), body, files, fields)
        early, mode = await self._scripted("edits", seen)
        if early is not None:
            return early
        return web.json_response({"created": 1, "data": self._image_items(body, int(body.get("n") or 1), mode)})

    async def _chat(self, request: web.Request) -> web.Response:
        body = await request.json()
        seen = Seen("chat", request.path, dict(request.headers), body)
        early, mode = await self._scripted("chat", seen)
        if early is not None:
            return early
        last = body["messages"][-1]["content"]
        if isinstance(last, list):  # vision: a text part and an image_url part
            text = "A red square on a plain background, flat colour, centred composition."
        else:
            text = self.chat_reply or f"{last}, rule-of-thirds composition, soft golden-hour light, oil painting"
        finish = "stop"
        if mode == "refusal":
            text, finish = "", "content_filter"
        reply = {
            "id": "chatcmpl-1", "object": "chat.completion", "created": 1, "model": body.get("model"),
            "choices": [{"index": 0, "finish_reason": finish,
                         "message": {"role": "assistant", "content": text, "refusal": None}}],
            "usage": {"prompt_tokens": 10, "completion_tokens": 20, "total_tokens": 30},
        }
        return web.Response(text=json.dumps(reply), content_type="application/json")

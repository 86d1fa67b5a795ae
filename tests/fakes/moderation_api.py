"""The fake of OpenAI's ``POST /v1/moderations`` (mounted on ``FakeOpenAI``)."""

from __future__ import annotations

from typing import Any

from aiohttp import web


class ModerationFake:
    """Placeholder until the moderation fake is written: flags nothing."""

    def __init__(self) -> None:
        self.seen: list[dict[str, Any]] = []

    async def handle(self, request: web.Request) -> web.Response:
        body = await request.json()
        self.seen.append(body)
        return web.json_response({"id": "modr-0", "model": body.get("model", ""), "results": []})

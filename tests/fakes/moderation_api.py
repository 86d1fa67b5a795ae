"""The fake of OpenAI's ``POST /v1/moderations`` (mounted on ``FakeOpenAI`` as ``.moderation``).

Answers in the shape of the SDK's ``types/moderation_create_response.py``: one result per call with every
category (the vendor's names, ``sexual/minors``...) false except those a test's rules flag.
"""

from __future__ import annotations

from typing import Any

from aiohttp import web

CATEGORIES = ("harassment", "harassment/threatening", "hate", "hate/threatening", "illicit", "illicit/violent",
              "self-harm", "self-harm/intent", "self-harm/instructions", "sexual", "sexual/minors", "violence",
              "violence/graphic")
MODELS = ("omni-moderation-latest", "omni-moderation-2024-09-26", "text-moderation-latest", "text-moderation-stable")


class ModerationFake:
    def __init__(self) -> None:
        self.seen: list[dict[str, Any]] = []
        #: word (lower case) in the text -> the category it flags.
        self.rules: dict[str, str] = {}
        #: Answer 500 to every call (the moderation model is down).
        self.down = False

    def flag(self, word: str, category: str) -> None:
        assert category in CATEGORIES, category
        self.rules[word.lower()] = category

    async def handle(self, request: web.Request) -> web.Response:
        body = await request.json()
        self.seen.append(body)
        if self.down:
            return web.json_response({"error": {"message": "The server had an error", "type": "server_error",
                                                 "param": None, "code": None}}, status=500)
        model = body.get("model") or "omni-moderation-latest"
        if model not in MODELS:
            return web.json_response({"error": {"message": f"The model `{model}` does not exist",
                                                "type": "invalid_request_error", "param": "model",
                                                "code": "model_not_found"}}, status=404)
        parts = body.get("input")
        texts = [parts] if isinstance(parts, str) else [
            p.get("text", "") if isinstance(p, dict) else str(p) for p in parts or []]
        text = " ".join(texts).lower()
        hits = {category for word, category in self.rules.items() if word in text}
        images = sum(1 for p in parts or [] if isinstance(p, dict) and p.get("type") == "image_url")
        result = {
            "flagged": bool(hits),
            "categories": {c: c in hits for c in CATEGORIES},
            "category_scores": {c: 0.97 if c in hits else 0.001 for c in CATEGORIES},
            "category_applied_input_types": {c: ["text"] + (["image"] if images else []) for c in CATEGORIES},
        }
        return web.json_response({"id": f"modr-{len(self.seen)}", "model": model, "results": [result]})

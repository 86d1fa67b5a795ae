"""A loopback fake of Google's Gemini API and Vertex AI (as google-genai calls them).

Routed on the suffix, since the version prefix differs between SDK releases and between the Developer API
and Vertex: ``...models/{model}:generateContent`` (route "gemini", or "text" when no image is asked for)
and ``...models/{model}:predict`` (route "imagen"). Behaviours, queued with ``fake.queue(route, ...)``:

ok, blocked (promptFeedback.blockReason), safety (candidate finishReason IMAGE_SAFETY, no parts),
textonly (a text part and no image), filtered (Imagen: every prediction raiFilteredReason), partial
(Imagen: one image, the rest filtered), rate (429 RESOURCE_EXHAUSTED + RetryInfo), auth (400
API_KEY_INVALID), forbidden (403), notfound (404), down (503), slow, garbage (200, not JSON), notimage
(inline data that is not an image).
"""

from __future__ import annotations

import asyncio
import base64
import itertools
from typing import Any

from aiohttp import web

from .images import png, small_for
from .server import FakeServer, Seen

ERRORS: dict[str, tuple[int, str, str, list[dict[str, Any]]]] = {
    "rate": (429, "RESOURCE_EXHAUSTED", "Quota exceeded for requests per minute.",
             [{"@type": "type.googleapis.com/google.rpc.RetryInfo", "retryDelay": "7s"}]),
    "auth": (400, "INVALID_ARGUMENT", "API key not valid. Please pass a valid API key.",
             [{"@type": "type.googleapis.com/google.rpc.ErrorInfo", "reason": "API_KEY_INVALID"}]),
    "forbidden": (403, "PERMISSION_DENIED", "Permission denied on resource project.", []),
    "notfound": (404, "NOT_FOUND", "models/unknown is not found.", []),
    "down": (503, "UNAVAILABLE", "The model is overloaded. Please try again later.", []),
    "badrequest": (400, "INVALID_ARGUMENT", "Invalid aspect ratio.", []),
}
ASPECT_SIZES = {"1:1": (1024, 1024), "16:9": (1344, 768), "9:16": (768, 1344), "3:2": (1248, 832),
                "2:3": (832, 1248), "4:3": (1184, 864), "3:4": (864, 1184)}


class FakeGoogle(FakeServer):
    def __init__(self) -> None:
        super().__init__()
        self._ids = itertools.count(1)
        self.text_reply: str | None = None
        self.app.router.add_post("/{tail:.*}", self._dispatch)

    @property
    def base_url(self) -> str:
        return self.origin

    async def _dispatch(self, request: web.Request) -> web.Response:
        path = request.path
        body = await request.json()
        if path.endswith(":generateContent"):
            modalities = (body.get("generationConfig") or {}).get("responseModalities") or []
            route = "gemini" if "IMAGE" in modalities else "text"
        elif path.endswith(":predict"):
            route = "imagen"
        else:
            return web.json_response({"error": {"code": 404, "message": "no such method", "status": "NOT_FOUND"}},
                                     status=404)
        self.seen.append(Seen(route, path, dict(request.headers), body))
        behaviour = self.next(route)
        if behaviour == "slow":
            await asyncio.sleep(self.slow_seconds)
            behaviour = "ok"
        if behaviour in ERRORS:
            status, name, message, details = ERRORS[behaviour]
            return web.json_response({"error": {"code": status, "message": message, "status": name,
                                                "details": details}}, status=status)
        if behaviour == "garbage":
            return web.Response(text="<html>oops</html>", content_type="application/json")
        if route == "imagen":
            return web.json_response(self._imagen(body, behaviour))
        if route == "text":
            return web.json_response(self._text(body, behaviour))
        return web.json_response(self._gemini(body, behaviour))

    def _gemini(self, body: dict[str, Any], behaviour: str) -> dict[str, Any]:
        if behaviour == "blocked":
            return {"promptFeedback": {"blockReason": "PROHIBITED_CONTENT"}}
        if behaviour == "safety":
            return {"candidates": [{"finishReason": "IMAGE_SAFETY", "index": 0}]}
        if behaviour == "textonly":
            return {"candidates": [{"content": {"role": "model", "parts": [{"text": "I can't draw that."}]},
                                    "finishReason": "STOP"}]}
        aspect = ((body.get("generationConfig") or {}).get("imageConfig") or {}).get("aspectRatio", "1:1")
        w, h = ASPECT_SIZES.get(aspect, (1024, 1024))
        data = b"not an image" if behaviour == "notimage" else small_for(f"{w}x{h}", next(self._ids))
        parts = [{"text": "Here is your picture."},
                 {"inlineData": {"mimeType": "image/png", "data": base64.b64encode(data).decode()}}]
        return {"candidates": [{"content": {"role": "model", "parts": parts}, "finishReason": "STOP", "index": 0}],
                "usageMetadata": {"promptTokenCount": 5, "totalTokenCount": 1300}}

    def _text(self, body: dict[str, Any], behaviour: str) -> dict[str, Any]:
        if behaviour == "blocked":
            return {"promptFeedback": {"blockReason": "SAFETY"}}
        parts = body["contents"][-1]["parts"]
        if any("inlineData" in p for p in parts):
            text = "A red square on a plain background, flat colour, centred composition."
        else:
            user = " ".join(p.get("text", "") for p in parts)
            text = self.text_reply or f"{user}, low-angle wide shot, dramatic rim lighting, watercolor"
        return {"candidates": [{"content": {"role": "model", "parts": [{"text": text}]}, "finishReason": "STOP"}]}

    def _imagen(self, body: dict[str, Any], behaviour: str) -> dict[str, Any]:
        params = body.get("parameters") or {}
        n = int(params.get("sampleCount") or 1)
        w, h = ASPECT_SIZES.get(params.get("aspectRatio", "1:1"), (1024, 1024))
        preds: list[dict[str, Any]] = []
        for i in range(n):
            if behaviour == "filtered" or (behaviour == "partial" and i > 0):
                preds.append({"raiFilteredReason": "Unable to show generated images. Support codes: 56562880"})
            else:
                data = b"not an image" if behaviour == "notimage" else small_for(f"{w}x{h}", next(self._ids))
                preds.append({"bytesBase64Encoded": base64.b64encode(data).decode(), "mimeType": "image/png"})
        return {"predictions": preds}


__all__ = ["FakeGoogle", "png"]

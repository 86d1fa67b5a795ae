"""A loopback fake of Google's Gemini API (and Vertex AI) as google-genai calls it today.

Routed on the suffix, since the version prefix differs between SDK releases and between the Developer API
and Vertex:

- ``GET .../models`` (route "models"): the model list, paged (``pageSize``/``pageToken`` ->
  ``nextPageToken``), each entry ``{name: "models/ID", version, displayName, supportedGenerationMethods}``
  (google-genai maps ``supportedGenerationMethods`` to ``Model.supported_actions``). ``fake.models`` is
  the list served; tests remove or add entries (``fake.add_model``).
- ``POST .../models/{model}:generateContent``: route "gemini" when ``generationConfig.responseModalities``
  asks for IMAGE, else "text". The image route reads ``generationConfig.imageConfig.aspectRatio`` /
  ``imageSize`` (default 1:1 at 1K), answers 400 INVALID_ARGUMENT for a ratio or size the model does not
  take (``IMAGE_MODELS``), and returns a PNG of the documented pixels for that pair, drawn at 1/``scale``
  (16 by default, so tests stay fast; ``scale = 1`` gives the real size), with ``usageMetadata``. Input
  images are ``inlineData`` parts (``fake.input_images(call)`` decodes them): more than
  ``MAX_INPUT_IMAGES`` (14, the model pages' "up to 14 images per prompt"), or a part that is not an
  image, is 400 INVALID_ARGUMENT. The API has no mask field: a request cannot carry one.
- A model in ``fake.retired`` (or unknown) answers 404 NOT_FOUND like the real API; ``...:predict``
  (Imagen, route "imagen") answers 404: Imagen is shut down.

Behaviours, queued with ``fake.queue(route, ...)``: ok, blocked (promptFeedback.blockReason), safety
(candidate finishReason IMAGE_SAFETY, no parts), textonly (a text part and no image), thinking (an interim
"thought" image before the final one), rate (429 RESOURCE_EXHAUSTED + RetryInfo), auth (400
API_KEY_INVALID), forbidden (403), notfound (404), gone (400 "no longer available"), down (503), slow,
garbage (200, not JSON), notimage (inline data that is not an image), badrequest (400).
Nothing here imports the bot's code: the tables below are the vendor's documented behaviour.
"""

from __future__ import annotations

import asyncio
import base64
import io
import itertools
from typing import Any

from aiohttp import web
from PIL import Image, UnidentifiedImageError

from .images import png
from .server import FakeServer, Seen

ERRORS: dict[str, tuple[int, str, str, list[dict[str, Any]]]] = {
    "rate": (429, "RESOURCE_EXHAUSTED", "Quota exceeded for requests per minute.",
             [{"@type": "type.googleapis.com/google.rpc.RetryInfo", "retryDelay": "7s"}]),
    "auth": (400, "INVALID_ARGUMENT", "API key not valid. Please pass a valid API key.",
             [{"@type": "type.googleapis.com/google.rpc.ErrorInfo", "reason": "API_KEY_INVALID"}]),
    "forbidden": (403, "PERMISSION_DENIED", "Permission denied on resource project.", []),
    "notfound": (404, "NOT_FOUND", "models/unknown is not found for API version v1beta, or is not supported "
                                   "for generateContent.", []),
    "gone": (400, "FAILED_PRECONDITION", "This model is no longer available to new users.", []),
    "down": (503, "UNAVAILABLE", "The model is overloaded. Please try again later.", []),
    "badrequest": (400, "INVALID_ARGUMENT", "Request contains an invalid argument.", []),
}

#: The documented 1K pixels per ratio of the Gemini 3 image models; 2K/4K are 2x/4x, 512 half.
PIXELS_1K: dict[str, tuple[int, int]] = {
    "1:1": (1024, 1024), "3:2": (1264, 848), "2:3": (848, 1264), "4:3": (1200, 896), "3:4": (896, 1200),
    "5:4": (1152, 928), "4:5": (928, 1152), "16:9": (1376, 768), "9:16": (768, 1376), "21:9": (1584, 672),
    "4:1": (2048, 512), "1:4": (512, 2048), "8:1": (3072, 384), "1:8": (384, 3072),
}
SCALE = {"512": 0.5, "1K": 1.0, "2K": 2.0, "4K": 4.0}
STANDARD = ("1:1", "3:2", "2:3", "4:3", "3:4", "5:4", "4:5", "16:9", "9:16", "21:9")
WIDE = ("4:1", "1:4", "8:1", "1:8")
#: model -> (ratios, image sizes) it takes, per Google's model pages.
IMAGE_MODELS: dict[str, tuple[tuple[str, ...], tuple[str, ...]]] = {
    "gemini-nano-banana-2.1": (STANDARD + WIDE, ("1K", "2K", "4K")),
    "gemini-3.1-flash-image": (STANDARD + WIDE, ("512", "1K", "2K", "4K")),
    "gemini-3-pro-image": (STANDARD, ("1K", "2K", "4K")),
    "gemini-3.1-flash-lite-image": (STANDARD + WIDE, ("1K",)),
}
#: Google's model pages: "up to 14 images per prompt".
MAX_INPUT_IMAGES = 14
TEXT_MODELS = ("gemini-3.5-flash-lite", "gemini-3.8-flash", "gemini-3.6-flash", "gemini-3.1-flash-lite",
               "gemini-2.5-flash-lite")
#: Shut down: 404 NOT_FOUND on any call.
RETIRED = {"gemini-2.5-flash-image", "gemini-2.5-flash-image-preview", "gemini-3.1-flash-image-preview",
           "gemini-3-pro-image-preview", "imagen-4.0-generate-001", "imagen-4.0-ultra-generate-001",
           "imagen-4.0-fast-generate-001", "imagen-3.0-generate-002", "gemini-2.0-flash", "gemini-2.5-flash",
           "gemini-2.5-pro"}


def model_entry(model_id: str, methods: tuple[str, ...] = ("generateContent", "countTokens"),
                version: str = "001") -> dict[str, Any]:
    return {"name": f"models/{model_id}", "version": version, "displayName": model_id,
            "supportedGenerationMethods": list(methods), "inputTokenLimit": 65536, "outputTokenLimit": 32768}


def default_models() -> list[dict[str, Any]]:
    """What an account sees today: image and text models, plus some our families must skip."""
    return ([model_entry(m) for m in IMAGE_MODELS] + [model_entry(m) for m in TEXT_MODELS]
            + [model_entry("gemini-embedding-001", ("embedContent", "countTokens")),
               model_entry("gemini-3.8-flash-tts"),
               model_entry("veo-3.1-generate-001", ("predictLongRunning",)),
               model_entry("gemini-3.5-flash-lite-live", ("bidiGenerateContent",))])


class FakeGoogle(FakeServer):
    def __init__(self) -> None:
        super().__init__()
        self._ids = itertools.count(1)
        self.text_reply: str | None = None
        self.models: list[dict[str, Any]] = default_models()
        self.retired: set[str] = set(RETIRED)
        #: model -> (ratios, sizes) the image route takes; tests may add a new model of a family.
        self.image_models: dict[str, tuple[tuple[str, ...], tuple[str, ...]]] = dict(IMAGE_MODELS)
        self.page_size = 0  # 0: the client's pageSize (or 50)
        self.scale = 16
        self.prompt_tokens = 12
        self.image_tokens = 1120
        self.app.router.add_get("/{tail:.*}", self._get)
        self.app.router.add_post("/{tail:.*}", self._dispatch)

    @property
    def base_url(self) -> str:
        return self.origin

    def add_model(self, model_id: str, methods: tuple[str, ...] = ("generateContent", "countTokens"),
                  like: str | None = None) -> None:
        """List ``model_id``; ``like``: it draws images as that image model does."""
        self.models.append(model_entry(model_id, methods))
        if like is not None:
            self.image_models[model_id] = IMAGE_MODELS[like]

    def remove_model(self, model_id: str) -> None:
        self.models = [m for m in self.models if m["name"] != f"models/{model_id}"]

    @staticmethod
    def _error(status: int, name: str, message: str, details: list[dict[str, Any]] | None = None) -> web.Response:
        return web.json_response({"error": {"code": status, "message": message, "status": name,
                                            "details": details or []}}, status=status)

    async def _get(self, request: web.Request) -> web.Response:
        if not request.path.endswith("/models"):
            return self._error(404, "NOT_FOUND", "no such method")
        self.seen.append(Seen("models", request.path, dict(request.headers), dict(request.query)))
        behaviour = self.next("models")
        if behaviour in ERRORS:
            return self._error(*ERRORS[behaviour])
        size = self.page_size or int(request.query.get("pageSize") or 50)
        start = int(request.query.get("pageToken") or 0)
        page: dict[str, Any] = {"models": self.models[start:start + size]}
        if start + size < len(self.models):
            page["nextPageToken"] = str(start + size)
        return web.json_response(page)

    async def _dispatch(self, request: web.Request) -> web.Response:
        path = request.path
        body = await request.json()
        model = path.rsplit("/models/", 1)[-1].split(":", 1)[0]
        if path.endswith(":generateContent"):
            modalities = (body.get("generationConfig") or {}).get("responseModalities") or []
            route = "gemini" if "IMAGE" in modalities else "text"
        elif path.endswith(":predict"):
            route = "imagen"
        else:
            return self._error(404, "NOT_FOUND", "no such method")
        self.seen.append(Seen(route, path, dict(request.headers), body))
        if route == "imagen" or model in self.retired:
            return self._error(404, "NOT_FOUND", f"models/{model} is not found for API version v1beta, or is not "
                                                 "supported for generateContent. It has been shut down.")
        behaviour = self.next(route)
        if behaviour == "slow":
            await asyncio.sleep(self.slow_seconds)
            behaviour = "ok"
        if behaviour in ERRORS:
            return self._error(*ERRORS[behaviour])
        if behaviour == "garbage":
            return web.Response(text="<html>oops</html>", content_type="application/json")
        if route == "text":
            return web.json_response(self._text(body, behaviour))
        if model not in self.image_models:
            return self._error(404, "NOT_FOUND", f"models/{model} is not found for API version v1beta, or does "
                                                 "not support image output.")
        image_config = (body.get("generationConfig") or {}).get("imageConfig") or {}
        aspect = image_config.get("aspectRatio", "1:1")
        size = image_config.get("imageSize", "1K")
        ratios, sizes = self.image_models[model]
        if aspect not in ratios:
            return self._error(400, "INVALID_ARGUMENT", f"Unsupported aspect ratio {aspect!r} for {model}.")
        if size not in sizes:
            return self._error(400, "INVALID_ARGUMENT", f"Unsupported image size {size!r} for {model}.")
        inputs = _inline_images(body)
        if len(inputs) > MAX_INPUT_IMAGES:
            return self._error(400, "INVALID_ARGUMENT", f"Too many input images: {len(inputs)}; {model} takes at "
                                                        f"most {MAX_INPUT_IMAGES} per prompt.")
        if any(not _is_image(data) for data in inputs):
            return self._error(400, "INVALID_ARGUMENT", "Unable to process input image. Please retry or report in "
                                                        "https://developers.generativeai.google/guide/troubleshooting")
        return web.json_response(self._image(aspect, size, behaviour))

    @staticmethod
    def input_images(call: Seen) -> list[bytes]:
        """The input images one ``generateContent`` call carried (its ``inlineData`` parts, in order)."""
        return _inline_images(call.body or {})

    def drawn(self, aspect: str, size: str) -> tuple[int, int]:
        """The pixels this fake draws for (aspect, size): the documented ones, divided by ``scale``."""
        w, h = PIXELS_1K[aspect]
        factor = SCALE[size] / self.scale
        return max(8, int(w * factor)), max(8, int(h * factor))

    def _image(self, aspect: str, size: str, behaviour: str) -> dict[str, Any]:
        if behaviour == "blocked":
            return {"promptFeedback": {"blockReason": "PROHIBITED_CONTENT"}}
        if behaviour == "safety":
            return {"candidates": [{"finishReason": "IMAGE_SAFETY", "index": 0}]}
        if behaviour == "textonly":
            return {"candidates": [{"content": {"role": "model", "parts": [{"text": "I can't draw that."}]},
                                    "finishReason": "STOP"}]}
        w, h = self.drawn(aspect, size)
        index = next(self._ids)
        data = b"not an image" if behaviour == "notimage" else png(w, h, ((37 * index) % 256, 90, 160))
        parts: list[dict[str, Any]] = []
        if behaviour == "thinking":
            draft = png(max(8, w // 2), max(8, h // 2), (0, 0, 0))
            parts.append({"inlineData": {"mimeType": "image/png", "data": base64.b64encode(draft).decode()},
                          "thought": True})
        parts.append({"inlineData": {"mimeType": "image/png", "data": base64.b64encode(data).decode()}})
        return {"candidates": [{"content": {"role": "model", "parts": parts}, "finishReason": "STOP", "index": 0}],
                "usageMetadata": {"promptTokenCount": self.prompt_tokens, "candidatesTokenCount": self.image_tokens,
                                  "totalTokenCount": self.prompt_tokens + self.image_tokens},
                "modelVersion": "fake"}

    def _text(self, body: dict[str, Any], behaviour: str) -> dict[str, Any]:
        if behaviour == "blocked":
            return {"promptFeedback": {"blockReason": "SAFETY"}}
        parts = body["contents"][-1]["parts"]
        if any("inlineData" in p for p in parts):
            text = "A red square on a plain background, flat colour, centred composition."
        else:
            user = " ".join(p.get("text", "") for p in parts)
            text = self.text_reply or f"{user}, low-angle wide shot, dramatic rim lighting, watercolor"
        return {"candidates": [{"content": {"role": "model", "parts": [{"text": text}]}, "finishReason": "STOP"}],
                "usageMetadata": {"promptTokenCount": 40, "candidatesTokenCount": 20, "totalTokenCount": 60}}


def _inline_images(body: dict[str, Any]) -> list[bytes]:
    out: list[bytes] = []
    for content in body.get("contents") or []:
        for part in content.get("parts") or []:
            blob = part.get("inlineData")
            if blob is not None:
                out.append(base64.urlsafe_b64decode(blob.get("data", "")))
    return out


def _is_image(data: bytes) -> bool:
    try:
        with Image.open(io.BytesIO(data)) as img:
            img.verify()
        return True
    except (UnidentifiedImageError, OSError, ValueError, SyntaxError):
        return False


__all__ = ["FakeGoogle", "png"]

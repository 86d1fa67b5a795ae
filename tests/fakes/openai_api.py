"""A loopback fake of OpenAI's HTTP API (also xAI and other OpenAI-compatible services), as the openai
SDK's types define it today (openai 3.57).

Routes: ``POST /v1/images/generations`` (JSON), ``POST /v1/images/edits`` (OpenAI: multipart, ``image``
or ``image[]`` and ``mask``; xAI: JSON with ``image``/``images`` as data URLs), ``POST
/v1/chat/completions``, ``GET /v1/models`` (OpenAI's list, with ``shutdown_date``; settable as
``fake.models``), ``GET /v1/image-generation-models`` (xAI's list, ``fake.xai_models``).

Like the real service it refuses what today's models refuse:

- a model in ``fake.retired`` (default: the shut-down image ids) answers 404 ``model_not_found``;
- GPT image models refuse the legacy ``response_format`` and ``style`` (400 ``unknown_parameter``) and the
  qualities standard/hd (400 ``invalid_value``); xhigh/max only on the gpt-image-2.5 models; sizes are
  checked per family (2 and 2.5: multiples of 16, 1:3..3:1, 655,360..3840x2160 pixels; others the three
  standard sizes) -> 400 ``invalid_size``; ``background=transparent`` with jpeg -> 400;
- xAI's grok-imagine models refuse ``size`` and ``style`` and check ``aspect_ratio``/``resolution``.

Edits, as ``image_edit_params.py`` describes them (and xAI's edit reference for grok): a GPT image model
takes 1..16 png/webp/jpeg images (else 400 ``invalid_image_file``, "Invalid image file or mode for image
N", the API's wording); ``mask`` must be a PNG under 4MB with an alpha channel and the first image's
dimensions (else 400 ``invalid_mask``; that wording is ours, after the SDK's rule); ``input_fidelity`` only
on gpt-image-1.5 (high|low) and gpt-image-1-mini (low), else 400 ``invalid_input_fidelity_model`` with
the API's wording "The model '...' does not support the 'input_fidelity' parameter."; a JSON body is
refused. grok models take JSON only (multipart -> 415), ``image`` or ``images`` (not both), at most 3.
What each edit carried is kept in ``fake.edit_inputs`` (``EditInput``: the images, the mask,
``input_fidelity``). The answer is honest about "the original stays": with a mask, each result is the
first image where the mask is opaque and the flat ``EDIT_FILL`` where it is fully transparent, at the
requested size (the first image's when none or ``auto``); without one, the usual small picture.

With ``stream=true`` a GPT image model answers server-sent events: ``partial_images`` events of type
``image_generation.partial_image`` (``image_edit.partial_image`` for edits), then one ``*.completed``
event per image with ``usage``, carrying exactly the fields of the SDK's event types. Plain answers carry
``usage`` too. Every request body is kept in ``fake.seen`` (``safety_identifier``, ``output_format``,
``background``... are in ``call.body``).

Behaviours per route, queued with ``fake.queue(route, ...)``: ok, policy (400 content_policy_violation),
moderation (400 moderation_blocked), rate (429 + retry-after-ms), quota (429 insufficient_quota), auth
(401), forbidden (403), notfound (404 model_not_found), down (503), slow (sleeps past the client
timeout), garbage (200, not JSON), empty (200, no data), notimage (200, base64 of text), badurl (a URL to
a non-image), bigurl (a URL to an oversized body), refusal (chat: content_filter), badrequest (400
invalid_size), cutstream (a stream that drops the connection after its first partial image),
nocomplete (a stream that ends cleanly without a completed event), streamerror (an ``error`` event).
"""

from __future__ import annotations

import asyncio
import base64
import binascii
import io
import itertools
import json
from dataclasses import dataclass
from typing import Any

from aiohttp import web
from PIL import Image, UnidentifiedImageError

from .moderation_api import ModerationFake
from .server import FakeServer, Seen

ERRORS: dict[str, tuple[int, str, str, dict[str, str]]] = {
    "policy": (400, "content_policy_violation", "Your request was rejected as a result of our safety system.", {}),
    "moderation": (400, "moderation_blocked", "Your request was rejected by the safety system.", {}),
    "rate": (429, "rate_limit_exceeded", "Rate limit reached for images per minute.", {"retry-after-ms": "20"}),
    "quota": (429, "insufficient_quota", "You exceeded your current quota.", {}),
    "auth": (401, "invalid_api_key", "Incorrect API key provided: {key}.", {}),
    "forbidden": (403, "model_not_allowed", "Your organization must be verified to use this model.", {}),
    "notfound": (404, "model_not_found", "The model does not exist or you do not have access to it.", {}),
    "down": (503, "server_error", "The server is overloaded.", {}),
    "badrequest": (400, "invalid_size", "Invalid size.", {}),
}

#: Shut down per the SDK's docstrings and OpenAI's deprecations page (and xAI's grok-2-image, -pro).
RETIRED = frozenset({"gpt-image-1", "gpt-image-1-mini", "gpt-image-1.5", "chatgpt-image-latest", "dall-e-2",
                     "dall-e-3", "grok-2-image", "grok-2-image-1212"})
STANDARD_SIZES = ("1024x1024", "1536x1024", "1024x1536")
#: ``image_edit_params.py``: input images per edit (GPT image models); xAI: "up to three source images".
GPT_MAX_IMAGES = 16
XAI_MAX_IMAGES = 3
MASK_LIMIT = 4 * 1024 * 1024
#: ``input_fidelity`` values per model (``image_edit_params.py``); every other model must omit it.
INPUT_FIDELITY = {"gpt-image-1.5": ("high", "low"), "gpt-image-1-mini": ("low",)}
#: What the fake paints where a mask lets it draw.
EDIT_FILL = (255, 0, 200)


@dataclass
class EditInput:
    """What one ``POST /v1/images/edits`` carried: ``multipart`` (OpenAI) or ``json`` (xAI)."""

    kind: str
    model: str
    images: list[bytes]
    mask: bytes | None = None
    input_fidelity: str | None = None
XAI_RATIOS = {"1:1", "3:4", "4:3", "9:16", "16:9", "2:3", "3:2", "9:19.5", "19.5:9", "9:20", "20:9", "1:2", "2:1",
              "auto"}


def _ts(date: str) -> int:
    import datetime as dt

    return int(dt.datetime.fromisoformat(date).replace(tzinfo=dt.UTC).timestamp())


def default_models() -> list[dict[str, Any]]:
    """``GET /v1/models`` as an account sees it on 2026-12-01 (images and the /enhance text models)."""
    entries = [
        ("gpt-image-2", "2026-04-21", None), ("gpt-image-2-2026-04-21", "2026-04-21", None),
        ("gpt-image-2.5-sunburst", "2026-09-08", None), ("gpt-image-2.5-sunburst-2026-09-08", "2026-09-08", None),
        ("gpt-image-2.5-flare", "2026-09-08", None), ("gpt-image-2.5-flare-2026-09-08", "2026-09-08", None),
        ("gpt-image-2.6-sunburst", "2026-11-10", None), ("gpt-image-2.6-flare", "2026-11-10", None),
        ("gpt-6-luna", "2026-10-01", None), ("gpt-5.6-luna", "2026-07-10", None),
        ("gpt-5.4-mini", "2026-03-17", None), ("gpt-4.1-mini", "2025-04-14", "2027-01-14"),
        ("gpt-4o-mini", "2024-07-18", "2027-01-14"), ("gpt-4o-mini-tts", "2025-03-20", None),
        ("text-embedding-3-small", "2024-01-25", None),
    ]
    return [model_entry(i, c, s) for i, c, s in entries]


def model_entry(model_id: str, created: str = "2026-01-01", shutdown_date: str | None = None) -> dict[str, Any]:
    """One ``openai.types.Model``: id, created, object, owned_by, shutdown_date."""
    return {"id": model_id, "object": "model", "created": _ts(created), "owned_by": "system",
            "shutdown_date": shutdown_date}


def default_xai_models() -> list[dict[str, Any]]:
    """``GET /v1/image-generation-models`` (xAI's OpenAPI document)."""
    return [xai_entry("grok-imagine-image-quality", "2026-05-01", aliases=["grok-imagine-image-quality-latest"]),
            xai_entry("grok-imagine-image", "2026-01-29")]


def xai_entry(model_id: str, created: str, aliases: list[str] | None = None) -> dict[str, Any]:
    return {"id": model_id, "fingerprint": "fp_test", "max_prompt_length": 1024, "created": _ts(created),
            "object": "model", "owned_by": "xai", "version": "1.0.0", "input_modalities": ["text", "image"],
            "output_modalities": ["image"], "image_price": 2, "aliases": aliases or []}


def picture(size: str, index: int, fmt: str = "png", partial: bool = False) -> bytes:
    """A tiny image with the requested shape (1/16 scale) in the requested format; partial images are
    greyer than the final one, and each index has its own colour, so results differ."""
    w, h = (int(v) for v in size.split("x")) if "x" in size else (1024, 1024)
    colour = (128, 128, 128) if partial else ((37 * index) % 256, 90, 160)
    out = io.BytesIO()
    mode = "RGBA" if fmt in ("png", "webp") else "RGB"
    Image.new(mode, (max(8, w // 16), max(8, h // 16)), colour).save(
        out, format={"png": "PNG", "webp": "WEBP", "jpeg": "JPEG"}.get(fmt, "PNG"))
    return out.getvalue()


def _decode(data: bytes) -> Image.Image | None:
    """The decoded image (its ``format`` kept) when it is a png, webp or jpeg; else None."""
    try:
        img = Image.open(io.BytesIO(data))
        img.load()
    except (UnidentifiedImageError, OSError, ValueError):
        return None
    return img if img.format in ("PNG", "WEBP", "JPEG") else None


def composite(first: bytes, mask: bytes, size: str, fmt: str = "png") -> bytes:
    """The first image where ``mask`` is opaque, ``EDIT_FILL`` where it is fully transparent, at ``size``
    (``WxH``; anything else: the image's own size)."""
    with Image.open(io.BytesIO(first)) as img:
        base = img.convert("RGBA")
    with Image.open(io.BytesIO(mask)) as m:
        alpha = m.convert("RGBA").getchannel("A")
    if "x" in size:
        w, h = (int(v) for v in size.split("x"))
        if (w, h) != base.size:
            base = base.resize((w, h), Image.Resampling.NEAREST)
            alpha = alpha.resize((w, h), Image.Resampling.NEAREST)
    base.paste((*EDIT_FILL, 255), (0, 0, *base.size), alpha.point([255] + [0] * 255))
    out = io.BytesIO()
    if fmt == "jpeg":
        base.convert("RGB").save(out, format="JPEG")
    else:
        base.save(out, format={"webp": "WEBP"}.get(fmt, "PNG"))
    return out.getvalue()


def is_gpt_image(model: str) -> bool:
    return model.startswith("gpt-image-") or model.startswith("chatgpt-image")


def is_grok(model: str) -> bool:
    return model.startswith("grok-imagine")


def takes_any_size(model: str) -> bool:
    """gpt-image-2 and the 2.5 models (and snapshots), per ``image_generate_params.py``."""
    return (model == "gpt-image-2" or model.startswith("gpt-image-2-") or model.startswith("gpt-image-2.5-"))


class FakeOpenAI(FakeServer):
    def __init__(self) -> None:
        super().__init__()
        self._ids = itertools.count(1)
        self.chat_reply: str | None = None
        #: Ids answered with 404 model_not_found (a test can add one to retire a model mid-run).
        self.retired: set[str] = set(RETIRED)
        #: What ``GET /v1/models`` lists (a test can drop an entry or set a ``shutdown_date``).
        self.models: list[dict[str, Any]] = default_models()
        self.xai_models: list[dict[str, Any]] = default_xai_models()
        #: Tokens reported in ``usage`` for each call (and each completed stream event).
        self.usage = {"input_tokens": 50, "output_tokens": 4160}
        #: Seconds between streamed events, as a model drawing takes time (0: all at once).
        self.stream_gap = 0.0
        #: What each edit carried (images, mask, input_fidelity), in order.
        self.edit_inputs: list[EditInput] = []
        self.app.router.add_post("/v1/images/generations", self._generations)
        self.app.router.add_post("/v1/images/edits", self._edits)
        self.app.router.add_post("/v1/chat/completions", self._chat)
        self.app.router.add_get("/v1/models", self._models)
        self.app.router.add_get("/v1/image-generation-models", self._xai_models)
        #: ``POST /v1/moderations`` (omni-moderation): its state and handler live in ``moderation_api``.
        self.moderation = ModerationFake()
        self.app.router.add_post("/v1/moderations", self.moderation.handle)

    @property
    def base_url(self) -> str:
        return f"{self.origin}/v1"

    # -- shared ----------------------------------------------------------------------------------

    @staticmethod
    def _refuse(status: int, code: str | None, message: str, param: str | None = None) -> web.Response:
        body = {"error": {"message": message, "type": "invalid_request_error", "param": param, "code": code}}
        return web.json_response(body, status=status)

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
        if behaviour in ("ok", "notimage", "badurl", "bigurl", "refusal", "cutstream", "nocomplete", "streamerror"):
            return None, behaviour
        raise AssertionError(f"unknown behaviour {behaviour!r}")

    def _check(self, body: dict[str, Any], *, edit: bool) -> web.Response | None:
        """What today's API refuses, per model (None: acceptable)."""
        model = str(body.get("model") or "")
        if model in self.retired:
            return self._refuse(404, "model_not_found", f"The model `{model}` does not exist or you do not have "
                                "access to it.", "model")
        if is_gpt_image(model):
            for legacy in ("response_format", "style"):
                if body.get(legacy) not in (None, ""):
                    return self._refuse(400, "unknown_parameter", f"Unknown parameter: '{legacy}'.", legacy)
            quality = body.get("quality")
            allowed = {"low", "medium", "high", "auto"} | (
                {"xhigh", "max"} if model.startswith("gpt-image-2.5-") else set())
            if quality is not None and quality not in allowed:
                return self._refuse(400, "invalid_value", f"Invalid value: '{quality}'. Supported values are: "
                                    f"{', '.join(sorted(allowed))}.", "quality")
            size = str(body.get("size") or "auto")
            if size != "auto" and self._size_problem(model, size):
                return self._refuse(400, "invalid_size", f"Invalid size '{size}': {self._size_problem(model, size)}.",
                                    "size")
            fmt = body.get("output_format") or "png"
            if fmt not in ("png", "webp", "jpeg"):
                return self._refuse(400, "invalid_value", f"Invalid output_format '{fmt}'.", "output_format")
            if body.get("background") == "transparent" and fmt == "jpeg":
                return self._refuse(400, "invalid_value", "Transparent backgrounds need png or webp.", "background")
            if body.get("output_compression") is not None and fmt == "png":
                return self._refuse(400, "invalid_value", "output_compression needs webp or jpeg.",
                                    "output_compression")
            if edit and "moderation" in body:
                return self._refuse(400, "unknown_parameter", "Unknown parameter: 'moderation'.", "moderation")
        if is_grok(model):
            for unsupported in ("size", "style"):
                if body.get(unsupported) not in (None, ""):
                    return self._refuse(400, None, f"Argument not supported: {unsupported}", unsupported)
            if body.get("aspect_ratio") not in (None, *XAI_RATIOS):
                return self._refuse(400, None, "Invalid aspect_ratio.", "aspect_ratio")
            if body.get("resolution") not in (None, "1k", "2k"):
                return self._refuse(422, None, "Invalid resolution.", "resolution")
        n = int(body.get("n") or 1)
        if not 1 <= n <= 10:
            return self._refuse(400, "invalid_value", "n must be between 1 and 10.", "n")
        return None

    @staticmethod
    def _size_problem(model: str, size: str) -> str | None:
        try:
            w, h = (int(v) for v in size.split("x"))
        except ValueError:
            return "not WIDTHxHEIGHT"
        if not takes_any_size(model):
            return None if size in STANDARD_SIZES else f"{model} takes {', '.join(STANDARD_SIZES)} or auto"
        if w % 16 or h % 16:
            return "width and height must be divisible by 16"
        if max(w, h) / min(w, h) > 3:
            return "the aspect ratio must be between 1:3 and 3:1"
        if max(w, h) > 3840 or w * h > 3840 * 2160 or w * h < 655_360:
            return "outside the model's pixel and edge limits"
        return None

    def _usage(self) -> dict[str, Any]:
        tin, tout = self.usage["input_tokens"], self.usage["output_tokens"]
        return {"input_tokens": tin, "input_tokens_details": {"image_tokens": 0, "text_tokens": tin},
                "output_tokens": tout, "total_tokens": tin + tout}

    def _image_items(self, body: dict[str, Any], n: int, mode: str, edited: bytes | None = None) -> list[dict[str, Any]]:
        size = str(body.get("size") or "1024x1024")
        model = str(body.get("model") or "")
        fmt = "b64_json" if is_gpt_image(model) else (body.get("response_format") or
                                                      ("url" if is_grok(model) else "b64_json"))
        items = []
        for i in range(n):
            data = edited if edited is not None else picture(size, next(self._ids) + i,
                                                             str(body.get("output_format") or "png"))
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
            if is_grok(model):
                item["revised_prompt"] = ""
            items.append(item)
        return items

    def _answer(self, body: dict[str, Any], mode: str, edited: bytes | None = None) -> dict[str, Any]:
        model = str(body.get("model") or "")
        out: dict[str, Any] = {"created": 1, "data": self._image_items(body, int(body.get("n") or 1), mode, edited)}
        if is_gpt_image(model):
            out.update(usage=self._usage(), output_format=body.get("output_format") or "png",
                       size=body.get("size") or "1024x1024", quality=body.get("quality") or "medium")
            if body.get("background") in ("transparent", "opaque"):
                out["background"] = body["background"]
            if body.get("safety_identifier"):
                out["safety_identifier"] = body["safety_identifier"]
        elif is_grok(model):
            out["usage"] = {"cost_in_usd_ticks": 200000000}
        return out

    async def _sse(self, request: web.Request, body: dict[str, Any], mode: str, kind: str,
                   edited: bytes | None = None) -> web.StreamResponse:
        """Server-sent events of ``{kind}.partial_image`` then ``{kind}.completed`` per image."""
        resp = web.StreamResponse(headers={"Content-Type": "text/event-stream", "Cache-Control": "no-cache"})
        await resp.prepare(request)
        size = str(body.get("size") or "1024x1024")
        fmt = str(body.get("output_format") or "png")
        common = {"background": body.get("background") or "auto", "output_format": fmt,
                  "quality": body.get("quality") or "auto", "size": size}
        partials = int(body.get("partial_images") or 0)

        async def send(event: dict[str, Any]) -> None:
            await resp.write(f"event: {event['type']}\ndata: {json.dumps(event)}\n\n".encode())

        for image in range(int(body.get("n") or 1)):
            for index in range(partials):
                if self.stream_gap:
                    await asyncio.sleep(self.stream_gap)
                data = picture(size, index, fmt, partial=True)
                await send({"type": f"{kind}.partial_image", "b64_json": base64.b64encode(data).decode(),
                            "created_at": 1, "partial_image_index": index, **common})
                if mode == "cutstream":
                    await asyncio.sleep(0.05)
                    assert request.transport is not None
                    request.transport.abort()  # the connection drops mid-stream
                    return resp
            if mode == "streamerror":
                await send({"type": "error", "error": {"type": "server_error", "code": "server_error",
                                                       "message": "The image could not be finished.",
                                                       "param": None}})
                break
            if mode == "nocomplete":
                break
            if self.stream_gap:
                await asyncio.sleep(self.stream_gap)
            data = edited if edited is not None else picture(size, next(self._ids) + image, fmt)
            completed: dict[str, Any] = {"type": f"{kind}.completed", "b64_json": base64.b64encode(data).decode(),
                                         "created_at": 1, "usage": self._usage(), **common}
            if body.get("safety_identifier"):
                completed["safety_identifier"] = body["safety_identifier"]
            await send(completed)
        await resp.write_eof()
        return resp

    # -- routes ----------------------------------------------------------------------------------

    async def _generations(self, request: web.Request) -> web.StreamResponse:
        body = await request.json()
        seen = Seen("generations", request.path, dict(request.headers), body)
        early, mode = await self._scripted("generations", seen)
        if early is not None:
            return early
        refused = self._check(body, edit=False)
        if refused is not None:
            return refused
        if body.get("stream") and is_gpt_image(str(body.get("model") or "")):
            return await self._sse(request, body, mode, "image_generation")
        return web.json_response(self._answer(body, mode))

    async def _edits(self, request: web.Request) -> web.StreamResponse:
        if request.content_type == "application/json":
            return await self._json_edits(request)
        form = await request.post()
        fields = [key for key, _ in form.items()]  # every part, repeated ones (image[]) too
        body: dict[str, Any] = {}
        files: dict[str, bytes] = {}
        images: list[bytes] = []
        mask: bytes | None = None
        for key, value in form.items():
            if hasattr(value, "file"):
                data = value.file.read()
                files[key] = data
                if key in ("image", "image[]"):
                    images.append(data)
                elif key == "mask":
                    mask = data
            else:
                body[key] = value
        model = str(body.get("model") or "")
        fidelity = str(body["input_fidelity"]) if "input_fidelity" in body else None
        self.edit_inputs.append(EditInput("multipart", model, images, mask, fidelity))
        seen = Seen("edits", request.path, dict(request.headers), body, files, fields)
        early, mode = await self._scripted("edits", seen)
        if early is not None:
            return early
        typed = {**body, **{k: int(v) for k, v in body.items() if k in ("n", "partial_images", "output_compression")}}
        typed["stream"] = str(body.get("stream", "")).lower() == "true"
        refused = self._check(typed, edit=True) or self._check_inputs(model, images, mask, fidelity)
        if refused is not None:
            return refused
        edited = None
        if mask is not None:
            edited = composite(images[0], mask, str(typed.get("size") or "auto"), str(typed.get("output_format") or "png"))
        if typed["stream"] and is_gpt_image(model):
            return await self._sse(request, typed, mode, "image_edit", edited)
        return web.json_response(self._answer(typed, mode, edited))

    def _check_inputs(self, model: str, images: list[bytes], mask: bytes | None,
                      fidelity: str | None) -> web.Response | None:
        """What ``images.edit`` refuses about its files and ``input_fidelity`` (module docstring)."""
        if is_grok(model):
            return web.json_response({"code": "Unsupported media type", "error": "The images edit endpoint takes "
                                      "application/json; multipart/form-data is not supported."}, status=415)
        if not images:
            return self._refuse(400, "missing_required_parameter", "Missing required parameter: 'image'.", "image")
        if len(images) > GPT_MAX_IMAGES:
            return self._refuse(400, "invalid_value", f"Too many images: at most {GPT_MAX_IMAGES} may be given, "
                                f"got {len(images)}.", "image")
        decoded = [_decode(data) for data in images]
        for number, img in enumerate(decoded, start=1):
            if img is None:
                return self._refuse(400, "invalid_image_file", f"Invalid image file or mode for image {number}, "
                                    "please check your image file.", "image")
        if fidelity is not None:
            allowed = INPUT_FIDELITY.get(model)
            if allowed is None:
                body = {"error": {"message": f"The model '{model}' does not support the 'input_fidelity' parameter.",
                                  "type": "image_generation_user_error", "param": "input_fidelity",
                                  "code": "invalid_input_fidelity_model"}}
                return web.json_response(body, status=400)
            if fidelity not in allowed:
                return self._refuse(400, "invalid_value", f"Invalid value: '{fidelity}'. Supported values are: "
                                    f"{', '.join(repr(a) for a in allowed)}.", "input_fidelity")
        if mask is not None:
            first = decoded[0]
            assert first is not None
            m = _decode(mask)
            if m is None or m.format != "PNG" or len(mask) >= MASK_LIMIT:
                return self._refuse(400, "invalid_mask", "Invalid mask: it must be a valid PNG file, less than 4MB.",
                                    "mask")
            if "A" not in m.getbands() and "transparency" not in m.info:
                return self._refuse(400, "invalid_mask", f"Invalid mask: it needs an alpha channel (got {m.mode}); "
                                    "its fully transparent areas are where the image is edited.", "mask")
            if m.size != first.size:
                return self._refuse(400, "invalid_mask", f"Invalid mask: it must have the same dimensions as the "
                                    f"image (mask {m.width}x{m.height}, image {first.width}x{first.height}).", "mask")
        return None

    async def _json_edits(self, request: web.Request) -> web.StreamResponse:
        """xAI's JSON edits: ``image: {url}`` or ``images: [{url}, ...]`` (data URLs decoded here)."""
        body = await request.json()
        model = str(body.get("model") or "")
        entries = body.get("images") if "images" in body else ([body["image"]] if "image" in body else [])
        images = [self._data_url(e.get("url") if isinstance(e, dict) else None) for e in entries or []]
        mask_url = body.get("mask", {}).get("url") if isinstance(body.get("mask"), dict) else None
        self.edit_inputs.append(EditInput("json", model, [i for i in images if i is not None],
                                          self._data_url(mask_url), body.get("input_fidelity")))
        seen = Seen("edits", request.path, dict(request.headers), body)
        early, mode = await self._scripted("edits", seen)
        if early is not None:
            return early
        if not is_grok(model):
            return self._refuse(400, "invalid_request_error", "Invalid Content-Type header (application/json), "
                                "expected multipart/form-data.", None)
        if "image" in body and "images" in body:
            return self._refuse(400, None, "Provide either image or images, not both.", "images")
        if not images:
            return self._refuse(400, None, "An input image is required (image or images).", "image")
        if len(images) > XAI_MAX_IMAGES:
            return self._refuse(400, None, f"At most {XAI_MAX_IMAGES} images may be edited at once.", "images")
        if any(i is None or _decode(i) is None for i in images):
            return self._refuse(400, None, "Each image must be a reachable URL or a base64 data URI of an image.",
                                "image")
        refused = self._check(body, edit=True)
        if refused is not None:
            return refused
        return web.json_response(self._answer(body, mode))

    @staticmethod
    def _data_url(url: object) -> bytes | None:
        if not isinstance(url, str) or not url.startswith("data:") or ";base64," not in url:
            return None
        try:
            return base64.b64decode(url.split(";base64,", 1)[1], validate=True)
        except (binascii.Error, ValueError):
            return None

    async def _models(self, request: web.Request) -> web.Response:
        early, _ = await self._scripted("models", Seen("models", request.path, dict(request.headers)))
        if early is not None:
            return early
        return web.json_response({"object": "list", "data": list(self.models)})

    async def _xai_models(self, request: web.Request) -> web.Response:
        early, _ = await self._scripted("xai_models", Seen("xai_models", request.path, dict(request.headers)))
        if early is not None:
            return early
        return web.json_response({"models": list(self.xai_models)})

    async def _chat(self, request: web.Request) -> web.Response:
        body = await request.json()
        seen = Seen("chat", request.path, dict(request.headers), body)
        early, mode = await self._scripted("chat", seen)
        if early is not None:
            return early
        model = str(body.get("model") or "")
        if model in self.retired:
            return self._refuse(404, "model_not_found", f"The model `{model}` does not exist or you do not have "
                                "access to it.", "model")
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

"""The fake of OpenAI's ``POST /v1/moderations`` (mounted on ``FakeOpenAI`` as ``.moderation``).

Answers in the shape of the SDK's ``types/moderation_create_response.py`` and ``types/moderation.py``: an
``id``, the ``model`` and ``results``, each with ``flagged``, every category (the vendor's names,
``sexual/minors``...), ``category_scores`` and ``category_applied_input_types``. A string or a list of
strings gets one result per string; a list of text and ``image_url`` parts gets one result for all of it.

Nothing is flagged unless a test says so: ``flag("knife", "violence")`` flags any text holding the word
(any case), ``flag_image(png_bytes, "sexual")`` an image with those exact bytes (only the categories the
vendor judges images on). Refused as the API refuses them: no key (401), an unknown model (404
``model_not_found``), no ``input`` or malformed parts (400), an image that is not a web address or a
base64 ``data:image/...`` URL (400 ``invalid_image_url``), two images in one request (400
``too_many_images``, the vendor's words), an image for a text-only model (400). ``fail(500, "slow")``
scripts the next answers; ``down = True`` answers 500 to everything. Every body is kept in ``seen`` and
every request, decoded, in ``calls``.
"""

from __future__ import annotations

import asyncio
import base64
import binascii
import itertools
import re
from dataclasses import dataclass, field
from typing import Any

from aiohttp import web

CATEGORIES = ("harassment", "harassment/threatening", "hate", "hate/threatening", "illicit", "illicit/violent",
              "self-harm", "self-harm/intent", "self-harm/instructions", "sexual", "sexual/minors", "violence",
              "violence/graphic")
#: The categories judged on images too (``CategoryAppliedInputTypes`` in the SDK's ``types/moderation.py``).
IMAGE_CATEGORIES = frozenset({"self-harm", "self-harm/intent", "self-harm/instructions", "sexual", "violence",
                              "violence/graphic"})
#: ``types/moderation_model.py``; the model each id answers as.
MODELS = {"omni-moderation-latest": "omni-moderation-2024-09-26",
          "omni-moderation-2024-09-26": "omni-moderation-2024-09-26",
          "text-moderation-latest": "text-moderation-007", "text-moderation-stable": "text-moderation-007"}
DATA_URL = re.compile(r"data:image/(png|jpeg|webp|gif);base64,(?P<data>[A-Za-z0-9+/=]+)")
FAILURES: dict[int, tuple[str, str | None, str]] = {
    401: ("invalid_request_error", "invalid_api_key", "Incorrect API key provided: {key}."),
    429: ("requests", "rate_limit_exceeded", "Rate limit reached for requests."),
    500: ("server_error", None, "The server had an error while processing your request."),
    503: ("server_error", None, "The engine is currently overloaded, please try again later."),
}


@dataclass
class ModerationCall:
    """One request as the vendor saw it."""

    body: Any
    authorization: str
    texts: list[str] = field(default_factory=list)
    images: list[bytes] = field(default_factory=list)


class BadRequest(Exception):
    def __init__(self, status: int, message: str, code: str | None = None, param: str | None = "input") -> None:
        super().__init__(message)
        self.status, self.message, self.code, self.param = status, message, code, param


class ModerationFake:
    #: Seconds a scripted "slow" answer takes (past the client's timeout).
    slow_seconds = 1.5

    def __init__(self) -> None:
        self.seen: list[Any] = []
        self.calls: list[ModerationCall] = []
        #: word (lower case) in the text -> the categories it flags.
        self.rules: dict[str, tuple[str, ...]] = {}
        self.image_rules: dict[bytes, tuple[str, ...]] = {}
        #: The next answers: HTTP statuses (401, 429, 500, 503) or "slow"; then normal answers.
        self.script: list[int | str] = []
        #: Answer 500 to every call (the moderation model is down).
        self.down = False
        self._ids = itertools.count(1)

    def flag(self, word: str, *categories: str) -> None:
        if not categories or not set(categories) <= set(CATEGORIES):
            raise ValueError(f"categories must be some of {CATEGORIES}, got {categories}")
        self.rules[word.lower()] = categories

    def flag_image(self, image: bytes, *categories: str) -> None:
        if not categories or not set(categories) <= IMAGE_CATEGORIES:
            raise ValueError(f"images are judged only for {sorted(IMAGE_CATEGORIES)}, got {categories}")
        self.image_rules[image] = categories

    def fail(self, *outcomes: int | str) -> None:
        for outcome in outcomes:
            if outcome != "slow" and outcome not in FAILURES:
                raise ValueError(f"unknown outcome {outcome!r}")
        self.script.extend(outcomes)

    @staticmethod
    def _error(status: int, kind: str, code: str | None, message: str, param: str | None = None) -> web.Response:
        body = {"error": {"message": message, "type": kind, "param": param, "code": code}}
        return web.json_response(body, status=status)

    async def handle(self, request: web.Request) -> web.Response:
        authorization = request.headers.get("Authorization", "")
        try:
            body: Any = await request.json()
        except ValueError:
            body = None
        self.seen.append(body)
        call = ModerationCall(body, authorization)
        self.calls.append(call)
        if not authorization.startswith("Bearer ") or not authorization.removeprefix("Bearer ").strip():
            return self._error(401, "invalid_request_error", None, "You didn't provide an API key.")
        outcome = self.script.pop(0) if self.script else (500 if self.down else "ok")
        if outcome == "slow":
            await asyncio.sleep(self.slow_seconds)
        elif isinstance(outcome, int):
            kind, code, message = FAILURES[outcome]
            # The vendor's 401 quotes the key it got (partly masked there): our errors must never pass it on.
            return self._error(outcome, kind, code, message.format(key=authorization.removeprefix("Bearer ")))
        try:
            model, inputs = self._read(body, call)
        except BadRequest as bad:
            return self._error(bad.status, "invalid_request_error", bad.code, bad.message, bad.param)
        results = [self._result(texts, images) for texts, images in inputs]
        return web.json_response({"id": f"modr-{next(self._ids)}", "model": MODELS[model], "results": results})

    def _read(self, body: Any, call: ModerationCall) -> tuple[str, list[tuple[list[str], list[bytes]]]]:
        """The model and, per result, the texts and images it judges; or the API's refusal."""
        if not isinstance(body, dict):
            raise BadRequest(400, "We could not parse the JSON body of your request.", param=None)
        model = body.get("model") or "omni-moderation-latest"
        if not isinstance(model, str) or model not in MODELS:
            raise BadRequest(404, f"The model `{model}` does not exist or you do not have access to it.",
                             "model_not_found", "model")
        given = body.get("input")
        if given is None:
            raise BadRequest(400, "you must provide an input parameter", "missing_required_parameter")
        if isinstance(given, str):
            call.texts.append(given)
            return model, [([given], [])]
        if not isinstance(given, list) or not given:
            raise BadRequest(400, "Invalid type for 'input': expected a string or an array.", "invalid_type")
        if all(isinstance(item, str) for item in given):
            call.texts.extend(given)
            return model, [([text], []) for text in given]
        texts: list[str] = []
        images: list[bytes] = []
        for i, part in enumerate(given):
            kind = part.get("type") if isinstance(part, dict) else None
            if kind == "text" and isinstance(part.get("text"), str):
                texts.append(part["text"])
            elif kind == "image_url" and isinstance(part.get("image_url"), dict) \
                    and isinstance(part["image_url"].get("url"), str):
                images.append(self._image(part["image_url"]["url"], i))
            else:
                raise BadRequest(400, f"Invalid value for 'input[{i}]': expected a text or image_url part.",
                                 "invalid_value", f"input[{i}]")
        if len(images) > 1:
            raise BadRequest(400, f"Number of images ({len(images)}) exceeds maximum of 1", "too_many_images")
        if images and model.startswith("text-moderation"):
            raise BadRequest(400, f"The model `{model}` does not support image inputs.", "invalid_value", "model")
        call.texts.extend(texts)
        call.images.extend(images)
        return model, [(texts, images)]

    @staticmethod
    def _image(url: str, index: int) -> bytes:
        if url.startswith(("https://", "http://")):
            return url.encode()
        match = DATA_URL.fullmatch(url)
        try:
            data = base64.b64decode(match["data"], validate=True) if match else b""
        except (binascii.Error, ValueError):
            data = b""
        if not data:
            raise BadRequest(400, "Invalid image URL: expected a URL or a base64-encoded data URL of an image.",
                             "invalid_image_url", f"input[{index}].image_url.url")
        return data

    def _result(self, texts: list[str], images: list[bytes]) -> dict[str, Any]:
        text = " ".join(texts).lower()
        hits = {c for word, cats in self.rules.items() if word in text for c in cats}
        hits |= {c for image in images for c in self.image_rules.get(image, ())}
        present = (["text"] if texts else []) + (["image"] if images else [])
        return {
            "flagged": bool(hits),
            "categories": {c: c in hits for c in CATEGORIES},
            "category_scores": {c: 0.97 if c in hits else 0.0012 for c in CATEGORIES},
            "category_applied_input_types": {
                c: [t for t in present if t == "text" or c in IMAGE_CATEGORIES] for c in CATEGORIES},
        }

"""The moderation model: OpenAI's omni-moderation checks a prompt (and its input images) before generating.

Facts, and where they come from (the installed openai SDK, 3.57):

- ``types/moderation_model.py``: ``omni-moderation-latest`` (and its snapshot ``omni-moderation-2024-09-26``)
  takes text and images; ``text-moderation-latest``/``-stable`` take text only. We ask the omni model.
- ``resources/moderations.py`` and ``types/moderation_create_params.py``: ``client.moderations.create(
  model=..., input=...)`` -> ``POST /moderations``; ``input`` may be a list of multi-modal parts,
  ``{"type": "text", "text": ...}`` (``moderation_text_input_param.py``) and ``{"type": "image_url",
  "image_url": {"url": ...}}`` where the url is a web address or a base64 data URL
  (``moderation_image_url_input_param.py``). A multi-modal input gets one result for the whole of it.
- ``types/moderation.py``: each result has ``flagged`` and ``categories`` under the vendor's names
  (``sexual/minors``, ``self-harm/intent``, ``violence/graphic``... as pydantic aliases), and
  ``category_applied_input_types``: the inputs (``text``, ``image``) each category was judged on. Only
  self-harm, sexual and violence (and their subcategories) are judged on images.
- Not in the SDK: the endpoint takes one image per request (two answer 400 ``too_many_images``, "Number of
  images (2) exceeds maximum of 1", as API users report). So the prompt goes with the first image and each
  further image is checked on its own, all at once.

The endpoint is free. It uses the key and base URL of the ``openai`` image provider; it waits at most
``CHECK_TIMEOUT`` seconds and never retries, because the core screens a command before the platform's
3-second acknowledgement.
"""

from __future__ import annotations

import asyncio
import base64
import logging
from collections.abc import Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Protocol

from bot.errors import ProviderBadResponse, ProviderError

from .errors_map import from_openai
from .openai_images import DEFAULT_BASE_URL, make_client
from .settings import ClientSettings, client_settings, env, table

if TYPE_CHECKING:
    from openai import AsyncOpenAI

    from bot.config import Config

log = logging.getLogger(__name__)

MODEL = "omni-moderation-latest"
NAME = "OpenAI moderation"
KEY_ENV = "OPENAI_API_KEY"
#: Seconds one check may take (less when ``[providers.openai] text_timeout`` is lower).
CHECK_TIMEOUT = 2.5
#: Magic bytes -> the data URL's media type (the formats the bot accepts as input images).
SIGNATURES = ((b"\x89PNG\r\n\x1a\n", "image/png"), (b"\xff\xd8\xff", "image/jpeg"), (b"GIF87a", "image/gif"),
              (b"GIF89a", "image/gif"))


@dataclass(frozen=True)
class Verdict:
    """What the moderation model said about one prompt and its images."""

    flagged: bool
    #: The categories flagged, as the vendor names them ("violence/graphic", "sexual").
    categories: tuple[str, ...] = ()
    #: The inputs the flagged categories were judged on ("text", "image"): an image-only check that
    #: flagged says ("image",); the prompt checked with an image may say both.
    inputs: tuple[str, ...] = ()


class Moderator(Protocol):
    async def check(self, text: str, images: Sequence[bytes] = ()) -> Verdict:
        """Raises a ``bot.errors.ProviderError`` (with no secret in it) when the model cannot be asked."""
        ...

    async def aclose(self) -> None: ...


def data_url(image: bytes) -> str:
    """``data:image/...;base64,...`` for an input image (PNG when the bytes say nothing we know)."""
    mime = next((m for magic, m in SIGNATURES if image.startswith(magic)), "")
    if not mime and image[:4] == b"RIFF" and image[8:12] == b"WEBP":
        mime = "image/webp"
    return f"data:{mime or 'image/png'};base64,{base64.b64encode(image).decode('ascii')}"


def requests_for(text: str, images: Sequence[bytes]) -> list[list[dict[str, Any]]]:
    """The ``input`` of each call: the text with the first image, then one call per further image."""
    parts: list[dict[str, Any]] = [{"type": "image_url", "image_url": {"url": data_url(i)}} for i in images]
    head = ([{"type": "text", "text": text}] if text.strip() else []) + parts[:1]
    return ([head] if head else []) + [[p] for p in parts[1:]]


def _ordered(inputs: set[str]) -> tuple[str, ...]:
    return tuple(t for t in ("text", "image") if t in inputs)


class OpenAIModerator:
    """``Moderator`` on OpenAI's moderation endpoint through the SDK client."""

    def __init__(self, client: AsyncOpenAI, model: str = MODEL, *, secrets: Sequence[str] = ()) -> None:
        self.client = client
        self.model = model
        self._secrets = tuple(secrets)

    def __repr__(self) -> str:  # never the client (it holds the key)
        return f"OpenAIModerator({self.model})"

    async def check(self, text: str, images: Sequence[bytes] = ()) -> Verdict:
        calls = requests_for(text, images)
        if not calls:
            return Verdict(False)
        try:
            async with asyncio.TaskGroup() as group:
                tasks = [group.create_task(self._ask(parts)) for parts in calls]
        except BaseExceptionGroup as failed:  # the first failure stands for all (the others were cancelled)
            first = next((e for e in failed.exceptions if isinstance(e, ProviderError)), None)
            if first is not None:
                raise first from None
            raise
        categories: dict[str, None] = {}
        inputs: set[str] = set()
        flagged = False
        for task in tasks:
            verdict = task.result()
            flagged = flagged or verdict.flagged
            categories.update(dict.fromkeys(verdict.categories))
            inputs.update(verdict.inputs)
        return Verdict(flagged, tuple(categories), _ordered(inputs))

    async def _ask(self, parts: list[dict[str, Any]]) -> Verdict:
        try:
            answer = await self.client.moderations.create(model=self.model, input=parts)  # type: ignore[arg-type]
        except Exception as exc:  # noqa: BLE001 - every SDK and network failure becomes ours, without its text
            raise from_openai(exc, provider=NAME, key_env=KEY_ENV, secrets=self._secrets, model=self.model) from None
        results = getattr(answer, "results", None)
        if not isinstance(results, list) or not results:
            log.warning("provider %s: an answer without results", NAME)
            raise ProviderBadResponse(f"{NAME} sent an answer the bot could not read.", provider=NAME)
        only_images = all(p.get("type") == "image_url" for p in parts)
        categories: dict[str, None] = {}
        inputs: set[str] = set()
        flagged = False
        try:
            for result in results:
                named = [n for n, on in result.categories.model_dump(by_alias=True).items() if on is True]
                flagged = flagged or bool(result.flagged) or bool(named)
                categories.update(dict.fromkeys(named))
                applied = result.category_applied_input_types.model_dump(by_alias=True)
                for name in named:
                    inputs.update(str(t) for t in (applied.get(name) or ()) if t in ("text", "image"))
        except (AttributeError, TypeError) as exc:
            log.warning("provider %s: malformed result (%s)", NAME, type(exc).__name__)
            raise ProviderBadResponse(f"{NAME} sent an answer the bot could not read.", provider=NAME) from None
        if flagged and only_images:
            inputs = {"image"}
        elif flagged and not inputs:
            inputs = {"text"} if any(p.get("type") == "text" for p in parts) else {"image"}
        return Verdict(flagged, tuple(categories), _ordered(inputs))

    async def aclose(self) -> None:
        await self.client.close()


def build_moderator(config: Config) -> Moderator | None:
    """The moderator when an OpenAI key is set (moderation is then available to servers); None otherwise.

    Same key and base URL as the ``openai`` image provider (``OPENAI_BASE_URL`` or ``[providers.openai]
    base_url``); at most ``CHECK_TIMEOUT`` seconds, no retries."""
    key = env(config, KEY_ENV)
    if not key:
        return None
    base_url = env(config, "OPENAI_BASE_URL") or str(table(config, "openai").get("base_url") or DEFAULT_BASE_URL)
    text = client_settings(config, "openai", text=True)
    settings = ClientSettings(timeout=min(CHECK_TIMEOUT, text.timeout), max_retries=0, concurrency=text.concurrency,
                              download_timeout=text.download_timeout, download_max_bytes=text.download_max_bytes)
    return OpenAIModerator(make_client(key, base_url, settings), secrets=(key,))

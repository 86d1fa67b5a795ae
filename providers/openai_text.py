"""/enhance and reference-image descriptions through OpenAI chat completions (``openai`` SDK).

A ``ListsModels`` text provider: which text models exist comes from ``GET /v1/models`` (the catalogue
picks the newest of the preferred family and sets ``model``); ``[providers.openai] text_model`` pins
one, ``vision_model`` names another for reference descriptions (default: the text model).

Families, preferred first (small, fast models suit prompt rewriting): gpt-6-luna, gpt-5.6-luna (the
"Luna" tier is OpenAI's cheapest and fastest, per its GPT-5.6 announcement), gpt-5.4-mini, then
gpt-4.1-mini and gpt-4o-mini, which still work but leave the API on 2027-01-14. Sources: the model ids
and shutdown dates in ``openai/types/shared/chat_model.py`` (openai 3.57: "gpt-4.1-mini", "gpt-4o-mini"...:
"Announced shutdown date: 2027-01-14"; "gpt-5", "gpt-5-mini", "gpt-5-nano": 2026-12-11; "gpt-4.1-nano",
"o4-mini", "gpt-3.5-turbo", "gpt-4", "gpt-4-turbo"...: 2026-10-23) and OpenAI's deprecations page. A
pinned model of no known family is accepted as its own family (any chat model can rewrite a prompt).
A model the API no longer serves answers 404 ``model_not_found``: ``ModelRetired``.
"""

from __future__ import annotations

import asyncio
import base64
from typing import TYPE_CHECKING, Any

from bot.errors import ConfigError, ContentRejected, ProviderBadResponse, ProviderError
from bot.imaging import inspect_image

from .base import ListedModel, ModelFamily, ModelInfo
from .catalogue import family_of
from .errors_map import POLICY_TEXT, from_openai
from .openai_images import DEFAULT_BASE_URL, list_openai_models, make_client
from .settings import client_settings, env, table
from .text_common import DESCRIBE_LIMIT, DESCRIBE_PROMPT, ENHANCE_SYSTEM, clean_text

if TYPE_CHECKING:
    from openai import AsyncOpenAI

    from bot.config import Config

#: Ids under a chat family's prefix that are not chat models (audio, realtime, search...).
NOT_CHAT = ("audio", "realtime", "search", "tts", "transcribe", "codex", "chat-latest", "deep-research")


def text_family(prefix: str, shutdown_date: str | None = None) -> ModelFamily:
    return ModelFamily(prefix, ModelInfo(prefix, sizes=(), family=prefix, shutdown_date=shutdown_date),
                       excludes=tuple(f"{prefix}-{word}" for word in NOT_CHAT))


#: The SDK's chat_model.py announces 2027-01-14 for both older minis: shown even when the list can't be read.
TEXT_FAMILIES: tuple[ModelFamily, ...] = (
    *(text_family(p) for p in ("gpt-6-luna", "gpt-5.6-luna", "gpt-5.4-mini")),
    text_family("gpt-4.1-mini", "2027-01-14"),
    text_family("gpt-4o-mini", "2027-01-14"),
)
TEXT_MODEL = TEXT_FAMILIES[0].template.name
_SUCCESSOR = "gpt-6-luna or gpt-5.4-mini"
#: Text models already shut down (SDK docstrings; today 2026-12-01) -> a replacement.
TEXT_RETIRED: dict[str, str] = {m: _SUCCESSOR for m in (
    "gpt-4.1-nano", "gpt-4.1-nano-2025-04-14", "o4-mini", "o4-mini-2025-04-16", "o3-mini", "o3-mini-2025-01-31",
    "o1", "o1-2024-12-17", "o1-mini", "o1-preview", "gpt-4o-2024-05-13", "gpt-4-turbo", "gpt-4-turbo-2024-04-09",
    "gpt-4-1106-preview", "gpt-4-0125-preview", "gpt-4-turbo-preview", "gpt-4-vision-preview", "gpt-4",
    "gpt-4-0613", "gpt-4-0314", "gpt-4-32k", "gpt-3.5-turbo", "gpt-3.5-turbo-0125", "gpt-3.5-turbo-1106",
    "gpt-3.5-turbo-16k", "chatgpt-4o-latest", "gpt-5.1-chat-latest", "gpt-5-chat-latest", "gpt-5.2-chat-latest",
    "gpt-5.3-chat-latest",
)}


class OpenAIText:
    def __init__(self, client: AsyncOpenAI, *, model: str = TEXT_MODEL, vision_model: str | None = None,
                 key_env: str = "OPENAI_API_KEY", secrets: tuple[str, ...] = (), name: str = "openai",
                 families: tuple[ModelFamily, ...] = TEXT_FAMILIES, pinned: tuple[str, ...] = (),
                 retired_models: dict[str, str] | None = None) -> None:
        self.name = name
        self.client = client
        #: The text model in use; the catalogue sets it from the vendor's list unless pinned.
        self.model = model
        self._vision = vision_model
        self.key_env = key_env
        self.families = families
        self.pinned = pinned
        self.retired_models = dict(TEXT_RETIRED if retired_models is None else retired_models)
        self._secrets = secrets

    def __repr__(self) -> str:
        return f"OpenAIText({self.model!r})"

    @property
    def vision_model(self) -> str:
        """The model that describes reference images: ``vision_model`` if set, else the text model."""
        return self._vision or self.model

    def _error(self, exc: BaseException, model: str = "") -> ProviderError:
        return from_openai(exc, provider=self.name, key_env=self.key_env, secrets=self._secrets, model=model)

    async def list_models(self) -> list[ListedModel]:
        return await list_openai_models(self.client, self._error)

    async def _chat(self, model: str, messages: list[dict[str, Any]], limit: int) -> str:
        try:
            response = await self.client.chat.completions.create(model=model, messages=messages)  # type: ignore[arg-type]
        except asyncio.CancelledError:
            raise
        except Exception as exc:  # noqa: BLE001 - every SDK failure is mapped at this edge
            raise self._error(exc, model) from None
        choices = getattr(response, "choices", None) or []
        if not choices:
            raise ProviderBadResponse(f"{self.name} answered with no text.", provider=self.name)
        choice = choices[0]
        if choice.finish_reason == "content_filter" or getattr(choice.message, "refusal", None):
            raise ContentRejected(POLICY_TEXT, provider=self.name)
        text = clean_text(choice.message.content, limit)
        if not text:
            raise ProviderBadResponse(f"{self.name} answered with no text.", provider=self.name)
        return text

    async def enhance(self, prompt: str, *, limit: int) -> str:
        messages = [
            {"role": "system", "content": ENHANCE_SYSTEM.format(limit=limit)},
            {"role": "user", "content": prompt},
        ]
        return await self._chat(self.model, messages, limit)

    async def describe(self, image: bytes) -> str:
        mime, _, _ = await asyncio.to_thread(inspect_image, image)
        url = f"data:{mime};base64,{base64.b64encode(image).decode()}"
        messages = [{"role": "user", "content": [
            {"type": "text", "text": DESCRIBE_PROMPT},
            {"type": "image_url", "image_url": {"url": url}},
        ]}]
        return await self._chat(self.vision_model, messages, DESCRIBE_LIMIT)

    async def aclose(self) -> None:
        await self.client.close()


def build_openai_text(config: Config) -> OpenAIText | None:
    """The OpenAI enhancer when ``OPENAI_API_KEY`` is set; None otherwise."""
    key = env(config, "OPENAI_API_KEY")
    if not key:
        return None
    t = table(config, "openai")
    settings = client_settings(config, "openai", text=True)
    base_url = env(config, "OPENAI_BASE_URL") or str(t.get("base_url") or DEFAULT_BASE_URL)
    text_model = str(t.get("text_model") or "").strip()
    pinned = (text_model,) if text_model else ()
    families = TEXT_FAMILIES
    for model in pinned:
        if model in TEXT_RETIRED:
            raise ConfigError(f"providers.openai.text_model: {model} has been shut down by OpenAI; "
                              f"use {TEXT_RETIRED[model]} instead")
        if family_of(families, model) is None:
            families = (*families, text_family(model))
    vision = str(t.get("vision_model") or "").strip() or None
    return OpenAIText(make_client(key, base_url, settings), model=pinned[0] if pinned else TEXT_MODEL,
                      vision_model=vision, secrets=(key,), families=families, pinned=pinned)

"""/enhance and reference-image descriptions through OpenAI chat completions (``openai`` SDK).

Models: ``[providers.openai] text_model`` (default gpt-4o-mini) and ``vision_model`` (default the same).
"""

from __future__ import annotations

import asyncio
import base64
from typing import TYPE_CHECKING, Any

from bot.errors import ContentRejected, ProviderBadResponse, ProviderError
from storage.images import inspect_image

from .errors_map import POLICY_TEXT, from_openai
from .openai_images import DEFAULT_BASE_URL, make_client
from .settings import client_settings, env, table
from .text_common import DESCRIBE_LIMIT, DESCRIBE_PROMPT, ENHANCE_SYSTEM, clean_text

if TYPE_CHECKING:
    from openai import AsyncOpenAI

    from bot.config import Config

TEXT_MODEL = "gpt-4o-mini"


class OpenAIText:
    def __init__(self, client: AsyncOpenAI, *, model: str = TEXT_MODEL, vision_model: str = TEXT_MODEL,
                 key_env: str = "OPENAI_API_KEY", secrets: tuple[str, ...] = (), name: str = "openai") -> None:
        self.name = name
        self.client = client
        self.model = model
        self.vision_model = vision_model
        self.key_env = key_env
        self._secrets = secrets

    def __repr__(self) -> str:
        return f"OpenAIText({self.model!r})"

    def _error(self, exc: BaseException) -> ProviderError:
        return from_openai(exc, provider=self.name, key_env=self.key_env, secrets=self._secrets)

    async def _chat(self, model: str, messages: list[dict[str, Any]], limit: int) -> str:
        try:
            response = await self.client.chat.completions.create(model=model, messages=messages)  # type: ignore[arg-type]
        except asyncio.CancelledError:
            raise
        except Exception as exc:  # noqa: BLE001 - every SDK failure is mapped at this edge
            raise self._error(exc) from None
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
    model = str(t.get("text_model") or TEXT_MODEL)
    return OpenAIText(make_client(key, base_url, settings), model=model,
                      vision_model=str(t.get("vision_model") or model), secrets=(key,))

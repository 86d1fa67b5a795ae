"""/enhance and reference-image descriptions through Gemini text (``google-genai``).

Model: ``[providers.google] text_model`` (default gemini-2.5-flash), used for both; Vertex mode works too.
"""

from __future__ import annotations

import asyncio
from typing import TYPE_CHECKING, Any

from bot.errors import ContentRejected, ProviderBadResponse, ProviderError
from storage.images import inspect_image

from .errors_map import POLICY_TEXT, from_google
from .google_images import POLICY_REASONS, _enum, google_setup, make_client
from .settings import client_settings, table
from .text_common import DESCRIBE_LIMIT, DESCRIBE_PROMPT, ENHANCE_SYSTEM, clean_text

if TYPE_CHECKING:
    from google import genai

    from bot.config import Config

TEXT_MODEL = "gemini-2.5-flash"


class GoogleText:
    def __init__(self, client: genai.Client, *, model: str = TEXT_MODEL, key_env: str = "GOOGLE_API_KEY",
                 secrets: tuple[str, ...] = (), name: str = "google") -> None:
        self.name = name
        self.client = client
        self.model = model
        self.key_env = key_env
        self._secrets = secrets

    def __repr__(self) -> str:
        return f"GoogleText({self.model!r})"

    def _error(self, exc: BaseException) -> ProviderError:
        return from_google(exc, provider=self.name, key_env=self.key_env, secrets=self._secrets)

    async def _generate(self, contents: list[Any], system: str | None, limit: int) -> str:
        from google.genai import types

        config = types.GenerateContentConfig(system_instruction=system) if system else None
        try:
            response = await self.client.aio.models.generate_content(model=self.model, contents=contents,
                                                                     config=config)
        except asyncio.CancelledError:
            raise
        except Exception as exc:  # noqa: BLE001 - every SDK failure is mapped at this edge
            raise self._error(exc) from None
        feedback = getattr(response, "prompt_feedback", None)
        if feedback is not None and getattr(feedback, "block_reason", None):
            raise ContentRejected(POLICY_TEXT, provider=self.name)
        texts: list[str] = []
        reasons: list[str] = []
        for cand in getattr(response, "candidates", None) or []:
            reasons.append(_enum(getattr(cand, "finish_reason", None)))
            for part in getattr(getattr(cand, "content", None), "parts", None) or []:
                if getattr(part, "text", None) and not getattr(part, "thought", False):
                    texts.append(part.text)
            if texts:
                break
        text = clean_text(" ".join(texts), limit)
        if text:
            return text
        if any(r in POLICY_REASONS for r in reasons):
            raise ContentRejected(POLICY_TEXT, provider=self.name)
        raise ProviderBadResponse(f"{self.name} answered with no text.", provider=self.name)

    async def enhance(self, prompt: str, *, limit: int) -> str:
        return await self._generate([prompt], ENHANCE_SYSTEM.format(limit=limit), limit)

    async def describe(self, image: bytes) -> str:
        from google.genai import types

        mime, _, _ = await asyncio.to_thread(inspect_image, image)
        contents = [types.Part.from_bytes(data=image, mime_type=mime), DESCRIBE_PROMPT]
        return await self._generate(contents, None, DESCRIBE_LIMIT)

    async def aclose(self) -> None:
        await self.client.aio.aclose()


def build_google_text(config: Config) -> GoogleText | None:
    """The Gemini enhancer when a Google key (or Vertex project) is set; None otherwise."""
    setup = google_setup(config)
    if setup is None:
        return None
    settings = client_settings(config, "google", text=True)
    return GoogleText(make_client(setup, settings), model=str(table(config, "google").get("text_model") or TEXT_MODEL),
                      key_env=setup.key_env, secrets=(setup.key,) if setup.key else ())

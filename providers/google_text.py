"""/enhance and reference-image descriptions through Gemini text models (``google-genai``).

A ``ListsModels`` text provider: which models exist comes from ``models.list`` (text families below, the
preferred first); ``[providers.google] text_model`` pins one. The catalogue sets ``model``; a model Google
no longer serves (404 NOT_FOUND, "no longer available") raises ``ModelRetired``. Vertex mode works too.

Sources (checked 2026-12-01): the Gemini API changelog (ai.google.dev/gemini-api/docs/changelog):
gemini-3.5-flash-lite and gemini-3.6-flash GA 2026-07-21; gemini-3.8-flash (release 2026-09-02, per the
deprecations page); 2026-10-08 gemini-3.7-flash and gemini-3.5-flash deprecated, their requests routed
to gemini-3.8-flash and gemini-3.6-flash; gemini-3.1-flash-lite-preview shut down 2026-05-25. The
deprecations page (ai.google.dev/gemini-api/docs/deprecations): gemini-3.1-flash-lite released
2026-05-07, shuts down 2027-05-07; gemini-3-pro-preview shut down 2026-03-09. gemini-2.0-flash and
-flash-lite shut down 2026-06-01 (Firebase AI Logic banner). gemini-2.5-flash and gemini-2.5-pro shut down
2026-12-01 with gemini-2.5-flash-lite "not deprecated and available until further notice" (the
deprecations page as quoted on 2026-11-10 by aideprecations.com; the stored copies of Google's page are
older). Text models take ``generateContent`` too, so ids of speech, live and image variants are skipped.
"""

from __future__ import annotations

import asyncio
from collections.abc import Mapping
from typing import TYPE_CHECKING, Any

from bot.errors import ContentRejected, ProviderBadResponse, ProviderError
from bot.imaging import inspect_image

from .base import ListedModel, ModelFamily, ModelInfo
from .errors_map import POLICY_TEXT, from_google
from .google_images import POLICY_REASONS, _enum, check_pinned, google_setup, list_gemini_models, make_client
from .settings import client_settings, table
from .text_common import DESCRIBE_LIMIT, DESCRIBE_PROMPT, ENHANCE_SYSTEM, clean_text

if TYPE_CHECKING:
    from google import genai

    from bot.config import Config

#: Variants that share a text family's prefix but are not chat text models.
NOT_TEXT = ("-tts", "-live", "-image", "-audio", "-embedding", "-robotics", "-computer-use")


def _text_family(prefix: str) -> ModelFamily:
    excludes = tuple(prefix + marker for marker in NOT_TEXT)
    return ModelFamily(prefix, ModelInfo(prefix, sizes=(), family=prefix), excludes=excludes)


#: Text families, preferred first: prompt rewriting wants a fast, cheap model.
TEXT_FAMILIES: tuple[ModelFamily, ...] = (
    _text_family("gemini-3.5-flash-lite"),
    _text_family("gemini-3.8-flash"),
    _text_family("gemini-3.6-flash"),
    _text_family("gemini-3.1-flash-lite"),
    _text_family("gemini-2.5-flash-lite"),
)
TEXT_MODEL = TEXT_FAMILIES[0].template.name

TEXT_LIFECYCLE: dict[str, tuple[str, str | None]] = {
    "gemini-3.8-flash": ("2026-09-02", None),
    "gemini-3.6-flash": ("2026-07-21", None),
    "gemini-3.5-flash-lite": ("2026-07-21", None),
    "gemini-3.1-flash-lite": ("2026-05-07", "2027-05-07"),
    "gemini-2.5-flash-lite": ("2025-07-22", None),
}

TEXT_RETIRED: dict[str, str] = {
    "gemini-2.5-flash": "gemini-3.5-flash-lite (gemini-2.5-flash shut down on 2026-12-01)",
    "gemini-2.5-pro": "gemini-3.8-flash (gemini-2.5-pro shut down on 2026-12-01)",
    "gemini-3.5-flash": "gemini-3.6-flash (deprecated 2026-10-08; Google routes its requests there)",
    "gemini-3.7-flash": "gemini-3.8-flash (deprecated 2026-10-08; Google routes its requests there)",
    "gemini-3-pro-preview": "gemini-3.8-flash (shut down on 2026-03-09)",
    "gemini-3.1-flash-lite-preview": "gemini-3.1-flash-lite (shut down on 2026-05-25)",
    "gemini-2.0-flash": "gemini-3.5-flash-lite (shut down on 2026-06-01)",
    "gemini-2.0-flash-001": "gemini-3.5-flash-lite (shut down on 2026-06-01)",
    "gemini-2.0-flash-lite": "gemini-3.5-flash-lite (shut down on 2026-06-01)",
    "gemini-2.0-flash-lite-001": "gemini-3.5-flash-lite (shut down on 2026-06-01)",
}


class GoogleText:
    """The Gemini enhancer. ``model`` is the text model in use (the catalogue may change it)."""

    families: tuple[ModelFamily, ...] = TEXT_FAMILIES
    retired_models: Mapping[str, str] = TEXT_RETIRED

    def __init__(self, client: genai.Client, *, model: str | None = None, pinned: tuple[str, ...] = (),
                 key_env: str = "GOOGLE_API_KEY", secrets: tuple[str, ...] = (), name: str = "google") -> None:
        self.name = name
        self.client = client
        self.pinned = pinned
        self.model = model or (pinned[0] if pinned else TEXT_MODEL)
        self.key_env = key_env
        self._secrets = secrets

    def __repr__(self) -> str:
        return f"GoogleText({self.model!r})"

    def _error(self, exc: BaseException, model: str = "") -> ProviderError:
        return from_google(exc, provider=self.name, key_env=self.key_env, secrets=self._secrets, model=model)

    async def list_models(self) -> list[ListedModel]:
        try:
            return await list_gemini_models(self.client, self.families, TEXT_LIFECYCLE, skip=NOT_TEXT)
        except asyncio.CancelledError:
            raise
        except Exception as exc:  # noqa: BLE001 - every SDK failure is mapped at this edge
            raise self._error(exc) from None

    async def _generate(self, contents: list[Any], system: str | None, limit: int) -> str:
        from google.genai import types

        model = self.model
        config = types.GenerateContentConfig(system_instruction=system) if system else None
        try:
            response = await self.client.aio.models.generate_content(model=model, contents=contents, config=config)
        except asyncio.CancelledError:
            raise
        except Exception as exc:  # noqa: BLE001 - every SDK failure is mapped at this edge
            raise self._error(exc, model) from None
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
    wanted = str(table(config, "google").get("text_model") or "").strip().lower()
    pinned = (wanted,) if wanted else ()
    check_pinned("google", pinned, TEXT_FAMILIES, TEXT_RETIRED, "text_model")
    settings = client_settings(config, "google", text=True)
    return GoogleText(make_client(setup, settings), pinned=pinned, key_env=setup.key_env,
                      secrets=(setup.key,) if setup.key else ())

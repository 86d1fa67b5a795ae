"""OpenAI images through the ``openai`` SDK: gpt-image-1, dall-e-3, dall-e-2 (and, via ``compat``, any
OpenAI-compatible image service such as xAI).

Each model is called the way it wants: gpt-image-1 answers base64 and takes a reference image through
``images.edit``; dall-e-3 answers a short-lived URL (downloaded at once, bounded) with one image per call
and a ``revised_prompt`` the bot shows; dall-e-2 answers base64. SDK errors become ``bot.errors`` here.
"""

from __future__ import annotations

import asyncio
import base64
import binascii
import logging
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

import aiohttp

from bot.errors import ProviderBadResponse, ProviderError
from storage.images import EXTENSIONS, inspect_image

from .base import Capabilities, GeneratedImage, GenerationRequest, ModelInfo
from .download import download_image
from .errors_map import from_openai
from .settings import ClientSettings, client_settings, env, pick_models, table

if TYPE_CHECKING:
    from openai import AsyncOpenAI

    from bot.config import Config

log = logging.getLogger(__name__)

DEFAULT_BASE_URL = "https://api.openai.com/v1"


@dataclass(frozen=True)
class CallStyle:
    """How one model is called: which parameters it takes and how it answers."""

    #: ``b64_json``, ``url``, or None to leave it to the model (gpt-image-1 refuses the parameter).
    response_format: str | None = "b64_json"
    send_size: bool = True
    #: Our quality (standard/hd) -> the vendor's value; empty: the parameter is not sent.
    quality: dict[str, str] = field(default_factory=dict)
    #: The model takes ``style`` (vivid/natural); otherwise a non-natural style is folded into the prompt.
    send_style: bool = False
    #: A reference image goes through ``images.edit``.
    edits: bool = False


GPT_IMAGE_1 = ModelInfo("gpt-image-1", sizes=("1024x1024", "1536x1024", "1024x1536"), max_per_call=10,
                        supports_reference=True, prompt_limit=32000)
DALL_E_3 = ModelInfo("dall-e-3", sizes=("1024x1024", "1792x1024", "1024x1792"), max_per_call=1,
                     prompt_limit=4000, native_styles=("vivid", "natural"))
DALL_E_2 = ModelInfo("dall-e-2", sizes=("256x256", "512x512", "1024x1024"), max_per_call=10, prompt_limit=1000)

OPENAI_MODELS = (GPT_IMAGE_1, DALL_E_3, DALL_E_2)
OPENAI_CALLS = {
    "gpt-image-1": CallStyle(response_format=None, quality={"standard": "medium", "hd": "high"}, edits=True),
    "dall-e-3": CallStyle(response_format="url", quality={"standard": "standard", "hd": "hd"}, send_style=True),
    "dall-e-2": CallStyle(response_format="b64_json"),
}


class OpenAIImages:
    """One OpenAI(-compatible) image service: an SDK client, its models and how to call each."""

    def __init__(
        self,
        name: str,
        client: AsyncOpenAI,
        models: tuple[ModelInfo, ...],
        calls: dict[str, CallStyle],
        *,
        key_env: str,
        settings: ClientSettings,
        secrets: tuple[str, ...] = (),
        notes: tuple[str, ...] = (),
    ) -> None:
        self.name = name
        self.client = client
        self.calls = calls
        self.key_env = key_env
        self.settings = settings
        self.notes = notes
        self._secrets = secrets
        self._session: aiohttp.ClientSession | None = None
        self.capabilities = Capabilities(models=models, default_model=models[0].name,
                                         concurrency=settings.concurrency)

    def __repr__(self) -> str:  # never the client (it holds the key)
        return f"OpenAIImages({self.name!r})"

    def _error(self, exc: BaseException) -> ProviderError:
        return from_openai(exc, provider=self.name, key_env=self.key_env, secrets=self._secrets)

    async def generate(self, request: GenerationRequest) -> list[GeneratedImage]:
        spec = self.calls.get(request.model, CallStyle())
        model = self.capabilities.model(request.model)
        limit = model.prompt_limit if model else 4000
        prompt = request.prompt
        if not spec.send_style and request.style not in ("natural", ""):
            prompt = f"{prompt}, {request.style} style"[:limit]
        kwargs: dict[str, Any] = {"model": request.model, "prompt": prompt, "n": request.count}
        if spec.send_size:
            kwargs["size"] = request.size
        if spec.quality and request.quality in spec.quality:
            kwargs["quality"] = spec.quality[request.quality]
        if spec.response_format:
            kwargs["response_format"] = spec.response_format
        try:
            if request.reference is not None and spec.edits:
                mime, _, _ = await asyncio.to_thread(inspect_image, request.reference)
                kwargs["image"] = (f"reference.{EXTENSIONS.get(mime, 'png')}", request.reference, mime)
                response = await self.client.images.edit(**kwargs)
            else:
                if spec.send_style:
                    kwargs["style"] = request.style if request.style in ("vivid", "natural") else "natural"
                response = await self.client.images.generate(**kwargs)
        except asyncio.CancelledError:
            raise
        except Exception as exc:  # noqa: BLE001 - every SDK failure is mapped at this edge
            raise self._error(exc) from None
        return await self._collect(getattr(response, "data", None), request.count)

    async def _collect(self, items: list[Any] | None, count: int) -> list[GeneratedImage]:
        """Decode base64 results and download URL results; keep only what is really an image."""
        if not items:
            raise ProviderBadResponse(f"{self.name} returned no image.", provider=self.name)
        outcomes = await asyncio.gather(*(self._one(item) for item in items[:count]), return_exceptions=True)
        images = [o for o in outcomes if isinstance(o, GeneratedImage)]
        if images:
            if len(images) < len(outcomes):
                log.warning("provider %s: %d of %d results were unusable", self.name,
                            len(outcomes) - len(images), len(outcomes))
            return images
        for o in outcomes:
            if isinstance(o, asyncio.CancelledError):
                raise o
        first = next((o for o in outcomes if isinstance(o, ProviderError)), None)
        raise first or ProviderBadResponse(f"{self.name} returned no usable image.", provider=self.name)

    async def _one(self, item: Any) -> GeneratedImage:
        revised = getattr(item, "revised_prompt", None) or None
        b64 = getattr(item, "b64_json", None)
        url = getattr(item, "url", None)
        if b64:
            try:
                data = base64.b64decode(b64, validate=True)
            except (binascii.Error, ValueError):
                raise ProviderBadResponse(f"{self.name} returned undecodable image data.",
                                          provider=self.name) from None
            try:
                mime, _, _ = await asyncio.to_thread(inspect_image, data)
            except ProviderBadResponse:
                raise ProviderBadResponse(f"{self.name} returned data that is not a usable image.",
                                          provider=self.name) from None
            return GeneratedImage(data, mime, revised)
        if url:
            got = await download_image(str(url), session=self._downloads(), provider=self.name,
                                       max_bytes=self.settings.download_max_bytes,
                                       timeout=self.settings.download_timeout)
            return GeneratedImage(got.data, got.mime, revised)
        raise ProviderBadResponse(f"{self.name} returned a result with no image.", provider=self.name)

    def _downloads(self) -> aiohttp.ClientSession:
        if self._session is None or self._session.closed:
            self._session = aiohttp.ClientSession()
        return self._session

    async def aclose(self) -> None:
        if self._session is not None:
            await self._session.close()
            self._session = None
        await self.client.close()


def make_client(api_key: str, base_url: str, settings: ClientSettings) -> AsyncOpenAI:
    """An SDK client with our timeout and retry count, never the SDK's 600 s default."""
    from openai import AsyncOpenAI

    return AsyncOpenAI(api_key=api_key, base_url=base_url, timeout=settings.timeout,
                       max_retries=settings.max_retries)


def build_openai(config: Config) -> list[OpenAIImages]:
    """Provider ``openai`` when ``OPENAI_API_KEY`` is set; nothing otherwise (offline keeps working)."""
    key = env(config, "OPENAI_API_KEY")
    if not key:
        return []
    settings = client_settings(config, "openai")
    base_url = env(config, "OPENAI_BASE_URL") or str(table(config, "openai").get("base_url") or DEFAULT_BASE_URL)
    models = pick_models(config, "openai", OPENAI_MODELS)
    return [OpenAIImages("openai", make_client(key, base_url, settings), models, OPENAI_CALLS,
                         key_env="OPENAI_API_KEY", settings=settings, secrets=(key,))]

"""Google images through ``google-genai``: Gemini image models, and Imagen when Vertex AI is configured.

Gemini (``GOOGLE_API_KEY`` or ``GEMINI_API_KEY``) goes through ``generate_content``: the picture comes
back as an inline image part, and a reference image goes in as an input part. Imagen goes through
``generate_images`` (``:predict``), which google-genai refuses for API-key (Developer API) clients, so it
is offered only in Vertex mode: ``GOOGLE_GENAI_USE_VERTEXAI=true`` with ``GOOGLE_CLOUD_PROJECT`` (and
application default credentials) or an express-mode API key. ``imagebot providers`` says so otherwise.

Google models take a size by its aspect ratio; the image comes back at the model's own resolution for
that ratio (Gemini 16:9 is 1344x768), and the core stores its real dimensions.
"""

from __future__ import annotations

import asyncio
import logging
import warnings
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from bot.errors import ConfigError, ContentRejected, ProviderBadResponse, ProviderError
from storage.images import inspect_image

from .base import Capabilities, GeneratedImage, GenerationRequest, ModelInfo
from .errors_map import POLICY_TEXT, from_google
from .settings import ClientSettings, client_settings, env, table

if TYPE_CHECKING:
    from google import genai

    from bot.config import Config

log = logging.getLogger(__name__)

ASPECT = {
    "1024x1024": "1:1",
    "1344x768": "16:9", "768x1344": "9:16", "1792x1024": "16:9", "1024x1792": "9:16",
    "1248x832": "3:2", "832x1248": "2:3", "1536x1024": "3:2", "1024x1536": "2:3",
    "1184x864": "4:3", "864x1184": "3:4",
}
GEMINI_SIZES = ("1024x1024", "1344x768", "768x1344", "1248x832", "832x1248", "1184x864", "864x1184",
                "1792x1024", "1024x1792", "1536x1024", "1024x1536")
IMAGEN_SIZES = ("1024x1024", "1792x1024", "1024x1792")

GEMINI_MODELS = (
    ModelInfo("gemini-2.5-flash-image", sizes=GEMINI_SIZES, max_per_call=1, supports_reference=True,
              prompt_limit=4000),
)
IMAGEN_MODELS = (
    ModelInfo("imagen-4.0-generate-001", sizes=IMAGEN_SIZES, max_per_call=4, prompt_limit=2000),
    ModelInfo("imagen-3.0-generate-002", sizes=IMAGEN_SIZES, max_per_call=4, prompt_limit=2000),
)
IMAGEN_NOTE = ("Imagen models are offered only through Vertex AI: set GOOGLE_GENAI_USE_VERTEXAI=true with "
               "GOOGLE_CLOUD_PROJECT (application default credentials) or an express-mode key in GOOGLE_API_KEY; "
               "google-genai refuses Imagen for Gemini API keys.")
POLICY_REASONS = {"SAFETY", "PROHIBITED_CONTENT", "BLOCKLIST", "IMAGE_SAFETY", "IMAGE_PROHIBITED_CONTENT",
                  "SPII", "RECITATION", "IMAGE_RECITATION", "MODEL_ARMOR", "JAILBREAK"}


@dataclass(frozen=True)
class GoogleSetup:
    """Which Google client to build, from the environment."""

    vertex: bool
    key: str
    key_env: str
    project: str
    location: str
    base_url: str


def google_setup(config: Config) -> GoogleSetup | None:
    """None when no Google setting is present; a ``ConfigError`` for Vertex mode without credentials."""
    vertex = env(config, "GOOGLE_GENAI_USE_VERTEXAI").lower() in ("1", "true", "yes")
    key_env = next((n for n in ("GOOGLE_API_KEY", "GEMINI_API_KEY") if env(config, n)), "")
    key = env(config, key_env) if key_env else ""
    project = env(config, "GOOGLE_CLOUD_PROJECT")
    location = env(config, "GOOGLE_CLOUD_LOCATION") or "us-central1"
    if vertex:
        if not project and not key:
            raise ConfigError("GOOGLE_GENAI_USE_VERTEXAI=true needs GOOGLE_CLOUD_PROJECT (with application default "
                              "credentials) or a Vertex express-mode API key in GOOGLE_API_KEY")
        base_url = env(config, "GOOGLE_VERTEX_BASE_URL") or str(table(config, "google").get("base_url") or "")
        if project:  # project credentials win over an express key, as in the SDK
            key, key_env = "", "GOOGLE_APPLICATION_CREDENTIALS"
        return GoogleSetup(True, key, key_env, project, location if project else "", base_url)
    if not key:
        return None
    base_url = env(config, "GOOGLE_GEMINI_BASE_URL") or str(table(config, "google").get("base_url") or "")
    return GoogleSetup(False, key, key_env, "", "", base_url)


def make_client(setup: GoogleSetup, settings: ClientSettings) -> genai.Client:
    """A client with our timeout and an explicit retry count; every setting passed, none read from os.environ."""
    from google import genai
    from google.genai import types

    http = types.HttpOptions(
        base_url=setup.base_url or None,
        timeout=int(settings.timeout * 1000),
        retry_options=types.HttpRetryOptions(attempts=settings.max_retries + 1, initial_delay=0.5, max_delay=4.0),
    )
    if setup.vertex and setup.project:
        return genai.Client(vertexai=True, project=setup.project, location=setup.location, http_options=http)
    return genai.Client(vertexai=setup.vertex, api_key=setup.key, http_options=http)


def _fold_style(prompt: str, style: str, limit: int) -> str:
    return prompt if style in ("natural", "") else f"{prompt}, {style} style"[:limit]


class GoogleImages:
    """Provider ``google``: Gemini image models (and Imagen in Vertex mode) through one genai client."""

    def __init__(self, client: genai.Client, models: tuple[ModelInfo, ...], *, key_env: str,
                 settings: ClientSettings, secrets: tuple[str, ...] = (), notes: tuple[str, ...] = (),
                 name: str = "google") -> None:
        self.name = name
        self.client = client
        self.key_env = key_env
        self.notes = notes
        self._secrets = secrets
        self.capabilities = Capabilities(models=models, default_model=models[0].name,
                                         concurrency=settings.concurrency)

    def __repr__(self) -> str:
        return f"GoogleImages({self.name!r})"

    def model_hint(self, model: str) -> str | None:
        """Why ``model`` is not offered, when there is a reason an operator can act on."""
        if model.startswith("imagen-") and IMAGEN_NOTE in self.notes:
            return IMAGEN_NOTE
        return None

    def _error(self, exc: BaseException) -> ProviderError:
        return from_google(exc, provider=self.name, key_env=self.key_env, secrets=self._secrets)

    async def generate(self, request: GenerationRequest) -> list[GeneratedImage]:
        model = self.capabilities.model(request.model)
        limit = model.prompt_limit if model else 4000
        prompt = _fold_style(request.prompt, request.style, limit)
        try:
            if request.model.startswith("imagen-"):
                return await self._imagen(request, prompt)
            return await self._gemini(request, prompt)
        except asyncio.CancelledError:
            raise
        except Exception as exc:  # noqa: BLE001 - every SDK failure is mapped at this edge
            raise self._error(exc) from None

    async def _gemini(self, request: GenerationRequest, prompt: str) -> list[GeneratedImage]:
        from google.genai import types

        contents: list[Any] = []
        if request.reference is not None:
            mime, _, _ = await asyncio.to_thread(inspect_image, request.reference)
            contents.append(types.Part.from_bytes(data=request.reference, mime_type=mime))
        contents.append(prompt)
        config = types.GenerateContentConfig(
            response_modalities=["TEXT", "IMAGE"],
            image_config=types.ImageConfig(aspect_ratio=ASPECT.get(request.size, "1:1")),
        )
        images: list[GeneratedImage] = []
        for _ in range(max(1, request.count)):  # one image per call
            response = await self.client.aio.models.generate_content(
                model=request.model, contents=contents, config=config)
            images.extend(await self._gemini_images(response))
        return images

    async def _gemini_images(self, response: Any) -> list[GeneratedImage]:
        feedback = getattr(response, "prompt_feedback", None)
        if feedback is not None and getattr(feedback, "block_reason", None):
            log.warning("provider %s: prompt blocked (%s)", self.name, _enum(feedback.block_reason))
            raise ContentRejected(POLICY_TEXT, provider=self.name)
        candidates = getattr(response, "candidates", None) or []
        images: list[GeneratedImage] = []
        reasons: list[str] = []
        for cand in candidates:
            reasons.append(_enum(getattr(cand, "finish_reason", None)))
            parts = getattr(getattr(cand, "content", None), "parts", None) or []
            for part in parts:
                blob = getattr(part, "inline_data", None)
                if blob is not None and blob.data:
                    images.append(await self._checked(blob.data))
        if images:
            return images
        if any(r in POLICY_REASONS for r in reasons):
            log.warning("provider %s: image withheld (%s)", self.name, ", ".join(reasons))
            raise ContentRejected(POLICY_TEXT, provider=self.name)
        log.warning("provider %s: answer had no image (finish: %s)", self.name, ", ".join(reasons) or "none")
        raise ProviderBadResponse(f"{self.name} answered without an image.", provider=self.name)

    async def _imagen(self, request: GenerationRequest, prompt: str) -> list[GeneratedImage]:
        from google.genai import types

        response = await self.client.aio.models.generate_images(
            model=request.model, prompt=prompt,
            config=types.GenerateImagesConfig(number_of_images=request.count,
                                              aspect_ratio=ASPECT.get(request.size, "1:1"),
                                              include_rai_reason=True),
        )
        images: list[GeneratedImage] = []
        filtered: list[str] = []
        for item in getattr(response, "generated_images", None) or []:
            image = getattr(item, "image", None)
            data = getattr(image, "image_bytes", None) if image is not None else None
            if data:
                images.append(await self._checked(data))
            elif getattr(item, "rai_filtered_reason", None):
                filtered.append(str(item.rai_filtered_reason)[:80])
        if filtered:
            log.warning("provider %s: %d image(s) filtered by the vendor's safety filter", self.name, len(filtered))
        if images:
            return images
        if filtered:
            raise ContentRejected(POLICY_TEXT, provider=self.name)
        raise ProviderBadResponse(f"{self.name} answered without an image.", provider=self.name)

    async def _checked(self, data: bytes) -> GeneratedImage:
        try:
            mime, _, _ = await asyncio.to_thread(inspect_image, data)
        except ProviderBadResponse:
            raise ProviderBadResponse(f"{self.name} returned data that is not an image.", provider=self.name) from None
        return GeneratedImage(data, mime)

    async def aclose(self) -> None:
        await self.client.aio.aclose()


def _enum(value: Any) -> str:
    return str(getattr(value, "value", value) or "")


def build_google(config: Config) -> list[GoogleImages]:
    """Provider ``google`` when a Google key (or Vertex project) is set; nothing otherwise."""
    setup = google_setup(config)
    if setup is None:
        return []
    known = GEMINI_MODELS + (IMAGEN_MODELS if setup.vertex else ())
    wanted = table(config, "google").get("models")
    models = known
    if wanted is not None:
        if isinstance(wanted, str):
            wanted = wanted.split(",")
        if not isinstance(wanted, list) or not wanted:
            raise ConfigError("providers.google.models must be a non-empty list of model names")
        by_name = {m.name: m for m in known}
        picked = []
        for raw in wanted:
            name = str(raw).strip().lower()
            if name not in by_name:
                if name.startswith("imagen-") and not setup.vertex:
                    raise ConfigError(f"providers.google.models: {name} needs Vertex AI. {IMAGEN_NOTE}")
                raise ConfigError(f"providers.google.models: unknown model {raw!r}; google offers "
                                  f"{', '.join(by_name)}")
            picked.append(by_name[name])
        models = tuple(picked)
    settings = client_settings(config, "google")
    notes = () if setup.vertex else (IMAGEN_NOTE,)
    if setup.vertex:
        # google-genai warns on every Imagen call that generate_images will go in 2027; once in the README
        # is enough for an operator, not once per image in the log.
        warnings.filterwarnings("ignore", message=r"The generate_images method is deprecated")
    return [GoogleImages(make_client(setup, settings), models, key_env=setup.key_env, settings=settings,
                         secrets=(setup.key,) if setup.key else (), notes=notes)]

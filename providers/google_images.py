"""Google images through ``google-genai``: the Gemini image models ("Nano Banana"), by ``generate_content``.

Every Gemini image model takes a ratio and a resolution tier, not pixels:
``GenerateContentConfig(response_modalities=["IMAGE"], image_config=ImageConfig(aspect_ratio="16:9",
image_size="2K"))``. Each family below declares its fixed sizes as the documented pixels of each
(aspect, tier) pair, labelled in ``aspect_of``; ``generate`` maps ``request.size`` back to the pair. The
picture comes back as an inline image part (interim "thought" images of the thinking models are
skipped), every input image (``reference`` then ``references``: an edit, a blend) goes in as its own
inline part before the prompt, and ``usage_metadata`` is the call's tokens. Gemini takes no mask
(``generate_content`` has no such field; masks exist only in the Imagen ``edit_image`` call, which is
gone), so no family declares ``supports_mask`` and zoom out / pan / make square go elsewhere.
Gemini takes no quality, style, format or background parameter: one quality (medium), PNG, the style
folded into the prompt. Which models exist comes from ``models.list`` (``list_models``).

Imagen (``generate_images``, ``:predict``) is gone: google-genai marks it deprecated and Google shut the
Imagen models down; their ids are only in ``RETIRED`` with a Gemini replacement. Vertex AI mode
(``GOOGLE_GENAI_USE_VERTEXAI=true``) still works for the Gemini models, through the same calls.

Sources (checked 2026-12-01):
- installed google-genai 3.6.1, ``google/genai/types.py``: ``ImageConfig`` (``aspect_ratio``, ``image_size``
  1K/2K/4K; ``output_mime_type`` "not supported in Gemini API"), ``ImageSize`` (adds 512px), ``AspectRatio``
  (adds 1:4, 4:1, 1:8, 8:1), ``Model`` (``name``, ``supported_actions`` from ``supportedGenerationMethods``;
  no lifecycle field), ``GenerateContentResponseUsageMetadata``; ``models.py``: ``generate_images`` "is
  deprecated ... use the generate_content method with image models instead".
- Gemini API changelog (ai.google.dev/gemini-api/docs/changelog): 2026-05-28 gemini-3.1-flash-image and
  gemini-3-pro-image GA, their -preview ids shut down 2026-06-25; 2026-06-15 imagen-4.0-generate-001,
  -ultra- and -fast- shut down 2026-08-17; 2026-06-30 gemini-3.1-flash-lite-image GA; 2026-10-06
  gemini-nano-banana-2.1 GA (1K/2K/4K, adds 1:4, 4:1, 1:8, 8:1) and gemini-3.1-flash-image deprecated
  with no shutdown date announced (one third-party page claims 2026-10-29; Google does not say so, so no
  date is set here); 2026-01-15 gemini-2.5-flash-image-preview shut down.
- Gemini deprecations page (ai.google.dev/gemini-api/docs/deprecations): gemini-2.5-flash-image shuts down
  2026-10-02; imagen-3.0-generate-002 shut down 2025-11-10. Firebase AI Logic banner: all Imagen models
  shut down (June 2026).
- Model pages (docs.cloud.google.com .../models/gemini/3-1-flash-image, 3-pro-image, 3-1-flash-lite-image;
  ai.google.dev .../models/gemini-3.1-flash-lite-image): up to 14 images per prompt; 3.1 Flash Image
  resolutions 512/1K/2K/4K and 14 ratios; 3 Pro Image 1K/2K/4K and the 10 standard ratios; 3.1 Flash-Lite
  Image 1K only ("2K and 4K are unsupported"). Gemini Nano Banana 2.1 is documented by third parties
  (API catalogues, ComfyUI's node) with the same 14 reference images; so every family declares
  ``max_references=14``.
- Pixels per (aspect, tier): the image-generation guide's tables (ai.google.dev/gemini-api/docs/
  image-generation): 1K 16:9 is 1376x768, 2K and 4K are exactly 2x and 4x the 1K size, 512 exactly half.
  The stored copies here carry no English copy of that table; the numbers were checked against
  BerriAI/litellm's Gemini 3 image size test table and a measured 16:9 series (688x384 / 1376x768 /
  2752x1536 / 5504x3072). The core stores each image's real dimensions in any case.
"""

from __future__ import annotations

import asyncio
import calendar
import dataclasses
import datetime as dt
import logging
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from bot.config import parse_number
from bot.errors import ConfigError, ContentRejected, ProviderBadResponse, ProviderError, ProviderUnsupported
from bot.imaging import inspect_image

from .base import Capabilities, GeneratedImage, GenerationRequest, ListedModel, ModelFamily, ModelInfo
from .catalogue import family_of
from .errors_map import POLICY_TEXT, from_google
from .settings import ClientSettings, client_settings, env, table

if TYPE_CHECKING:
    from google import genai

    from bot.config import Config

log = logging.getLogger(__name__)

#: The documented 1K pixels of each ratio (Gemini 3 image models); other tiers are exact multiples.
PIXELS_1K: dict[str, tuple[int, int]] = {
    "1:1": (1024, 1024),
    "3:2": (1264, 848), "2:3": (848, 1264),
    "4:3": (1200, 896), "3:4": (896, 1200),
    "5:4": (1152, 928), "4:5": (928, 1152),
    "16:9": (1376, 768), "9:16": (768, 1376),
    "21:9": (1584, 672),
    "4:1": (2048, 512), "1:4": (512, 2048),
    "8:1": (3072, 384), "1:8": (384, 3072),
}
#: Our tier name (also the wire value of ``image_size``) -> scale of the 1K size.
TIERS: dict[str, float] = {"1K": 1.0, "2K": 2.0, "4K": 4.0, "512": 0.5}
STANDARD_RATIOS = ("1:1", "3:2", "2:3", "4:3", "3:4", "5:4", "4:5", "16:9", "9:16", "21:9")
WIDE_RATIOS = ("4:1", "1:4", "8:1", "1:8")


def pixels(aspect: str, tier: str) -> tuple[int, int]:
    w, h = PIXELS_1K[aspect]
    scale = TIERS[tier]
    return int(w * scale), int(h * scale)


#: ``WxH`` -> (aspect, tier) over every documented pair (no two pairs share a size).
SIZE_CONFIG: dict[str, tuple[str, str]] = {
    "{}x{}".format(*pixels(a, t)): (a, t) for t in TIERS for a in PIXELS_1K
}


def _sizes(ratios: Iterable[str], tiers: Iterable[str]) -> tuple[tuple[str, ...], dict[str, str]]:
    """Sizes in preference order (every ratio at the first tier, then the next tier...) with their labels."""
    sizes: list[str] = []
    aspect_of: dict[str, str] = {}
    for tier in tiers:
        for ratio in ratios:
            size = "{}x{}".format(*pixels(ratio, tier))
            sizes.append(size)
            aspect_of[size] = ratio
    return tuple(sizes), aspect_of


def _family(prefix: str, default: str, ratios: tuple[str, ...], tiers: tuple[str, ...]) -> ModelFamily:
    sizes, aspect_of = _sizes(ratios, tiers)
    return ModelFamily(prefix, ModelInfo(
        default, sizes=sizes, aspect_of=aspect_of, family=prefix, max_per_call=1, supports_reference=True,
        max_references=14, supports_mask=False, prompt_limit=4000, qualities=("medium",), formats=("png",)))


#: The image families, preferred first. Nano Banana 2.1 replaces 3.1 Flash Image (deprecated 2026-10-06).
FAMILIES: tuple[ModelFamily, ...] = (
    _family("gemini-nano-banana", "gemini-nano-banana-2.1", STANDARD_RATIOS + WIDE_RATIOS, ("1K", "2K", "4K")),
    _family("gemini-3-pro-image", "gemini-3-pro-image", STANDARD_RATIOS, ("1K", "2K", "4K")),
    _family("gemini-3.1-flash-lite-image", "gemini-3.1-flash-lite-image", STANDARD_RATIOS + WIDE_RATIOS, ("1K",)),
    _family("gemini-3.1-flash-image", "gemini-3.1-flash-image", STANDARD_RATIOS + WIDE_RATIOS,
            ("1K", "2K", "4K", "512")),
)

#: id -> (release date, shutdown date or None), from the changelog and deprecations page (docstring).
LIFECYCLE: dict[str, tuple[str, str | None]] = {
    "gemini-nano-banana-2.1": ("2026-10-06", None),
    "gemini-3.1-flash-lite-image": ("2026-06-30", None),
    "gemini-3-pro-image": ("2026-05-28", None),
    # Deprecated 2026-10-06 for gemini-nano-banana-2.1; Google has announced no shutdown date yet.
    "gemini-3.1-flash-image": ("2026-05-28", None),
}

#: Ids Google has shut down -> what to use instead (a pinned one is a configuration error). They belong to
#: no family, so they are never offered even if Google still lists them.
RETIRED: dict[str, str] = {
    "gemini-2.5-flash-image": "gemini-nano-banana-2.1 (gemini-2.5-flash-image shut down on 2026-10-02)",
    "gemini-2.5-flash-image-preview": "gemini-nano-banana-2.1",
    "gemini-3.1-flash-image-preview": "gemini-nano-banana-2.1 (the preview shut down on 2026-06-25)",
    "gemini-3-pro-image-preview": "gemini-3-pro-image (the preview shut down on 2026-06-25)",
    "imagen-4.0-generate-001": "gemini-nano-banana-2.1 (Imagen shut down on 2026-08-17)",
    "imagen-4.0-ultra-generate-001": "gemini-3-pro-image (Imagen shut down on 2026-08-17)",
    "imagen-4.0-fast-generate-001": "gemini-3.1-flash-lite-image (Imagen shut down on 2026-08-17)",
    "imagen-4.0-generate-preview-06-06": "gemini-nano-banana-2.1",
    "imagen-4.0-ultra-generate-preview-06-06": "gemini-3-pro-image",
    "imagen-3.0-generate-002": "gemini-nano-banana-2.1 (Imagen 3 shut down on 2025-11-10)",
}
POLICY_REASONS = {"SAFETY", "PROHIBITED_CONTENT", "BLOCKLIST", "IMAGE_SAFETY", "IMAGE_PROHIBITED_CONTENT",
                  "SPII", "RECITATION", "IMAGE_RECITATION", "MODEL_ARMOR", "JAILBREAK"}
PREVIEWS_DEFAULT = 2


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


def image_config_for(size: str, model: ModelInfo | None) -> tuple[str, str]:
    """``WxH`` -> (aspect_ratio, image_size) for the wire. The core only sends sizes the model declared."""
    aspect, tier = SIZE_CONFIG.get(size, ("", "1K"))
    if model is not None and size in model.aspect_of:
        aspect = model.aspect_of[size]
    if not aspect:  # not a documented size: the closest standard ratio at 1K
        w, _, h = size.partition("x")
        want = int(w) / int(h) if w.isdigit() and h.isdigit() and int(h) else 1.0
        aspect = min(PIXELS_1K, key=lambda r: abs(PIXELS_1K[r][0] / PIXELS_1K[r][1] - want))
    return aspect, tier


def model_for(families: Iterable[ModelFamily], model_id: str, lifecycle: Mapping[str, tuple[str, str | None]]
              ) -> ModelInfo | None:
    """The ModelInfo of any id of a known family (its template renamed), with its documented lifecycle."""
    family = family_of(families, model_id)
    if family is None:
        return None
    released, shutdown = lifecycle.get(model_id, ("", None))
    return dataclasses.replace(family.template, name=model_id, family=family.prefix, created=_unix(released),
                               shutdown_date=shutdown)


def _unix(day: str | None) -> int:
    if not day:
        return 0
    return calendar.timegm(dt.date.fromisoformat(day).timetuple())


async def list_gemini_models(client: genai.Client, families: Iterable[ModelFamily],
                             lifecycle: Mapping[str, tuple[str, str | None]],
                             skip: tuple[str, ...] = ()) -> list[ListedModel]:
    """``models.list`` -> the ids of our families that take ``generateContent``, with their documented
    release and shutdown dates (the API's ``Model`` carries no lifecycle field)."""
    families = tuple(families)
    out: dict[str, ListedModel] = {}
    pager = await client.aio.models.list(config={"page_size": 100})
    async for model in pager:
        model_id = (model.name or "").rsplit("/", 1)[-1]
        actions = model.supported_actions
        if not model_id or (actions is not None and "generateContent" not in actions):
            continue
        if family_of(families, model_id) is None or any(s in model_id for s in skip):
            continue
        released, shutdown = lifecycle.get(model_id, ("", None))
        out[model_id] = ListedModel(model_id, created=_unix(released), shutdown_date=shutdown)
    return list(out.values())


class GoogleImages:
    """Provider ``google``: the Gemini image models through one genai client (Gemini API or Vertex AI)."""

    families: tuple[ModelFamily, ...] = FAMILIES
    retired_models: Mapping[str, str] = RETIRED

    def __init__(self, client: genai.Client, models: tuple[ModelInfo, ...] | None = None, *, key_env: str,
                 settings: ClientSettings, secrets: tuple[str, ...] = (), pinned: tuple[str, ...] = (),
                 previews: int = PREVIEWS_DEFAULT, name: str = "google") -> None:
        self.name = name
        self.client = client
        self.key_env = key_env
        self.pinned = pinned
        self.previews = previews
        self.notes: tuple[str, ...] = ()
        self._secrets = secrets
        if models is None:
            models = tuple(dataclasses.replace(f.template, family=f.prefix) for f in self.families)
        default = pinned[0] if pinned else self.families[0].template.name
        self.capabilities = Capabilities(models=models, default_model=default if any(
            m.name == default for m in models) else models[0].name, concurrency=settings.concurrency)

    def __repr__(self) -> str:
        return f"GoogleImages({self.name!r})"

    def model_hint(self, model: str) -> str | None:
        """Why ``model`` is not offered, when there is a reason an operator can act on."""
        if model in self.retired_models:
            return f"{model} has been shut down by Google; use {self.retired_models[model]}."
        return None

    def _error(self, exc: BaseException, model: str = "") -> ProviderError:
        return from_google(exc, provider=self.name, key_env=self.key_env, secrets=self._secrets, model=model)

    async def list_models(self) -> list[ListedModel]:
        try:
            return await list_gemini_models(self.client, self.families, LIFECYCLE)
        except asyncio.CancelledError:
            raise
        except Exception as exc:  # noqa: BLE001 - every SDK failure is mapped at this edge
            raise self._error(exc) from None

    def _info(self, model: str) -> ModelInfo | None:
        return self.capabilities.model(model) or model_for(self.families, model, LIFECYCLE)

    async def generate(self, request: GenerationRequest) -> list[GeneratedImage]:
        from google.genai import types

        info = self._info(request.model)
        limit = info.prompt_limit if info else 4000
        prompt = _fold_style(request.prompt, request.style, limit)
        aspect, tier = image_config_for(request.size, info)
        inputs = [x for x in (request.reference, *request.references) if x is not None]
        takes = max(1, info.max_references) if info is not None and info.supports_reference else 0
        if request.mask is not None:  # never dropped silently: the core sends masks only where declared
            raise ProviderUnsupported(f"{self.name} does not edit with a mask.", provider=self.name)
        if len(inputs) > takes:
            raise ProviderUnsupported(f"{self.name}/{request.model} takes at most {takes} input images, "
                                      f"not {len(inputs)}.", provider=self.name)
        contents: list[Any] = []
        try:
            for data in inputs:
                mime, _, _ = await asyncio.to_thread(inspect_image, data)
                contents.append(types.Part.from_bytes(data=data, mime_type=mime))
            contents.append(prompt)
            config = types.GenerateContentConfig(
                response_modalities=["IMAGE"],
                image_config=types.ImageConfig(aspect_ratio=aspect, image_size=tier),
            )
            images: list[GeneratedImage] = []
            for _ in range(max(1, request.count)):  # one image per call
                response = await self.client.aio.models.generate_content(
                    model=request.model, contents=contents, config=config)
                images.extend(await self._images(response))
            return images
        except asyncio.CancelledError:
            raise
        except Exception as exc:  # noqa: BLE001 - every SDK failure is mapped at this edge
            raise self._error(exc, request.model) from None

    async def _images(self, response: Any) -> list[GeneratedImage]:
        feedback = getattr(response, "prompt_feedback", None)
        if feedback is not None and getattr(feedback, "block_reason", None):
            log.warning("provider %s: prompt blocked (%s)", self.name, _enum(feedback.block_reason))
            raise ContentRejected(POLICY_TEXT, provider=self.name)
        images: list[GeneratedImage] = []
        reasons: list[str] = []
        for cand in getattr(response, "candidates", None) or []:
            reasons.append(_enum(getattr(cand, "finish_reason", None)))
            for part in getattr(getattr(cand, "content", None), "parts", None) or []:
                blob = getattr(part, "inline_data", None)
                # The thinking models draw interim compositions marked as thoughts: only the final counts.
                if blob is not None and blob.data and not getattr(part, "thought", False):
                    images.append(await self._checked(blob.data))
        if images:
            usage = getattr(response, "usage_metadata", None)
            if usage is not None:
                tokens_in = int(getattr(usage, "prompt_token_count", None) or 0)
                # Thinking tokens are billed as output, so they count with the image's own tokens.
                tokens_out = int(getattr(usage, "candidates_token_count", None) or 0) + int(
                    getattr(usage, "thoughts_token_count", None) or 0)
                images[0] = dataclasses.replace(images[0], input_tokens=tokens_in, output_tokens=tokens_out)
            return images
        if any(r in POLICY_REASONS for r in reasons):
            log.warning("provider %s: image withheld (%s)", self.name, ", ".join(reasons))
            raise ContentRejected(POLICY_TEXT, provider=self.name)
        log.warning("provider %s: answer had no image (finish: %s)", self.name, ", ".join(reasons) or "none")
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


def pinned_models(config: Config, name: str, key: str = "models") -> tuple[str, ...]:
    """``[providers.NAME] model = "..."`` or ``models = [...]`` (the first is the default)."""
    t = table(config, name)
    wanted: Any = t.get(key)
    if wanted is None and key == "models":
        wanted = t.get("model")
    if wanted is None:
        return ()
    if isinstance(wanted, str):
        wanted = wanted.split(",")
    if not isinstance(wanted, list) or not wanted or not all(str(w).strip() for w in wanted):
        raise ConfigError(f"providers.{name}.{key} must be a model name or a non-empty list of model names")
    return tuple(dict.fromkeys(str(w).strip().lower() for w in wanted))


def check_pinned(name: str, pinned: tuple[str, ...], families: tuple[ModelFamily, ...],
                 retired: Mapping[str, str], setting: str = "model") -> None:
    """A shut-down or unknown pinned model stops the bot at start, naming what to use instead."""
    for model in pinned:
        if model in retired:
            raise ConfigError(f"providers.{name}.{setting}: {model} has been shut down by Google; "
                              f"use {retired[model]} instead")
        if family_of(families, model) is None:
            raise ConfigError(f"providers.{name}.{setting}: unknown model {model!r}; google offers the "
                              f"families {', '.join(f.prefix for f in families)}")


def previews_setting(config: Config, name: str) -> int:
    """``[providers.NAME] previews`` (0-3, default 2). No Gemini image model streams partial images, so
    it only matters once one does."""
    return int(parse_number(f"providers.{name}.previews", table(config, name).get("previews", PREVIEWS_DEFAULT), 0, 3))


def build_google(config: Config) -> list[GoogleImages]:
    """Provider ``google`` when a Google key (or Vertex project) is set; nothing otherwise."""
    setup = google_setup(config)
    if setup is None:
        return []
    pinned = pinned_models(config, "google")
    check_pinned("google", pinned, FAMILIES, RETIRED, "models")
    models = None
    if pinned:
        models = tuple(m for m in (model_for(FAMILIES, p, LIFECYCLE) for p in pinned) if m is not None)
    settings = client_settings(config, "google")
    return [GoogleImages(make_client(setup, settings), models, key_env=setup.key_env, settings=settings,
                         secrets=(setup.key,) if setup.key else (), pinned=pinned,
                         previews=previews_setting(config, "google"))]

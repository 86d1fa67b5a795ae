"""OpenAI images through the ``openai`` SDK: the gpt-image-2 family and its successors (and, via
``compat``, xAI and any OpenAI-compatible image service, which reuse ``OpenAIImages``).

What the models can do is declared per *family* (``OPENAI_FAMILIES``); which models exist comes from
the vendor's own list (``GET /v1/models``, ``list_models``), so a new dated snapshot needs no code.

Facts, and where they come from (checked on openai 3.57, today 2026-12-01):

- ``openai/types/image_model.py`` and ``image_generate_params.py`` (model docstrings): gpt-image-1 was
  shut down on 2026-10-23 (use gpt-image-2.5-sunburst or -flare); dall-e-2 and dall-e-3 were retired on
  2026-05-12 (use a GPT image model). OpenAI's deprecations page (announced 2026-06-02): gpt-image-1-mini,
  gpt-image-1.5 and chatgpt-image-latest shut down on 2026-12-01, replaced by gpt-image-2. These ids
  appear only in ``RETIRED_MODELS``.
- ``image_generate_params.py``: GPT image models always answer base64; ``response_format`` and ``style``
  are legacy parameters they refuse (a style is folded into the prompt instead), and so are the qualities
  ``standard``/``hd``. Qualities are low|medium|high|auto; the gpt-image-2.5 sunburst/flare models (and
  their 2026-09-08 snapshots) also take ``xhigh`` and ``max`` (our ``max`` tier sends ``max``). Sizes: for
  gpt-image-2 and the 2.5 models any ``WIDTHxHEIGHT`` with both sides divisible by 16 and an aspect between
  1:3 and 3:1, up to 3840x2160 (above 2560x1440 is experimental); total pixels 655,360..8,294,400 (OpenAI's
  size guide as quoted by API resellers). The SDK does not (yet) list the gpt-image-2.6 models among those
  taking arbitrary sizes or xhigh/max, so their family is declared conservatively: the three standard
  sizes that every GPT image model takes, low/medium/high, and no background beyond auto.
  ``output_format`` png|webp|jpeg with ``output_compression`` (webp/jpeg only); ``background``
  transparent|opaque|auto (2.5: both; gpt-image-2: transparent in preview; transparent needs png or
  webp); ``moderation`` low|auto (generate only); ``safety_identifier`` (a hash of the user, never the
  raw id); prompts up to 32,000 characters; ``n`` 1..10.
- ``image_edit_params.py`` / ``resources/images.py`` (``images.edit``): edits are multipart; ``image`` is one
  file or a list (sent as ``image[]``) of png/webp/jpg files under 50MB, "up to 16 images" for the models
  that docstring lists (gpt-image-2, the 2.5 models and their snapshots; the retired 1.5/1-mini). It does
  not list the 2.6 models, so they are declared with one input image until it does. ``mask``: a PNG under
  4MB "whose fully transparent areas (alpha zero) indicate where image should be edited", the same
  dimensions as the image, applied to the first image when there are several; no model is excluded, so
  every family takes it. ``input_fidelity`` (high|low): "Supports high and low on gpt-image-1.5;
  gpt-image-1-mini supports only low. For gpt-image-2, omit this parameter" (the API answers 400
  ``invalid_input_fidelity_model`` otherwise). It is sent (as ``high``, so an edit keeps the original's
  features) only to a family whose ``CallStyle.input_fidelity`` lists ``high``: today none that is still
  served, since 1.5 and 1-mini are retired; the 2.x models are not named as taking it, so it is omitted.
- ``image_gen_partial_image_event.py`` / ``image_gen_completed_event.py`` (and the ``image_edit.*`` pair):
  with ``stream=True`` and ``partial_images`` 0..3 the answer is server-sent events; each partial carries
  ``b64_json`` and ``partial_image_index``, the completed event the final image and its ``usage``. The
  events carry no image index, so previews are streamed only for one-image calls. ``images_response.py``:
  ``usage`` (input_tokens/output_tokens) on the plain answer.
- ``openai/types/model.py``: ``GET /v1/models`` entries have an optional ``shutdown_date``.

Family order (preferred first): gpt-image-2.5-sunburst, gpt-image-2.5-flare, gpt-image-2, then the 2.6
models. The SDK names the 2.5 models as the replacement for retired GPT Image 1 and documents every
option for them (arbitrary sizes to 3840x2160, xhigh/max, transparent and opaque backgrounds); sunburst
is the precision tier, flare the fast one. gpt-image-2 follows (fully documented, fewer qualities). The
2.6 models are newer, but until the SDK documents their sizes and qualities they would offer users less,
so they come last; an operator can pin one with ``[providers.openai] model = "gpt-image-2.6-flare"``.
"""

from __future__ import annotations

import asyncio
import base64
import binascii
import dataclasses
import datetime as dt
import logging
import re
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

import aiohttp

from bot.config import parse_number
from bot.errors import (
    ConfigError,
    ProviderBadResponse,
    ProviderError,
    ProviderUnavailable,
    ProviderUnsupported,
)
from bot.imaging import EXTENSIONS, inspect_image

from .base import (
    Capabilities,
    FreeSizes,
    GeneratedImage,
    GenerationRequest,
    ListedModel,
    ModelFamily,
    ModelInfo,
)
from .catalogue import family_of
from .download import download_image
from .errors_map import from_openai
from .settings import ClientSettings, client_settings, env, table

if TYPE_CHECKING:
    from openai import AsyncOpenAI

    from bot.config import Config

log = logging.getLogger(__name__)

DEFAULT_BASE_URL = "https://api.openai.com/v1"
#: Partial images streamed per generation unless ``[providers.NAME] previews`` says otherwise.
DEFAULT_PREVIEWS = 2

#: Sizes every GPT image model takes (``image_generate_params.py``).
GPT_STANDARD_SIZES = ("1024x1024", "1536x1024", "1024x1536")
#: Suggested sizes for the models that take any size (16:9 presets as in the SDK's ``1536x864`` example).
GPT_PRESETS = (*GPT_STANDARD_SIZES, "1536x864", "864x1536", "2048x2048", "2560x1440", "1440x2560")
GPT_FREE_SIZES = FreeSizes(multiple=16, max_ratio=3.0, max_edge=3840, max_pixels=3840 * 2160, min_pixels=655_360)
GPT_FORMATS = ("png", "webp", "jpeg")
#: Our quality tiers -> the vendor's values (``max`` only reaches models that declared it).
GPT_QUALITY = {"low": "low", "medium": "medium", "high": "high", "max": "max"}


def gpt_image(name: str, *, qualities: tuple[str, ...], free: bool, backgrounds: tuple[str, ...],
              inputs: int = 16) -> ModelInfo:
    """What a GPT image family can do (see the module docstring for the sources)."""
    return ModelInfo(
        name=name, sizes=GPT_PRESETS if free else GPT_STANDARD_SIZES, max_per_call=10, supports_reference=True,
        prompt_limit=32000, family=name, free_sizes=GPT_FREE_SIZES if free else None, qualities=qualities,
        formats=GPT_FORMATS, backgrounds=backgrounds, max_references=inputs, supports_mask=True, streaming=True,
    )


_FULL = ("low", "medium", "high", "max")
_BASIC = ("low", "medium", "high")
OPENAI_FAMILIES: tuple[ModelFamily, ...] = (
    ModelFamily("gpt-image-2.5-sunburst",
                gpt_image("gpt-image-2.5-sunburst", qualities=_FULL, free=True, backgrounds=("transparent", "opaque"))),
    ModelFamily("gpt-image-2.5-flare",
                gpt_image("gpt-image-2.5-flare", qualities=_FULL, free=True, backgrounds=("transparent", "opaque"))),
    # ``gpt-image-2`` and its dated snapshots, not the 2.x successors (their own families).
    ModelFamily("gpt-image-2",
                gpt_image("gpt-image-2", qualities=_BASIC, free=True, backgrounds=("transparent", "opaque")),
                excludes=("gpt-image-2.",)),
    # The SDK's "up to 16 images" does not name the 2.6 models: one input image until it does.
    ModelFamily("gpt-image-2.6-sunburst", gpt_image("gpt-image-2.6-sunburst", qualities=_BASIC, free=False,
                                                    backgrounds=(), inputs=1)),
    ModelFamily("gpt-image-2.6-flare", gpt_image("gpt-image-2.6-flare", qualities=_BASIC, free=False,
                                                 backgrounds=(), inputs=1)),
)

#: Shut-down ids -> what replaced them (SDK docstrings; OpenAI's deprecations page for the 2026-12-01 ones).
OPENAI_RETIRED: dict[str, str] = {
    "gpt-image-1": "gpt-image-2.5-sunburst or gpt-image-2.5-flare",
    "gpt-image-1-mini": "gpt-image-2",
    "gpt-image-1.5": "gpt-image-2",
    "chatgpt-image-latest": "gpt-image-2",
    "dall-e-2": "a GPT image model (gpt-image-2 or newer)",
    "dall-e-3": "a GPT image model (gpt-image-2 or newer)",
}


@dataclass(frozen=True)
class CallStyle:
    """How one model is called: which parameters it takes and how it answers."""

    #: ``b64_json``, ``url``, or None to leave it out (GPT image models refuse the parameter).
    response_format: str | None = None
    send_size: bool = True
    #: xAI: the size is sent as ``aspect_ratio`` + ``resolution`` (``extra_body``), never as ``size``.
    aspect: bool = False
    #: Fixed size -> the vendor's resolution tier (``1k``/``2k``), with ``aspect``.
    resolutions: Mapping[str, str] = field(default_factory=dict)
    #: Our quality tier -> the vendor's value; empty: the parameter is not sent.
    quality: Mapping[str, str] = field(default_factory=dict)
    #: GPT image options: output_format/compression, background, moderation, safety_identifier, streaming.
    gpt: bool = False
    #: A reference image goes through ``images.edit`` (multipart).
    edits: bool = False
    #: The vendor takes the (hashed) end-user id as ``user`` (xAI), rather than ``safety_identifier``.
    user_field: bool = False
    #: ``input_fidelity`` values the model takes (``image_edit_params.py``); ``high`` is sent when listed.
    input_fidelity: tuple[str, ...] = ()
    #: xAI: edits are JSON (``image``/``images`` as data URLs) on ``POST /images/edits``, not multipart.
    json_edits: bool = False


GPT_CALL = CallStyle(quality=GPT_QUALITY, gpt=True, edits=True)
#: The retired models that took ``input_fidelity`` (``image_edit_params.py``), for an operator's
#: OpenAI-compatible service that still serves them, and for the record.
INPUT_FIDELITY: dict[str, tuple[str, ...]] = {"gpt-image-1.5": ("high", "low"), "gpt-image-1-mini": ("low",)}


@dataclass(frozen=True)
class ImageOptions:
    """Per-provider settings that apply to every call (``[providers.NAME]``)."""

    #: 0-100 for webp/jpeg; None: the vendor's default (100).
    output_compression: int | None = None
    #: ``low`` or ``auto``; None: not sent (auto).
    moderation: str | None = None


class OpenAIImages:
    """One OpenAI(-compatible) image service: an SDK client, its models and how to call each.

    ``calls`` is keyed by model family (``ModelInfo.family``) or, for configured services, by model name.
    """

    def __init__(
        self,
        name: str,
        client: AsyncOpenAI,
        models: tuple[ModelInfo, ...],
        calls: Mapping[str, CallStyle],
        *,
        key_env: str,
        settings: ClientSettings,
        secrets: tuple[str, ...] = (),
        notes: tuple[str, ...] = (),
        options: ImageOptions | None = None,
        previews: int = 0,
        default_model: str | None = None,
    ) -> None:
        self.name = name
        self.client = client
        self.calls = dict(calls)
        self.key_env = key_env
        self.settings = settings
        self.notes = notes
        self.options = options or ImageOptions()
        #: Partial images per generation (0-3) for models that stream; 0 turns previews off.
        self.previews = previews
        self._secrets = secrets
        self._session: aiohttp.ClientSession | None = None
        self.capabilities = Capabilities(models=models, default_model=default_model or models[0].name,
                                         concurrency=settings.concurrency)

    def __repr__(self) -> str:  # never the client (it holds the key)
        return f"{type(self).__name__}({self.name!r})"

    def _error(self, exc: BaseException, model: str = "") -> ProviderError:
        return from_openai(exc, provider=self.name, key_env=self.key_env, secrets=self._secrets, model=model)

    def _spec(self, model: str, info: ModelInfo | None) -> CallStyle:
        if info is not None and info.family in self.calls:
            return self.calls[info.family]
        return self.calls.get(model, CallStyle(response_format="b64_json"))

    def _params(self, request: GenerationRequest, info: ModelInfo | None, spec: CallStyle) -> dict[str, Any]:
        """The wire parameters for this request (everything was validated by the core already)."""
        limit = info.prompt_limit if info else 4000
        prompt = request.prompt
        # No current model takes a style parameter: a non-natural style becomes part of the prompt.
        if request.style not in ("natural", ""):
            prompt = f"{prompt}, {request.style} style"
        kwargs: dict[str, Any] = {"model": request.model, "prompt": prompt[:limit], "n": request.count}
        extra: dict[str, Any] = {}
        if spec.aspect:
            ratio = info.aspect_of.get(request.size) if info else None
            if ratio:
                extra["aspect_ratio"] = ratio
                resolution = spec.resolutions.get(request.size)
                if resolution:
                    extra["resolution"] = resolution
        elif spec.send_size:
            kwargs["size"] = request.size
        quality = spec.quality.get(request.quality)
        if quality:
            kwargs["quality"] = quality
        if spec.response_format:
            kwargs["response_format"] = spec.response_format
        if spec.gpt:
            fmt = request.output_format
            if fmt:
                kwargs["output_format"] = fmt
                if fmt in ("webp", "jpeg") and self.options.output_compression is not None:
                    kwargs["output_compression"] = self.options.output_compression
            if request.background:
                kwargs["background"] = request.background
            if request.safety_id:
                kwargs["safety_identifier"] = request.safety_id
        if spec.user_field and request.safety_id:
            kwargs["user"] = request.safety_id
        if extra:
            kwargs["extra_body"] = extra
        return kwargs

    def _check_inputs(self, request: GenerationRequest, info: ModelInfo | None, spec: CallStyle,
                      inputs: Sequence[bytes]) -> None:
        """Input images and a mask go to the vendor as asked or not at all: never silently dropped (the
        core only sends what the model declared; this guards a request built some other way)."""
        if not inputs:
            if request.mask is not None:
                raise ProviderUnsupported("A mask needs the image it applies to.", provider=self.name)
            return
        if not (spec.edits or spec.json_edits) or (info is not None and not info.supports_reference):
            raise ProviderUnsupported(f"{self.name}/{request.model} takes no input images.", provider=self.name)
        if request.mask is not None and (spec.json_edits or (info is not None and not info.supports_mask)):
            raise ProviderUnsupported(f"{self.name}/{request.model} does not edit with a mask.", provider=self.name)
        if info is None:  # it left the rotation since the plan was made: the vendor answers (404 -> retired)
            return
        takes = max(1, info.max_references)
        if len(inputs) > takes:
            raise ProviderUnsupported(f"{self.name}/{request.model} takes at most {takes} input images, "
                                      f"not {len(inputs)}.", provider=self.name)

    async def _multipart(self, request: GenerationRequest, spec: CallStyle, inputs: Sequence[bytes]) -> dict[str, Any]:
        """``images.edit`` files: one image as ``image``, several as a list (the SDK sends ``image[]``), the
        mask as ``mask``; ``input_fidelity=high`` where the model takes it, so the original is kept."""
        files = []
        for i, data in enumerate(inputs):
            mime, _, _ = await asyncio.to_thread(inspect_image, data)
            stem = "reference" if i == 0 else f"reference-{i + 1}"
            files.append((f"{stem}.{EXTENSIONS.get(mime, 'png')}", data, mime))
        out: dict[str, Any] = {"image": files[0] if len(files) == 1 else files}
        if request.mask is not None:
            out["mask"] = ("mask.png", request.mask, "image/png")
        if "high" in spec.input_fidelity:
            out["input_fidelity"] = "high"
        return out

    async def _json_edit(self, kwargs: dict[str, Any], inputs: Sequence[bytes]) -> Any:
        """xAI's ``POST /images/edits``: JSON with ``image`` (one) or ``images`` (several, up to 3) as data
        URLs; the SDK's multipart ``images.edit`` is refused there (module docstring of ``compat``)."""
        from openai.types import ImagesResponse

        body = {k: v for k, v in kwargs.items() if k != "extra_body"}
        body.update(kwargs.get("extra_body") or {})
        urls = []
        for data in inputs:
            mime, _, _ = await asyncio.to_thread(inspect_image, data)
            urls.append({"url": f"data:{mime};base64,{base64.b64encode(data).decode()}"})
        if len(urls) == 1:
            body["image"] = urls[0]
        else:
            body["images"] = urls
        return await self.client.post("/images/edits", body=body, cast_to=ImagesResponse)

    async def generate(self, request: GenerationRequest) -> list[GeneratedImage]:
        info = self.capabilities.model(request.model)
        spec = self._spec(request.model, info)
        kwargs = self._params(request, info, spec)
        inputs = input_images(request)
        self._check_inputs(request, info, spec, inputs)
        stream = (spec.gpt and info is not None and info.streaming and request.previews > 0
                  and request.on_preview is not None and request.count == 1)
        try:
            if inputs and spec.json_edits:
                response = await self._json_edit(kwargs, inputs)
            else:
                if inputs:
                    kwargs.update(await self._multipart(request, spec, inputs))
                    call: Callable[..., Any] = self.client.images.edit
                else:
                    if spec.gpt and self.options.moderation:
                        kwargs["moderation"] = self.options.moderation  # images.edit has no moderation
                    call = self.client.images.generate
                if stream:
                    return await self._streamed(call, kwargs, request)
                response = await call(**kwargs)
        except asyncio.CancelledError:
            raise
        except Exception as exc:  # noqa: BLE001 - every SDK failure is mapped at this edge
            raise self._error(exc, request.model) from None
        images = await self._collect(getattr(response, "data", None), request.count)
        return _with_usage(images, getattr(response, "usage", None))

    async def _streamed(self, call: Callable[..., Any], kwargs: dict[str, Any],
                        request: GenerationRequest) -> list[GeneratedImage]:
        """Stream partial images to ``request.on_preview``; return only the completed image. A stream that
        breaks or ends without a completed event is a failed attempt (retryable, never charged)."""
        import openai

        stream = await call(**kwargs, stream=True, partial_images=max(1, min(3, request.previews)))
        finals: list[Any] = []
        try:
            async for event in stream:
                kind = str(getattr(event, "type", ""))
                if kind.endswith(".partial_image"):
                    await self._preview(request, event)
                elif kind.endswith(".completed"):
                    finals.append(event)
        except openai.APIConnectionError as exc:
            log.warning("provider %s: the image stream broke off (%s)", self.name, type(exc.__cause__).__name__)
            raise ProviderUnavailable(f"{self.name} broke off while drawing the image.", provider=self.name) from None
        finally:
            await stream.close()
        if not finals:
            log.warning("provider %s: the image stream ended before the image was finished", self.name)
            raise ProviderUnavailable(f"{self.name} stopped before the image was finished.", provider=self.name)
        images = await self._collect(finals, request.count)
        return _with_usage(images, getattr(finals[0], "usage", None))

    async def _preview(self, request: GenerationRequest, event: Any) -> None:
        """Hand one partial image on; a bad partial or a failing sink never fails the generation."""
        if request.on_preview is None:
            return
        try:
            data = base64.b64decode(str(getattr(event, "b64_json", "") or ""), validate=True)
        except (binascii.Error, ValueError):
            log.info("provider %s: skipped an undecodable partial image", self.name)
            return
        if not data:
            return
        try:
            await request.on_preview(data, int(getattr(event, "partial_image_index", 0) or 0))
        except asyncio.CancelledError:
            raise
        except Exception:  # noqa: BLE001 - previews are a courtesy; the final image is what counts
            log.warning("provider %s: showing a preview failed", self.name, exc_info=True)

    async def _collect(self, items: Sequence[Any] | None, count: int) -> list[GeneratedImage]:
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


def input_images(request: GenerationRequest) -> tuple[bytes, ...]:
    """``reference`` then ``references``: every input image of the request, in order."""
    first = () if request.reference is None else (request.reference,)
    return (*first, *request.references)


def _with_usage(images: list[GeneratedImage], usage: Any) -> list[GeneratedImage]:
    """The vendor's token usage for the call, on the call's first image."""
    if usage is None or not images:
        return images
    tokens_in = int(getattr(usage, "input_tokens", 0) or 0)
    tokens_out = int(getattr(usage, "output_tokens", 0) or 0)
    if not (tokens_in or tokens_out):
        return images
    return [dataclasses.replace(images[0], input_tokens=tokens_in, output_tokens=tokens_out), *images[1:]]


class OpenAIModels(OpenAIImages):
    """OpenAI's own image service: models come from ``GET /v1/models`` (``providers.catalogue``)."""

    def __init__(self, *args: Any, families: tuple[ModelFamily, ...], pinned: tuple[str, ...],
                 retired_models: Mapping[str, str], **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.families = families
        self.pinned = pinned
        self.retired_models = dict(retired_models)

    async def list_models(self) -> list[ListedModel]:
        return await list_openai_models(self.client, self._error)


async def list_openai_models(client: AsyncOpenAI, error: Callable[[BaseException], ProviderError]) -> list[ListedModel]:
    """``GET /v1/models`` (image and text providers alike), with each entry's shutdown date."""
    try:
        return [ListedModel(m.id, int(getattr(m, "created", 0) or 0), shutdown_of(m))
                async for m in client.models.list()]
    except asyncio.CancelledError:
        raise
    except Exception as exc:  # noqa: BLE001 - mapped at this edge
        raise error(exc) from None


DATE_RE = re.compile(r"^\d{4}-\d{2}-\d{2}")


def shutdown_of(model: Any) -> str | None:
    """A listed model's ``shutdown_date`` as YYYY-MM-DD (a typed field since openai 3.x; older answers may
    carry it as an extra field or a unix time)."""
    value = getattr(model, "shutdown_date", None)
    if value is None:
        value = (getattr(model, "model_extra", None) or {}).get("shutdown_date")
    if isinstance(value, int | float) and not isinstance(value, bool) and value > 0:
        return dt.datetime.fromtimestamp(value, dt.UTC).date().isoformat()
    if isinstance(value, str) and DATE_RE.match(value.strip()):
        return value.strip()[:10]
    return None


# -- building ---------------------------------------------------------------------------------------


def pinned_ids(config: Config, name: str, key: str = "model", many: str | None = "models") -> tuple[str, ...]:
    """The models an operator named in ``[providers.NAME] model = "..."`` (or ``models = [...]``)."""
    t = table(config, name)
    raw: Any = t.get(key)
    if raw is None and many is not None:
        raw = t.get(many)
        key = many
    if raw is None:
        return ()
    if isinstance(raw, str):
        raw = raw.split(",")
    if not isinstance(raw, list) or not all(isinstance(r, str) for r in raw):
        raise ConfigError(f"providers.{name}.{key} must be a model name or a list of model names")
    ids = tuple(dict.fromkeys(r.strip() for r in raw if r.strip()))
    if not ids:
        raise ConfigError(f"providers.{name}.{key} must name at least one model")
    return ids


def pinned_models(name: str, pinned: Sequence[str], families: Sequence[ModelFamily],
                  retired: Mapping[str, str]) -> tuple[ModelInfo, ...]:
    """The pinned ids as models of their families; a shut-down or unknown id stops the bot at start."""
    models = []
    for model_id in pinned:
        if model_id in retired:
            raise ConfigError(f"providers.{name}.model: {model_id} has been shut down by the vendor; "
                              f"use {retired[model_id]} instead")
        family = family_of(families, model_id)
        if family is None:
            raise ConfigError(f"providers.{name}.model: unknown model {model_id!r}; {name} knows the families "
                              f"{', '.join(f.prefix for f in families)}")
        models.append(dataclasses.replace(family.template, name=model_id, family=family.prefix))
    return tuple(models)


def family_defaults(families: Sequence[ModelFamily]) -> tuple[ModelInfo, ...]:
    return tuple(dataclasses.replace(f.template, family=f.prefix) for f in families)


def previews_setting(config: Config, name: str) -> int:
    """``[providers.NAME] previews``: partial images per generation, 0-3 (0 turns streaming off)."""
    return int(parse_number(f"providers.{name}.previews", table(config, name).get("previews", DEFAULT_PREVIEWS),
                            0, 3))


def image_options(config: Config, name: str) -> ImageOptions:
    t = table(config, name)
    compression = t.get("output_compression")
    moderation = t.get("moderation")
    if moderation is not None and moderation not in ("low", "auto"):
        raise ConfigError(f"providers.{name}.moderation must be \"low\" or \"auto\", got {moderation!r}")
    return ImageOptions(
        output_compression=None if compression is None else int(
            parse_number(f"providers.{name}.output_compression", compression, 0, 100)),
        moderation=moderation,
    )


def make_client(api_key: str, base_url: str, settings: ClientSettings) -> AsyncOpenAI:
    """An SDK client with our timeout and retry count, never the SDK's 600 s default."""
    from openai import AsyncOpenAI

    return AsyncOpenAI(api_key=api_key, base_url=base_url, timeout=settings.timeout,
                       max_retries=settings.max_retries)


def build_openai(config: Config) -> list[OpenAIImages]:
    """Provider ``openai`` when ``OPENAI_API_KEY`` is set; nothing otherwise (offline keeps working).

    With nothing pinned it offers every family's built-in default until the catalogue has asked the
    vendor; ``[providers.openai] model``/``models`` pins models (the first is the default)."""
    key = env(config, "OPENAI_API_KEY")
    if not key:
        return []
    settings = client_settings(config, "openai")
    base_url = env(config, "OPENAI_BASE_URL") or str(table(config, "openai").get("base_url") or DEFAULT_BASE_URL)
    pinned = pinned_ids(config, "openai")
    models = (pinned_models("openai", pinned, OPENAI_FAMILIES, OPENAI_RETIRED) if pinned
              else family_defaults(OPENAI_FAMILIES))
    calls = {f.prefix: GPT_CALL for f in OPENAI_FAMILIES}
    return [OpenAIModels("openai", make_client(key, base_url, settings), models, calls, key_env="OPENAI_API_KEY",
                         settings=settings, secrets=(key,), options=image_options(config, "openai"),
                         previews=previews_setting(config, "openai"), families=OPENAI_FAMILIES, pinned=pinned,
                         retired_models=OPENAI_RETIRED)]

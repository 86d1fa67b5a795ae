"""The small interface every provider implements.

A provider is one object per configured service with one async method per capability, and
capability flags the core validates against before any credit moves. Providers turn their SDK's
errors into ``bot.errors.ProviderError`` subclasses at this edge, so nothing raw or secret escapes.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass, field
from typing import Protocol, runtime_checkable

SQUARE = "square"
LANDSCAPE = "landscape"
PORTRAIT = "portrait"
ASPECTS = (SQUARE, LANDSCAPE, PORTRAIT)
#: What a named aspect means, in the order of ratios tried on a model that has fixed sizes.
NAMED_ASPECTS: dict[str, tuple[str, ...]] = {
    SQUARE: ("1:1",),
    LANDSCAPE: ("3:2", "4:3", "16:9"),
    PORTRAIT: ("2:3", "3:4", "9:16"),
}
#: Ratios a user may type (``--size 16:9``); each model says which it can make.
RATIOS = ("1:1", "3:2", "2:3", "4:3", "3:4", "5:4", "4:5", "16:9", "9:16", "21:9", "2:1", "1:2")

STYLES = ("natural", "vivid", "artistic", "photographic")
#: The product's quality tiers; ``standard`` and ``hd`` are kept as aliases of medium and high.
QUALITIES = ("low", "medium", "high", "max")
QUALITY_ALIASES = {"standard": "medium", "hd": "high"}
DEFAULT_QUALITY = "medium"
FORMATS = ("png", "webp", "jpeg")
#: ``auto`` is always allowed (the model decides); the others only where the model takes them.
BACKGROUNDS = ("auto", "transparent", "opaque")

#: Lifecycle of a model, from the vendor's own model list.
ACTIVE = "active"
DEPRECATED = "deprecated"
RETIRED = "retired"


def parse_size(size: str) -> tuple[int, int]:
    w, _, h = size.partition("x")
    return int(w), int(h)


def ratio_of(label: str) -> float:
    a, _, b = label.partition(":")
    return int(a) / int(b)


@dataclass(frozen=True)
class FreeSizes:
    """Any ``WxH`` within the model's limits (the gpt-image-2 family): both sides a multiple of
    ``multiple``, the aspect between ``1:max_ratio`` and ``max_ratio:1``, at most ``max_edge`` on a side
    and ``max_pixels`` in all, at least ``min_pixels``."""

    multiple: int = 16
    max_ratio: float = 3.0
    max_edge: int = 3840
    max_pixels: int = 3840 * 2160
    min_pixels: int = 0
    #: Pixels an aspect is drawn at when only a ratio is asked for (about one megapixel).
    target_pixels: int = 1024 * 1024

    def problem(self, w: int, h: int) -> str | None:
        """Why this model cannot make ``w x h``, or None when it can."""
        if w % self.multiple or h % self.multiple:
            return f"both sides must be multiples of {self.multiple}"
        if max(w, h) / min(w, h) > self.max_ratio + 1e-9:
            return f"the aspect must be between 1:{self.max_ratio:g} and {self.max_ratio:g}:1"
        if max(w, h) > self.max_edge or w * h > self.max_pixels:
            return f"the largest it makes is {self.max_edge} on a side and {self.max_pixels:,} pixels"
        if w * h < self.min_pixels:
            return f"the smallest it makes is {self.min_pixels:,} pixels"
        return None

    def for_ratio(self, label: str) -> str | None:
        """The size of about ``target_pixels`` with that ratio, rounded to ``multiple``."""
        r = ratio_of(label)
        h = (self.target_pixels / r) ** 0.5
        w = h * r
        m = self.multiple
        size = (max(m, round(w / m) * m), max(m, round(h / m) * m))
        return f"{size[0]}x{size[1]}" if self.problem(*size) is None else None

    def describe(self) -> str:
        return (f"any WIDTHxHEIGHT with both sides multiples of {self.multiple}, aspect from 1:{self.max_ratio:g}"
                f" to {self.max_ratio:g}:1, up to {self.max_edge} on a side and {self.max_pixels:,} pixels")


@dataclass(frozen=True)
class ModelInfo:
    """What one model can do, declared (never probed). ``sizes`` are ``WxH`` strings in the order the
    model prefers; with ``free_sizes`` it also makes any size within those limits. ``aspect_of`` names the
    ratio of each fixed size (Gemini and xAI take a ratio and a resolution tier, not pixels)."""

    name: str
    sizes: tuple[str, ...]
    max_per_call: int = 1
    supports_reference: bool = False
    supports_upscale: bool = False
    prompt_limit: int = 4000
    #: Styles the model knows natively; others are mapped (artistic->vivid, photographic->natural).
    #: No current model takes a style parameter: providers fold the style into the prompt.
    native_styles: tuple[str, ...] = STYLES
    family: str = ""
    free_sizes: FreeSizes | None = None
    aspect_of: Mapping[str, str] = field(default_factory=dict)
    #: Quality tiers (of ``QUALITIES``) the model makes; a model without the parameter makes medium.
    qualities: tuple[str, ...] = (DEFAULT_QUALITY,)
    formats: tuple[str, ...] = ("png",)
    #: Backgrounds beyond ``auto`` that the model takes (``transparent``, ``opaque``).
    backgrounds: tuple[str, ...] = ()
    max_references: int = 0
    supports_mask: bool = False
    #: Partial images while generating (OpenAI image streaming).
    streaming: bool = False
    #: Lifecycle from the vendor's model list: the shutdown date (YYYY-MM-DD) when announced.
    shutdown_date: str | None = None
    retired: bool = False
    #: The vendor's creation time (unix seconds), used to pick the newest model of a family.
    created: int = 0

    def status(self, today: str) -> str:
        """active, deprecated (a shutdown date ahead) or retired, as of ``today`` (YYYY-MM-DD)."""
        if self.retired or (self.shutdown_date is not None and self.shutdown_date <= today):
            return RETIRED
        return DEPRECATED if self.shutdown_date else ACTIVE

    def size_problem(self, size: str) -> str | None:
        """None when the model makes ``size``; otherwise why not (for the user's error)."""
        if size in self.sizes:
            return None
        if self.free_sizes is not None:
            return self.free_sizes.problem(*parse_size(size))
        return "it makes only the sizes listed"

    def ratios(self) -> tuple[str, ...]:
        """The ratios this model can be asked for by name."""
        if self.free_sizes is not None:
            return tuple(r for r in RATIOS if self.free_sizes.for_ratio(r))
        if self.aspect_of:
            return tuple(dict.fromkeys(self.aspect_of[s] for s in self.sizes if s in self.aspect_of))
        return tuple(r for r in RATIOS if self._closest_fixed(r) is not None)

    def size_for_ratio(self, label: str) -> str | None:
        """This model's size for a ratio like ``16:9``, or None when it has none of that shape."""
        if self.aspect_of:
            return next((s for s in self.sizes if self.aspect_of.get(s) == label), None)
        if self.free_sizes is not None:
            preset = next((s for s in self.sizes if _same_ratio(s, label, 0.001)), None)
            return preset or self.free_sizes.for_ratio(label)
        return self._closest_fixed(label)

    def _closest_fixed(self, label: str) -> str | None:
        fits = [s for s in self.sizes if _same_ratio(s, label, 0.05)]
        return max(fits, key=lambda s: parse_size(s)[0] * parse_size(s)[1]) if fits else None

    def size_for_aspect(self, aspect: str) -> str:
        """Map ``square``/``landscape``/``portrait`` (or a ratio) to this model's size of that shape.

        A model that takes a ratio (or any size) gets the usual photo shapes (3:2, then 4:3, 16:9); a
        plain list of sizes gives its largest square, its widest or its tallest size."""
        if self.free_sizes is not None or self.aspect_of or aspect not in NAMED_ASPECTS:
            for label in NAMED_ASPECTS.get(aspect, (aspect,)):
                size = self.size_for_ratio(label)
                if size is not None:
                    return size
        dims = [(s, *parse_size(s)) for s in self.sizes]
        if aspect == SQUARE:
            return min(dims, key=lambda d: (abs(d[1] / d[2] - 1), -d[1] * d[2]))[0]
        if aspect == LANDSCAPE:
            return max(dims, key=lambda d: (d[1] / d[2], d[1] * d[2]))[0]
        return max(dims, key=lambda d: (d[2] / d[1], d[1] * d[2]))[0]

    def describe_sizes(self) -> str:
        text = ", ".join(self.sizes)
        if self.free_sizes is not None:
            text += f", or {self.free_sizes.describe()}"
        return text

    def map_style(self, style: str) -> str:
        if style in self.native_styles:
            return style
        return {"artistic": "vivid", "photographic": "natural"}.get(style, style)


def _same_ratio(size: str, label: str, tolerance: float) -> bool:
    w, h = parse_size(size)
    want = ratio_of(label)
    return abs((w / h) / want - 1) <= tolerance


@dataclass(frozen=True)
class ModelFamily:
    """What every model of one family can do. The vendor's list says which models exist; a listed id
    belongs to the family whose ``prefix`` it starts with (the longest wins), so a new dated snapshot
    (``gpt-image-2-2026-04-21``) needs no code. ``template`` carries the capabilities; its ``name`` is
    the family's built-in default, used when the vendor cannot be asked."""

    prefix: str
    template: ModelInfo
    #: Ids starting with the prefix that are not this family (e.g. a "-mini" sibling listed separately).
    excludes: tuple[str, ...] = ()

    def matches(self, model_id: str) -> bool:
        return (model_id == self.prefix or model_id.startswith(self.prefix + "-")
                or model_id.startswith(self.prefix + ".")) and not any(model_id.startswith(e) for e in self.excludes)


@dataclass(frozen=True)
class ListedModel:
    """One entry of a vendor's model list (OpenAI ``GET /v1/models``, Gemini ``models.list``...)."""

    id: str
    created: int = 0
    shutdown_date: str | None = None


@dataclass(frozen=True)
class Capabilities:
    models: tuple[ModelInfo, ...]
    default_model: str
    #: How many calls to this provider may run at once (the fan-out semaphore).
    concurrency: int = 4

    def model(self, name: str | None) -> ModelInfo | None:
        wanted = name or self.default_model
        return next((m for m in self.models if m.name == wanted), None)


#: ``await on_preview(data, index)``: a partial image while the model draws (free; never stored as a result).
PreviewSink = Callable[[bytes, int], Awaitable[None]]


@dataclass(frozen=True)
class GenerationRequest:
    """One provider call. ``count`` is never above the model's ``max_per_call``; every option has
    already been checked against the model's ``ModelInfo`` by the core, so a provider only maps it."""

    prompt: str
    model: str
    size: str
    style: str = "natural"
    #: One of ``QUALITIES`` the model declared.
    quality: str = DEFAULT_QUALITY
    count: int = 1
    reference: bytes | None = None
    #: More input images after ``reference`` (a blend, an edit of several images): at most the model's
    #: ``max_references`` minus one; only with ``reference``.
    references: tuple[bytes, ...] = ()
    #: A PNG the size of ``reference`` whose transparent pixels are where the model may draw (zoom out,
    #: pan, make square); only where the model ``supports_mask``.
    mask: bytes | None = None
    seed: int = 0
    #: ``png``/``webp``/``jpeg``, one the model declared; None: the model's default.
    output_format: str | None = None
    #: ``transparent``/``opaque`` when asked for (and declared); None: auto.
    background: str | None = None
    #: A stable hash of the user's identity for the vendor's abuse monitoring (never the raw id).
    safety_id: str = ""
    #: Partial images to stream (0-3) when the model streams; 0 turns previews off.
    previews: int = 0
    on_preview: PreviewSink | None = None


@dataclass(frozen=True)
class GeneratedImage:
    data: bytes
    mime: str = "image/png"
    revised_prompt: str | None = None
    #: (width, height) when the bytes were drawn here (the local renderer): the image store then
    #: trusts them instead of decoding them again. Vendors' bytes leave it unset and are inspected.
    drawn_size: tuple[int, int] | None = None
    #: What the vendor reported for the call that made this image (put on the call's first image).
    input_tokens: int = 0
    output_tokens: int = 0


@runtime_checkable
class ImageProvider(Protocol):
    name: str
    capabilities: Capabilities

    async def generate(self, request: GenerationRequest) -> list[GeneratedImage]:
        """Return ``request.count`` images (or fewer), or raise a ``ProviderError``.

        A model the vendor no longer serves raises ``ModelRetired`` (the core drops it from the
        rotation and fails over without charging)."""
        ...

    async def aclose(self) -> None: ...


@runtime_checkable
class ListsModels(Protocol):
    """A provider whose models come from the vendor's list at run time (``providers.catalogue``).

    ``families`` are what each model family can do, the preferred family first; ``pinned`` the models
    the operator named in ``[providers.NAME] model``/``models`` (the first is the default), checked
    against the list at start."""

    name: str
    families: tuple[ModelFamily, ...]
    pinned: tuple[str, ...]
    #: Ids the vendor has shut down -> what replaced them (from the SDK's docstrings), so a pinned
    #: retired model is a configuration error even when the vendor cannot be asked.
    retired_models: Mapping[str, str]

    async def list_models(self) -> list[ListedModel]:
        """The vendor's models for this account; raises a ``ProviderError`` when it cannot be asked."""
        ...


@runtime_checkable
class TextProvider(Protocol):
    """Rewrites prompts for /enhance and describes reference images for providers without edits.

    ``model`` is the text model in use; a text provider that also ``ListsModels`` has its model
    chosen by the catalogue (``families`` of text models)."""

    name: str
    model: str

    async def enhance(self, prompt: str, *, limit: int) -> str: ...

    async def describe(self, image: bytes) -> str: ...

    async def aclose(self) -> None: ...


@dataclass
class ProviderInfo:
    """A line of ``imagebot providers``."""

    name: str
    kind: str
    models: list[ModelInfo] = field(default_factory=list)
    default_model: str = ""

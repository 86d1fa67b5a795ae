"""The small interface every provider implements.

A provider is one object per configured service with one async method per capability, and
capability flags the core validates against before any credit moves. Providers turn their SDK's
errors into ``bot.errors.ProviderError`` subclasses at this edge, so nothing raw or secret escapes.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Protocol, runtime_checkable

SQUARE = "square"
LANDSCAPE = "landscape"
PORTRAIT = "portrait"
ASPECTS = (SQUARE, LANDSCAPE, PORTRAIT)

STYLES = ("natural", "vivid", "artistic", "photographic")
QUALITIES = ("standard", "hd")


@dataclass(frozen=True)
class ModelInfo:
    """What one model can do. ``sizes`` are ``WxH`` strings in the order the model prefers."""

    name: str
    sizes: tuple[str, ...]
    max_per_call: int = 1
    supports_reference: bool = False
    supports_upscale: bool = False
    prompt_limit: int = 4000
    #: Styles the model knows natively; others are mapped (artistic->vivid, photographic->natural).
    native_styles: tuple[str, ...] = STYLES

    def size_for_aspect(self, aspect: str) -> str:
        """Map an aspect name to this model's size of that shape (largest square, widest, tallest)."""
        dims: list[tuple[str, int, int]] = []
        for size in self.sizes:
            w, h = size.split("x")
            dims.append((size, int(w), int(h)))
        if aspect == SQUARE:
            squares = [d for d in dims if d[1] == d[2]]
            pick = max(squares, key=lambda d: d[1]) if squares else dims[0]
        elif aspect == LANDSCAPE:
            pick = max(dims, key=lambda d: (d[1] / d[2], d[1] * d[2]))
        else:
            pick = max(dims, key=lambda d: (d[2] / d[1], d[1] * d[2]))
        return pick[0]

    def map_style(self, style: str) -> str:
        if style in self.native_styles:
            return style
        return {"artistic": "vivid", "photographic": "natural"}.get(style, style)


@dataclass(frozen=True)
class Capabilities:
    models: tuple[ModelInfo, ...]
    default_model: str
    #: How many calls to this provider may run at once (the fan-out semaphore).
    concurrency: int = 4

    def model(self, name: str | None) -> ModelInfo | None:
        wanted = name or self.default_model
        return next((m for m in self.models if m.name == wanted), None)


@dataclass(frozen=True)
class GenerationRequest:
    """One provider call. ``count`` is never above the model's ``max_per_call``."""

    prompt: str
    model: str
    size: str
    style: str = "natural"
    quality: str = "standard"
    count: int = 1
    reference: bytes | None = None
    seed: int = 0


@dataclass(frozen=True)
class GeneratedImage:
    data: bytes
    mime: str = "image/png"
    revised_prompt: str | None = None
    #: (width, height) when the bytes were drawn here (the local renderer): the image store then
    #: trusts them instead of decoding them again. Vendors' bytes leave it unset and are inspected.
    drawn_size: tuple[int, int] | None = None


@runtime_checkable
class ImageProvider(Protocol):
    name: str
    capabilities: Capabilities

    async def generate(self, request: GenerationRequest) -> list[GeneratedImage]:
        """Return ``request.count`` images (or fewer), or raise a ``ProviderError``."""
        ...

    async def aclose(self) -> None: ...


@runtime_checkable
class TextProvider(Protocol):
    """Rewrites prompts for /enhance and describes reference images for providers without edits."""

    name: str

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

"""The offline local renderer: always available, needs no key and no network.

It draws a deterministic picture from the prompt, so the bot runs (and is tested) anywhere. The same
prompt, size, style, seed and index give the same bytes.
"""

from __future__ import annotations

import asyncio
import hashlib
import io
import random

from PIL import Image, ImageDraw, ImageFilter

from .base import Capabilities, GeneratedImage, GenerationRequest, ModelInfo

LOCAL_SIZES = (
    "1024x1024",
    "256x256",
    "512x512",
    "1536x1024",
    "1024x1536",
    "1792x1024",
    "1024x1792",
)


def render(prompt: str, size: str, style: str, seed: int, index: int) -> bytes:
    """Render one PNG. Pure function of its arguments."""
    width, height = (int(v) for v in size.split("x"))
    digest = hashlib.sha256(f"{prompt}\x00{size}\x00{style}\x00{seed}\x00{index}".encode()).digest()
    rng = random.Random(digest)
    # Draw small, then scale: cheap at every size, and smooth.
    w, h = max(16, width // 8), max(16, height // 8)
    top = tuple(rng.randrange(256) for _ in range(3))
    bottom = tuple(rng.randrange(256) for _ in range(3))
    img = Image.new("RGB", (w, h))
    draw = ImageDraw.Draw(img)
    for y in range(h):
        t = y / max(1, h - 1)
        draw.line([(0, y), (w, y)], fill=tuple(int(a + (b - a) * t) for a, b in zip(top, bottom, strict=True)))
    shapes = 6 if style in ("vivid", "artistic") else 3
    for _ in range(shapes):
        x0, y0 = rng.randrange(w), rng.randrange(h)
        r = rng.randrange(max(2, min(w, h) // 8), max(3, min(w, h) // 2))
        colour = tuple(rng.randrange(256) for _ in range(3))
        if rng.random() < 0.5:
            draw.ellipse([x0 - r, y0 - r, x0 + r, y0 + r], fill=colour)
        else:
            draw.rectangle([x0 - r, y0 - r // 2, x0 + r, y0 + r // 2], fill=colour)
    if style in ("natural", "photographic"):
        img = img.filter(ImageFilter.GaussianBlur(1))
    img = img.resize((width, height), Image.Resampling.BILINEAR)
    out = io.BytesIO()
    img.save(out, format="PNG", compress_level=1)
    return out.getvalue()


class LocalRenderer:
    """Provider ``local``: Pillow drawings from the prompt's hash."""

    def __init__(self, name: str = "local", *, concurrency: int = 2) -> None:
        self.name = name
        self.capabilities = Capabilities(
            models=(
                ModelInfo(
                    name="local-sketch",
                    sizes=LOCAL_SIZES,
                    max_per_call=10,
                    supports_reference=True,
                    supports_upscale=True,
                ),
            ),
            default_model="local-sketch",
            concurrency=concurrency,
        )

    async def generate(self, request: GenerationRequest) -> list[GeneratedImage]:
        prompt = request.prompt
        if request.reference:
            # A reference steers the picture deterministically too.
            prompt += hashlib.sha256(request.reference).hexdigest()
        return await asyncio.to_thread(self._render_all, request, prompt)

    def _render_all(self, request: GenerationRequest, prompt: str) -> list[GeneratedImage]:
        return [
            GeneratedImage(render(prompt, request.size, request.style, request.seed, i))
            for i in range(request.count)
        ]

    async def upscale(self, image: bytes) -> GeneratedImage:
        def _up() -> bytes:
            with Image.open(io.BytesIO(image)) as src:
                big = src.convert("RGB").resize((src.width * 2, src.height * 2), Image.Resampling.LANCZOS)
            out = io.BytesIO()
            big.save(out, format="PNG", compress_level=1)
            return out.getvalue()

        return GeneratedImage(await asyncio.to_thread(_up))

    async def aclose(self) -> None:
        return None

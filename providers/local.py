"""The offline local renderer: always available, needs no key and no network.

It draws a deterministic picture from the prompt, so the bot runs (and is tested) anywhere. The same
prompt, size, style, seed and index give the same bytes.
"""

from __future__ import annotations

import functools
import hashlib
import io
import random
import zlib

from PIL import Image, ImageDraw

from bot.workers import WorkerThreads

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


#: Jobs up to this many pixels in all (one 256x256 image) are drawn on the spot, not in a thread.
INLINE_PIXELS = 256 * 256

#: Gradient stops, top to bottom: one palette entry each.
RAMP = tuple(i / 47 for i in range(48))


def render(prompt: str, size: str, style: str, seed: int, index: int) -> bytes:
    """Render one PNG. Pure function of its arguments.

    Drawn in palette mode at full size (bands of a gradient, then shapes): palette PNGs skip the
    per-row filtering that makes RGB encoding slow, so a 256x256 image costs a fraction of a millisecond.
    """
    width, height = (int(v) for v in size.split("x"))
    digest = hashlib.sha256(f"{prompt}\x00{size}\x00{style}\x00{seed}\x00{index}".encode()).digest()
    rng = random.Random(digest)
    bands = len(RAMP)
    top = [rng.randrange(256) for _ in range(3)]
    bottom = [rng.randrange(256) for _ in range(3)]
    palette = [int(a + (b - a) * t) for t in RAMP for a, b in zip(top, bottom, strict=True)]
    vivid = style in ("vivid", "artistic")
    shapes = 9 if vivid else 5
    for _ in range(shapes):
        colour = [rng.randrange(256) for _ in range(3)]
        if not vivid:  # softer: pull shape colours towards the background
            colour = [(c + m) // 2 for c, m in zip(colour, top, strict=True)]
        palette += colour
    img = _bands(width, height, bands).copy()
    img.putpalette(palette)
    draw = ImageDraw.Draw(img)
    short = min(width, height)
    for k in range(shapes):
        x0, y0 = rng.randrange(width), rng.randrange(height)
        r = rng.randrange(max(2, short // 10), max(3, short // 3))
        if rng.random() < 0.5:
            draw.ellipse([x0 - r, y0 - r, x0 + r, y0 + r], fill=bands + k)
        else:
            draw.rectangle([x0 - r, y0 - r // 2, x0 + r, y0 + r // 2], fill=bands + k)
    out = io.BytesIO()
    # Flat colour runs: zlib's RLE strategy is several times faster here, and smaller too.
    img.save(out, format="PNG", compress_level=1, compress_type=zlib.Z_RLE)
    return out.getvalue()


@functools.lru_cache(maxsize=16)
def _bands(width: int, height: int, bands: int) -> Image.Image:
    """A top-to-bottom ramp of band indices 0..bands-1, made once per size (C-speed, no Python loop)."""
    ramp = Image.linear_gradient("L").resize((width, height), Image.Resampling.NEAREST)
    return ramp.point([v * bands // 256 for v in range(256)])


class LocalRenderer:
    """Provider ``local``: Pillow drawings from the prompt's hash."""

    def __init__(self, name: str = "local", *, concurrency: int = 4) -> None:
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
        self._threads = WorkerThreads("local-renderer", threads=2)

    async def generate(self, request: GenerationRequest) -> list[GeneratedImage]:
        prompt = request.prompt
        if request.reference:
            # A reference steers the picture deterministically too.
            prompt += hashlib.sha256(request.reference).hexdigest()
        width, height = (int(v) for v in request.size.split("x"))
        if width * height * request.count <= INLINE_PIXELS:
            # Drawing this little takes less time than handing it to a thread and back.
            return self._render_all(request, prompt)
        return await self._threads.run(self._render_all, request, prompt)

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

        return GeneratedImage(await self._threads.run(_up))

    async def aclose(self) -> None:
        self._threads.close()

"""The offline local renderer: always available, needs no key and no network.

It draws a deterministic picture from the prompt, so the bot runs (and is tested) anywhere. The same
prompt, size, style, seed, index, format and background give the same bytes. Pillow draws and
encodes (PNG, WebP or JPEG, as asked); the drawing runs in a worker thread (``asyncio.to_thread``)
so the event loop keeps answering while it draws.
"""

from __future__ import annotations

import asyncio
import hashlib
import io

from PIL import Image, ImageDraw

from .base import QUALITIES, Capabilities, GeneratedImage, GenerationRequest, ModelInfo

LOCAL_SIZES = (
    "1024x1024",
    "256x256",
    "512x512",
    "1536x1024",
    "1024x1536",
    "1792x1024",
    "1024x1792",
)
LOCAL_FORMATS = ("png", "webp", "jpeg")
MIME = {"png": "image/png", "webp": "image/webp", "jpeg": "image/jpeg"}

#: Gradient bands, top to bottom: one palette entry each; the shapes' colours follow them.
BANDS = 48


def render(prompt: str, size: str, style: str, seed: int, index: int, *, fmt: str = "png",
           transparent: bool = False) -> bytes:
    """Render one image (``fmt``: png, webp or jpeg). Pure function of its arguments.

    A palette picture: a vertical gradient of ``BANDS`` colours and a few circles and bars, every
    choice read from one SHAKE-256 stream of the arguments. ``transparent``: the gradient becomes a
    transparent backdrop behind the shapes (PNG or WebP only; JPEG has no alpha).
    """
    width, height = (int(v) for v in size.split("x"))
    vivid = style in ("vivid", "artistic")
    shapes = 9 if vivid else 5
    # Every choice below is read from one hash of the arguments: 6 bytes of background, 10 a shape.
    key = f"{prompt}\x00{size}\x00{style}\x00{seed}\x00{index}".encode()
    stream = hashlib.shake_256(key).digest(6 + 10 * shapes)
    top, bottom = stream[0:3], stream[3:6]
    palette = bytearray()
    for band in range(BANDS):
        palette += bytes(a + (b - a) * band // (BANDS - 1) for a, b in zip(top, bottom, strict=True))
    img = Image.linear_gradient("L").resize((width, height), Image.Resampling.NEAREST)
    img = img.point([v * BANDS // 256 for v in range(256)]).convert("P")
    draw = ImageDraw.Draw(img)
    short = min(width, height)
    least, most = max(2, short // 10), max(3, short // 3)
    for k in range(shapes):
        shape = stream[6 + 10 * k : 16 + 10 * k]
        colour = shape[0:3]
        if not vivid:  # softer: pull shape colours towards the background
            colour = bytes((c + m) // 2 for c, m in zip(colour, top, strict=True))
        palette += colour
        x0 = int.from_bytes(shape[3:5], "big") % width
        y0 = int.from_bytes(shape[5:7], "big") % height
        r = least + int.from_bytes(shape[7:9], "big") % (most - least)
        if shape[9] < 128:
            draw.ellipse([x0 - r, y0 - r, x0 + r, y0 + r], fill=BANDS + k)
        else:
            draw.rectangle([x0 - r, y0 - r // 2, x0 + r, y0 + r // 2], fill=BANDS + k)
    img.putpalette(bytes(palette))
    return _encode(img, fmt, transparent)


def _encode(img: Image.Image, fmt: str, transparent: bool) -> bytes:
    """Let Pillow encode: PNG keeps the palette; WebP and JPEG take RGB (RGBA when transparent)."""
    out = io.BytesIO()
    if transparent:
        # Palette indices below BANDS are the gradient: the backdrop that becomes transparent.
        alpha = img.point([0] * BANDS + [255] * (256 - BANDS), "L")
        picture = img.convert("RGBA")
        picture.putalpha(alpha)
    else:
        picture = img if fmt == "png" else img.convert("RGB")
    if fmt == "png":
        picture.save(out, format="PNG", compress_level=1)
    elif fmt == "webp":
        picture.save(out, format="WEBP", quality=90, method=2)
    elif fmt == "jpeg":
        picture.save(out, format="JPEG", quality=90)
    else:
        raise ValueError(f"unknown format {fmt!r}")
    return out.getvalue()


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
                    family="local-sketch",
                    # A sketch has no quality knob, but it takes every tier so the offline bot prices and
                    # answers like a real provider.
                    qualities=QUALITIES,
                    formats=LOCAL_FORMATS,
                    backgrounds=("transparent", "opaque"),
                    max_references=1,
                ),
            ),
            default_model="local-sketch",
            concurrency=concurrency,
        )

    async def generate(self, request: GenerationRequest) -> list[GeneratedImage]:
        return await asyncio.to_thread(self._render_all, request)

    @staticmethod
    def _render_all(request: GenerationRequest) -> list[GeneratedImage]:
        prompt = request.prompt
        if request.reference:
            # A reference steers the picture deterministically too.
            prompt += hashlib.sha256(request.reference).hexdigest()
        fmt = request.output_format or "png"
        transparent = request.background == "transparent"
        width, height = (int(v) for v in request.size.split("x"))
        return [
            GeneratedImage(
                render(prompt, request.size, request.style, request.seed, i, fmt=fmt, transparent=transparent),
                mime=MIME[fmt], drawn_size=(width, height),
            )
            for i in range(request.count)
        ]

    async def upscale(self, image: bytes) -> GeneratedImage:
        def _up() -> bytes:
            with Image.open(io.BytesIO(image)) as src:
                mode = "RGBA" if "A" in src.getbands() or "transparency" in src.info else "RGB"
                big = src.convert(mode).resize((src.width * 2, src.height * 2), Image.Resampling.LANCZOS)
            out = io.BytesIO()
            big.save(out, format="PNG", compress_level=1)
            return out.getvalue()

        return GeneratedImage(await asyncio.to_thread(_up))

    async def aclose(self) -> None:
        return None

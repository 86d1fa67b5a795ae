"""The offline local renderer: always available, needs no key and no network.

It draws a deterministic picture from the prompt, so the bot runs (and is tested) anywhere. The same
prompt, size, style, seed and index give the same bytes.
"""

from __future__ import annotations

import functools
import hashlib
import io
import struct
import zlib

from PIL import Image, ImageDraw

from bot.workers import WorkerThreads

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


#: Jobs up to this many pixels in all (one 256x256 image) are drawn on the spot, not in a thread.
INLINE_PIXELS = 256 * 256

#: Gradient bands, top to bottom: one palette entry each; the shapes' colours follow them.
BANDS = 48

PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"


def render(prompt: str, size: str, style: str, seed: int, index: int) -> bytes:
    """Render one PNG. Pure function of its arguments.

    Pillow draws in palette mode on a canvas one column wider than the picture, whose first column
    stays 0: its raw bytes are then exactly PNG scanlines with filter "none", and one zlib call (RLE:
    the picture is flat runs) makes the image data. That is half the cost of Pillow's PNG encoder,
    which tries filters a flat drawing does not need.
    """
    width, height = (int(v) for v in size.split("x"))
    vivid = style in ("vivid", "artistic")
    shapes = 9 if vivid else 5
    # Every choice below is read from one hash of the arguments: 6 bytes of background, 10 a shape.
    key = f"{prompt}\x00{size}\x00{style}\x00{seed}\x00{index}".encode()
    stream = hashlib.shake_256(key).digest(6 + 10 * shapes)
    top, bottom = tuple(stream[0:3]), tuple(stream[3:6])
    palette = bytearray(_ramp(top, bottom))
    img = _canvas(width, height).copy()
    draw = ImageDraw.Draw(img)
    short = min(width, height)
    least, most = max(2, short // 10), max(3, short // 3)
    for k in range(shapes):
        shape = stream[6 + 10 * k : 16 + 10 * k]
        colour = shape[0:3]
        if not vivid:  # softer: pull shape colours towards the background
            colour = bytes((c + m) // 2 for c, m in zip(colour, top, strict=True))
        palette += colour
        x0 = int.from_bytes(shape[3:5], "big") % width + 1  # +1: past the filter column
        y0 = int.from_bytes(shape[5:7], "big") % height
        r = least + int.from_bytes(shape[7:9], "big") % (most - least)
        if shape[9] < 128:
            draw.ellipse([x0 - r, y0 - r, x0 + r, y0 + r], fill=BANDS + k)
        else:
            draw.rectangle([x0 - r, y0 - r // 2, x0 + r, y0 + r // 2], fill=BANDS + k)
    img.paste(0, (0, 0, 1, height))  # shapes may have crossed the filter column
    deflate = zlib.compressobj(1, zlib.DEFLATED, 15, 8, zlib.Z_RLE)
    data = deflate.compress(img.tobytes()) + deflate.flush()
    header = struct.pack(">IIBBBBB", width, height, 8, 3, 0, 0, 0)  # 8-bit palette, no interlace
    return b"".join((PNG_SIGNATURE, _chunk(b"IHDR", header), _chunk(b"PLTE", bytes(palette)),
                     _chunk(b"IDAT", data), _chunk(b"IEND", b"")))


def _chunk(kind: bytes, body: bytes) -> bytes:
    return struct.pack(">I", len(body)) + kind + body + struct.pack(">I", zlib.crc32(body, zlib.crc32(kind)))


def _ramp(top: tuple[int, ...], bottom: tuple[int, ...]) -> bytes:
    """BANDS RGB triples from ``top`` to ``bottom``, built with byte tables (no per-entry Python)."""
    ramp = bytearray(3 * BANDS)
    for channel, (start, end) in enumerate(zip(top, bottom, strict=True)):
        if end >= start:
            ramp[channel::3] = _STEPS[end - start].translate(_shift(start, 1))
        else:
            ramp[channel::3] = _STEPS[start - end].translate(_shift(start, -1))
    return bytes(ramp)


#: ``_STEPS[d][i]``: how far band ``i`` has moved along a ramp that moves ``d`` in all.
_STEPS = [bytes(d * i // (BANDS - 1) for i in range(BANDS)) for d in range(256)]


@functools.cache
def _shift(start: int, sign: int) -> bytes:
    """A ``bytes.translate`` table taking a step ``x`` to ``start + sign * x``."""
    return bytes((start + sign * x) & 255 for x in range(256))


@functools.lru_cache(maxsize=16)
def _canvas(width: int, height: int) -> Image.Image:
    """Band indices 0..BANDS-1 top to bottom, one extra column of 0 on the left; made once per size."""
    ramp = Image.linear_gradient("L").resize((width + 1, height), Image.Resampling.NEAREST)
    canvas = ramp.point([v * BANDS // 256 for v in range(256)])
    canvas.paste(0, (0, 0, 1, height))
    return canvas


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
                    max_references=1,
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
        width, height = (int(v) for v in request.size.split("x"))
        return [
            GeneratedImage(render(prompt, request.size, request.style, request.seed, i), drawn_size=(width, height))
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

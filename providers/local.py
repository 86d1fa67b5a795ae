"""The offline local renderer: always available, needs no key and no network.

It draws a recognisable *offline sketch* of the prompt, so the bot runs (and is tested) anywhere and a
newcomer can tell at a glance that this is a placeholder, not a broken model: the prompt's words on the
picture, colours taken from the prompt's colour words ("a red fox" is mostly red), and a small
"offline sketch" label in a corner. The same prompt, size, style, seed, index, format and background give
the same bytes. Pillow draws (its built-in font, no font files) and encodes (PNG, WebP or JPEG, as
asked); the drawing runs in a worker thread (``asyncio.to_thread``) so the event loop keeps answering.

With input images it edits offline too, so Edit, Blend and the outpainting buttons can be tried (and
tested) with no key; the same inputs, instruction and seed give the same bytes (``edit``):

- one image: that image at the requested size, tinted towards the instruction's colour words, in a thin
  seeded frame (so each result of a batch differs), with the instruction's words and the label on it;
- several images (a blend): side by side (a grid from four), each fitted into its cell, then as above;
- a mask (zoom out, pan, make square): only the mask's fully transparent pixels change (sketch content
  is drawn there); every other pixel is exactly the first image's (at its own size, in PNG). As on
  OpenAI's edits, the mask applies to the first image.
"""

from __future__ import annotations

import asyncio
import functools
import hashlib
import io
import math
import re
import unicodedata
from collections.abc import Sequence

from PIL import Image, ImageDraw, ImageFont, ImageOps, UnidentifiedImageError

from bot.errors import ProviderUnsupported

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
#: Input images one edit takes (a blend of this many is still legible as a grid).
LOCAL_MAX_INPUTS = 16
#: How far an edit's picture moves towards the instruction's first colour word.
TINT = 0.25
MIME = {"png": "image/png", "webp": "image/webp", "jpeg": "image/jpeg"}

#: Gradient bands, top to bottom: one palette entry each; the shapes' colours follow them.
BANDS = 48
#: The corner label that says what this picture is.
LABEL = "offline sketch"

RGB = tuple[int, int, int]

#: Colour words a prompt may use (whole words, any case), and the colour each stands for.
COLOUR_WORDS: dict[str, tuple[RGB, ...]] = {
    "red": ((214, 40, 40),), "orange": ((245, 130, 32),), "yellow": ((250, 215, 50),),
    "green": ((60, 170, 75),), "blue": ((40, 90, 220),), "purple": ((130, 60, 180),),
    "pink": ((245, 130, 180),), "brown": ((130, 82, 45),), "black": ((20, 20, 24),),
    "white": ((245, 245, 245),), "grey": ((128, 128, 128),), "gray": ((128, 128, 128),),
    "gold": ((212, 175, 55),), "golden": ((212, 175, 55),), "silver": ((192, 192, 200),),
    "teal": ((0, 128, 128),), "cyan": ((0, 200, 220),), "magenta": ((220, 0, 160),),
    "violet": ((143, 80, 220),), "indigo": ((75, 0, 130),), "navy": ((20, 30, 110),),
    "maroon": ((128, 0, 32),), "crimson": ((220, 20, 60),), "scarlet": ((240, 36, 0),),
    "turquoise": ((64, 224, 208),), "lime": ((150, 220, 40),), "olive": ((128, 128, 0),),
    "coral": ((255, 127, 80),), "lavender": ((181, 160, 230),), "beige": ((225, 205, 165),),
    "cream": ((255, 245, 210),), "amber": ((255, 191, 0),), "emerald": ((20, 160, 100),),
    "azure": ((0, 127, 255),), "ruby": ((200, 15, 60),),
    "rainbow": ((214, 40, 40), (245, 130, 32), (250, 215, 50), (60, 170, 75), (40, 90, 220), (130, 60, 180)),
}
_WORD = re.compile(r"[a-z]+")
#: Only this much of a long prompt is laid out: more would not fit at the smallest type anyway.
_TEXT_LIMIT = 600


def prompt_colours(prompt: str) -> list[RGB]:
    """The colours the prompt names, in the order it names them (each once); empty when it names none."""
    found: list[RGB] = []
    for word in _WORD.findall(prompt.lower()):
        for colour in COLOUR_WORDS.get(word, ()):
            if colour not in found:
                found.append(colour)
    return found


def _shade(colour: RGB, byte: int) -> RGB:
    """A seeded shade of ``colour``: up to 25% towards white or 35% towards black, so it stays that colour."""
    r, g, b = colour
    if byte < 128:
        t = byte / 127 * 0.25
        return round(r + (255 - r) * t), round(g + (255 - g) * t), round(b + (255 - b) * t)
    t = 1 - (byte - 128) / 127 * 0.35
    return round(r * t), round(g * t), round(b * t)


def render(prompt: str, size: str, style: str, seed: int, index: int, *, fmt: str = "png",
           transparent: bool = False, variant: str = "") -> bytes:
    """Render one image (``fmt``: png, webp or jpeg). Pure function of its arguments.

    A gradient of ``BANDS`` colours and a few circles and bars, every choice read from one SHAKE-256
    stream of the arguments; the colours are shades of the prompt's colour words when it has some, else
    seeded. Over it, the prompt's words on a dark panel and the "offline sketch" label. ``variant`` steers
    the picture without being drawn (a reference image's digest). ``transparent``: the gradient becomes
    a transparent backdrop behind the shapes and the words (PNG or WebP only; JPEG has no alpha).
    """
    width, height = (int(v) for v in size.split("x"))
    vivid = style in ("vivid", "artistic")
    shapes = 9 if vivid else 5
    # Every choice below is read from one hash of the arguments: 6 bytes of background, 10 a shape,
    # then 2 + 1 a shape of shading for a prompt that names its colours.
    key = f"{prompt}\x00{size}\x00{style}\x00{seed}\x00{index}\x00{variant}".encode()
    stream = hashlib.shake_256(key).digest(6 + 10 * shapes + 2 + shapes)
    named = prompt_colours(prompt)
    top, bottom = bytes(stream[0:3]), bytes(stream[3:6])
    if named:
        shading = stream[6 + 10 * shapes:]
        top = bytes(_shade(named[0], shading[0] // 2))  # the lighter half: the sky of the picture
        bottom = bytes(_shade(named[-1], 128 + shading[1] // 2))
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
        if named:
            colour = bytes(_shade(named[k % len(named)], stream[6 + 10 * shapes + 2 + k]))
        else:
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
    # Palette indices below BANDS are the gradient: the backdrop that becomes transparent.
    alpha = img.point([0] * BANDS + [255] * (256 - BANDS), "L") if transparent else None
    picture = img.convert("RGB")
    _words(picture, alpha, prompt)
    if alpha is not None:
        picture.putalpha(alpha)
    return _encode(picture, fmt)


def edit(prompt: str, size: str, style: str, seed: int, index: int, inputs: Sequence[bytes],
         mask: bytes | None = None, *, fmt: str = "png") -> bytes:
    """Edit ``inputs`` offline (see the module docstring). Pure function of its arguments.

    With ``mask``, only the pixels where the mask is fully transparent (alpha 0) change: they get a
    sketch (``render``) steered by the inputs' digest; every other pixel is the first image's, exactly
    (when it already has the requested size and the format is PNG, which is lossless)."""
    if not inputs:
        raise ValueError("an edit needs at least one input image")
    width, height = (int(v) for v in size.split("x"))
    pictures = [_open(data) for data in inputs]
    digest = hashlib.sha256(b"".join(hashlib.sha256(d).digest() for d in (*inputs, mask or b""))).hexdigest()
    if mask is not None:
        base = _fit(pictures[0], (width, height))
        where = _fit(_open(mask).convert("RGBA").getchannel("A"), (width, height), Image.Resampling.NEAREST)
        editable = where.point([255] + [0] * 255)  # alpha 0 exactly: where the model may draw
        with Image.open(io.BytesIO(render(prompt, size, style, seed, index, variant=digest))) as drawn:
            sketch = drawn.convert(base.mode)
        base.paste(sketch, (0, 0), editable)
        return _encode(base, fmt)
    base = _fit(pictures[0], (width, height)) if len(pictures) == 1 else _grid(pictures, (width, height))
    alpha = base.getchannel("A") if base.mode == "RGBA" else None
    picture = base.convert("RGB")
    named = prompt_colours(prompt)
    if named:
        picture = Image.blend(picture, Image.new("RGB", picture.size, named[0]), TINT)
    key = f"{prompt}\x00{size}\x00{style}\x00{seed}\x00{index}\x00{digest}".encode()
    stream = hashlib.shake_256(key).digest(4)
    frame = _shade(named[index % len(named)], stream[3]) if named else (stream[0], stream[1], stream[2])
    border = max(2, min(width, height) // 64)
    ImageDraw.Draw(picture).rectangle((0, 0, width - 1, height - 1), outline=frame, width=border)
    _words(picture, alpha, prompt)
    if alpha is not None:
        picture.putalpha(alpha)
    return _encode(picture, fmt)


def _open(data: bytes) -> Image.Image:
    """Decode an input image (its first frame), keeping its alpha when it has one."""
    try:
        with Image.open(io.BytesIO(data)) as img:
            img.seek(0)
            has_alpha = "A" in img.getbands() or "transparency" in img.info
            return img.convert("RGBA" if has_alpha else "RGB")
    except (UnidentifiedImageError, OSError, ValueError):
        raise ProviderUnsupported("An input image could not be read.") from None


def _fit(img: Image.Image, size: tuple[int, int],
         resample: Image.Resampling = Image.Resampling.LANCZOS) -> Image.Image:
    """``img`` at ``size``: the very same pixels when it already has it, else centred and cropped to fill."""
    if img.size == size:
        return img.copy()
    return ImageOps.fit(img, size, method=resample)


def _grid(pictures: Sequence[Image.Image], size: tuple[int, int]) -> Image.Image:
    """A blend, side by side: one row up to three inputs, else a near-square grid, each input fitted into
    its cell; a cell left over shows the inputs averaged."""
    width, height = size
    n = len(pictures)
    cols = n if n <= 3 else math.ceil(math.sqrt(n))
    rows = math.ceil(n / cols)
    mode = "RGBA" if any(p.mode == "RGBA" for p in pictures) else "RGB"
    out = Image.new(mode, size)
    cells = [(c * width // cols, r * height // rows, (c + 1) * width // cols, (r + 1) * height // rows)
             for r in range(rows) for c in range(cols)]
    for k, (x0, y0, x1, y1) in enumerate(cells):
        cell = (x1 - x0, y1 - y0)
        if k < n:
            out.paste(_fit(pictures[k].convert(mode), cell), (x0, y0))
            continue
        mean = _fit(pictures[0].convert(mode), cell)
        for j, other in enumerate(pictures[1:], start=2):
            mean = Image.blend(mean, _fit(other.convert(mode), cell), 1 / j)
        out.paste(mean, (x0, y0))
    return out


Font = ImageFont.FreeTypeFont | ImageFont.ImageFont


@functools.lru_cache(maxsize=32)
def _font(px: int) -> Font:
    """Pillow's built-in font at ``px`` pixels (no font file), loaded once per size; before Pillow 10.1
    (no sizes) its small bitmap font."""
    try:
        return ImageFont.load_default(size=px)
    except TypeError:
        return ImageFont.load_default()


def _wrap(words: list[str], font: Font, width: float) -> list[str]:
    """Greedy word wrap to ``width`` pixels; a word wider than a line is cut where it must be. Lines are
    measured as the sum of their words (each measured once) and spaces: close enough, and fast."""
    widths: dict[str, float] = {}

    def measure(word: str) -> float:
        if word not in widths:
            widths[word] = font.getlength(word)
        return widths[word]

    space = font.getlength(" ")
    lines: list[str] = []
    line, used = "", 0.0
    for word in words:
        while len(word) > 1 and measure(word) > width:
            low, high = 1, len(word) - 1  # the longest prefix that fits (at least one letter)
            while low < high:
                mid = (low + high + 1) // 2
                low, high = (mid, high) if font.getlength(word[:mid]) <= width else (low, mid - 1)
            if line:
                lines.append(line)
            lines.append(word[:low])
            line, used, word = "", 0.0, word[low:]
        w = measure(word)
        if line and used + space + w > width:
            lines.append(line)
            line, used = word, w
        elif line:
            line, used = f"{line} {word}", used + space + w
        else:
            line, used = word, w
    if line:
        lines.append(line)
    return lines


#: Letters the built-in font lacks, spelled with ones it has.
_SPELLED = str.maketrans({"ß": "ss", "æ": "ae", "Æ": "AE", "ø": "o", "Ø": "O", "œ": "oe", "Œ": "OE",
                          "ł": "l", "Ł": "L", "đ": "d", "Đ": "D", "–": "-", "—": "-", "•": "·"})


@functools.lru_cache(maxsize=4096)
def _has_glyph(char: str) -> bool:
    """Whether the built-in font draws ``char`` (rather than its empty box)."""
    if char.isascii():
        return True
    font = _font(20)
    missing, mask = font.getmask("\U000f0000"), font.getmask(char)
    return (mask.size, bytes(mask)) != (missing.size, bytes(missing))


def drawable(prompt: str) -> str:
    """The prompt as the built-in font can draw it: accents folded ("café" -> "cafe"), a few letters
    spelled out, and what it has no glyph for (other scripts, emoji) left out rather than drawn as boxes."""
    folded = "".join(c for c in unicodedata.normalize("NFKD", prompt[:_TEXT_LIMIT].translate(_SPELLED))
                     if not unicodedata.combining(c))
    return "".join(c if c.isspace() or _has_glyph(c) else " " for c in folded)


def _layout(prompt: str, width: int, height: int) -> tuple[Font, int, list[str]]:
    """The prompt's words in the largest of a few type sizes (scaled to the picture) that fits the lower
    part of it; a prompt too long even for the smallest is cut with an ellipsis. Returns the font, its
    pixel size and the lines."""
    short = min(width, height)
    words = drawable(prompt).split()
    if len(prompt) > _TEXT_LIMIT and words:
        words[-1] += "…"
    room_w, room_h = width * 0.86, height * 0.42
    largest, smallest = max(14, short // 11), max(12, short // 22)
    sizes = dict.fromkeys(largest - (largest - smallest) * step // 4 for step in range(5))
    for px in sizes:
        font = _font(px)
        lines = _wrap(words, font, room_w)
        if len(lines) * _leading(px) <= room_h:
            return font, px, lines
    fit = max(1, int(room_h // _leading(px)))
    if len(lines) > fit:
        last = lines[fit - 1]
        while last and font.getlength(last + "…") > room_w:
            last = last[:-1]
        lines = [*lines[: fit - 1], last.rstrip() + "…"]
    return font, px, lines


def _leading(px: int) -> int:
    return round(px * 1.25)


def _words(picture: Image.Image, alpha: Image.Image | None, prompt: str) -> None:
    """Draw the prompt on a dark panel near the bottom and the "offline sketch" label in the top-left
    corner: white on dark, legible over any colours. ``alpha`` (transparent pictures) gets them solid."""
    width, height = picture.size
    short = min(width, height)
    draw = ImageDraw.Draw(picture)
    solid = ImageDraw.Draw(alpha) if alpha is not None else None

    def text(at: tuple[float, float], line: str, font: Font) -> None:
        draw.text(at, line, font=font, fill=(255, 255, 255))
        if solid is not None:
            solid.text(at, line, font=font, fill=255)

    font, px, lines = _layout(prompt, width, height)
    if lines:
        pad, leading = px // 2, _leading(px)
        x0 = (width - max(font.getlength(line) for line in lines)) / 2 - pad
        y1 = height - short // 20
        box = (round(x0), y1 - leading * len(lines) - pad * 2, round(width - x0), y1)
        _panel(picture, alpha, box, radius=pad)
        y = box[1] + pad + (leading - px) // 2
        for line in lines:
            text(((width - font.getlength(line)) / 2, y), line, font)
            y += leading
    px = max(11, short // 26)
    small = _font(px)
    left, _, right, bottom = (round(v) for v in draw.textbbox((0, 0), LABEL, font=small))
    pad, margin = max(3, px // 3), max(4, short // 40)
    box = (margin, margin, margin + right - left + pad * 2, margin + bottom + pad * 2)
    _panel(picture, alpha, box, radius=pad)
    text((margin + pad - left, margin + pad), LABEL, small)


def _panel(picture: Image.Image, alpha: Image.Image | None, box: tuple[int, int, int, int], *, radius: int) -> None:
    """Darken a rounded box by about 60% (what shows through stays recognisable); solid in ``alpha``."""
    w, h = box[2] - box[0], box[3] - box[1]
    if w <= 0 or h <= 0:
        return
    mask = Image.new("L", (w, h), 0)
    ImageDraw.Draw(mask).rounded_rectangle((0, 0, w - 1, h - 1), radius=radius, fill=150)
    picture.paste((12, 12, 20), box[:2], mask)
    if alpha is not None:
        alpha.paste(255, box[:2], mask.point([0] + [255] * 255))


def _encode(picture: Image.Image, fmt: str) -> bytes:
    """Let Pillow encode: RGB, or RGBA when transparent (PNG or WebP; JPEG has no alpha)."""
    out = io.BytesIO()
    if fmt == "png":
        picture.save(out, format="PNG", compress_level=1)
    elif fmt == "webp":
        picture.save(out, format="WEBP", quality=90, method=2)
    elif fmt == "jpeg":
        picture.convert("RGB").save(out, format="JPEG", quality=90)
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
                    max_references=LOCAL_MAX_INPUTS,
                    supports_mask=True,
                ),
            ),
            default_model="local-sketch",
            concurrency=concurrency,
        )

    async def generate(self, request: GenerationRequest) -> list[GeneratedImage]:
        return await asyncio.to_thread(self._render_all, request)

    @staticmethod
    def _render_all(request: GenerationRequest) -> list[GeneratedImage]:
        fmt = request.output_format or "png"
        transparent = request.background == "transparent"
        width, height = (int(v) for v in request.size.split("x"))
        inputs = tuple(x for x in (request.reference, *request.references) if x is not None)
        if request.mask is not None and not inputs:
            raise ProviderUnsupported("A mask needs the image it applies to.")
        if len(inputs) > LOCAL_MAX_INPUTS:
            raise ProviderUnsupported(f"The local renderer takes at most {LOCAL_MAX_INPUTS} input images.")

        def one(i: int) -> bytes:
            if inputs:
                return edit(request.prompt, request.size, request.style, request.seed, i, inputs, request.mask,
                            fmt=fmt)
            return render(request.prompt, request.size, request.style, request.seed, i, fmt=fmt,
                          transparent=transparent)

        return [GeneratedImage(one(i), mime=MIME[fmt], drawn_size=(width, height)) for i in range(request.count)]

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

"""Thumbnails and the /history contact sheet (issue 13): one image for a page of up to ten generations.

A chat message carries few images well (Slack shows one preview per file; a Discord message holds ten
attachments but shows them as a mosaic without numbers), so a /history page is one sheet of numbered
tiles that line up with the numbered lines of text under it.

PNG, not WebP or JPEG: every place the bot posts (Discord, Slack's file preview, a terminal's image
viewer or a browser for the console) shows PNG, the tile numbers stay sharp (JPEG smears small text),
and transparent results keep their alpha in ``thumbnail``. The sheet is quantised to a 256-colour
palette, which keeps a ten-tile page of photographs at a few hundred kilobytes without blurring the
labels. Decoding is kept cheap: JPEG sources are decoded at a reduced scale (``Image.draft``) and
every tile is shrunk once with ``Image.thumbnail``. Pillow only; no platform, no storage.
"""

from __future__ import annotations

import functools
import io
import math
import warnings
from collections.abc import Sequence

from PIL import Image, ImageDraw, ImageFont, ImageOps

from .errors import ValidationError
from .imaging import MAX_PIXELS

#: Space between tiles and around the sheet, in pixels.
GAP = 8
#: The sheet's background, the missing tile's grey and the label colour.
BACKGROUND = (30, 31, 34)
MISSING = (110, 110, 116)
INK = (236, 236, 240)

Font = ImageFont.FreeTypeFont | ImageFont.ImageFont


def label_height(thumb: int) -> int:
    """The strip under each tile that holds its label."""
    return max(16, thumb // 8)


def sheet_size(count: int, *, thumb: int = 256, columns: int = 5) -> tuple[int, int]:
    """The (width, height) of the sheet for ``count`` tiles: at most ``columns`` to a row."""
    cols = max(1, min(columns, count))
    rows = max(1, math.ceil(count / cols))
    return cols * thumb + (cols + 1) * GAP, rows * (thumb + label_height(thumb)) + (rows + 1) * GAP


def thumbnail(image: bytes, *, edge: int = 256) -> bytes:
    """``image`` shrunk (never enlarged) to fit ``edge x edge``, upright, as PNG (alpha kept);
    ``ValidationError`` (``IMG-VALID-IMAGE``) when the bytes are not a readable image."""
    if edge < 1:
        raise ValueError("edge must be positive")
    return _png(_shrink(image, edge))


def contact_sheet(images: Sequence[bytes | None], labels: Sequence[str], *, thumb: int = 256,
                  columns: int = 5) -> bytes:
    """One PNG of numbered tiles, ``columns`` to a row, each ``labels[i]`` under ``images[i]``.

    An image that is missing (None, e.g. pruned from the store) or unreadable becomes a grey tile
    saying "missing", so one bad file never hides a whole page."""
    if len(images) != len(labels):
        raise ValueError("one label per image")
    if not images:
        raise ValueError("no images for a contact sheet")
    if thumb < 32 or columns < 1:
        raise ValueError("thumb must be at least 32 and columns at least 1")
    width, height = sheet_size(len(images), thumb=thumb, columns=columns)
    cols = max(1, min(columns, len(images)))
    strip = label_height(thumb)
    sheet = Image.new("RGB", (width, height), BACKGROUND)
    draw = ImageDraw.Draw(sheet)
    font = _font(max(10, strip * 3 // 4))
    for i, (data, label) in enumerate(zip(images, labels, strict=True)):
        row, col = divmod(i, cols)
        x = GAP + col * (thumb + GAP)
        y = GAP + row * (thumb + strip + GAP)
        tile = _tile(data, thumb)
        if tile is None:
            draw.rectangle((x, y, x + thumb - 1, y + thumb - 1), fill=MISSING)
            _centred(draw, "missing", (x, y, thumb, thumb), _font(max(10, thumb // 8)))
        else:
            sheet.paste(tile, (x + (thumb - tile.width) // 2, y + (thumb - tile.height) // 2))
        _centred(draw, _fit(draw, label, font, thumb - 4), (x, y + thumb, thumb, strip), font)
    return _png(sheet.quantize(256, method=Image.Quantize.MEDIANCUT))


def _tile(data: bytes | None, thumb: int) -> Image.Image | None:
    """The image shrunk into the tile, flattened on the sheet's background; None when unusable."""
    if data is None:
        return None
    try:
        small = _shrink(data, thumb)
    except ValidationError:
        return None
    if small.mode != "RGBA":
        return small.convert("RGB")
    flat = Image.new("RGB", small.size, BACKGROUND)
    flat.paste(small, mask=small.getchannel("A"))
    return flat


def _shrink(data: bytes, edge: int) -> Image.Image:
    """Decode (at reduced scale for JPEG) and shrink to fit ``edge``; RGB, or RGBA when it has alpha."""
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("error", Image.DecompressionBombWarning)
            with Image.open(io.BytesIO(data)) as opened:
                if opened.width * opened.height > MAX_PIXELS:
                    raise ValidationError("The image is too large to show.", code="IMG-VALID-IMAGE")
                if opened.format == "JPEG":
                    opened.draft("RGB", (edge, edge))
                img = ImageOps.exif_transpose(opened)
                img.thumbnail((edge, edge), Image.Resampling.LANCZOS)
                has_alpha = img.mode in ("RGBA", "LA", "PA") or (img.mode == "P" and "transparency" in img.info)
                return img.convert("RGBA" if has_alpha else "RGB")
    except ValidationError:
        raise
    except (Exception, Image.DecompressionBombWarning):
        raise ValidationError("The image can't be read.", code="IMG-VALID-IMAGE") from None


@functools.lru_cache(maxsize=8)
def _font(px: int) -> Font:
    """Pillow's built-in scalable font (no font file to ship), loaded once per size."""
    return ImageFont.load_default(size=px)


def _fit(draw: ImageDraw.ImageDraw, text: str, font: Font, width: int) -> str:
    """``text`` cut with an ellipsis to fit ``width`` pixels."""
    text = " ".join(text.split())
    if draw.textlength(text, font=font) <= width:
        return text
    lo, hi = 0, len(text)  # the longest prefix that fits with the ellipsis, by bisection
    while lo < hi:
        mid = (lo + hi + 1) // 2
        if draw.textlength(text[:mid] + "…", font=font) <= width:
            lo = mid
        else:
            hi = mid - 1
    return text[:lo].rstrip() + "…"


def _centred(draw: ImageDraw.ImageDraw, text: str, box: tuple[int, int, int, int], font: Font) -> None:
    x, y, w, h = box
    draw.text((x + w / 2, y + h / 2), text, fill=INK, font=font, anchor="mm")


def _png(img: Image.Image) -> bytes:
    out = io.BytesIO()
    img.save(out, "PNG")
    return out.getvalue()

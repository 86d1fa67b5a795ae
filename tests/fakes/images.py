"""Small real images for the vendor fakes (PNG bytes made with Pillow, cached per size/colour)."""

from __future__ import annotations

import functools
import io

from PIL import Image


@functools.lru_cache(maxsize=64)
def png(width: int = 64, height: int = 64, colour: tuple[int, int, int] = (200, 40, 40)) -> bytes:
    out = io.BytesIO()
    Image.new("RGB", (width, height), colour).save(out, format="PNG")
    return out.getvalue()


def jpeg(width: int = 48, height: int = 32) -> bytes:
    out = io.BytesIO()
    Image.new("RGB", (width, height), (10, 120, 200)).save(out, format="JPEG")
    return out.getvalue()


def small_for(size: str, index: int = 0) -> bytes:
    """A tiny image with the requested shape (1/16 scale) and a colour per index, so results differ."""
    w, h = (int(v) for v in size.split("x")) if "x" in size else (1024, 1024)
    return png(max(8, w // 16), max(8, h // 16), ((37 * index) % 256, 90, 160))


@functools.lru_cache(maxsize=16)
def pattern(width: int = 64, height: int = 64, seed: int = 0) -> bytes:
    """A PNG of crossing gradients (no two neighbouring rows or columns alike), for pixel-exact checks."""
    across = Image.linear_gradient("L").rotate(90).resize((width, height))
    down = Image.linear_gradient("L").resize((width, height))
    ring = Image.radial_gradient("L").resize((width, height))
    img = Image.merge("RGB", (across.point(lambda v: (v + 37 * seed) % 256), down, ring))
    out = io.BytesIO()
    img.save(out, format="PNG")
    return out.getvalue()


def mask(width: int, height: int, clear: tuple[int, int, int, int]) -> bytes:
    """A PNG mask, opaque except the box ``clear`` (x0, y0, x1, y1: fully transparent, where to draw)."""
    img = Image.new("RGBA", (width, height), (0, 0, 0, 255))
    img.paste((0, 0, 0, 0), clear)
    out = io.BytesIO()
    img.save(out, format="PNG")
    return out.getvalue()

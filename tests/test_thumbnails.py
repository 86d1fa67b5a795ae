"""Thumbnails and the /history contact sheet: one image, numbered tiles, a grey tile for a lost file."""

from __future__ import annotations

import io
import time

import pytest
from PIL import Image

from bot.errors import ValidationError
from bot.thumbnails import GAP, MISSING, contact_sheet, label_height, sheet_size, thumbnail
from providers.local import render


def encoded(img: Image.Image, fmt: str = "PNG") -> bytes:
    out = io.BytesIO()
    img.save(out, fmt)
    return out.getvalue()


def solid(w: int, h: int, colour: tuple[int, int, int], fmt: str = "PNG") -> bytes:
    return encoded(Image.new("RGB", (w, h), colour), fmt)


def opened(data: bytes) -> Image.Image:
    img = Image.open(io.BytesIO(data))
    assert img.format == "PNG"
    return img.convert("RGB")


def tile_origin(i: int, *, thumb: int = 256, columns: int = 5) -> tuple[int, int]:
    row, col = divmod(i, columns)
    return GAP + col * (thumb + GAP), GAP + row * (thumb + label_height(thumb) + GAP)


def test_ten_generations_make_two_rows_of_five() -> None:
    images = [render(f"a fox {i}", "512x512", "natural", 1, i) for i in range(10)]
    sheet = opened(contact_sheet(images, [str(i + 1) for i in range(10)]))
    assert sheet.size == sheet_size(10) == (5 * 256 + 6 * GAP, 2 * (256 + label_height(256)) + 3 * GAP)


def test_three_generations_make_one_row_of_three() -> None:
    images = [solid(300, 200, (200, 40, 40)) for _ in range(3)]
    sheet = opened(contact_sheet(images, ["1", "2", "3"]))
    assert sheet.size == (3 * 256 + 4 * GAP, 256 + label_height(256) + 2 * GAP)


def test_each_tile_shows_its_image_and_a_label_under_it() -> None:
    colours = [(220, 30, 30), (30, 200, 30), (30, 30, 220)]
    sheet = opened(contact_sheet([solid(400, 400, c) for c in colours], ["1", "2", "3"]))
    strip = label_height(256)
    blank = opened(contact_sheet([solid(400, 400, c) for c in colours], ["", "", ""]))
    for i, colour in enumerate(colours):
        x, y = tile_origin(i)
        centre = sheet.getpixel((x + 128, y + 128))
        assert isinstance(centre, tuple) and all(abs(a - b) <= 8 for a, b in zip(centre, colour, strict=True))
        label = (x, y + 256, x + 256, y + 256 + strip)
        assert sheet.crop(label).tobytes() != blank.crop(label).tobytes()  # something is drawn there
    # Different labels draw different pixels: the numbers are readable apart.
    first, second = (sheet.crop((x, y + 256, x + 256, y + 256 + strip)) for x, y in (tile_origin(0), tile_origin(1)))
    assert first.tobytes() != second.tobytes()


def test_a_missing_or_unreadable_image_becomes_a_grey_missing_tile() -> None:
    images: list[bytes | None] = [solid(256, 256, (220, 30, 30)), None, b"not an image"]
    sheet = opened(contact_sheet(images, ["1", "2", "3"]))
    for i in (1, 2):
        x, y = tile_origin(i)
        corner = sheet.getpixel((x + 4, y + 4))
        assert isinstance(corner, tuple) and all(abs(a - b) <= 8 for a, b in zip(corner, MISSING, strict=True))
        word = sheet.crop((x + 64, y + 96, x + 192, y + 160))
        lo, hi = word.convert("L").getextrema()
        assert hi - lo > 60  # "missing" is written on it


def test_shapes_are_kept_and_transparency_is_flattened_on_the_sheet() -> None:
    wide = solid(800, 200, (240, 240, 40))
    clear = encoded(Image.new("RGBA", (200, 200), (0, 0, 0, 0)))
    sheet = opened(contact_sheet([wide, clear], ["1", "2"]))
    x, y = tile_origin(0)
    top = sheet.getpixel((x + 128, y + 10))
    middle = sheet.getpixel((x + 128, y + 128))
    assert isinstance(top, tuple) and isinstance(middle, tuple)
    assert middle[0] > 200 and top[0] < 60  # 4:1 image letterboxed, not stretched
    x, y = tile_origin(1)
    assert sheet.getpixel((x + 100, y + 100)) == sheet.getpixel((2, 2))  # transparent shows the background


def test_a_long_label_is_cut_to_the_tile() -> None:
    long = contact_sheet([solid(64, 64, (1, 2, 3))], ["a very long prompt " * 20], thumb=128)
    assert opened(long).size == sheet_size(1, thumb=128)


def test_labels_and_images_must_pair_up() -> None:
    with pytest.raises(ValueError):
        contact_sheet([solid(8, 8, (0, 0, 0))], ["1", "2"])
    with pytest.raises(ValueError):
        contact_sheet([], [])


def test_thumbnail_fits_the_edge_keeps_the_shape_and_never_enlarges() -> None:
    thumb = Image.open(io.BytesIO(thumbnail(solid(1200, 600, (10, 20, 30), "JPEG"))))
    assert thumb.format == "PNG" and thumb.size == (256, 128)
    small = Image.open(io.BytesIO(thumbnail(solid(100, 50, (10, 20, 30)), edge=256)))
    assert small.size == (100, 50)
    alpha = Image.open(io.BytesIO(thumbnail(encoded(Image.new("RGBA", (512, 512), (9, 9, 9, 0))), edge=64)))
    assert alpha.size == (64, 64) and alpha.mode == "RGBA"


def test_thumbnail_of_unreadable_bytes_is_a_validation_error() -> None:
    with pytest.raises(ValidationError) as err:
        thumbnail(b"\x89PNG truncated")
    assert err.value.code == "IMG-VALID-IMAGE"


def test_a_page_of_large_jpegs_is_quick() -> None:
    big = [encoded(Image.effect_mandelbrot((3000, 2000), (-2, -1, 1, 1), 50).convert("RGB"), "JPEG")] * 10
    started = time.perf_counter()
    contact_sheet(big, [str(i) for i in range(1, 11)])
    assert time.perf_counter() - started < 3.0  # reduced-scale JPEG decoding: well under a second here

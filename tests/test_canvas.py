"""Outpainting canvases: the original keeps every pixel where it was, at a size the model makes."""

from __future__ import annotations

import io
import random

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from PIL import Image

from bot.canvas import LABELS, OPS, Canvas, available_ops, outpaint_canvas, plan_canvas, restore_original
from bot.errors import ProviderBadResponse, ValidationError
from providers.base import FreeSizes, ModelInfo, parse_size
from providers.openai_images import gpt_image

FREE = ModelInfo(name="free-16", sizes=(), free_sizes=FreeSizes(multiple=16), supports_mask=True)
GPT = gpt_image("gpt-image-2", qualities=("medium",), free=True, backgrounds=())
FIXED = ModelInfo(name="fixed-3", sizes=("1024x1024", "1536x1024", "1024x1536"), supports_mask=True)
SQUARE_ONLY = ModelInfo(name="square-only", sizes=("1024x1024",), supports_mask=True)


def noisy(w: int, h: int, seed: int = 1, mode: str = "RGB") -> bytes:
    rng = random.Random(seed)
    img = Image.frombytes(mode, (w, h), rng.randbytes(w * h * len(mode)))
    out = io.BytesIO()
    img.save(out, "PNG")
    return out.getvalue()


def pixels(data: bytes) -> Image.Image:
    return Image.open(io.BytesIO(data)).convert("RGBA")


def placed(original: bytes, box: tuple[int, int, int, int]) -> Image.Image:
    """What the original looks like at the box's size (itself when unscaled)."""
    img = pixels(original)
    return img if img.size == box[2:] else img.resize(box[2:], Image.Resampling.LANCZOS)


def crop(img: Image.Image, box: tuple[int, int, int, int]) -> Image.Image:
    x, y, w, h = box
    return img.crop((x, y, x + w, y + h))


def assert_mask_matches_box(canvas: Canvas) -> None:
    alpha = pixels(canvas.mask).getchannel("A")
    x, y, w, h = canvas.box
    assert alpha.size == parse_size(canvas.size)
    inside = alpha.crop((x, y, x + w, y + h))
    assert inside.getextrema() == (255, 255)
    outside = alpha.copy()
    outside.paste(0, (x, y, x + w, y + h))
    assert outside.getextrema() == (0, 0)


def test_every_op_has_a_label() -> None:
    assert set(LABELS) == set(OPS)
    assert LABELS["zoom-1.5"] == "Zoom out 1.5x" and LABELS["square"] == "Make square"


def test_zoom_2_doubles_the_canvas_with_the_original_in_the_middle_and_keeps_it_exactly() -> None:
    original = noisy(64, 48)
    canvas = outpaint_canvas(original, "zoom-2", FREE)
    assert canvas.size == "128x96" and canvas.box == (32, 24, 64, 48)
    image = pixels(canvas.image)
    assert image.size == (128, 96)
    assert crop(image, canvas.box).tobytes() == pixels(original).tobytes()
    # Everything around the original is transparent and open to the model.
    around = image.getchannel("A")
    around.paste(0, (32, 24, 96, 72))
    assert around.getextrema() == (0, 0)
    assert_mask_matches_box(canvas)
    # Whatever the model draws (here: a different noise over everything), the middle is the original.
    result = noisy(128, 96, seed=99)
    restored = pixels(restore_original(result, canvas, original))
    assert restored.size == (128, 96)
    assert crop(restored, canvas.box).tobytes() == pixels(original).tobytes()
    assert restored.crop((0, 0, 32, 96)).tobytes() == pixels(result).crop((0, 0, 32, 96)).tobytes()


def test_a_result_of_another_size_is_resized_to_the_canvas_before_the_original_goes_back() -> None:
    original = noisy(64, 48)
    canvas = outpaint_canvas(original, "zoom-2", FREE)
    restored = pixels(restore_original(noisy(256, 192, seed=5), canvas, original))
    assert restored.size == (128, 96)
    assert crop(restored, canvas.box).tobytes() == pixels(original).tobytes()


def test_an_opaque_result_comes_back_as_rgb_and_a_transparent_original_keeps_its_alpha() -> None:
    original = noisy(64, 48)
    canvas = outpaint_canvas(original, "zoom-1.5", FREE)
    assert Image.open(io.BytesIO(restore_original(noisy(96, 80, 3), canvas, original))).mode == "RGB"
    see_through = noisy(64, 48, mode="RGBA")
    canvas = outpaint_canvas(see_through, "zoom-1.5", FREE)
    restored = Image.open(io.BytesIO(restore_original(noisy(96, 80, 3), canvas, see_through)))
    assert restored.mode == "RGBA"
    assert crop(restored, canvas.box).tobytes() == pixels(see_through).tobytes()


@pytest.mark.parametrize(("op", "size", "box"), [
    ("pan-left", "96x48", (32, 0, 64, 48)),
    ("pan-right", "96x48", (0, 0, 64, 48)),
    ("pan-up", "64x80", (0, 32, 64, 48)),
    ("pan-down", "64x80", (0, 0, 64, 48)),
])
def test_a_pan_grows_the_canvas_by_half_a_side_and_puts_the_original_at_the_opposite_edge(
        op: str, size: str, box: tuple[int, int, int, int]) -> None:
    # pan-up of 48 rows wants 72; 80 is the nearest multiple of 16 that holds the original.
    original = noisy(64, 48)
    canvas = outpaint_canvas(original, op, FREE)
    assert (canvas.size, canvas.box) == (size, box)
    assert crop(pixels(canvas.image), canvas.box).tobytes() == pixels(original).tobytes()
    assert_mask_matches_box(canvas)


def test_make_square_takes_the_longer_side_both_ways() -> None:
    canvas = outpaint_canvas(noisy(64, 32), "square", FREE)
    assert canvas.size == "64x64" and canvas.box == (0, 16, 64, 32)
    with pytest.raises(ValidationError, match="already square") as err:
        outpaint_canvas(noisy(64, 64), "square", FREE)
    assert err.value.code == "IMG-VALID-OUTPAINT"


def test_a_canvas_beyond_the_models_limits_is_scaled_as_a_whole() -> None:
    # 300x200 zoomed 2x is 600x400: over this model's 512 edge and 512*320 pixels.
    small = ModelInfo(name="small", sizes=(), supports_mask=True,
                      free_sizes=FreeSizes(multiple=16, max_edge=512, max_pixels=512 * 320))
    original = noisy(300, 200)
    canvas = outpaint_canvas(original, "zoom-2", small)
    w, h = parse_size(canvas.size)
    assert small.size_problem(canvas.size) is None and w * h <= 512 * 320
    x, y, bw, bh = canvas.box
    assert bw < 300 and abs(bw / bh - 3 / 2) < 0.02
    assert abs(w / bw - 2) < 0.05 and abs(x + bw / 2 - w / 2) <= 1 and abs(y + bh / 2 - h / 2) <= 1
    restored = pixels(restore_original(noisy(w, h, 7), canvas, original))
    assert crop(restored, canvas.box).tobytes() == placed(original, canvas.box).tobytes()
    # The same on gpt-image-2's real limits (3840 a side, 3840*2160 pixels): 4000x3000 does not fit.
    layout = plan_canvas(2000, 1500, "zoom-2", GPT)
    assert GPT.size_problem(layout.size_label) is None and layout.box[2:] < (2000, 1500)
    assert abs(layout.size[0] / layout.box[2] - 2) < 0.02


def test_a_small_image_is_scaled_up_to_the_models_smallest_canvas() -> None:
    canvas = outpaint_canvas(noisy(64, 48), "zoom-2", GPT)
    w, h = parse_size(canvas.size)
    assert GPT.size_problem(canvas.size) is None and w * h >= 655_360
    assert abs(w / canvas.box[2] - 2) < 0.05


def test_a_fixed_size_model_gets_its_nearest_shape_with_the_layout_fitted_inside() -> None:
    square = noisy(1024, 1024)
    zoom = outpaint_canvas(square, "zoom-2", FIXED)
    assert zoom.size == "1024x1024" and zoom.box == (256, 256, 512, 512)
    left = outpaint_canvas(square, "pan-left", FIXED)
    assert left.size == "1536x1024" and left.box == (512, 0, 1024, 1024)
    up = outpaint_canvas(square, "pan-up", FIXED)
    assert up.size == "1024x1536" and up.box == (0, 512, 1024, 1024)
    # A portrait panned sideways becomes square: the original scaled to the height, at the right edge.
    tall = outpaint_canvas(noisy(1024, 1536), "pan-left", FIXED)
    assert tall.size == "1024x1024" and tall.box == (341, 0, 683, 1024)
    # A small 4:3 image zoomed out fills the 3:2 size, its shape kept, the extra room transparent.
    small = outpaint_canvas(noisy(64, 48), "zoom-2", FIXED)
    assert small.size == "1536x1024"
    assert abs(small.box[2] / small.box[3] - 4 / 3) < 0.01 and small.box[3] == 512
    for canvas in (zoom, left, up, tall, small):
        assert_mask_matches_box(canvas)


def test_a_model_that_cannot_make_a_sensible_canvas_says_why() -> None:
    with pytest.raises(ValidationError, match="square-only can't pan left") as err:
        outpaint_canvas(noisy(64, 64), "pan-left", SQUARE_ONLY)
    assert err.value.code == "IMG-VALID-OUTPAINT" and "wide enough" in err.value.message
    # The widest size is 3:2 and the image is 3:2 already: nothing to pan into.
    with pytest.raises(ValidationError, match="wide enough"):
        plan_canvas(1536, 1024, "pan-right", FIXED)
    no_square = ModelInfo(name="wide", sizes=("1536x1024",), supports_mask=True)
    with pytest.raises(ValidationError, match="no square size"):
        plan_canvas(1536, 1024, "square", no_square)
    # A free-size model at its ratio limit cannot pan further that way.
    with pytest.raises(ValidationError, match="already as wide"):
        plan_canvas(3000, 1000, "pan-left", GPT)
    no_mask = ModelInfo(name="plain", sizes=("1024x1024",))
    with pytest.raises(ValidationError, match="masked area"):
        plan_canvas(512, 512, "zoom-2", no_mask)


def test_only_the_ops_a_model_can_do_are_offered() -> None:
    assert available_ops(1024, 1024, SQUARE_ONLY) == ("zoom-1.5", "zoom-2")
    assert available_ops(1536, 1024, FIXED) == ("zoom-1.5", "zoom-2", "pan-up", "pan-down", "square")
    assert available_ops(64, 48, FREE) == OPS
    assert available_ops(64, 48, ModelInfo(name="plain", sizes=("1024x1024",))) == ()


def test_an_unknown_op_lists_the_ops() -> None:
    with pytest.raises(ValidationError) as err:
        outpaint_canvas(noisy(64, 48), "zoom-3", FREE)
    assert err.value.code == "IMG-VALID-OUTPAINT"
    assert all(op in err.value.message for op in OPS)


@pytest.mark.parametrize("data", [b"", b"not an image", noisy(64, 48)[:60]])
def test_unreadable_bytes_are_a_clear_validation_error(data: bytes) -> None:
    with pytest.raises(ValidationError, match="can't be used for outpainting") as err:
        outpaint_canvas(data, "zoom-2", FREE)
    assert err.value.code == "IMG-VALID-OUTPAINT"


def test_an_unreadable_result_is_the_providers_fault() -> None:
    original = noisy(64, 48)
    canvas = outpaint_canvas(original, "zoom-2", FREE)
    with pytest.raises(ProviderBadResponse):
        restore_original(b"garbage", canvas, original)


def test_exif_orientation_is_applied_before_the_canvas_is_built() -> None:
    img = Image.frombytes("RGB", (64, 32), random.Random(3).randbytes(64 * 32 * 3))
    exif = Image.Exif()
    exif[0x0112] = 6  # rotate 90 degrees clockwise to display
    out = io.BytesIO()
    img.save(out, "PNG", exif=exif)
    canvas = outpaint_canvas(out.getvalue(), "zoom-2", FREE)
    assert canvas.box[2:] == (32, 64) and canvas.size == "64x128"


@settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(w=st.integers(1, 160), h=st.integers(1, 160), op=st.sampled_from(OPS),
       model=st.sampled_from([FREE, FIXED, GPT, SQUARE_ONLY]), seed=st.integers(0, 2**16))
def test_the_restored_original_region_is_always_the_placed_original(
        w: int, h: int, op: str, model: ModelInfo, seed: int) -> None:
    original = noisy(w, h, seed)
    try:
        canvas = outpaint_canvas(original, op, model)
    except ValidationError as exc:
        assert exc.code == "IMG-VALID-OUTPAINT"
        assert op not in available_ops(w, h, model)
        return
    cw, ch = parse_size(canvas.size)
    assert model.size_problem(canvas.size) is None
    x, y, bw, bh = canvas.box
    assert 0 <= x and 0 <= y and x + bw <= cw and y + bh <= ch and bw * bh < cw * ch
    assert_mask_matches_box(canvas)
    image = pixels(canvas.image)
    want = placed(original, canvas.box).tobytes()
    assert crop(image, canvas.box).tobytes() == want
    restored = pixels(restore_original(noisy(cw // 2 + 1, ch // 2 + 1, seed + 1), canvas, original))
    assert restored.size == (cw, ch) and crop(restored, canvas.box).tobytes() == want


GEMINI_LIKE = ModelInfo(name="ratios", sizes=("1024x1024", "1248x832", "832x1248", "1184x864", "864x1184",
                                              "1344x768", "768x1344", "1536x672"), supports_mask=True)


@settings(max_examples=400, deadline=None)
@given(w=st.integers(1, 6000), h=st.integers(1, 6000), op=st.sampled_from(OPS),
       model=st.sampled_from([FREE, FIXED, GPT, SQUARE_ONLY, GEMINI_LIKE]))
def test_every_layout_is_a_size_the_model_makes_with_the_original_where_the_op_puts_it(
        w: int, h: int, op: str, model: ModelInfo) -> None:
    try:
        layout = plan_canvas(w, h, op, model)
    except ValidationError as exc:
        assert exc.code == "IMG-VALID-OUTPAINT"
        assert model.name in exc.message or exc.message == "The image is already square."
        return
    cw, ch = layout.size
    x, y, bw, bh = layout.box
    assert model.size_problem(layout.size_label) is None
    assert 0 <= x and 0 <= y and x + bw <= cw and y + bh <= ch and bw * bh < cw * ch
    # The original keeps its shape (each side rounded to a whole pixel).
    assert abs(bh - h * bw / w) <= 1.5 or abs(bw - w * bh / h) <= 1.5
    if op == "pan-left":
        assert x + bw == cw and x > 0
    elif op == "pan-right":
        assert x == 0 and bw < cw
    elif op == "pan-up":
        assert y + bh == ch and y > 0
    elif op == "pan-down":
        assert y == 0 and bh < ch
    else:
        assert abs(2 * x + bw - cw) <= 1 and abs(2 * y + bh - ch) <= 1
    if op == "square":
        assert abs(cw / ch - 1) <= 0.05

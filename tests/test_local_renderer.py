"""The offline local renderer: Pillow draws and encodes, in the format and background the user asked
for, through the real console, core, SQLite file and image store; and what it draws is a recognisable
offline sketch (the prompt's words, its colour words, an "offline sketch" label), checked on pixels."""

from __future__ import annotations

import dataclasses
import io
from collections.abc import Callable
from pathlib import Path

import pytest
from PIL import Image, ImageChops, ImageStat

from bot.app import build_core
from bot.console import console_context, handle_line
from bot.errors import ValidationError
from bot.models import ImagineOptions
from providers.base import GenerationRequest
from providers.local import LOCAL_FORMATS, LocalRenderer, render
from tests.doubles import ctx_for, make_config

PIL_NAME = {"png": "PNG", "webp": "WEBP", "jpeg": "JPEG"}
SUFFIX = {"png": ".png", "webp": ".webp", "jpeg": ".jpg"}


def test_the_local_model_declares_the_formats_and_backgrounds_it_makes() -> None:
    model = LocalRenderer().capabilities.model("local-sketch")
    assert model is not None
    assert model.formats == LOCAL_FORMATS == ("png", "webp", "jpeg")
    assert model.backgrounds == ("transparent", "opaque")


@pytest.mark.parametrize("fmt", LOCAL_FORMATS)
def test_every_format_is_deterministic_and_decodes_at_the_asked_size(fmt: str) -> None:
    data = render("a lighthouse at dusk", "512x512", "vivid", 3, 0, fmt=fmt)
    assert data == render("a lighthouse at dusk", "512x512", "vivid", 3, 0, fmt=fmt)
    assert data != render("a lighthouse at dusk", "512x512", "vivid", 4, 0, fmt=fmt)
    with Image.open(io.BytesIO(data)) as img:
        assert img.format == PIL_NAME[fmt] and img.size == (512, 512)
        assert len(set(img.convert("RGB").get_flattened_data())) > 20  # a drawing, not a blank


async def test_an_offline_console_imagine_with_format_webp_stores_a_webp(tmp_path: Path) -> None:
    core = build_core(make_config(tmp_path))
    async with core:
        ctx = console_context()
        reply = await handle_line(core, ctx, "/imagine a kite over the sea --format webp --size 256x256")
        assert "Saved:" in reply, reply
        [gen] = await core.store.recent_generations(ctx.identity)
        full = await core.generation(gen.id)
    assert full is not None and full.options["format"] == "webp" and full.provider == "local"
    [image] = full.images
    assert image.mime == "image/webp"
    path = core.images.path_for(image.sha256, image.mime)
    assert path.suffix == ".webp" and str(path) in reply
    with Image.open(path) as img:
        assert img.format == "WEBP" and img.size == (256, 256)


@pytest.mark.parametrize("fmt", LOCAL_FORMATS)
async def test_a_core_imagine_stores_the_format_asked_for(tmp_path: Path, fmt: str) -> None:
    core = build_core(make_config(tmp_path))
    async with core:
        result = await core.imagine(ctx_for("u"), ImagineOptions(prompt="fox", size="512x512", count=2,
                                                                  output_format=fmt))
    assert len(result.images) == 2 and result.credits_spent == 10
    for image in result.images:
        assert image.path.suffix == SUFFIX[fmt] and (image.width, image.height) == (512, 512)
        with Image.open(image.path) as img:
            assert img.format == PIL_NAME[fmt] and img.size == (512, 512)


@pytest.mark.parametrize("fmt", ["png", "webp"])
async def test_a_transparent_background_leaves_the_backdrop_clear_and_the_shapes_solid(
        tmp_path: Path, fmt: str) -> None:
    core = build_core(make_config(tmp_path))
    async with core:
        result = await core.imagine(ctx_for("u"), ImagineOptions(
            prompt="a logo", size="256x256", style="vivid", output_format=fmt, background="transparent"))
        opaque = await core.imagine(ctx_for("u"), ImagineOptions(
            prompt="a logo", size="256x256", style="vivid", output_format=fmt, background="opaque"))
    with Image.open(result.images[0].path) as img:
        assert img.format == PIL_NAME[fmt] and img.mode == "RGBA"
        alphas = set(img.getchannel("A").get_flattened_data())
    assert 0 in alphas and 255 in alphas  # clear where the backdrop was, solid where a shape is
    with Image.open(opaque.images[0].path) as img:
        assert "A" not in img.getbands() or set(img.getchannel("A").get_flattened_data()) == {255}


async def test_a_transparent_jpeg_is_refused_before_anything_is_charged(tmp_path: Path) -> None:
    core = build_core(make_config(tmp_path))
    async with core:
        with pytest.raises(ValidationError) as err:
            await core.imagine(ctx_for("u"), ImagineOptions(prompt="a logo", output_format="jpeg",
                                                             background="transparent"))
        assert "JPEG has no transparency" in err.value.message
        assert (await core.credits(ctx_for("u").identity)).balance == 50


async def test_upscaling_a_transparent_image_keeps_its_transparency(tmp_path: Path) -> None:
    core = build_core(make_config(tmp_path, IMAGEBOT_STARTING_CREDITS="200"))
    async with core:
        first = await core.imagine(ctx_for("u"), ImagineOptions(prompt="a logo", size="256x256",
                                                                 background="transparent"))
        bigger = await core.upscale(ctx_for("u"), first.generation_id, 0)
    with Image.open(bigger.images[0].path) as img:
        assert img.size == (512, 512) and img.mode == "RGBA"
        assert 0 in set(img.getchannel("A").get_flattened_data())


# -- the offline sketch: the prompt's words, its colours, the label ------------------------------------

def _rgb(prompt: str, size: str = "256x256", seed: int = 1, style: str = "natural") -> Image.Image:
    with Image.open(io.BytesIO(render(prompt, size, style, seed, 0))) as img:
        return img.convert("RGB")


def _white(img: Image.Image) -> Image.Image:
    """The pure white pixels: where the words and the label are drawn (nothing else is that white)."""
    r, g, b = (band.point([0] * 255 + [255]) for band in img.split())
    return ImageChops.multiply(ImageChops.multiply(r, g), b)


def _bright(img: Image.Image) -> Image.Image:
    """Near-white pixels (every channel above 200): the words and the label, their thin strokes too."""
    r, g, b = (band.point([0] * 201 + [255] * 55) for band in img.split())
    return ImageChops.multiply(ImageChops.multiply(r, g), b)


def _share(img: Image.Image, test: Callable[[tuple[int, int, int]], bool]) -> float:
    pixels = img.get_flattened_data()
    return sum(1 for p in pixels if test(p)) / len(pixels)


def _mean_difference(a: Image.Image, b: Image.Image) -> float:
    return sum(ImageStat.Stat(ImageChops.difference(a, b)).mean) / 3


@pytest.mark.parametrize("size", ["256x256", "1024x1024", "1792x1024"])
@pytest.mark.parametrize("style", ["natural", "vivid"])
def test_a_red_fox_is_mostly_red(size: str, style: str) -> None:
    for seed in range(3):
        img = _rgb("a red fox", size, seed, style)
        assert _share(img, lambda p: p[0] > p[1] + 60 and p[0] > p[2] + 60) > 0.75


def test_each_named_colour_shows_and_a_prompt_without_one_keeps_the_seeded_palette() -> None:
    blue = _rgb("a BLUE whale")
    assert _share(blue, lambda p: p[2] > p[0] + 60 and p[2] > p[1] + 20) > 0.75
    both = _rgb("a blue bird on a yellow flower", "512x512", 2, "vivid")
    assert _share(both, lambda p: p[2] > p[0] + 60) > 0.15  # blue
    assert _share(both, lambda p: p[0] > p[2] + 80 and p[1] > p[2] + 80) > 0.15  # yellow
    # Words that merely contain a colour ("redwood", "goldfish") name none: the seeded palette, which
    # changes with the seed.
    means = [ImageStat.Stat(_rgb("a redwood forest", seed=s)).mean for s in range(4)]
    assert max(abs(a[c] - b[c]) for a in means for b in means for c in range(3)) > 30


@pytest.mark.parametrize("prompt", ["a red fox", "a lighthouse at dusk"])
def test_different_seeds_differ_visibly(prompt: str) -> None:
    for seed in range(4):
        assert _mean_difference(_rgb(prompt, seed=seed), _rgb(prompt, seed=seed + 1)) > 8


@pytest.mark.parametrize("size", ["256x256", "1024x1024"])
def test_the_words_and_the_label_are_drawn_the_same_whatever_the_seed(size: str) -> None:
    words = _white(_rgb("a red fox", size, 1))
    assert ImageChops.difference(words, _white(_rgb("a red fox", size, 2))).getbbox() is None
    assert ImageChops.difference(words, _white(_rgb("a red hen", size, 1))).getbbox() is not None
    drawn = _bright(_rgb("a red fox", size, 1))
    width, height = drawn.size
    # The prompt in the lower part, centred; the label in the top-left corner.
    prompt_box = drawn.crop((0, height // 2, width, height)).getbbox()
    label_box = drawn.crop((0, 0, width // 2, height // 5)).getbbox()
    assert prompt_box is not None and label_box is not None
    assert abs((prompt_box[0] + prompt_box[2]) / 2 - width / 2) < width * 0.02
    assert label_box[0] < width * 0.1 and label_box[2] < width * 0.45


def test_the_words_scale_with_the_picture_and_stay_legible_when_small() -> None:
    small = _bright(_rgb("a red fox", "256x256")).crop((0, 128, 256, 256)).getbbox()
    large = _bright(_rgb("a red fox", "1024x1024")).crop((0, 512, 1024, 1024)).getbbox()
    assert small is not None and large is not None
    small_h, large_h = small[3] - small[1], large[3] - large[1]
    assert small_h >= 12  # x-height plus ascenders: readable at 256x256
    assert 3 < large_h / small_h < 5


@pytest.mark.parametrize("size", ["256x256", "1024x1792", "1792x1024"])
def test_a_long_prompt_is_wrapped_and_cut_to_fit_the_lower_half(size: str) -> None:
    prompt = "a very long prompt about a castle on a hill at sunset with dragons " * 60
    words = _bright(_rgb(prompt, size))
    width, height = words.size
    box = words.crop((0, height // 5, width, height)).getbbox()
    assert box is not None
    assert box[1] + height // 5 > height * 0.5  # still the lower half: the picture stays visible
    assert box[0] > 0 and box[2] < width and box[3] + height // 5 < height
    assert 0.25 * height < box[3] - box[1] <= 0.45 * height  # many lines, filling the room and no more


async def test_a_reference_steers_the_picture_without_being_written_on_it() -> None:
    plain = GenerationRequest(prompt="a red fox", model="local-sketch", size="256x256", style="natural",
                              quality="standard", count=1, seed=5)
    steered = dataclasses.replace(plain, reference=render("r", "256x256", "natural", 0, 0))
    [a] = await LocalRenderer().generate(plain)
    [b] = await LocalRenderer().generate(steered)
    with Image.open(io.BytesIO(a.data)) as x, Image.open(io.BytesIO(b.data)) as y:
        first, second = x.convert("RGB"), y.convert("RGB")
    assert a.data != b.data and _mean_difference(first, second) > 8
    assert ImageChops.difference(_white(first), _white(second)).getbbox() is None


def test_on_a_transparent_sketch_the_words_and_label_are_solid() -> None:
    with Image.open(io.BytesIO(render("a green logo", "256x256", "vivid", 1, 0, transparent=True))) as img:
        rgba = img.convert("RGBA")
    words = _white(rgba.convert("RGB"))
    alpha = rgba.getchannel("A")
    assert ImageChops.multiply(words, ImageChops.invert(alpha)).getbbox() is None  # no white word is see-through
    assert words.getbbox() is not None


def test_letters_the_built_in_font_lacks_are_folded_or_left_out_never_drawn_as_boxes() -> None:
    assert ImageChops.difference(_white(_rgb("un café crème")), _white(_rgb("un cafe creme"))).getbbox() is None
    assert ImageChops.difference(_white(_rgb("a 🦊 fox 狐狸")), _white(_rgb("a fox"))).getbbox() is None
    assert _white(_rgb("狐狸")).crop((0, 128, 256, 256)).getbbox() is None  # nothing drawable: no words

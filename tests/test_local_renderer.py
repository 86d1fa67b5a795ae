"""The offline local renderer: Pillow draws and encodes, in the format and background the user asked
for, through the real console, core, SQLite file and image store."""

from __future__ import annotations

import io
from pathlib import Path

import pytest
from PIL import Image

from bot.app import build_core
from bot.console import console_context, handle_line
from bot.errors import ValidationError
from bot.models import ImagineOptions
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

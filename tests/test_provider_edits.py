"""Edits, blends and masked edits (outpainting) on every provider: the real ``openai`` and ``google-genai``
clients against the loopback fakes, the offline renderer's pixels, and the generator choosing a model
that can take a plan's input images and mask."""

from __future__ import annotations

import base64
import dataclasses
import io
from collections.abc import AsyncIterator
from pathlib import Path

import openai
import pytest
from PIL import Image, ImageChops, ImageStat

from bot.app import build_core
from bot.errors import ProviderBadResponse, ProviderUnsupported, ValidationError
from bot.generation import fit_inputs
from bot.models import ImagineOptions
from bot.validation import Plan
from providers.base import GenerationRequest, ModelInfo
from providers.compat import XAIImages, build_compat
from providers.google_images import GoogleImages, build_google
from providers.local import LocalRenderer, edit
from providers.openai_images import (
    GPT_CALL,
    GPT_STANDARD_SIZES,
    INPUT_FIDELITY,
    OpenAIImages,
    OpenAIModels,
    build_openai,
    make_client,
)
from providers.settings import client_settings
from tests.fakes.google_api import FakeGoogle
from tests.fakes.harness import CTX, OPENAI_KEY, XAI_KEY, google_env, make_config, openai_env
from tests.fakes.images import mask, pattern, png
from tests.fakes.openai_api import EDIT_FILL, FakeOpenAI

FAST = """
[providers.openai]
timeout = 2
text_timeout = 2
max_retries = 0

[providers.google]
timeout = 2
max_retries = 0

[providers.xai]
timeout = 2
max_retries = 0
"""
SUNBURST = "gpt-image-2.5-sunburst"
SIDE = 1024
#: The left quarter is new canvas (zoom out / pan left): the model may draw only there.
CLEAR = (0, 0, SIDE // 4, SIDE)


@pytest.fixture
async def oai() -> AsyncIterator[FakeOpenAI]:
    async with FakeOpenAI() as fake:
        yield fake


@pytest.fixture
async def goo() -> AsyncIterator[FakeGoogle]:
    async with FakeGoogle() as fake:
        yield fake


def _openai(tmp_path: Path, oai: FakeOpenAI) -> OpenAIModels:
    [provider] = build_openai(make_config(tmp_path, openai_env(oai.base_url), FAST))
    assert isinstance(provider, OpenAIModels)
    return provider


def _xai(tmp_path: Path, oai: FakeOpenAI) -> XAIImages:
    [xai] = build_compat(make_config(tmp_path, {"XAI_API_KEY": XAI_KEY, "XAI_BASE_URL": oai.base_url}, FAST))
    assert isinstance(xai, XAIImages)
    return xai


def _rgba(data: bytes) -> Image.Image:
    with Image.open(io.BytesIO(data)) as img:
        return img.convert("RGBA")


def _outside(img: Image.Image, box: tuple[int, int, int, int]) -> Image.Image:
    """``img`` with ``box`` blanked: what must equal the original after a masked edit."""
    out = img.copy()
    out.paste((0, 0, 0, 0), box)
    return out


# -- OpenAI: images.edit with several images, a mask, input_fidelity -------------------------------------


async def test_a_blend_sends_every_input_image_to_images_edit(tmp_path: Path, oai: FakeOpenAI) -> None:
    provider = _openai(tmp_path, oai)
    inputs = [png(40, 40, (200, 0, 0)), png(40, 40, (0, 200, 0)), png(32, 48, (0, 0, 200)), pattern(50, 50, 1)]
    try:
        images = await provider.generate(GenerationRequest("the three of them together", SUNBURST, "1024x1024",
                                                           reference=inputs[0], references=tuple(inputs[1:])))
    finally:
        await provider.aclose()
    assert len(images) == 1
    [got] = oai.edit_inputs
    assert got.kind == "multipart" and got.model == SUNBURST and got.images == inputs and got.mask is None
    [call] = oai.calls("edits")
    assert call.fields.count("image[]") == 4 and "image" not in call.fields  # a list goes as image[]
    assert "input_fidelity" not in call.body and "mask" not in call.fields
    assert oai.calls("generations") == []


async def test_one_image_goes_as_the_plain_image_field(tmp_path: Path, oai: FakeOpenAI) -> None:
    provider = _openai(tmp_path, oai)
    try:
        await provider.generate(GenerationRequest("make it blue", "gpt-image-2", "1024x1024", reference=png()))
    finally:
        await provider.aclose()
    [call] = oai.calls("edits")
    assert call.fields.count("image") == 1 and "image[]" not in call.fields
    assert "input_fidelity" not in call.body  # gpt-image-2: "omit this parameter"


async def test_a_mask_is_sent_and_only_its_transparent_pixels_change(tmp_path: Path, oai: FakeOpenAI) -> None:
    provider = _openai(tmp_path, oai)
    original, where = pattern(SIDE, SIDE), mask(SIDE, SIDE, CLEAR)
    try:
        [image] = await provider.generate(GenerationRequest("extend the meadow", SUNBURST, f"{SIDE}x{SIDE}",
                                                            reference=original, mask=where))
    finally:
        await provider.aclose()
    [got] = oai.edit_inputs
    assert got.mask == where and got.images == [original]
    [call] = oai.calls("edits")
    assert call.files["mask"] == where and call.fields.count("mask") == 1
    result, before = _rgba(image.data), _rgba(original)
    assert result.size == (SIDE, SIDE)
    assert ImageChops.difference(_outside(result, CLEAR), _outside(before, CLEAR)).getbbox() is None
    assert set(result.crop(CLEAR).get_flattened_data()) == {(*EDIT_FILL, 255)}


async def test_a_streamed_masked_edit_keeps_the_original_too(tmp_path: Path, oai: FakeOpenAI) -> None:
    provider = _openai(tmp_path, oai)
    previews: list[int] = []

    async def sink(data: bytes, index: int) -> None:
        previews.append(index)

    original, where = pattern(SIDE, SIDE, 2), mask(SIDE, SIDE, CLEAR)
    try:
        [image] = await provider.generate(GenerationRequest(
            "extend it", SUNBURST, f"{SIDE}x{SIDE}", reference=original, mask=where, previews=1, on_preview=sink))
    finally:
        await provider.aclose()
    assert previews == [0] and oai.calls("edits")[0].body["stream"] == "true"
    result = _rgba(image.data)
    assert ImageChops.difference(_outside(result, CLEAR), _outside(_rgba(original), CLEAR)).getbbox() is None


async def test_input_fidelity_goes_only_to_a_model_the_sdk_says_takes_it(tmp_path: Path, oai: FakeOpenAI) -> None:
    """``image_edit_params.py``: high|low on gpt-image-1.5, omitted for gpt-image-2. 1.5 is retired at
    OpenAI; an operator's service may still serve it, so the mechanism is checked on a fake that does."""
    oai.retired.discard("gpt-image-1.5")
    config = make_config(tmp_path, openai_env(oai.base_url), FAST)
    legacy = ModelInfo("gpt-image-1.5", sizes=GPT_STANDARD_SIZES, supports_reference=True, max_references=16,
                       supports_mask=True, family="gpt-image-1.5", qualities=("low", "medium", "high"))
    call = dataclasses.replace(GPT_CALL, input_fidelity=INPUT_FIDELITY["gpt-image-1.5"])
    settings = client_settings(config, "openai")
    old = OpenAIImages("legacy", make_client(OPENAI_KEY, oai.base_url, settings), (legacy,),
                       {"gpt-image-1.5": call}, key_env="OPENAI_API_KEY", settings=settings)
    current = _openai(tmp_path, oai)
    try:
        await old.generate(GenerationRequest("keep her face", "gpt-image-1.5", "1024x1024", reference=png()))
        await current.generate(GenerationRequest("keep her face", SUNBURST, "1024x1024", reference=png()))
    finally:
        await old.aclose()
        await current.aclose()
    assert [e.input_fidelity for e in oai.edit_inputs] == ["high", None]
    first, second = oai.calls("edits")
    assert first.body["input_fidelity"] == "high" and "input_fidelity" not in second.body


async def test_the_fake_refuses_what_images_edit_refuses(oai: FakeOpenAI) -> None:
    client = openai.AsyncOpenAI(api_key=OPENAI_KEY, base_url=oai.base_url, max_retries=0, timeout=5)
    one = ("a.png", png(), "image/png")
    try:
        with pytest.raises(openai.BadRequestError) as fidelity:
            await client.images.edit(model="gpt-image-2", prompt="x", image=one, input_fidelity="high")
        assert fidelity.value.code == "invalid_input_fidelity_model"
        assert "does not support the 'input_fidelity' parameter" in fidelity.value.message
        with pytest.raises(openai.BadRequestError) as size:
            await client.images.edit(model=SUNBURST, prompt="x", image=one, mask=("m.png", mask(32, 32, CLEAR)))
        assert size.value.code == "invalid_mask" and "same dimensions" in size.value.message
        with pytest.raises(openai.BadRequestError) as opaque:
            await client.images.edit(model=SUNBURST, prompt="x", image=one, mask=("m.png", png()))
        assert opaque.value.code == "invalid_mask" and "alpha" in opaque.value.message
        with pytest.raises(openai.BadRequestError) as many:
            await client.images.edit(model=SUNBURST, prompt="x", image=[one] * 17)
        assert "at most 16" in many.value.message
        with pytest.raises(openai.BadRequestError) as bad:
            await client.images.edit(model=SUNBURST, prompt="x", image=[one, ("b.png", b"not an image", "image/png")])
        assert bad.value.code == "invalid_image_file" and "for image 2" in bad.value.message
        fine = await client.images.edit(model=SUNBURST, prompt="x", image=[one] * 16, size="1024x1024")
        assert fine.data and len(oai.edit_inputs[-1].images) == 16
    finally:
        await client.close()


async def test_a_mask_of_the_wrong_size_is_a_refused_call_not_a_silent_edit(tmp_path: Path, oai: FakeOpenAI) -> None:
    provider = _openai(tmp_path, oai)
    try:
        with pytest.raises(ProviderBadResponse) as info:
            await provider.generate(GenerationRequest("x", SUNBURST, "1024x1024", reference=png(64, 64),
                                                      mask=mask(32, 32, (0, 0, 8, 8))))
    finally:
        await provider.aclose()
    assert "HTTP 400" in info.value.message and OPENAI_KEY not in info.value.message


async def test_the_2_6_models_take_one_input_image_until_the_sdk_says_more(tmp_path: Path, oai: FakeOpenAI) -> None:
    provider = _openai(tmp_path, oai)
    caps = {m.name: m for m in provider.capabilities.models}
    assert caps[SUNBURST].max_references == 16 and caps["gpt-image-2"].max_references == 16
    assert caps["gpt-image-2.6-flare"].max_references == 1 and caps["gpt-image-2.6-flare"].supports_mask
    try:
        with pytest.raises(ProviderUnsupported):
            await provider.generate(GenerationRequest("x", "gpt-image-2.6-flare", "1024x1024", reference=png(),
                                                      references=(png(),)))
    finally:
        await provider.aclose()
    assert oai.calls("edits") == []  # refused here, never half-sent


# -- xAI: JSON edits with data URLs, up to three images, no mask -----------------------------------------


async def test_xai_edits_are_json_with_data_urls(tmp_path: Path, oai: FakeOpenAI) -> None:
    xai = _xai(tmp_path, oai)
    for m in xai.capabilities.models:
        assert m.supports_reference and m.max_references == 3 and not m.supports_mask
    first, second = png(30, 20, (250, 0, 0)), png(20, 30, (0, 0, 250))
    try:
        [one] = await xai.generate(GenerationRequest("make it night", "grok-imagine-image", "1408x768",
                                                     reference=first))
        [two] = await xai.generate(GenerationRequest("both in a park", "grok-imagine-image-quality", "1024x1024",
                                                     reference=first, references=(second,)))
    finally:
        await xai.aclose()
    assert one.data and two.data
    single, double = oai.calls("edits")
    assert single.headers["Content-Type"].startswith("application/json")
    assert single.body["image"]["url"] == "data:image/png;base64," + base64.b64encode(first).decode()
    assert "images" not in single.body and (single.body["aspect_ratio"], single.body["resolution"]) == ("16:9", "1k")
    assert "size" not in single.body and single.body["response_format"] == "b64_json"
    assert [i["url"].split(",")[0] for i in double.body["images"]] == ["data:image/png;base64"] * 2
    assert "image" not in double.body
    assert [e.images for e in oai.edit_inputs] == [[first], [first, second]]
    assert all(e.kind == "json" for e in oai.edit_inputs) and oai.calls("generations") == []


async def test_xai_is_never_sent_a_mask_or_a_fourth_image(tmp_path: Path, oai: FakeOpenAI) -> None:
    xai = _xai(tmp_path, oai)
    try:
        with pytest.raises(ProviderUnsupported):
            await xai.generate(GenerationRequest("x", "grok-imagine-image", "1024x1024", reference=png(),
                                                 references=(png(), png(), png())))
        with pytest.raises(ProviderUnsupported):
            await xai.generate(GenerationRequest("x", "grok-imagine-image", "1024x1024", reference=png(),
                                                 mask=mask(64, 64, (0, 0, 8, 8))))
    finally:
        await xai.aclose()
    assert oai.calls("edits") == []


async def test_a_compatible_service_declares_its_edits_in_its_table(tmp_path: Path, oai: FakeOpenAI) -> None:
    toml = (f'[providers.mysd]\nbase_url = "{oai.base_url}"\nmodels = [{{ name = "sd-inpaint", edits = true, '
            'max_references = 2, mask = true }, "sd-plain"]\n')
    [service] = build_compat(make_config(tmp_path, {}, toml))
    caps = {m.name: m for m in service.capabilities.models}
    assert (caps["sd-inpaint"].max_references, caps["sd-inpaint"].supports_mask) == (2, True)
    assert (caps["sd-plain"].supports_reference, caps["sd-plain"].supports_mask) == (False, False)
    try:
        await service.generate(GenerationRequest("x", "sd-inpaint", "1024x1024", reference=png(64, 64),
                                                 references=(png(),), mask=mask(64, 64, (0, 0, 8, 8))))
    finally:
        await service.aclose()
    [got] = oai.edit_inputs
    assert len(got.images) == 2 and got.mask is not None


# -- Gemini: each input image its own part; no mask -------------------------------------------------------


async def test_gemini_gets_each_input_image_as_its_own_part(tmp_path: Path, goo: FakeGoogle) -> None:
    [provider] = build_google(make_config(tmp_path, google_env(goo.base_url), FAST))
    inputs = (png(32, 32, (255, 0, 0)), png(16, 24, (0, 255, 0)), pattern(20, 20, 3))
    try:
        await provider.generate(GenerationRequest("the three as one poster", "gemini-nano-banana-2.1", "1024x1024",
                                                  reference=inputs[0], references=inputs[1:]))
    finally:
        await provider.aclose()
    [call] = goo.calls("gemini")
    assert goo.input_images(call) == list(inputs)
    parts = [p for c in call.body["contents"] for p in c["parts"]]
    assert [("inlineData" in p, "text" in p) for p in parts] == [(True, False)] * 3 + [(False, True)]
    assert parts[-1]["text"] == "the three as one poster"


async def test_gemini_declares_no_mask_and_refuses_one_without_calling(tmp_path: Path, goo: FakeGoogle) -> None:
    [provider] = build_google(make_config(tmp_path, google_env(goo.base_url), FAST))
    assert isinstance(provider, GoogleImages)
    for m in provider.capabilities.models:
        assert m.supports_reference and m.max_references == 14 and not m.supports_mask
    try:
        with pytest.raises(ProviderUnsupported):
            await provider.generate(GenerationRequest("x", "gemini-nano-banana-2.1", "1024x1024", reference=png(),
                                                      mask=mask(64, 64, (0, 0, 8, 8))))
        with pytest.raises(ProviderUnsupported):
            await provider.generate(GenerationRequest("x", "gemini-nano-banana-2.1", "1024x1024", reference=png(),
                                                      references=(png(),) * 14))
    finally:
        await provider.aclose()
    assert goo.calls("gemini") == []


async def test_the_gemini_fake_refuses_a_fifteenth_image(goo: FakeGoogle) -> None:
    from google import genai
    from google.genai import errors, types

    client = genai.Client(api_key="k", http_options=types.HttpOptions(base_url=goo.base_url, timeout=5000))
    part = types.Part.from_bytes(data=png(), mime_type="image/png")
    config = types.GenerateContentConfig(response_modalities=["IMAGE"])
    try:
        with pytest.raises(errors.ClientError) as info:
            await client.aio.models.generate_content(model="gemini-nano-banana-2.1", contents=[*[part] * 15, "x"],
                                                     config=config)
        ok = await client.aio.models.generate_content(model="gemini-nano-banana-2.1", contents=[*[part] * 14, "x"],
                                                      config=config)
    finally:
        await client.aio.aclose()
    assert info.value.code == 400 and "at most 14" in str(info.value.message)
    assert ok.candidates


# -- the offline renderer ---------------------------------------------------------------------------------


def _request(**kw: object) -> GenerationRequest:
    return GenerationRequest(**{"prompt": "make the sky red", "model": "local-sketch", "size": "256x256",
                                "seed": 3, **kw})  # type: ignore[arg-type]


async def test_the_local_renderer_declares_edits_blends_and_masks() -> None:
    model = LocalRenderer().capabilities.model("local-sketch")
    assert model is not None and model.supports_reference and model.supports_mask and model.max_references == 16


async def test_a_local_masked_edit_changes_only_the_transparent_pixels() -> None:
    original, box = pattern(256, 256, 5), (0, 64, 256, 128)
    [image] = await LocalRenderer().generate(_request(reference=original, mask=mask(256, 256, box)))
    assert image.drawn_size == (256, 256)
    result, before = _rgba(image.data), _rgba(original)
    assert ImageChops.difference(_outside(result, box), _outside(before, box)).getbbox() is None  # exactly kept
    changed = ImageChops.difference(result.crop(box), before.crop(box)).convert("L").point([0] + [255] * 255)
    assert sum(1 for v in changed.get_flattened_data() if v) > 0.9 * 256 * 64  # sketch content drawn there
    [again] = await LocalRenderer().generate(_request(reference=original, mask=mask(256, 256, box)))
    assert again.data == image.data


async def test_a_local_edit_is_the_reference_with_the_instruction_on_it() -> None:
    original = pattern(256, 256, 7)
    [a] = await LocalRenderer().generate(_request(reference=original))
    [b] = await LocalRenderer().generate(_request(reference=original))
    [c] = await LocalRenderer().generate(_request(reference=original, seed=4))
    assert a.data == b.data and a.data != c.data
    result, before = _rgba(a.data).convert("RGB"), _rgba(original).convert("RGB")
    assert ImageStat.Stat(result).mean[0] > ImageStat.Stat(before).mean[0] + 5  # "red": tinted towards red
    middle = (40, 40, 216, 120)  # above the words, inside the frame: the reference shows through, tinted
    moved = ImageStat.Stat(ImageChops.difference(result.crop(middle), before.crop(middle))).mean
    assert 0 < max(moved) < 0.3 * 255
    assert sum(1 for p in result.crop((0, 128, 256, 256)).get_flattened_data() if p == (255, 255, 255)) > 50


async def test_a_local_blend_puts_the_inputs_side_by_side_at_the_asked_size() -> None:
    red, blue = png(50, 80, (230, 0, 0)), png(80, 50, (0, 0, 230))
    [image] = await LocalRenderer().generate(_request(prompt="together", size="512x512", reference=red,
                                                      references=(blue,)))
    result = _rgba(image.data).convert("RGB")
    assert result.size == (512, 512)
    assert result.getpixel((128, 100)) == (230, 0, 0) and result.getpixel((384, 100)) == (0, 0, 230)
    four = edit("four", "512x512", "natural", 0, 0, [red, blue, red, blue])
    grid = _rgba(four).convert("RGB")
    assert grid.getpixel((128, 100)) == (230, 0, 0) and grid.getpixel((384, 100)) == (0, 0, 230)
    assert grid.getpixel((128, 300)) == (230, 0, 0) and grid.getpixel((384, 300)) == (0, 0, 230)


# -- the generator picks a model that can take the inputs ------------------------------------------------


def _both(oai: FakeOpenAI, goo: FakeGoogle, order: str) -> dict[str, str]:
    return {**openai_env(oai.base_url), **google_env(goo.base_url), "XAI_API_KEY": XAI_KEY,
            "XAI_BASE_URL": oai.base_url, "IMAGEBOT_PROVIDERS": order}


async def test_a_masked_plan_skips_the_model_without_mask_support(tmp_path: Path, oai: FakeOpenAI,
                                                                  goo: FakeGoogle) -> None:
    core = build_core(make_config(tmp_path, _both(oai, goo, "google,openai"), FAST))
    original, where = pattern(SIDE, SIDE, 9), mask(SIDE, SIDE, CLEAR)
    async with core:
        plan = core.plan(CTX, ImagineOptions("zoom out: more meadow", size=f"{SIDE}x{SIDE}"))
        assert plan.attempts[0].provider.name == "google"
        masked = dataclasses.replace(plan, reference=original, mask=where)
        fitted = fit_inputs(masked, core.registry)
        assert [a.provider.name for a in fitted.attempts] == ["openai"]
        outcome = await core.generator.imagine(masked, None, request_id="req-mask", user="u")
        data = core.generator.load(outcome.images[0].sha256, outcome.images[0].mime)
    assert outcome.provider == "openai" and outcome.model == SUNBURST
    assert goo.calls("gemini") == []
    [got] = oai.edit_inputs
    assert got.mask == where
    result = _rgba(data)
    assert ImageChops.difference(_outside(result, CLEAR), _outside(_rgba(original), CLEAR)).getbbox() is None


async def test_a_masked_plan_no_provider_can_serve_is_refused_naming_who_can(tmp_path: Path, oai: FakeOpenAI,
                                                                            goo: FakeGoogle) -> None:
    core = build_core(make_config(tmp_path, _both(oai, goo, "google,xai"), FAST))
    async with core:
        plan = core.plan(CTX, ImagineOptions("zoom out", size="1024x1024"))
        masked = dataclasses.replace(plan, reference=pattern(SIDE, SIDE), mask=mask(SIDE, SIDE, CLEAR))
        with pytest.raises(ValidationError) as info:
            fit_inputs(masked, core.registry)
        with pytest.raises(ValidationError) as again:
            await core.generator.imagine(masked, None, request_id="req-none", user="u")
        with pytest.raises(ValidationError) as bare:
            fit_inputs(dataclasses.replace(plan, mask=mask(SIDE, SIDE, CLEAR)), core.registry)
    assert info.value.code == again.value.code == bare.value.code == "IMG-VALID-MASK"
    message = info.value.message
    assert "google, xai" in message and "Providers that can: openai, local" in message
    assert "Nothing was charged" in message
    assert oai.calls("edits") == [] and oai.calls("generations") == [] and goo.calls("gemini") == []


async def test_a_blend_too_big_for_one_provider_goes_to_one_that_takes_it(tmp_path: Path, oai: FakeOpenAI,
                                                                          goo: FakeGoogle) -> None:
    core = build_core(make_config(tmp_path, _both(oai, goo, "xai,openai"), FAST))
    inputs = tuple(png(32, 32, (60 * i, 0, 0)) for i in range(4))
    async with core:
        plan = dataclasses.replace(core.plan(CTX, ImagineOptions("all four", size="1024x1024")),
                                   reference=inputs[0], references=inputs[1:])
        outcome = await core.generator.imagine(plan, None, request_id="req-four", user="u")
        three = dataclasses.replace(plan, references=inputs[1:3])
        by_xai = await core.generator.imagine(three, None, request_id="req-three", user="u")
        only_xai = dataclasses.replace(plan, attempts=plan.attempts[:1])
        with pytest.raises(ValidationError) as info:
            fit_inputs(only_xai, core.registry)
    assert outcome.provider == "openai" and by_xai.provider == "xai"
    assert [(e.kind, len(e.images)) for e in oai.edit_inputs] == [("multipart", 4), ("json", 3)]
    assert info.value.code == "IMG-VALID-REFERENCE" and "4 input images" in info.value.message
    assert "openai" in info.value.message


async def test_a_model_without_images_gets_each_input_described(tmp_path: Path, oai: FakeOpenAI) -> None:
    toml = FAST + f'\n[providers.mysd]\nbase_url = "{oai.base_url}"\nmodels = ["sd15"]\n'
    env = {**openai_env(oai.base_url), "IMAGEBOT_PROVIDERS": "mysd", "IMAGEBOT_ENHANCER": "openai"}
    core = build_core(make_config(tmp_path, env, toml))
    async with core:
        plan = core.plan(CTX, ImagineOptions("a castle", size="1024x1024"))
        plan = dataclasses.replace(plan, reference=png(30, 20), references=(png(20, 30), png(40, 40)))
        assert fit_inputs(plan, core.registry) is plan  # nothing to swap: it reads descriptions instead
        outcome = await core.generator.imagine(plan, None, request_id="req-words", user="u")
    assert outcome.provider == "mysd" and len(oai.calls("chat")) == 3 and oai.calls("edits") == []
    [call] = oai.calls("generations")
    assert call.body["prompt"].startswith("a castle. Combining the 3 references: (1) A red square")
    assert "(3) A red square" in call.body["prompt"]


async def test_fitting_is_a_no_op_without_inputs(tmp_path: Path) -> None:
    core = build_core(make_config(tmp_path, {}, FAST))
    async with core:
        plan: Plan = core.plan(CTX, ImagineOptions("a fox"))
        assert fit_inputs(plan, core.registry) is plan


async def test_a_retired_mask_model_makes_room_for_the_next_one_that_takes_a_mask(tmp_path: Path, oai: FakeOpenAI,
                                                                                 goo: FakeGoogle) -> None:
    core = build_core(make_config(tmp_path, _both(oai, goo, "openai,google"), FAST))
    original, where = pattern(SIDE, SIDE, 4), mask(SIDE, SIDE, CLEAR)
    async with core:
        plan = core.plan(CTX, ImagineOptions("zoom out", size=f"{SIDE}x{SIDE}"))
        oai.retired.add(SUNBURST)
        outcome = await core.generator.imagine(dataclasses.replace(plan, reference=original, mask=where), None,
                                               request_id="req-retired", user="u")
    assert outcome.provider == "openai" and outcome.model != SUNBURST  # the listed snapshot, or another family
    assert [(e.model, e.mask == where) for e in oai.edit_inputs] == [(SUNBURST, True), (outcome.model, True)]
    assert goo.calls("gemini") == []  # the same provider's next mask model, before a provider without masks

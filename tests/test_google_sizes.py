"""Every size each Gemini image family declares maps to the right ImageConfig and comes back at the
documented pixels; a size a model cannot make is never offered (nor asked for)."""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from bot.errors import ProviderBadResponse
from providers.base import GenerationRequest, parse_size
from providers.google_images import FAMILIES, GoogleImages, build_google
from storage.images import inspect_image
from tests.fakes.google_api import FakeGoogle
from tests.fakes.harness import google_env as _google_env
from tests.fakes.harness import make_config

FAST = "[providers.google]\ntimeout = 2\nmax_retries = 0\n"

#: Google's image-generation guide: the 1K pixels per ratio (2K/4K are 2x/4x, 512 is half) and what each
#: model takes, written out here independently of the provider's tables.
DOCUMENTED_1K = {"1:1": "1024x1024", "3:2": "1264x848", "2:3": "848x1264", "4:3": "1200x896",
                 "3:4": "896x1200", "5:4": "1152x928", "4:5": "928x1152", "16:9": "1376x768",
                 "9:16": "768x1376", "21:9": "1584x672", "4:1": "2048x512", "1:4": "512x2048",
                 "8:1": "3072x384", "1:8": "384x3072"}
STANDARD = {"1:1", "3:2", "2:3", "4:3", "3:4", "5:4", "4:5", "16:9", "9:16", "21:9"}
WIDE = {"4:1", "1:4", "8:1", "1:8"}
EXPECTED = {
    "gemini-nano-banana-2.1": (STANDARD | WIDE, {"1K", "2K", "4K"}),
    "gemini-3.1-flash-image": (STANDARD | WIDE, {"512", "1K", "2K", "4K"}),
    "gemini-3-pro-image": (STANDARD, {"1K", "2K", "4K"}),
    "gemini-3.1-flash-lite-image": (STANDARD | WIDE, {"1K"}),
}
FACTOR = {"512": 0.5, "1K": 1, "2K": 2, "4K": 4}


def documented(aspect: str, tier: str) -> str:
    w, h = parse_size(DOCUMENTED_1K[aspect])
    return f"{int(w * FACTOR[tier])}x{int(h * FACTOR[tier])}"


@pytest.fixture
async def fake() -> AsyncIterator[FakeGoogle]:
    server = FakeGoogle()
    async with server:
        yield server
    assert server.calls("imagen") == []


@pytest.fixture
async def provider(tmp_path: Path, fake: FakeGoogle) -> AsyncIterator[GoogleImages]:
    [built] = build_google(make_config(tmp_path, _google_env(fake.base_url), FAST))
    try:
        yield built
    finally:
        await built.aclose()


def test_each_family_declares_exactly_its_documented_sizes() -> None:
    assert {f.template.name for f in FAMILIES} == set(EXPECTED)
    for family in FAMILIES:
        ratios, tiers = EXPECTED[family.template.name]
        want = {documented(a, t) for a in ratios for t in tiers}
        model = family.template
        assert set(model.sizes) == want, model.name
        assert len(model.sizes) == len(want)  # no duplicates
        assert {model.aspect_of[s] for s in model.sizes} == ratios
        assert model.qualities == ("medium",) and model.formats == ("png",) and model.backgrounds == ()
        assert model.max_references == 14 and model.supports_reference and not model.streaming
        assert model.sizes[0] == "1024x1024"  # the 1K square first
        # Asked for by ratio or by shape, the model draws at 1K.
        assert model.size_for_ratio("16:9") == "1376x768"
        assert model.size_for_aspect("landscape") == "1264x848" and model.size_for_aspect("portrait") == "848x1264"


def test_a_model_without_4k_or_512_never_offers_it() -> None:
    by_name = {f.template.name: f.template for f in FAMILIES}
    lite, pro = by_name["gemini-3.1-flash-lite-image"], by_name["gemini-3-pro-image"]
    for size in ("2048x2048", "4096x4096", "2752x1536", "5504x3072"):
        assert lite.size_problem(size) is not None
    for size in ("512x512", "688x384", "2048x512", "3072x384"):  # 512 tier, wide ratios
        assert pro.size_problem(size) is not None
    assert "4:1" not in pro.ratios() and "21:9" in pro.ratios() and "8:1" in lite.ratios()
    assert by_name["gemini-3.1-flash-image"].size_problem("512x512") is None
    assert by_name["gemini-nano-banana-2.1"].size_problem("512x512") is not None  # 2.1 takes 1K-4K only


@pytest.mark.parametrize("model", sorted(EXPECTED))
async def test_every_declared_size_maps_to_its_image_config(provider: GoogleImages, fake: FakeGoogle,
                                                            model: str) -> None:
    ratios, tiers = EXPECTED[model]
    pairs = {documented(a, t): (a, t) for a in ratios for t in tiers}
    info = provider.capabilities.model(model)
    assert info is not None
    for size in info.sizes:
        [image] = await provider.generate(GenerationRequest("a lighthouse", model, size))
        call = fake.calls("gemini")[-1]
        aspect, tier = pairs[size]
        assert call.body["generationConfig"]["imageConfig"] == {"aspectRatio": aspect, "imageSize": tier}, size
        # The fake draws Google's documented pixels for the pair (at 1/16): the size round-trips.
        w, h = parse_size(size)
        assert inspect_image(image.data)[1:] == fake.drawn(aspect, tier) == (max(8, w // 16), max(8, h // 16))
    assert len(fake.calls("gemini")) == len(info.sizes)


@pytest.mark.parametrize(("model", "size"), [("gemini-nano-banana-2.1", "1376x768"),
                                             ("gemini-3-pro-image", "1696x2528"),
                                             ("gemini-3.1-flash-image", "688x384"),
                                             ("gemini-3.1-flash-lite-image", "1584x672")])
async def test_images_come_back_at_the_documented_pixels(provider: GoogleImages, fake: FakeGoogle,
                                                         model: str, size: str) -> None:
    fake.scale = 1
    [image] = await provider.generate(GenerationRequest("a lighthouse", model, size))
    assert inspect_image(image.data)[1:] == parse_size(size)


async def test_the_fake_refuses_what_a_model_does_not_take(provider: GoogleImages, fake: FakeGoogle) -> None:
    """What the provider never sends is refused by Google (400): the sizes above are the real limits."""
    with pytest.raises(ProviderBadResponse, match=r"HTTP 400"):
        await provider.generate(GenerationRequest("a lighthouse", "gemini-3.1-flash-lite-image", "4096x4096"))
    assert fake.calls("gemini")[-1].body["generationConfig"]["imageConfig"]["imageSize"] == "4K"
    with pytest.raises(ProviderBadResponse, match=r"HTTP 400"):
        await provider.generate(GenerationRequest("a lighthouse", "gemini-3-pro-image", "3072x384"))

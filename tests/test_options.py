"""The user's options map onto each kind of model, or are refused before any credit moves."""

from __future__ import annotations

from pathlib import Path

import pytest

from bot.config import Pricing
from bot.errors import ValidationError
from bot.models import ImagineOptions
from providers.base import Capabilities, FreeSizes, GeneratedImage, GenerationRequest, ModelInfo
from tests.doubles import ctx_for, make_config, make_core, tiny_png

#: Like the gpt-image-2 family: any WxH within limits, four tiers, formats and backgrounds.
FREE = ModelInfo("free-2", sizes=("1024x1024", "1536x1024", "1024x1536"), max_per_call=10,
                 free_sizes=FreeSizes(multiple=16, max_ratio=3, max_edge=3840, max_pixels=3840 * 2160),
                 qualities=("low", "medium", "high"), formats=("png", "webp", "jpeg"),
                 backgrounds=("transparent", "opaque"), streaming=True)
#: Like Gemini or xAI: a ratio and a resolution tier, so a fixed table of sizes.
FIXED = ModelInfo("ratio-1", sizes=("1024x1024", "1376x768", "768x1376", "2048x2048", "1536x672"),
                  aspect_of={"1024x1024": "1:1", "1376x768": "16:9", "768x1376": "9:16", "2048x2048": "1:1",
                             "1536x672": "21:9"})


class Declared:
    """A vendor double declaring one model; records what the core asked of it."""

    def __init__(self, name: str, model: ModelInfo) -> None:
        self.name = name
        self.capabilities = Capabilities(models=(model,), default_model=model.name)
        self.requests: list[GenerationRequest] = []

    async def generate(self, request: GenerationRequest) -> list[GeneratedImage]:
        self.requests.append(request)
        return [GeneratedImage(tiny_png(i)) for i in range(request.count)]

    async def aclose(self) -> None:
        return None


@pytest.fixture
def free() -> Declared:
    return Declared("free", FREE)


@pytest.fixture
def fixed() -> Declared:
    return Declared("fixed", FIXED)


@pytest.mark.parametrize(("asked", "free_size", "fixed_size"), [
    (None, "1024x1024", "1024x1024"),
    ("square", "1024x1024", "1024x1024"),
    ("landscape", "1536x1024", "1376x768"),
    ("portrait", "1024x1536", "768x1376"),
    ("16:9", "1360x768", "1376x768"),
    ("21:9", "1568x672", "1536x672"),
    ("2048x2048", "2048x2048", "2048x2048"),
])
async def test_sizes_and_aspects_map_onto_each_kind_of_model(
    tmp_path: Path, free: Declared, fixed: Declared, asked: str | None, free_size: str, fixed_size: str
) -> None:
    core = make_core(make_config(tmp_path, IMAGEBOT_STARTING_CREDITS="200"), [free, fixed])
    async with core:
        a = await core.imagine(ctx_for(), ImagineOptions("a fox", size=asked, provider="free"))
        b = await core.imagine(ctx_for(), ImagineOptions("a fox", size=asked, provider="fixed"))
    assert (a.size, free.requests[-1].size) == (free_size, free_size)
    assert (b.size, fixed.requests[-1].size) == (fixed_size, fixed_size)


@pytest.mark.parametrize(("provider", "options", "says"), [
    ("free", {"size": "1000x1000"}, "multiples of 16"),
    ("free", {"size": "3840x1024"}, "aspect must be between 1:3 and 3:1"),
    ("free", {"size": "3840x3840"}, "3840 on a side"),
    ("fixed", {"size": "1536x1024"}, "choose 1024x1024, 1376x768"),
    ("fixed", {"size": "4:3"}, "aspect 4:3 is not available for ratio-1; it makes 1:1, 16:9, 9:16, 21:9"),
    ("free", {"quality": "max"}, "quality max is not available for free-2; it makes low, medium, high"),
    ("fixed", {"quality": "hd"}, "quality high is not available for ratio-1; it makes medium"),
    ("free", {"quality": "ultra"}, "quality must be one of low, medium, high, max"),
    ("fixed", {"output_format": "webp"}, "format webp is not available for ratio-1; it makes png"),
    ("free", {"output_format": "gif"}, "format must be one of png, webp, jpeg"),
    ("fixed", {"background": "transparent"}, "transparent background is not available for ratio-1"),
    ("free", {"background": "transparent", "output_format": "jpeg"}, "needs --format png or webp"),
])
async def test_what_a_model_cannot_make_is_refused_before_any_credit_moves(
    tmp_path: Path, free: Declared, fixed: Declared, provider: str, options: dict[str, str], says: str
) -> None:
    core = make_core(make_config(tmp_path), [free, fixed])
    async with core:
        with pytest.raises(ValidationError) as err:
            await core.imagine(ctx_for(), ImagineOptions("a fox", provider=provider, **options))
        assert says in err.value.message
        assert (await core.credits(ctx_for().identity)).balance == 50
        assert await core.store.recent_generations(ctx_for().identity) == []
    assert free.requests == [] and fixed.requests == []


async def test_format_background_quality_and_a_hashed_user_reach_the_provider(tmp_path: Path, free: Declared) -> None:
    core = make_core(make_config(tmp_path), [free])
    async with core:
        result = await core.imagine(ctx_for("alice"), ImagineOptions(
            "a logo", output_format="webp", background="transparent", quality="standard", style="vivid"))
        gen = await core.generation(result.generation_id)
    request = free.requests[-1]
    assert (request.output_format, request.background, request.quality) == ("webp", "transparent", "medium")
    assert request.safety_id and "alice" not in request.safety_id and len(request.safety_id) == 32
    assert gen is not None and gen.options["format"] == "webp" and gen.options["background"] == "transparent"
    assert result.credits_spent == 10


async def test_failover_only_goes_to_a_model_that_makes_the_same_request(tmp_path: Path, free: Declared) -> None:
    from bot.errors import ProviderUnavailable

    class Down(Declared):
        async def generate(self, request: GenerationRequest) -> list[GeneratedImage]:
            raise ProviderUnavailable("down", provider=self.name)

    core = make_core(make_config(tmp_path), [Down("first", FREE), Declared("fixed", FIXED), free],
                     order=["first", "fixed", "free"])
    async with core:
        plan = core.plan(ctx_for(), ImagineOptions("a fox", output_format="webp"))
        assert [a.provider.name for a in plan.attempts] == ["first", "free"]  # fixed makes no webp
        result = await core.imagine(ctx_for(), ImagineOptions("a fox", output_format="webp"))
    assert result.provider == "free" and result.failed_over == ["first"]


@pytest.mark.parametrize(("size", "quality", "model", "price"), [
    ("1024x1024", "medium", "", 10), ("1024x1024", "low", "", 5), ("1024x1024", "high", "", 20),
    ("1024x1024", "max", "", 40), ("1024x1024", "standard", "", 10), ("1024x1024", "hd", "", 20),
    ("1536x1024", "medium", "", 15), ("1360x768", "medium", "", 10), ("3840x2160", "medium", "", 60),
    ("2048x2048", "high", "", 60), ("256x256", "low", "", 2), ("1024x1024", "medium", "pro-image-3", 15),
])
def test_price_follows_pixels_quality_and_model(size: str, quality: str, model: str, price: int) -> None:
    pricing = Pricing(models={"pro-image": 1.5})
    assert pricing.per_image(size, quality, model) == price


def test_pricing_table_from_the_file(tmp_path: Path) -> None:
    from bot.config import load_config

    (tmp_path / "imagebot.toml").write_text(
        '[pricing]\nqualities = { max = 5 }\nmodels = { "gpt-image-2.5" = 2 }\nlarge = 20\n')
    config = load_config(env={}, path=tmp_path / "imagebot.toml")
    assert config.pricing.per_image("1024x1024", "max", "gpt-image-2.5-flare") == 100
    assert config.pricing.per_image("1536x1024", "medium", "gpt-image-2") == 20
    (tmp_path / "imagebot.toml").write_text("[pricing]\nqualities = { ultra = 5 }\n")
    with pytest.raises(Exception, match="pricing.qualities.ultra: unknown quality tier"):
        load_config(env={}, path=tmp_path / "imagebot.toml")

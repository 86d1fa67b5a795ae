"""/imagine through the real core, a real SQLite file and real image files."""

from __future__ import annotations

import asyncio
import hashlib
import io
from pathlib import Path

import pytest
from PIL import Image

from bot.app import build_core
from bot.errors import (
    ContentRejected,
    GenerationFailed,
    InsufficientCredits,
    ProviderTimeout,
    ProviderUnavailable,
)
from bot.models import ImagineOptions
from providers.base import GeneratedImage
from providers.local import LOCAL_SIZES, render
from tests.doubles import ScriptedProvider, ctx_for, make_config, make_core

CTX = ctx_for()


async def test_local_imagine_saves_images_by_hash_and_charges_per_image(tmp_path: Path) -> None:
    core = build_core(make_config(tmp_path))
    async with core:
        result = await core.imagine(CTX, ImagineOptions(prompt="a red fox", size="512x512", count=2))
        assert len(result.images) == 2
        assert result.credits_spent == 10 and result.balance == 40
        for image in result.images:
            data = image.path.read_bytes()
            assert hashlib.sha256(data).hexdigest() == image.sha256 and image.path.name.startswith(image.sha256)
            assert image.path.is_relative_to(tmp_path / "data")
            assert (image.width, image.height) == (512, 512)
        gen = await core.generation(result.generation_id)
        assert gen is not None
        assert (gen.status, gen.provider, gen.model, gen.image_count) == ("COMPLETED", "local", "local-sketch", 2)
        assert gen.credits_reserved == 10 and gen.credits_consumed == 10 and gen.duration_ms is not None
        assert gen.options["size"] == "512x512" and gen.channel_id == "c1"
        assert await core.store.audit() == []


@pytest.mark.parametrize(
    ("size", "quality", "price"),
    [("256x256", "standard", 3), ("512x512", "standard", 5), ("1024x1024", "standard", 10),
     ("1024x1024", "hd", 20), ("1792x1024", "standard", 15), ("1024x1536", "hd", 30)],
)
async def test_pricing_per_image(tmp_path: Path, size: str, quality: str, price: int) -> None:
    core = build_core(make_config(tmp_path, IMAGEBOT_STARTING_CREDITS="100"))
    async with core:
        result = await core.imagine(CTX, ImagineOptions(prompt="fox", size=size, quality=quality))
        assert result.credits_spent == price and result.balance == 100 - price


async def test_pricing_is_configurable(tmp_path: Path) -> None:
    (tmp_path / "imagebot.toml").write_text('[pricing]\nsizes = {"256x256" = 1}\nenhance = 2\n')
    config = make_config(tmp_path)
    from bot.config import load_config

    config = load_config(env=dict(config.env), path=tmp_path / "imagebot.toml")
    core = build_core(config)
    async with core:
        assert (await core.imagine(CTX, ImagineOptions(prompt="fox", size="256x256"))).credits_spent == 1
        assert (await core.enhance(CTX, "fox")).credits_spent == 2


async def test_not_enough_credits_refuses_before_generating(tmp_path: Path) -> None:
    fake = ScriptedProvider()
    core = make_core(make_config(tmp_path, IMAGEBOT_STARTING_CREDITS="25"), [fake])
    async with core:
        with pytest.raises(InsufficientCredits, match="needs 30 credits and you have 25"):
            await core.imagine(CTX, ImagineOptions(prompt="fox", count=3))
        assert fake.calls == 0
        assert (await core.credits(CTX.identity)).balance == 25


async def test_count_above_per_call_maximum_fans_out_concurrently(tmp_path: Path) -> None:
    fake = ScriptedProvider(max_per_call=1, delay=0.2, concurrency=3)
    core = make_core(make_config(tmp_path), [fake])
    async with core:
        started = asyncio.get_running_loop().time()
        result = await core.imagine(CTX, ImagineOptions(prompt="fox", size="256x256", count=4))
        elapsed = asyncio.get_running_loop().time() - started
    assert len(result.images) == 4 and fake.calls == 4
    assert fake.peak == 3  # never more than the provider's concurrency limit, but more than one at once
    assert elapsed < 0.75  # two waves of 0.2 s, not four in a row (0.8 s)


async def test_partial_success_charges_only_for_delivered_images(tmp_path: Path) -> None:
    def every_other(request, index):  # type: ignore[no-untyped-def]
        return ProviderUnavailable("down") if index % 2 else None

    fake = ScriptedProvider(max_per_call=1, behaviour=every_other)
    core = make_core(make_config(tmp_path), [fake])
    async with core:
        result = await core.imagine(CTX, ImagineOptions(prompt="fox", size="256x256", count=4))
        assert len(result.images) == 2
        assert result.credits_spent == 6 and result.credits_refunded == 6 and result.balance == 44
        assert result.partial_note and "2 of 4" in result.partial_note
        assert await core.store.audit() == []


async def test_provider_returning_garbage_bytes_is_not_charged(tmp_path: Path) -> None:
    fake = ScriptedProvider(behaviour=lambda r, i: [GeneratedImage(b"<html>oops</html>")])
    core = make_core(make_config(tmp_path), [fake])
    async with core:
        with pytest.raises(GenerationFailed, match="not charged") as err:
            await core.imagine(CTX, ImagineOptions(prompt="fox", size="256x256"))
        assert err.value.refunded == 3
        assert (await core.credits(CTX.identity)).balance == 50


async def test_failover_to_the_next_provider_names_who_delivered(tmp_path: Path) -> None:
    down = ScriptedProvider("first", behaviour=lambda r, i: ProviderTimeout("slow"))
    spare = ScriptedProvider("second")
    core = make_core(make_config(tmp_path), [down, spare])
    async with core:
        result = await core.imagine(CTX, ImagineOptions(prompt="fox", size="256x256"))
    assert result.provider == "second" and result.failed_over == ["first"]
    assert down.calls == 1 and spare.calls == 1


async def test_failover_skips_providers_that_cannot_serve_the_size(tmp_path: Path) -> None:
    down = ScriptedProvider("first", behaviour=lambda r, i: ProviderUnavailable("down"))
    small = ScriptedProvider("small", sizes=("256x256",))
    core = make_core(make_config(tmp_path), [down, small])
    async with core:
        with pytest.raises(GenerationFailed) as err:
            await core.imagine(CTX, ImagineOptions(prompt="fox", size="1024x1024"))
        assert err.value.code == "IMG-PROV-DOWN" and small.calls == 0
        assert (await core.credits(CTX.identity)).balance == 50


async def test_content_policy_is_not_retried_elsewhere_and_refunds(tmp_path: Path) -> None:
    strict = ScriptedProvider("strict", behaviour=lambda r, i: ContentRejected("Your prompt was refused by the provider's safety system."))
    spare = ScriptedProvider("second")
    core = make_core(make_config(tmp_path), [strict, spare])
    async with core:
        with pytest.raises(GenerationFailed) as err:
            await core.imagine(CTX, ImagineOptions(prompt="fox", size="256x256", count=2))
        assert err.value.code == "IMG-PROV-POLICY" and "/enhance" in err.value.message
        assert "not charged" in err.value.message and spare.calls == 0
        summary = await core.credits(CTX.identity)
        assert summary.balance == 50 and summary.recent[0].status == "FAILED"


async def test_a_provider_bug_never_shows_its_raw_text(tmp_path: Path) -> None:
    broken = ScriptedProvider(behaviour=lambda r, i: RuntimeError("sk-secret-key leaked in traceback"))
    core = make_core(make_config(tmp_path), [broken])
    async with core:
        with pytest.raises(GenerationFailed) as err:
            await core.imagine(CTX, ImagineOptions(prompt="fox", size="256x256"))
    assert "sk-secret" not in str(err.value) and "unexpectedly" in str(err.value)


async def test_queue_position_is_reported_while_waiting(tmp_path: Path) -> None:
    fake = ScriptedProvider(delay=0.2, concurrency=1)
    core = make_core(make_config(tmp_path), [fake])
    stages: list[tuple[str, dict]] = []  # type: ignore[type-arg]

    async def progress(stage: str, details: dict) -> None:  # type: ignore[type-arg]
        stages.append((stage, details))

    async with core:
        await asyncio.gather(
            core.imagine(ctx_for("a"), ImagineOptions(prompt="fox", size="256x256")),
            core.imagine(ctx_for("b"), ImagineOptions(prompt="fox", size="256x256"), progress=progress),
        )
    assert stages[0] == ("queued", {"position": 1, "provider": "fake"})
    assert stages[1][0] == "generating"


async def test_local_renderer_is_deterministic() -> None:
    a = render("a red fox", "256x256", "natural", 7, 0)
    assert a == render("a red fox", "256x256", "natural", 7, 0)
    assert a != render("a red fox", "256x256", "natural", 8, 0)
    assert a != render("a blue fox", "256x256", "natural", 7, 0)


@pytest.mark.parametrize("size", LOCAL_SIZES)
@pytest.mark.parametrize("style", ["natural", "vivid"])
def test_local_renderer_writes_a_valid_png_of_the_asked_size(size: str, style: str) -> None:
    data = render("a lighthouse at dusk", size, style, 3, 1)
    with Image.open(io.BytesIO(data)) as img:
        img.verify()
    with Image.open(io.BytesIO(data)) as img:
        assert f"{img.width}x{img.height}" == size and img.format == "PNG"
        rgb = img.convert("RGB")
    # A drawing, not a blank: the gradient and the shapes give many colours, the left edge included.
    assert len(set(rgb.getdata())) > 20
    assert len({rgb.getpixel((0, y)) for y in range(rgb.height)}) > 10


async def test_stored_local_images_record_their_real_size(tmp_path: Path) -> None:
    core = build_core(make_config(tmp_path))
    async with core:
        result = await core.imagine(ctx_for("u"), ImagineOptions(prompt="fox", size="512x512", count=2))
    assert [(i.width, i.height) for i in result.images] == [(512, 512), (512, 512)]
    for image in result.images:
        assert image.path == core.images.path_for(image.sha256, image.mime)
        assert hashlib.sha256(image.path.read_bytes()).hexdigest() == image.sha256
        with Image.open(image.path) as img:
            assert img.size == (512, 512)


async def test_credits_never_leak_between_servers(tmp_path: Path) -> None:
    core = build_core(make_config(tmp_path))
    async with core:
        await core.imagine(ctx_for("u1", "s1"), ImagineOptions(prompt="fox", size="1024x1024", count=5))
        assert (await core.credits(ctx_for("u1", "s1").identity)).balance == 0
        assert (await core.credits(ctx_for("u1", "s2").identity)).balance == 50
        assert (await core.credits(ctx_for("u1", "s1", platform="other").identity)).balance == 50


async def test_enhance_costs_one_credit_and_keeps_the_subject(tmp_path: Path) -> None:
    core = build_core(make_config(tmp_path))
    async with core:
        result = await core.enhance(CTX, "a lighthouse at dusk")
        assert result.enhanced.startswith("a lighthouse at dusk") and len(result.enhanced) > 30
        assert result.credits_spent == 1 and result.balance == 49
        gen = await core.generation(result.generation_id)
        assert gen is not None and gen.result_text == result.enhanced and gen.command == "enhance"
        assert (await core.enhance(CTX, "a lighthouse at dusk")).enhanced == result.enhanced


async def test_buttons_work_from_the_database_after_a_restart(tmp_path: Path) -> None:
    config = make_config(tmp_path, IMAGEBOT_STARTING_CREDITS="200")
    async with build_core(config) as core:
        first = await core.imagine(CTX, ImagineOptions(prompt="fox", size="256x256", count=2, style="vivid"))
    async with build_core(config) as core:
        again = await core.reroll(CTX, first.generation_id)
        assert (again.prompt, again.size, again.style, len(again.images)) == ("fox", "256x256", "vivid", 2)
        assert again.images[0].sha256 != first.images[0].sha256
        variation = await core.variations(CTX, first.generation_id, 1)
        assert variation.size == "256x256"
        bigger = await core.upscale(CTX, first.generation_id, 0)
        assert (bigger.images[0].width, bigger.images[0].height) == (512, 512)
        from bot.errors import NotFound

        with pytest.raises(NotFound):
            await core.reroll(ctx_for(server="elsewhere"), first.generation_id)


async def test_undelivered_images_are_refunded_once(tmp_path: Path) -> None:
    async with build_core(make_config(tmp_path)) as core:
        result = await core.imagine(CTX, ImagineOptions(prompt="fox", size="512x512"))
        assert result.balance == 45
        assert await core.delivery_failed(result.generation_id) == 5
        assert await core.delivery_failed(result.generation_id) == 0
        assert (await core.credits(CTX.identity)).balance == 50
        assert await core.store.audit() == []


async def test_failover_with_a_reference_prefers_a_model_that_takes_references(tmp_path: Path) -> None:
    from providers.base import Capabilities, ModelInfo

    down = ScriptedProvider("first", behaviour=lambda r, i: ProviderUnavailable("down"))
    spare = ScriptedProvider("second")
    spare.capabilities = Capabilities(
        models=(ModelInfo("plain", sizes=("256x256",)), ModelInfo("editor", sizes=("256x256",), supports_reference=True)),
        default_model="plain",
    )
    seen: list[tuple[str, bool]] = []
    spare.behaviour = lambda r, i: seen.append((r.model, r.reference is not None))  # type: ignore[func-returns-value]
    core = make_core(make_config(tmp_path), [down, spare])
    async with core:
        result = await core.imagine(CTX, ImagineOptions(prompt="fox", size="256x256", reference=render("r", "256x256", "natural", 0, 0)))
    assert result.provider == "second" and result.model == "editor"
    assert seen == [("editor", True)]

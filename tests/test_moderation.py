"""Moderation and the blocklist, through the real openai SDK against the loopback fake of /v1/moderations: a
flagged prompt is refused naming its category and costs nothing; "sexual" passes only in an age-restricted
channel of a server that allows it; moderation that cannot be asked refuses; the key never shows."""

from __future__ import annotations

import dataclasses
from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from bot.app import build_core
from bot.core import Imagebot
from bot.errors import ConfigError, ValidationError
from bot.models import ImagineOptions
from bot.moderation import parse_blocklist
from tests.doubles import tiny_png
from tests.fakes.harness import CTX, FAST, OPENAI_KEY, USER, make_config, openai_env
from tests.fakes.openai_api import FakeOpenAI

ADDRESS = {"platform": "test"}


@pytest.fixture
async def fake() -> AsyncIterator[FakeOpenAI]:
    async with FakeOpenAI() as server:
        yield server


@pytest.fixture
async def core(tmp_path: Path, fake: FakeOpenAI) -> AsyncIterator[Imagebot]:
    bot = build_core(make_config(tmp_path, openai_env(fake.base_url, IMAGEBOT_PROVIDERS="openai",
                                                      IMAGEBOT_MODERATION="on"), FAST))
    async with bot:
        yield bot


def ctx(**kw: object):  # type: ignore[no-untyped-def]
    return dataclasses.replace(CTX, address=ADDRESS, **kw)


async def test_a_flagged_prompt_is_refused_naming_the_category_at_no_cost(core: Imagebot, fake: FakeOpenAI) -> None:
    fake.moderation.flag("knife", "violence/graphic")
    before = (await core.credits(USER)).balance
    with pytest.raises(ValidationError, match="graphic violence") as refused:
        await core.enqueue(ctx(), "imagine", options=ImagineOptions("a bloody knife fight"), queued=False)
    assert refused.value.code == "IMG-MOD-FLAGGED" and OPENAI_KEY not in str(refused.value)
    assert (await core.credits(USER)).balance == before and (await core.credits(USER)).recent == []
    assert fake.moderation.seen[-1]["model"] == "omni-moderation-latest"
    queued = await core.enqueue(ctx(), "imagine", options=ImagineOptions("a calm lake"), queued=False)
    await core.run(queued.generation_id)
    assert (await core.credits(USER)).balance < before


async def test_reference_images_go_to_moderation_as_data_urls(core: Imagebot, fake: FakeOpenAI) -> None:
    await core.enqueue(ctx(), "imagine", options=ImagineOptions("like this", reference=tiny_png(3)), queued=False)
    parts = fake.moderation.seen[-1]["input"]
    assert parts[0] == {"type": "text", "text": "like this"}
    assert parts[1]["type"] == "image_url" and parts[1]["image_url"]["url"].startswith("data:image/png;base64,")


async def test_sexual_passes_only_in_an_age_restricted_channel_of_a_server_that_allows_it(
        core: Imagebot, fake: FakeOpenAI) -> None:
    fake.moderation.flag("nude", "sexual")
    fake.moderation.flag("child", "sexual/minors")
    with pytest.raises(ValidationError, match="sexual content"):
        await core.enqueue(ctx(adult_channel=True), "imagine", options=ImagineOptions("a nude study"), queued=False)
    await core.change_settings(dataclasses.replace(CTX, is_admin=True), {"adult": "on"})
    with pytest.raises(ValidationError, match="sexual content"):
        await core.enqueue(ctx(), "imagine", options=ImagineOptions("a nude study"), queued=False)
    await core.enqueue(ctx(adult_channel=True), "imagine", options=ImagineOptions("a nude study"), queued=False)
    with pytest.raises(ValidationError, match="minors"):
        await core.enqueue(ctx(adult_channel=True), "imagine", options=ImagineOptions("a nude child"), queued=False)


async def test_the_blocklist_applies_always_words_and_patterns(core: Imagebot) -> None:
    admin = dataclasses.replace(CTX, is_admin=True)
    await core.change_settings(admin, {"moderation": "off", "blocklist": "clown, /sp[i1]der/"})
    for prompt, entry in (("a sad Clown", "clown"), ("a sp1derweb", "/sp[i1]der/")):
        with pytest.raises(ValidationError, match="blocks") as refused:
            await core.enqueue(ctx(), "imagine", options=ImagineOptions(prompt), queued=False)
        assert entry in str(refused.value) and refused.value.code == "IMG-MOD-BLOCKED"
    await core.enqueue(ctx(), "imagine", options=ImagineOptions("clowns are words too"), queued=False)  # whole words
    with pytest.raises(ValidationError, match="regular expression"):
        await core.change_settings(admin, {"blocklist": "/([/"})
    with pytest.raises(ValidationError):
        parse_blocklist(["x" * 101])


async def test_moderation_down_refuses_clearly_and_charges_nothing(core: Imagebot, fake: FakeOpenAI) -> None:
    fake.moderation.down = True
    before = (await core.credits(USER)).balance
    with pytest.raises(ValidationError, match="unavailable") as refused:
        await core.enqueue(ctx(), "imagine", options=ImagineOptions("a calm lake"), queued=False)
    assert refused.value.code == "IMG-MOD-UNAVAILABLE" and OPENAI_KEY not in str(refused.value)
    assert (await core.credits(USER)).balance == before


async def test_moderation_on_without_a_key_stops_the_start_naming_the_key(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="OPENAI_API_KEY"):
        build_core(make_config(tmp_path, {"IMAGEBOT_MODERATION": "on"}, FAST))
    with pytest.raises(ConfigError, match="IMAGEBOT_MODERATION"):
        build_core(make_config(tmp_path, {"IMAGEBOT_MODERATION": "maybe"}, FAST))


async def test_a_server_cannot_turn_moderation_on_without_a_key(tmp_path: Path) -> None:
    bot = build_core(make_config(tmp_path, {}, FAST))
    async with bot:
        with pytest.raises(ValidationError, match="OPENAI_API_KEY"):
            await bot.change_settings(dataclasses.replace(CTX, is_admin=True), {"moderation": "on"})

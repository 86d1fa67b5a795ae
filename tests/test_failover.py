"""Failover between real providers (OpenAI, Google, local) through the real core and both vendor fakes.

What a user notices: who delivered, what was charged and refunded, and that images were stored.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest

from bot.app import build_core
from bot.errors import GenerationFailed
from bot.models import Context, Identity, ImagineOptions
from tests.fakes.google_api import FakeGoogle
from tests.fakes.harness import CTX, FAST, USER, google_env, make_config, openai_env, vertex_env
from tests.fakes.openai_api import FakeOpenAI


@pytest.fixture
async def fakes() -> AsyncIterator[tuple[FakeOpenAI, FakeGoogle]]:
    oai, goo = FakeOpenAI(), FakeGoogle()
    oai.slow_seconds = goo.slow_seconds = 1.0
    async with oai, goo:
        yield oai, goo


def both(oai: FakeOpenAI, goo: FakeGoogle, order: str = "openai,google,local", vertex: bool = False) -> dict[str, str]:
    g = vertex_env(goo.base_url) if vertex else google_env(goo.base_url)
    return {**openai_env(oai.base_url), **g, "IMAGEBOT_PROVIDERS": order}


class Progress:
    def __init__(self) -> None:
        self.events: list[tuple[str, dict[str, Any]]] = []

    async def __call__(self, stage: str, details: dict[str, Any]) -> None:
        self.events.append((stage, details))


@pytest.mark.parametrize("failure", ["down", "rate", "slow", "auth", "garbage"])
async def test_next_provider_delivers_and_is_named(tmp_path: Path, fakes: tuple[FakeOpenAI, FakeGoogle],
                                                   failure: str) -> None:
    oai, goo = fakes
    core = build_core(make_config(tmp_path, both(oai, goo)))
    progress = Progress()
    async with core:
        oai.queue("generations", failure)
        result = await core.imagine(CTX, ImagineOptions("a fox", count=2), progress=progress)
        assert result.provider == "google" and result.model == "gemini-nano-banana-2.1"
        assert result.failed_over == ["openai"] and len(result.images) == 2
        assert all(i.path.exists() for i in result.images)
        assert result.credits_spent == 20 and (await core.credits(USER)).balance == 480
        assert ("failover", {"from": "openai", "to": "google"}) in progress.events
        gen = await core.generation(result.generation_id)
        assert gen is not None and gen.provider == "google" and gen.status == "COMPLETED"
    assert len(oai.calls("generations")) == 1 and len(goo.calls("gemini")) == 2


async def test_content_policy_is_not_retried_elsewhere_and_is_refunded(
    tmp_path: Path, fakes: tuple[FakeOpenAI, FakeGoogle]
) -> None:
    oai, goo = fakes
    core = build_core(make_config(tmp_path, both(oai, goo)))
    async with core:
        oai.queue("generations", "policy")
        with pytest.raises(GenerationFailed) as info:
            await core.imagine(CTX, ImagineOptions("something forbidden", count=3))
        assert info.value.code == "IMG-PROV-POLICY" and info.value.refunded == 30
        assert "content policy" in info.value.message and "/enhance" in info.value.message
        assert (await core.credits(USER)).balance == 500 and await core.store.audit() == []
    assert goo.calls("gemini") == []


async def test_partial_success_above_the_per_call_maximum_is_priced_by_what_was_delivered(
    tmp_path: Path, fakes: tuple[FakeOpenAI, FakeGoogle]
) -> None:
    oai, goo = fakes
    core = build_core(make_config(tmp_path, both(oai, goo)))
    async with core:
        goo.queue("gemini", "ok", "down", "ok")  # Gemini makes one image per call: 3 calls
        result = await core.imagine(CTX, ImagineOptions("a lighthouse", provider="google", count=3))
        assert result.provider == "google" and len(result.images) == 2
        assert result.credits_spent == 20 and result.credits_refunded == 10
        assert result.partial_note and "2 of 3" in result.partial_note
        assert (await core.credits(USER)).balance == 480
    assert len(goo.calls("gemini")) == 3 and oai.calls("generations") == []


async def test_every_provider_failing_refunds_everything(tmp_path: Path,
                                                          fakes: tuple[FakeOpenAI, FakeGoogle]) -> None:
    oai, goo = fakes
    core = build_core(make_config(tmp_path, both(oai, goo, order="openai,google")))
    async with core:
        oai.queue("generations", "down")
        goo.queue("gemini", "rate")
        with pytest.raises(GenerationFailed) as info:
            await core.imagine(CTX, ImagineOptions("a fox"))
        assert "Every provider failed (openai, google)" in info.value.message
        assert info.value.refunded == 10 and (await core.credits(USER)).balance == 500


async def test_a_provider_that_cannot_serve_the_size_is_skipped(tmp_path: Path,
                                                               fakes: tuple[FakeOpenAI, FakeGoogle]) -> None:
    oai, goo = fakes
    core = build_core(make_config(tmp_path, both(oai, goo)))
    async with core:
        oai.queue("generations", "down")
        result = await core.imagine(CTX, ImagineOptions("an owl", size="1024x1536"))
        assert result.provider == "local" and result.failed_over == ["openai"]
        assert result.credits_spent == 15
    assert goo.calls("gemini") == []  # Gemini makes 848x1264 for 2:3, not 1024x1536


async def test_gemini_takes_over_a_landscape_in_its_own_shape(tmp_path: Path,
                                                             fakes: tuple[FakeOpenAI, FakeGoogle]) -> None:
    oai, goo = fakes
    core = build_core(make_config(tmp_path, both(oai, goo)))
    async with core:
        oai.queue("generations", "down")
        result = await core.imagine(CTX, ImagineOptions("a valley", size="1376x768", count=2))
        assert (result.provider, result.model, len(result.images)) == ("google", "gemini-nano-banana-2.1", 2)
        assert result.credits_spent == 20  # 1376x768 is Gemini's 1K 16:9: priced like 1024x1024
    config = goo.calls("gemini")[0].body["generationConfig"]
    assert config["imageConfig"] == {"aspectRatio": "16:9", "imageSize": "1K"}
    assert goo.calls("imagen") == []


async def test_per_server_order_overrides_the_global_one(tmp_path: Path,
                                                         fakes: tuple[FakeOpenAI, FakeGoogle]) -> None:
    oai, goo = fakes
    toml = FAST + '\n[servers."console:other"]\nproviders = ["google", "openai"]\n'
    core = build_core(make_config(tmp_path, both(oai, goo), toml))
    other = Context(Identity("console", "other", "bob"), channel_id="c")
    async with core:
        assert (await core.imagine(other, ImagineOptions("a fox"))).provider == "google"
        assert (await core.imagine(CTX, ImagineOptions("a fox"))).provider == "openai"
        goo.queue("gemini", "down")
        result = await core.imagine(other, ImagineOptions("a fox"))
        assert result.provider == "openai" and result.failed_over == ["google"]

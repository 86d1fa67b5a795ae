"""/enhance through OpenAI chat or Gemini text (chosen by config), and reference descriptions by vision."""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from bot.app import build_core
from bot.errors import ConfigError, GenerationFailed
from bot.models import ImagineOptions
from bot.validation import PROMPT_LIMIT
from tests.fakes.google_api import FakeGoogle
from tests.fakes.harness import CTX, USER, google_env, make_config, openai_env
from tests.fakes.images import png
from tests.fakes.openai_api import FakeOpenAI


@pytest.fixture
async def fakes() -> AsyncIterator[tuple[FakeOpenAI, FakeGoogle]]:
    async with FakeOpenAI() as oai, FakeGoogle() as goo:
        yield oai, goo


async def test_openai_chat_rewrites_the_prompt_keeping_the_subject(tmp_path: Path,
                                                                   fakes: tuple[FakeOpenAI, FakeGoogle]) -> None:
    oai, _ = fakes
    core = build_core(make_config(tmp_path, openai_env(oai.base_url)))
    async with core:
        result = await core.enhance(CTX, "a cat on a roof")
        assert result.enhancer == "openai" and result.enhanced.startswith("a cat on a roof, ")
        assert result.credits_spent == 1 and (await core.credits(USER)).balance == 499
        gen = await core.generation(result.generation_id)
        assert gen is not None and gen.result_text == result.enhanced
    [call] = oai.calls("chat")
    system = call.body["messages"][0]
    assert system["role"] == "system" and f"under {PROMPT_LIMIT} characters" in system["content"]
    assert "Keep the user's subject" in system["content"]
    assert all(w in system["content"] for w in ("composition", "lighting", "style", "detail"))
    assert call.body["model"] == "gpt-4o-mini"


async def test_gemini_text_is_chosen_by_config(tmp_path: Path, fakes: tuple[FakeOpenAI, FakeGoogle]) -> None:
    oai, goo = fakes
    env = {**openai_env(oai.base_url), **google_env(goo.base_url), "IMAGEBOT_ENHANCER": "google"}
    toml = '[providers.google]\ntext_model = "gemini-2.5-flash-lite"\n'
    core = build_core(make_config(tmp_path, env, toml))
    async with core:
        result = await core.enhance(CTX, "a lighthouse")
        assert result.enhancer == "google" and result.enhanced.startswith("a lighthouse, ")
    [call] = goo.calls("text")
    assert call.path.endswith("/models/gemini-2.5-flash-lite:generateContent")
    assert "Keep the user's subject" in call.body["systemInstruction"]["parts"][0]["text"]
    assert oai.calls("chat") == []


async def test_enhancer_follows_the_keys_and_falls_back_to_offline(tmp_path: Path,
                                                                   fakes: tuple[FakeOpenAI, FakeGoogle]) -> None:
    _, goo = fakes
    probe = build_core(make_config(tmp_path, google_env(goo.base_url)))
    assert probe.registry.enhancer.name == "google"
    await probe.registry.aclose()
    offline = build_core(make_config(tmp_path, {}))
    async with offline:
        first = await offline.enhance(CTX, "a red fox")
        again = await offline.enhance(CTX, "a red fox")
        assert first.enhancer == "local" and first.enhanced == again.enhanced
        assert first.enhanced.startswith("a red fox, ") and len(first.enhanced) <= PROMPT_LIMIT
    with pytest.raises(ConfigError, match="IMAGEBOT_ENHANCER=openai but its API key is not set"):
        build_core(make_config(tmp_path, {"IMAGEBOT_ENHANCER": "openai"}))


async def test_a_long_answer_is_cut_under_the_image_prompt_limit(tmp_path: Path,
                                                                 fakes: tuple[FakeOpenAI, FakeGoogle]) -> None:
    oai, _ = fakes
    oai.chat_reply = '"' + "a cat on a roof at dusk with " + "very " * 1200 + 'many stars"'
    core = build_core(make_config(tmp_path, openai_env(oai.base_url)))
    async with core:
        result = await core.enhance(CTX, "a cat on a roof")
        assert len(result.enhanced) <= PROMPT_LIMIT and result.enhanced.startswith("a cat on a roof at dusk")
        assert not result.enhanced.endswith(" ") and '"' not in result.enhanced


@pytest.mark.parametrize(("behaviour", "code"), [("down", "IMG-PROV-DOWN"), ("refusal", "IMG-PROV-POLICY"),
                                                 ("auth", "IMG-PROV-AUTH"), ("slow", "IMG-PROV-TIMEOUT")])
async def test_enhance_failures_are_refunded(tmp_path: Path, fakes: tuple[FakeOpenAI, FakeGoogle],
                                            behaviour: str, code: str) -> None:
    oai, _ = fakes
    oai.slow_seconds = 1.0
    toml = "[providers.openai]\ntext_timeout = 0.3\nmax_retries = 0\n"
    core = build_core(make_config(tmp_path, openai_env(oai.base_url), toml))
    async with core:
        oai.queue("chat", behaviour)
        with pytest.raises(GenerationFailed) as info:
            await core.enhance(CTX, "a cat")
        assert info.value.code == code and (await core.credits(USER)).balance == 500


async def test_gemini_blocked_prompt_is_a_content_rejection(tmp_path: Path,
                                                            fakes: tuple[FakeOpenAI, FakeGoogle]) -> None:
    _, goo = fakes
    core = build_core(make_config(tmp_path, google_env(goo.base_url)))
    async with core:
        goo.queue("text", "blocked")
        with pytest.raises(GenerationFailed) as info:
            await core.enhance(CTX, "something forbidden")
        assert info.value.code == "IMG-PROV-POLICY" and (await core.credits(USER)).balance == 500


async def test_reference_without_an_editing_model_is_described_by_gemini(
    tmp_path: Path, fakes: tuple[FakeOpenAI, FakeGoogle]
) -> None:
    oai, goo = fakes
    env = {**openai_env(oai.base_url), **google_env(goo.base_url), "IMAGEBOT_ENHANCER": "google",
           "IMAGEBOT_PROVIDERS": "openai"}
    core = build_core(make_config(tmp_path, env))
    reference = png(30, 20)
    async with core:
        result = await core.imagine(CTX, ImagineOptions("a castle", model="dall-e-3", reference=reference))
        assert result.provider == "openai"
    [describe] = goo.calls("text")
    parts = describe.body["contents"][0]["parts"]
    assert "inlineData" in parts[0] and "Describe this image" in parts[1]["text"]
    [call] = oai.calls("generations")
    assert call.body["prompt"] == ("a castle. In the manner of the reference: "
                                   "A red square on a plain background, flat colour, centred composition.")

"""/enhance through OpenAI chat or Gemini text (chosen by config), and reference descriptions by vision."""

from __future__ import annotations

import logging
from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from bot.app import build_core
from bot.errors import ConfigError, GenerationFailed, ModelRetired
from bot.models import ImagineOptions
from bot.validation import PROMPT_LIMIT
from providers.base import ListsModels
from providers.openai_text import build_openai_text
from tests.fakes.google_api import FakeGoogle
from tests.fakes.harness import CTX, OPENAI_KEY, USER, google_env, make_config, openai_env
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
    assert call.body["model"] == "gpt-6-luna"


async def test_openai_text_lists_its_models_and_can_be_pinned(tmp_path: Path,
                                                             fakes: tuple[FakeOpenAI, FakeGoogle]) -> None:
    oai, _ = fakes
    probe = build_openai_text(make_config(tmp_path, openai_env(oai.base_url)))
    assert isinstance(probe, ListsModels) and probe.pinned == () and probe.model == "gpt-6-luna"
    assert [f.prefix for f in probe.families][:3] == ["gpt-6-luna", "gpt-5.6-luna", "gpt-5.4-mini"]
    try:
        listed = {m.id: m.shutdown_date for m in await probe.list_models()}
    finally:
        await probe.aclose()
    assert listed["gpt-4o-mini"] == "2027-01-14" and listed["gpt-6-luna"] is None
    assert not any(f.matches("gpt-4o-mini-tts") for f in probe.families)  # not a chat model
    toml = '[providers.openai]\ntext_model = "gpt-4.1-mini"\nvision_model = "gpt-5.4-mini"\n'
    core = build_core(make_config(tmp_path, openai_env(oai.base_url), toml))
    async with core:
        assert core.registry.enhancer.model == "gpt-4.1-mini"
        await core.enhance(CTX, "a cat")
        await core.registry.enhancer.describe(png())
    text, vision = oai.calls("chat")
    assert text.body["model"] == "gpt-4.1-mini" and vision.body["model"] == "gpt-5.4-mini"


async def test_a_pinned_unknown_text_model_is_its_own_family(tmp_path: Path) -> None:
    toml = '[providers.openai]\ntext_model = "gpt-5.5"\n'
    text = build_openai_text(make_config(tmp_path, openai_env("http://127.0.0.1:9/v1"), toml))
    assert text is not None and text.pinned == ("gpt-5.5",) and text.families[-1].prefix == "gpt-5.5"
    await text.aclose()


async def test_a_retired_openai_text_model_stops_the_bot_at_start(tmp_path: Path) -> None:
    toml = '[providers.openai]\ntext_model = "gpt-3.5-turbo"\n'
    with pytest.raises(ConfigError, match="gpt-3.5-turbo has been shut down by OpenAI; use gpt-6-luna"):
        build_core(make_config(tmp_path, openai_env("http://127.0.0.1:9/v1"), toml))


async def test_a_text_model_gone_while_running_is_model_retired(tmp_path: Path,
                                                                fakes: tuple[FakeOpenAI, FakeGoogle]) -> None:
    oai, _ = fakes
    text = build_openai_text(make_config(tmp_path, openai_env(oai.base_url)))
    assert text is not None
    oai.retired.add("gpt-6-luna")
    try:
        with pytest.raises(ModelRetired) as info:
            await text.enhance("a cat", limit=500)
    finally:
        await text.aclose()
    assert info.value.model == "gpt-6-luna" and info.value.retryable and info.value.provider == "openai"


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


async def test_gemini_enhancer_defaults_to_a_current_text_model(tmp_path: Path,
                                                                fakes: tuple[FakeOpenAI, FakeGoogle]) -> None:
    _, goo = fakes
    core = build_core(make_config(tmp_path, google_env(goo.base_url)))
    async with core:
        assert core.registry.enhancer.model == "gemini-3.5-flash-lite"
        result = await core.enhance(CTX, "a lighthouse")
        assert result.enhancer == "google" and result.enhanced.startswith("a lighthouse, ")
    [call] = goo.calls("text")
    assert call.path.endswith("/models/gemini-3.5-flash-lite:generateContent")


async def test_a_retired_gemini_text_model_stops_the_bot_at_start(tmp_path: Path,
                                                                  fakes: tuple[FakeOpenAI, FakeGoogle]) -> None:
    _, goo = fakes
    toml = '[providers.google]\ntext_model = "gemini-2.5-flash"\n'
    with pytest.raises(ConfigError, match="gemini-2.5-flash has been shut down by Google; use gemini-3.5-flash-lite"):
        build_core(make_config(tmp_path, {**google_env(goo.base_url), "IMAGEBOT_ENHANCER": "google"}, toml))


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
    # A compatible service without edits takes no reference: the enhancer describes it instead.
    env = {**google_env(goo.base_url), "IMAGEBOT_ENHANCER": "google", "IMAGEBOT_PROVIDERS": "mysd"}
    core = build_core(make_config(tmp_path, env, f'[providers.mysd]\nbase_url = "{oai.base_url}"\nmodels = ["sd15"]\n'))
    reference = png(30, 20)
    async with core:
        result = await core.imagine(CTX, ImagineOptions("a castle", reference=reference))
        assert result.provider == "mysd"
    [describe] = goo.calls("text")
    parts = describe.body["contents"][0]["parts"]
    assert "inlineData" in parts[0] and "Describe this image" in parts[1]["text"]
    [call] = oai.calls("generations")
    assert call.body["prompt"] == ("a castle. In the manner of the reference: "
                                   "A red square on a plain background, flat colour, centred composition.")


def _retired_lines(caplog: pytest.LogCaptureFixture) -> list[str]:
    return [r.getMessage() for r in caplog.records if "left the rotation" in r.getMessage()]


async def test_a_text_model_retired_mid_run_is_replaced_within_the_same_charge(
    tmp_path: Path, fakes: tuple[FakeOpenAI, FakeGoogle], caplog: pytest.LogCaptureFixture
) -> None:
    oai, _ = fakes
    core = build_core(make_config(tmp_path, openai_env(oai.base_url)))
    async with core:
        assert core.registry.enhancer.model == "gpt-6-luna"
        oai.retired.add("gpt-6-luna")  # OpenAI pulls the text model while the bot runs
        with caplog.at_level(logging.WARNING):
            first = await core.enhance(CTX, "a cat on a roof")
            again = await core.enhance(CTX, "a dog in a boat")
        assert first.enhancer == "openai" and first.enhanced.startswith("a cat on a roof, ")
        assert first.credits_spent == 1 and again.credits_spent == 1
        assert (await core.credits(USER)).balance == 500 - 2  # charged once per /enhance
        assert await core.store.audit() == []
        gen = await core.generation(first.generation_id)
        assert gen is not None and gen.status == "COMPLETED" and gen.result_text == first.enhanced
        assert core.registry.enhancer.model == "gpt-5.6-luna"
    asked = [c.body["model"] for c in oai.calls("chat")]
    assert asked == ["gpt-6-luna", "gpt-5.6-luna", "gpt-5.6-luna"]  # the retired one once, never again
    said = _retired_lines(caplog)
    assert len(said) == 1 and "gpt-6-luna" in said[0] and "gpt-5.6-luna" in said[0]
    assert OPENAI_KEY not in caplog.text
    # The image models are untouched: the text model shares the vendor's name, not its rotation.
    assert core.registry.catalogue.listings["openai"].dropped == {}


async def test_when_the_replacement_text_model_fails_too_the_enhance_is_refunded(
    tmp_path: Path, fakes: tuple[FakeOpenAI, FakeGoogle], caplog: pytest.LogCaptureFixture
) -> None:
    oai, _ = fakes
    core = build_core(make_config(tmp_path, openai_env(oai.base_url)))
    async with core:
        oai.retired.add("gpt-6-luna")
        oai.queue("chat", "ok", "down")  # the retired model's 404, then the replacement is down
        with caplog.at_level(logging.WARNING), pytest.raises(GenerationFailed) as info:
            await core.enhance(CTX, "a cat")
        assert info.value.code == "IMG-PROV-DOWN" and "not charged" in info.value.message
        assert (await core.credits(USER)).balance == 500 and await core.store.audit() == []
        # The replacement is gone as well: tried once, it leaves the rotation too, the user is
        # refunded, and the next /enhance runs on what is left.
        oai.retired.update({"gpt-5.6-luna", "gpt-5.4-mini"})
        with caplog.at_level(logging.WARNING), pytest.raises(GenerationFailed) as gone:
            await core.enhance(CTX, "a cat")
        assert gone.value.code == "IMG-PROV-RETIRED" and "not charged" in gone.value.message
        assert (await core.credits(USER)).balance == 500
        result = await core.enhance(CTX, "a cat")
        assert result.credits_spent == 1 and (await core.credits(USER)).balance == 499
        assert await core.store.audit() == []
    assert [c.body["model"] for c in oai.calls("chat")] == [
        "gpt-6-luna", "gpt-5.6-luna", "gpt-5.6-luna", "gpt-5.4-mini", "gpt-4.1-mini"]
    said = _retired_lines(caplog)
    assert [m for m in ("gpt-6-luna", "gpt-5.6-luna", "gpt-5.4-mini") if any(f"model {m} is" in x for x in said)] \
        == ["gpt-6-luna", "gpt-5.6-luna", "gpt-5.4-mini"] and len(said) == 3

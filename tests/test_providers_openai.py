"""OpenAI images and text through the real ``openai`` client against a loopback fake of its HTTP API."""

from __future__ import annotations

import json
import logging
from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from bot import cli
from bot.app import build_core
from bot.errors import (
    ContentRejected,
    GenerationFailed,
    ProviderAuthError,
    ProviderBadResponse,
    ProviderError,
    ProviderRateLimited,
    ProviderTimeout,
    ProviderUnavailable,
)
from bot.models import ImagineOptions
from providers.base import GenerationRequest
from providers.openai_images import build_openai
from tests.fakes.harness import CTX, OPENAI_KEY, USER, make_config, openai_env
from tests.fakes.images import png
from tests.fakes.openai_api import FakeOpenAI


@pytest.fixture
async def fake() -> AsyncIterator[FakeOpenAI]:
    server = FakeOpenAI()
    server.slow_seconds = 1.0
    async with server:
        yield server


def only_openai(fake: FakeOpenAI, **extra: str) -> dict[str, str]:
    return openai_env(fake.base_url, IMAGEBOT_PROVIDERS="openai", **extra)


async def test_gpt_image_1_returns_base64_with_quality_mapped_in_one_call(tmp_path: Path, fake: FakeOpenAI) -> None:
    core = build_core(make_config(tmp_path, only_openai(fake)))
    async with core:
        result = await core.imagine(CTX, ImagineOptions("a red fox in snow", count=3, quality="hd"))
        assert (result.provider, result.model, len(result.images)) == ("openai", "gpt-image-1", 3)
        assert result.credits_spent == 3 * 20 and (await core.credits(USER)).balance == 500 - 60
        assert all(i.path.exists() and i.path.is_relative_to(tmp_path / "data") for i in result.images)
    [call] = fake.calls("generations")
    assert call.body == {"model": "gpt-image-1", "prompt": "a red fox in snow", "n": 3, "size": "1024x1024",
                         "quality": "high"}
    assert call.headers["Authorization"] == f"Bearer {OPENAI_KEY}"


async def test_dall_e_3_url_is_downloaded_one_image_per_call_and_revised_prompt_kept(
    tmp_path: Path, fake: FakeOpenAI
) -> None:
    core = build_core(make_config(tmp_path, only_openai(fake)))
    async with core:
        result = await core.imagine(CTX, ImagineOptions("a lighthouse", model="dall-e-3", count=2, size="landscape",
                                                        style="artistic"))
        assert (result.model, result.size, len(result.images)) == ("dall-e-3", "1792x1024", 2)
        assert result.revised_prompt == "A richly detailed rendering of a lighthouse"
        gen = await core.generation(result.generation_id)
        assert gen is not None and gen.revised_prompt == result.revised_prompt
    calls = fake.calls("generations")
    assert len(calls) == 2 and all(c.body["n"] == 1 for c in calls)
    # artistic is not a dall-e-3 style: mapped to vivid; the answer is a URL the provider fetched at once.
    assert {c.body["style"] for c in calls} == {"vivid"} and {c.body["response_format"] for c in calls} == {"url"}
    assert len(fake.files) == 2


async def test_dall_e_2_small_sizes_return_base64(tmp_path: Path, fake: FakeOpenAI) -> None:
    core = build_core(make_config(tmp_path, only_openai(fake)))
    async with core:
        result = await core.imagine(CTX, ImagineOptions("an owl", provider="openai/dall-e-2", size="256x256", count=2))
        assert result.credits_spent == 6 and len(result.images) == 2
    [call] = fake.calls("generations")
    assert call.body["response_format"] == "b64_json" and call.body["size"] == "256x256"
    assert "quality" not in call.body and "style" not in call.body


async def test_reference_image_goes_to_gpt_image_1_edits_as_multipart(tmp_path: Path, fake: FakeOpenAI) -> None:
    reference = png(40, 40, (10, 200, 10))
    core = build_core(make_config(tmp_path, only_openai(fake)))
    async with core:
        result = await core.imagine(CTX, ImagineOptions("make it a watercolor", reference=reference, count=2))
        assert len(result.images) == 2
    assert fake.calls("generations") == []
    [edit] = fake.calls("edits")
    assert edit.files["image"] == reference and "image" in edit.fields
    assert edit.body["model"] == "gpt-image-1" and edit.body["n"] == "2" and edit.body["prompt"] == "make it a watercolor"


async def test_reference_for_dall_e_3_is_described_by_the_vision_model(tmp_path: Path, fake: FakeOpenAI) -> None:
    core = build_core(make_config(tmp_path, only_openai(fake)))
    async with core:
        await core.imagine(CTX, ImagineOptions("a castle", model="dall-e-3", reference=png()))
    [vision] = fake.calls("chat")
    parts = vision.body["messages"][-1]["content"]
    assert parts[1]["image_url"]["url"].startswith("data:image/png;base64,")
    [call] = fake.calls("generations")
    assert call.body["prompt"].startswith("a castle. In the manner of the reference: A red square")
    assert fake.calls("edits") == []


def _provider(tmp_path: Path, fake: FakeOpenAI, toml: str | None = None):  # type: ignore[no-untyped-def]
    from tests.fakes.harness import FAST

    [provider] = build_openai(make_config(tmp_path, openai_env(fake.base_url), toml or FAST))
    return provider


ERROR_CASES = [
    ("policy", "gpt-image-1", ContentRejected),
    ("moderation", "gpt-image-1", ContentRejected),
    ("rate", "gpt-image-1", ProviderRateLimited),
    ("quota", "gpt-image-1", ProviderUnavailable),
    ("auth", "gpt-image-1", ProviderAuthError),
    ("forbidden", "gpt-image-1", ProviderAuthError),
    ("notfound", "gpt-image-1", ProviderUnavailable),
    ("down", "gpt-image-1", ProviderUnavailable),
    ("slow", "gpt-image-1", ProviderTimeout),
    ("garbage", "gpt-image-1", ProviderBadResponse),
    ("empty", "gpt-image-1", ProviderBadResponse),
    ("notimage", "gpt-image-1", ProviderBadResponse),
    ("badrequest", "gpt-image-1", ProviderBadResponse),
    ("badurl", "dall-e-3", ProviderBadResponse),
    ("bigurl", "dall-e-3", ProviderBadResponse),
]


@pytest.mark.parametrize(("behaviour", "model", "expected"), ERROR_CASES, ids=[c[0] for c in ERROR_CASES])
async def test_sdk_errors_become_ours(
    tmp_path: Path, fake: FakeOpenAI, behaviour: str, model: str, expected: type[ProviderError]
) -> None:
    toml = "[providers.openai]\ntimeout = 0.3\nmax_retries = 0\ndownload_max_mb = 1\n"
    provider = _provider(tmp_path, fake, toml)
    fake.queue("generations", behaviour)
    try:
        with pytest.raises(expected) as info:
            await provider.generate(GenerationRequest("a fox", model, "1024x1024"))
    finally:
        await provider.aclose()
    err = info.value
    assert type(err) is expected or behaviour == "bigurl"
    assert err.provider == "openai" and OPENAI_KEY not in str(err)
    if behaviour == "rate":
        assert err.retry_after == pytest.approx(0.02)  # type: ignore[attr-defined]
    if behaviour in ("auth", "forbidden"):
        assert "OPENAI_API_KEY" in err.message
    if behaviour == "bigurl":
        assert "larger than the 1 MB limit" in err.message


async def test_connection_refused_is_unavailable(tmp_path: Path) -> None:
    [provider] = build_openai(make_config(tmp_path, openai_env("http://127.0.0.1:9/v1")))
    try:
        with pytest.raises(ProviderUnavailable, match="could not be reached"):
            await provider.generate(GenerationRequest("a fox", "gpt-image-1", "1024x1024"))
    finally:
        await provider.aclose()


async def test_retries_are_explicit_and_configurable(tmp_path: Path, fake: FakeOpenAI) -> None:
    provider = _provider(tmp_path, fake, "[providers.openai]\ntimeout = 2\nmax_retries = 1\n")
    assert provider.client.max_retries == 1 and provider.client.timeout == 2
    fake.queue("generations", "rate", "ok")
    try:
        images = await provider.generate(GenerationRequest("a fox", "gpt-image-1", "1024x1024"))
    finally:
        await provider.aclose()
    assert len(images) == 1 and len(fake.calls("generations")) == 2
    defaults = build_openai(make_config(tmp_path, openai_env(fake.base_url), ""))[0]
    assert defaults.client.timeout == 120 and defaults.client.max_retries == 1  # never the SDK's 600 s
    await defaults.aclose()


async def test_content_policy_is_refunded_and_suggests_enhance(tmp_path: Path, fake: FakeOpenAI) -> None:
    core = build_core(make_config(tmp_path, openai_env(fake.base_url, IMAGEBOT_PROVIDERS="openai,local")))
    async with core:
        fake.queue("generations", "policy")
        with pytest.raises(GenerationFailed) as info:
            await core.imagine(CTX, ImagineOptions("something forbidden", count=2))
        assert info.value.code == "IMG-PROV-POLICY" and "/enhance" in info.value.message
        assert info.value.refunded == 20 and (await core.credits(USER)).balance == 500
        assert await core.store.audit() == []
    assert len(fake.calls("generations")) == 1  # not retried, not failed over to local


async def test_no_key_in_logs_errors_or_replies(
    tmp_path: Path, fake: FakeOpenAI, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG)
    for name in ("openai", "httpx2", "httpcore2", "providers", "bot"):
        caplog.set_level(logging.DEBUG, logger=name)
    messages: list[str] = []
    core = build_core(make_config(tmp_path, only_openai(fake)))
    async with core:
        await core.imagine(CTX, ImagineOptions("a fox", model="dall-e-3"))
        await core.enhance(CTX, "a fox")
        # The fake's 401 text quotes the key it received, as the real service does.
        for behaviour in ("auth", "rate", "policy", "garbage", "down"):
            fake.queue("generations", behaviour)
            with pytest.raises(GenerationFailed) as info:
                await core.imagine(CTX, ImagineOptions("a fox"))
            messages += [str(info.value), info.value.message, repr(info.value), str(info.value.cause)]
        fake.queue("chat", "auth")
        with pytest.raises(GenerationFailed) as info:
            await core.enhance(CTX, "a fox")
        messages.append(str(info.value))
        messages.append(repr(core.registry.providers) + repr(core.config))
    assert any("Incorrect API key provided" in r.getMessage() for r in caplog.records)  # the vendor text was logged
    assert caplog.records and OPENAI_KEY not in caplog.text
    assert all(OPENAI_KEY not in m for m in messages)
    db = (tmp_path / "imagebot.sqlite3").read_bytes()
    assert OPENAI_KEY.encode() not in db


async def test_capabilities_match_the_models_and_imagebot_providers_lists_them(
    tmp_path: Path, fake: FakeOpenAI, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    provider = _provider(tmp_path, fake)
    caps = {m.name: m for m in provider.capabilities.models}
    await provider.aclose()
    assert provider.capabilities.default_model == "gpt-image-1"
    assert caps["dall-e-2"].sizes == ("256x256", "512x512", "1024x1024")
    assert caps["dall-e-3"].sizes == ("1024x1024", "1792x1024", "1024x1792")
    assert caps["gpt-image-1"].sizes == ("1024x1024", "1536x1024", "1024x1536")
    assert caps["dall-e-3"].max_per_call == 1 and caps["dall-e-3"].native_styles == ("vivid", "natural")
    assert caps["gpt-image-1"].supports_reference and not caps["dall-e-3"].supports_reference
    assert caps["dall-e-2"].prompt_limit == 1000
    for key, value in openai_env(fake.base_url).items():
        monkeypatch.setenv(key, value)
    monkeypatch.chdir(tmp_path)
    assert cli.main(["providers", "--json"]) == 0
    data = json.loads(capsys.readouterr().out)
    assert data["order"][0] == "openai" and data["enhancer"] == "openai"
    listed = {m["name"]: m for m in data["providers"][0]["models"]}
    assert listed["dall-e-3"]["sizes"] == ["1024x1024", "1792x1024", "1024x1792"]
    assert OPENAI_KEY not in json.dumps(data)


async def test_models_can_be_chosen_in_config(tmp_path: Path, fake: FakeOpenAI) -> None:
    provider = _provider(tmp_path, fake, '[providers.openai]\nmodels = ["dall-e-3", "dall-e-2"]\n')
    await provider.aclose()
    assert provider.capabilities.default_model == "dall-e-3"
    assert [m.name for m in provider.capabilities.models] == ["dall-e-3", "dall-e-2"]
    from bot.errors import ConfigError

    with pytest.raises(ConfigError, match="unknown model 'dall-e-9'"):
        _provider(tmp_path, fake, '[providers.openai]\nmodels = ["dall-e-9"]\n')


async def test_no_key_no_provider(tmp_path: Path) -> None:
    assert build_openai(make_config(tmp_path, {})) == []
    core = build_core(make_config(tmp_path, {}))
    assert core.registry.names() == ["local"] and core.registry.enhancer.name == "local"

"""Gemini image models through the real ``google-genai`` client against a loopback fake of Google's API."""

from __future__ import annotations

import base64
import logging
from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from bot.app import build_core
from bot.errors import (
    ContentRejected,
    GenerationFailed,
    ModelRetired,
    ProviderAuthError,
    ProviderBadResponse,
    ProviderError,
    ProviderRateLimited,
    ProviderTimeout,
    ProviderUnavailable,
)
from bot.models import ImagineOptions
from providers.base import GenerationRequest
from providers.google_images import GoogleImages, build_google
from storage.images import inspect_image
from tests.fakes.google_api import FakeGoogle
from tests.fakes.harness import CTX, GOOGLE_KEY, USER, make_config, vertex_env
from tests.fakes.harness import google_env as _google_env
from tests.fakes.images import png

FAST = "[providers.google]\ntimeout = 0.3\nmax_retries = 0\n"
DEFAULT = "gemini-nano-banana-2.1"


@pytest.fixture
async def fake() -> AsyncIterator[FakeGoogle]:
    server = FakeGoogle()
    server.slow_seconds = 1.0
    async with server:
        yield server
    assert server.calls("imagen") == []  # nothing here ever calls Imagen (:predict)


def google_env(fake: FakeGoogle, order: str = "google") -> dict[str, str]:
    return _google_env(fake.base_url, IMAGEBOT_PROVIDERS=order)


@pytest.fixture
async def provider(tmp_path: Path, fake: FakeGoogle) -> AsyncIterator[GoogleImages]:
    [built] = build_google(make_config(tmp_path, google_env(fake), FAST))
    try:
        yield built
    finally:
        await built.aclose()


async def test_default_model_works_with_nothing_but_a_key(provider: GoogleImages, fake: FakeGoogle) -> None:
    assert provider.capabilities.default_model == DEFAULT and provider.pinned == ()
    [image] = await provider.generate(GenerationRequest("a fox", DEFAULT, "1024x1024"))
    assert image.mime == "image/png"
    assert inspect_image(image.data)[1:] == (64, 64)  # 1024x1024 drawn at the fake's 1/16 scale
    [call] = fake.calls("gemini")
    assert call.path.endswith(f"/models/{DEFAULT}:generateContent")
    assert call.headers["x-goog-api-key"] == GOOGLE_KEY
    config = call.body["generationConfig"]
    assert config["responseModalities"] == ["IMAGE"]
    assert config["imageConfig"] == {"aspectRatio": "1:1", "imageSize": "1K"}
    assert "outputMimeType" not in config["imageConfig"]  # not supported by the Gemini API


async def test_reference_goes_in_as_a_part_and_the_style_into_the_prompt(provider: GoogleImages,
                                                                         fake: FakeGoogle) -> None:
    reference = png(32, 32, (0, 0, 255))
    await provider.generate(GenerationRequest("a fox like this", "gemini-3-pro-image", "2752x1536",
                                              reference=reference, style="photographic"))
    [call] = fake.calls("gemini")
    parts = call.body["contents"][0]["parts"]
    assert base64.urlsafe_b64decode(parts[0]["inlineData"]["data"]) == reference
    blob = parts[0]["inlineData"]  # the SDK sends mime_type; the API takes either spelling
    assert (blob.get("mimeType") or blob.get("mime_type")) == "image/png"
    assert parts[1]["text"] == "a fox like this, photographic style"
    assert call.body["generationConfig"]["imageConfig"] == {"aspectRatio": "16:9", "imageSize": "2K"}
    assert "style" not in str(call.body["generationConfig"]).lower()


async def test_usage_tokens_come_back_on_the_first_image_of_each_call(provider: GoogleImages,
                                                                      fake: FakeGoogle) -> None:
    fake.prompt_tokens, fake.image_tokens = 17, 1680
    images = await provider.generate(GenerationRequest("a fox", DEFAULT, "1024x1024", count=2))
    assert len(images) == 2 and len(fake.calls("gemini")) == 2  # one image per call
    assert [(i.input_tokens, i.output_tokens) for i in images] == [(17, 1680), (17, 1680)]


async def test_interim_thought_images_are_not_results(provider: GoogleImages, fake: FakeGoogle) -> None:
    fake.queue("gemini", "thinking")
    [image] = await provider.generate(GenerationRequest("a fox", "gemini-3-pro-image", "1376x768"))
    assert inspect_image(image.data)[1:] == (86, 48)  # the final 16:9 1K image, not the half-size draft


ERROR_CASES = [
    ("blocked", ContentRejected),
    ("safety", ContentRejected),
    ("textonly", ProviderBadResponse),
    ("notimage", ProviderBadResponse),
    ("rate", ProviderRateLimited),
    ("auth", ProviderAuthError),
    ("forbidden", ProviderAuthError),
    ("notfound", ModelRetired),
    ("gone", ModelRetired),
    ("down", ProviderUnavailable),
    ("slow", ProviderTimeout),
    ("garbage", ProviderBadResponse),
    ("badrequest", ProviderBadResponse),
]


@pytest.mark.parametrize(("behaviour", "expected"), ERROR_CASES, ids=[c[0] for c in ERROR_CASES])
async def test_sdk_errors_become_ours(provider: GoogleImages, fake: FakeGoogle, behaviour: str,
                                      expected: type[ProviderError]) -> None:
    fake.queue("gemini", behaviour)
    with pytest.raises(expected) as info:
        await provider.generate(GenerationRequest("a fox", DEFAULT, "1024x1024"))
    err = info.value
    assert type(err) is expected and err.provider == "google" and GOOGLE_KEY not in str(err)
    if behaviour == "rate":
        assert err.retry_after == 7.0 and "try again in 7 s" in err.message  # type: ignore[attr-defined]
    if behaviour in ("auth", "forbidden"):
        assert "GOOGLE_API_KEY" in err.message
    if expected is ModelRetired:
        assert err.retryable and err.model == DEFAULT and DEFAULT in err.message  # type: ignore[attr-defined]


async def test_a_model_google_shut_down_is_retired_and_named(provider: GoogleImages, fake: FakeGoogle) -> None:
    fake.retired.add("gemini-3.1-flash-image")
    with pytest.raises(ModelRetired) as info:
        await provider.generate(GenerationRequest("a fox", "gemini-3.1-flash-image", "1024x1024"))
    assert info.value.model == "gemini-3.1-flash-image" and info.value.code == "IMG-PROV-RETIRED"
    with pytest.raises(ModelRetired):  # an id Google shut down long ago answers the same way
        await provider.generate(GenerationRequest("a fox", "gemini-2.5-flash-image", "1024x1024"))


async def test_connection_refused_is_unavailable(tmp_path: Path) -> None:
    [provider] = build_google(make_config(tmp_path, _google_env("http://127.0.0.1:9"), FAST))
    try:
        with pytest.raises(ProviderUnavailable, match="could not be reached"):
            await provider.generate(GenerationRequest("a fox", DEFAULT, "1024x1024"))
        with pytest.raises(ProviderUnavailable, match="could not be reached"):
            await provider.list_models()
    finally:
        await provider.aclose()


async def test_sdk_retries_are_set_explicitly(tmp_path: Path, fake: FakeGoogle) -> None:
    toml = "[providers.google]\ntimeout = 2\nmax_retries = 1\n"
    [provider] = build_google(make_config(tmp_path, google_env(fake), toml))
    fake.queue("gemini", "down", "ok")
    try:
        images = await provider.generate(GenerationRequest("a fox", DEFAULT, "1024x1024"))
    finally:
        await provider.aclose()
    assert len(images) == 1 and len(fake.calls("gemini")) == 2


async def test_gemini_api_key_env_name_is_accepted_and_named_in_errors(tmp_path: Path, fake: FakeGoogle) -> None:
    env = {"GEMINI_API_KEY": GOOGLE_KEY, "GOOGLE_GEMINI_BASE_URL": fake.base_url}
    [provider] = build_google(make_config(tmp_path, env, FAST))
    fake.queue("gemini", "auth")
    try:
        with pytest.raises(ProviderAuthError, match="GEMINI_API_KEY"):
            await provider.generate(GenerationRequest("a fox", DEFAULT, "1024x1024"))
    finally:
        await provider.aclose()


async def test_vertex_express_mode_draws_with_gemini_models(tmp_path: Path, fake: FakeGoogle) -> None:
    [provider] = build_google(make_config(tmp_path, vertex_env(fake.base_url), FAST))
    try:
        assert provider.client.vertexai and provider.capabilities.default_model == DEFAULT
        [image] = await provider.generate(GenerationRequest("a fox", DEFAULT, "1200x896"))
    finally:
        await provider.aclose()
    [call] = fake.calls("gemini")
    assert call.path.endswith(f"/publishers/google/models/{DEFAULT}:generateContent")
    assert call.body["generationConfig"]["imageConfig"] == {"aspectRatio": "4:3", "imageSize": "1K"}
    assert inspect_image(image.data)[1:] == (75, 56)


async def test_vertex_with_a_project_uses_application_credentials(tmp_path: Path, fake: FakeGoogle) -> None:
    env = {"GOOGLE_GENAI_USE_VERTEXAI": "1", "GOOGLE_CLOUD_PROJECT": "my-project",
           "GOOGLE_CLOUD_LOCATION": "europe-west4", "GOOGLE_API_KEY": GOOGLE_KEY,
           "GOOGLE_VERTEX_BASE_URL": fake.base_url}
    [provider] = build_google(make_config(tmp_path, env, FAST))
    try:
        assert provider.key_env == "GOOGLE_APPLICATION_CREDENTIALS" and provider.notes == ()
        assert provider.client.vertexai and provider.client._api_client.project == "my-project"
        assert provider.client._api_client.location == "europe-west4"
        assert not any(m.name.startswith("imagen-") for m in provider.capabilities.models)
    finally:
        await provider.aclose()


async def test_content_rejection_is_refunded(tmp_path: Path, fake: FakeGoogle) -> None:
    core = build_core(make_config(tmp_path, google_env(fake, "google,local"), FAST))
    async with core:
        fake.queue("gemini", "blocked")
        with pytest.raises(GenerationFailed) as info:
            await core.imagine(CTX, ImagineOptions("something forbidden"))
        assert info.value.code == "IMG-PROV-POLICY"
        assert (await core.credits(USER)).balance == 500


async def test_no_key_in_logs_or_errors(tmp_path: Path, fake: FakeGoogle, caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.DEBUG)
    for name in ("google_genai", "google", "httpx2", "httpcore2", "providers", "bot", "aiohttp"):
        caplog.set_level(logging.DEBUG, logger=name)
    messages: list[str] = []
    core = build_core(make_config(tmp_path, google_env(fake), FAST))
    async with core:
        await core.imagine(CTX, ImagineOptions("a fox"))
        await core.enhance(CTX, "a fox")
        for behaviour in ("auth", "rate", "blocked", "garbage", "down"):
            fake.queue("gemini", behaviour)
            with pytest.raises(GenerationFailed) as info:
                await core.imagine(CTX, ImagineOptions("a fox"))
            messages += [str(info.value), repr(info.value), str(info.value.cause)]
        messages.append(repr(core.registry.providers) + repr(core.registry.enhancer) + repr(core.config))
    assert caplog.records and GOOGLE_KEY not in caplog.text
    assert all(GOOGLE_KEY not in m for m in messages)
    assert GOOGLE_KEY.encode() not in (tmp_path / "imagebot.sqlite3").read_bytes()

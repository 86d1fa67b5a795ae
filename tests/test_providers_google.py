"""Gemini and Imagen through the real ``google-genai`` client against a loopback fake of Google's API."""

from __future__ import annotations

import base64
import json
import logging
from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from bot import cli
from bot.app import build_core
from bot.errors import (
    ConfigError,
    ContentRejected,
    GenerationFailed,
    ProviderAuthError,
    ProviderBadResponse,
    ProviderError,
    ProviderRateLimited,
    ProviderTimeout,
    ProviderUnavailable,
    ValidationError,
)
from bot.models import ImagineOptions
from providers.base import GenerationRequest
from providers.google_images import IMAGEN_NOTE, build_google
from tests.fakes.google_api import FakeGoogle
from tests.fakes.harness import CTX, GOOGLE_KEY, USER, make_config, vertex_env
from tests.fakes.harness import google_env as _google_env
from tests.fakes.images import png

FAST = "[providers.google]\ntimeout = 0.3\nmax_retries = 0\n"


@pytest.fixture
async def fake() -> AsyncIterator[FakeGoogle]:
    server = FakeGoogle()
    server.slow_seconds = 1.0
    async with server:
        yield server


def google_env(fake: FakeGoogle, order: str = "google") -> dict[str, str]:
    return _google_env(fake.base_url, IMAGEBOT_PROVIDERS=order)


async def test_gemini_image_comes_back_inline_and_reference_goes_in_as_a_part(
    tmp_path: Path, fake: FakeGoogle
) -> None:
    reference = png(32, 32, (0, 0, 255))
    core = build_core(make_config(tmp_path, google_env(fake), FAST))
    async with core:
        result = await core.imagine(CTX, ImagineOptions("a fox like this", size="landscape", count=2,
                                                        reference=reference, style="photographic"))
        assert (result.provider, result.model, len(result.images)) == ("google", "gemini-2.5-flash-image", 2)
        # 16:9 at Gemini's own resolution (the fake draws at 1/16 scale): the real dimensions are stored.
        assert {(i.width, i.height) for i in result.images} == {(84, 48)}
        assert result.credits_spent == 2 * 15
    calls = fake.calls("gemini")
    assert len(calls) == 2  # one image per call
    body = calls[0].body
    parts = body["contents"][0]["parts"]
    assert base64.urlsafe_b64decode(parts[0]["inlineData"]["data"]) == reference
    assert parts[1]["text"] == "a fox like this, photographic style"
    assert body["generationConfig"]["imageConfig"]["aspectRatio"] == "16:9"
    assert calls[0].headers["x-goog-api-key"] == GOOGLE_KEY
    assert calls[0].path.endswith("/models/gemini-2.5-flash-image:generateContent")


async def test_imagen_through_vertex_predict_several_per_call(tmp_path: Path, fake: FakeGoogle) -> None:
    env = vertex_env(fake.base_url, IMAGEBOT_PROVIDERS="google")
    core = build_core(make_config(tmp_path, env, FAST))
    async with core:
        result = await core.imagine(CTX, ImagineOptions("a red barn", model="imagen-4.0-generate-001", count=5,
                                                        size="1024x1792"))
        assert (result.model, len(result.images)) == ("imagen-4.0-generate-001", 5)
    calls = fake.calls("imagen")
    assert sorted(c.body["parameters"]["sampleCount"] for c in calls) == [1, 4]  # max 4 per call
    assert {c.body["parameters"]["aspectRatio"] for c in calls} == {"9:16"}
    assert calls[0].body["instances"] == [{"prompt": "a red barn"}]
    assert calls[0].path.endswith("/models/imagen-4.0-generate-001:predict")


async def test_imagen_partially_filtered_is_priced_by_what_came_back(tmp_path: Path, fake: FakeGoogle) -> None:
    core = build_core(make_config(tmp_path, vertex_env(fake.base_url, IMAGEBOT_PROVIDERS="google"), FAST))
    async with core:
        fake.queue("imagen", "partial")
        result = await core.imagine(CTX, ImagineOptions("a crowd", model="imagen-3.0-generate-002", count=3))
        assert len(result.images) == 1 and result.credits_spent == 10 and result.credits_refunded == 20
        assert (await core.credits(USER)).balance == 490


async def test_imagen_is_refused_without_vertex_with_a_clear_message(
    tmp_path: Path, fake: FakeGoogle, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    [provider] = build_google(make_config(tmp_path, google_env(fake), FAST))
    await provider.aclose()
    assert [m.name for m in provider.capabilities.models] == ["gemini-2.5-flash-image"]
    assert provider.notes == (IMAGEN_NOTE,)
    with pytest.raises(ConfigError, match="imagen-4.0-generate-001 needs Vertex AI"):
        build_google(make_config(tmp_path, google_env(fake), '[providers.google]\nmodels = ["imagen-4.0-generate-001"]\n'))
    core = build_core(make_config(tmp_path, google_env(fake), FAST))
    with pytest.raises(ValidationError, match="gemini-2.5-flash-image.*offered only through Vertex AI"):
        core.plan(CTX, ImagineOptions("a barn", model="imagen-4.0-generate-001"))
    with pytest.raises(ValidationError) as info:
        core.plan(CTX, ImagineOptions("a barn", model="gemini-9"))
    assert "Vertex" not in info.value.message
    await core.registry.aclose()
    with pytest.raises(ConfigError, match="GOOGLE_CLOUD_PROJECT"):
        build_google(make_config(tmp_path, {"GOOGLE_GENAI_USE_VERTEXAI": "true"}))
    for key, value in google_env(fake).items():
        monkeypatch.setenv(key, value)
    monkeypatch.chdir(tmp_path)
    assert cli.main(["providers"]) == 0
    out = capsys.readouterr().out
    assert "gemini-2.5-flash-image" in out and "Imagen models are offered only through Vertex AI" in out
    assert GOOGLE_KEY not in out


ERROR_CASES = [
    ("blocked", "gemini", ContentRejected),
    ("safety", "gemini", ContentRejected),
    ("textonly", "gemini", ProviderBadResponse),
    ("notimage", "gemini", ProviderBadResponse),
    ("rate", "gemini", ProviderRateLimited),
    ("auth", "gemini", ProviderAuthError),
    ("forbidden", "gemini", ProviderAuthError),
    ("notfound", "gemini", ProviderUnavailable),
    ("down", "gemini", ProviderUnavailable),
    ("slow", "gemini", ProviderTimeout),
    ("garbage", "gemini", ProviderBadResponse),
    ("badrequest", "gemini", ProviderBadResponse),
    ("filtered", "imagen", ContentRejected),
    ("notimage", "imagen", ProviderBadResponse),
    ("down", "imagen", ProviderUnavailable),
]


@pytest.mark.parametrize(("behaviour", "route", "expected"), ERROR_CASES,
                         ids=[f"{c[1]}-{c[0]}" for c in ERROR_CASES])
async def test_sdk_errors_become_ours(
    tmp_path: Path, fake: FakeGoogle, behaviour: str, route: str, expected: type[ProviderError]
) -> None:
    env = vertex_env(fake.base_url) if route == "imagen" else google_env(fake)
    [provider] = build_google(make_config(tmp_path, env, FAST))
    model = "imagen-4.0-generate-001" if route == "imagen" else "gemini-2.5-flash-image"
    fake.queue(route, behaviour)
    try:
        with pytest.raises(expected) as info:
            await provider.generate(GenerationRequest("a fox", model, "1024x1024", count=2 if route == "imagen" else 1))
    finally:
        await provider.aclose()
    err = info.value
    assert type(err) is expected and err.provider == "google" and GOOGLE_KEY not in str(err)
    if behaviour == "rate":
        assert err.retry_after == 7.0 and "try again in 7 s" in err.message  # type: ignore[attr-defined]
    if behaviour in ("auth", "forbidden"):
        assert "GOOGLE_API_KEY" in err.message


async def test_connection_refused_is_unavailable(tmp_path: Path) -> None:
    [provider] = build_google(make_config(tmp_path, _google_env("http://127.0.0.1:9"), FAST))
    try:
        with pytest.raises(ProviderUnavailable, match="could not be reached"):
            await provider.generate(GenerationRequest("a fox", "gemini-2.5-flash-image", "1024x1024"))
    finally:
        await provider.aclose()


async def test_sdk_retries_are_set_explicitly(tmp_path: Path, fake: FakeGoogle) -> None:
    toml = "[providers.google]\ntimeout = 2\nmax_retries = 1\n"
    [provider] = build_google(make_config(tmp_path, google_env(fake), toml))
    fake.queue("gemini", "down", "ok")
    try:
        images = await provider.generate(GenerationRequest("a fox", "gemini-2.5-flash-image", "1024x1024"))
    finally:
        await provider.aclose()
    assert len(images) == 1 and len(fake.calls("gemini")) == 2


async def test_gemini_api_key_env_name_is_accepted_and_named_in_errors(tmp_path: Path, fake: FakeGoogle) -> None:
    env = {"GEMINI_API_KEY": GOOGLE_KEY, "GOOGLE_GEMINI_BASE_URL": fake.base_url}
    [provider] = build_google(make_config(tmp_path, env, FAST))
    fake.queue("gemini", "auth")
    try:
        with pytest.raises(ProviderAuthError, match="GEMINI_API_KEY"):
            await provider.generate(GenerationRequest("a fox", "gemini-2.5-flash-image", "1024x1024"))
    finally:
        await provider.aclose()


async def test_content_rejection_is_refunded(tmp_path: Path, fake: FakeGoogle) -> None:
    core = build_core(make_config(tmp_path, google_env(fake, "google,local"), FAST))
    async with core:
        fake.queue("gemini", "blocked")
        with pytest.raises(GenerationFailed) as info:
            await core.imagine(CTX, ImagineOptions("something forbidden"))
        assert info.value.code == "IMG-PROV-POLICY" and "/enhance" in info.value.message
        assert (await core.credits(USER)).balance == 500


async def test_no_key_in_logs_or_errors(tmp_path: Path, fake: FakeGoogle, caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.DEBUG)
    for name in ("google_genai", "google", "httpx2", "httpcore2", "providers", "bot", "aiohttp"):
        caplog.set_level(logging.DEBUG, logger=name)
    messages: list[str] = []
    core = build_core(make_config(tmp_path, vertex_env(fake.base_url, IMAGEBOT_PROVIDERS="google"), FAST))
    async with core:
        await core.imagine(CTX, ImagineOptions("a fox"))
        await core.imagine(CTX, ImagineOptions("a fox", model="imagen-4.0-generate-001"))
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


async def test_providers_json_lists_imagen_sizes_in_vertex_mode(
    tmp_path: Path, fake: FakeGoogle, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    for key, value in vertex_env(fake.base_url).items():
        monkeypatch.setenv(key, value)
    monkeypatch.chdir(tmp_path)
    assert cli.main(["providers", "--json"]) == 0
    data = json.loads(capsys.readouterr().out)
    google = next(p for p in data["providers"] if p["name"] == "google")
    models = {m["name"]: m for m in google["models"]}
    assert models["imagen-4.0-generate-001"]["sizes"] == ["1024x1024", "1792x1024", "1024x1792"]
    assert models["imagen-4.0-generate-001"]["max_per_call"] == 4
    assert models["gemini-2.5-flash-image"]["reference_images"] is True


async def test_vertex_with_a_project_uses_application_credentials(tmp_path: Path, fake: FakeGoogle) -> None:
    env = {"GOOGLE_GENAI_USE_VERTEXAI": "1", "GOOGLE_CLOUD_PROJECT": "my-project", "GOOGLE_CLOUD_LOCATION": "europe-west4",
           "GOOGLE_API_KEY": GOOGLE_KEY, "GOOGLE_VERTEX_BASE_URL": fake.base_url}
    [provider] = build_google(make_config(tmp_path, env, FAST))
    try:
        assert provider.key_env == "GOOGLE_APPLICATION_CREDENTIALS" and provider.notes == ()
        assert "imagen-4.0-generate-001" in [m.name for m in provider.capabilities.models]
        assert provider.client.vertexai and provider.client._api_client.project == "my-project"
        assert provider.client._api_client.location == "europe-west4"
    finally:
        await provider.aclose()

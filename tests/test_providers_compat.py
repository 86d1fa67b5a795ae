"""OpenAI-compatible services (xAI built in, others by configuration) through the real ``openai`` client."""

from __future__ import annotations

import logging
from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from bot.app import build_core
from bot.errors import ConfigError, ProviderAuthError
from bot.models import ImagineOptions
from providers.base import GenerationRequest
from providers.compat import build_compat
from tests.fakes.harness import CTX, XAI_KEY, make_config
from tests.fakes.openai_api import FakeOpenAI

FAST_XAI = "[providers.xai]\ntimeout = 0.5\nmax_retries = 0\n"


@pytest.fixture
async def fake() -> AsyncIterator[FakeOpenAI]:
    async with FakeOpenAI() as server:
        yield server


def xai_env(fake: FakeOpenAI, **extra: str) -> dict[str, str]:
    return {"XAI_API_KEY": XAI_KEY, "XAI_BASE_URL": fake.base_url, **extra}


async def test_xai_is_built_in_and_sends_no_size(tmp_path: Path, fake: FakeOpenAI) -> None:
    core = build_core(make_config(tmp_path, xai_env(fake, IMAGEBOT_PROVIDERS="xai"), FAST_XAI))
    async with core:
        xai = core.registry.get("xai")
        assert xai is not None and [m.name for m in xai.capabilities.models] == ["grok-2-image"]
        assert xai.capabilities.models[0].sizes == ("1024x768",)
        result = await core.imagine(CTX, ImagineOptions("a robot", count=3))
        assert (result.provider, result.model, result.size, len(result.images)) == ("xai", "grok-2-image",
                                                                                    "1024x768", 3)
    [call] = fake.calls("generations")
    assert call.body == {"model": "grok-2-image", "prompt": "a robot", "n": 3, "response_format": "b64_json"}
    assert call.headers["Authorization"] == f"Bearer {XAI_KEY}"


async def test_xai_needs_its_key(tmp_path: Path) -> None:
    assert build_compat(make_config(tmp_path, {})) == []


async def test_xai_auth_error_names_its_env_var(tmp_path: Path, fake: FakeOpenAI,
                                                caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.DEBUG)
    [xai] = build_compat(make_config(tmp_path, xai_env(fake), FAST_XAI))
    fake.queue("generations", "auth")
    try:
        with pytest.raises(ProviderAuthError, match="XAI_API_KEY") as info:
            await xai.generate(GenerationRequest("a robot", "grok-2-image", "1024x768"))
    finally:
        await xai.aclose()
    assert XAI_KEY not in str(info.value) and XAI_KEY not in caplog.text


LOCAL_SD = """
[providers.mysd]
base_url = "{url}"
key_env = "MYSD_TOKEN"
sizes = ["512x512", "1024x1024"]
max_per_call = 2
timeout = 0.5
max_retries = 0
models = ["sdxl", {{ name = "sd15", sizes = ["512x512"], max_per_call = 4, edits = true, response_format = "url" }}]
"""


async def test_a_configured_compatible_service_is_one_table(tmp_path: Path, fake: FakeOpenAI) -> None:
    toml = LOCAL_SD.format(url=fake.base_url)
    env = {"MYSD_TOKEN": "tok-local-123456", "IMAGEBOT_PROVIDERS": "mysd"}
    core = build_core(make_config(tmp_path, env, toml))
    async with core:
        mysd = core.registry.get("mysd")
        assert mysd is not None
        caps = {m.name: m for m in mysd.capabilities.models}
        assert caps["sdxl"].sizes == ("512x512", "1024x1024") and caps["sdxl"].max_per_call == 2
        assert caps["sd15"].supports_reference and caps["sd15"].max_per_call == 4
        result = await core.imagine(CTX, ImagineOptions("a boat", count=3, size="512x512"))
        assert (result.provider, result.model, len(result.images)) == ("mysd", "sdxl", 3)
        result = await core.imagine(CTX, ImagineOptions("a boat", model="sd15", count=1, size="512x512"))
        assert len(result.images) == 1
    calls = fake.calls("generations")
    assert sorted(c.body["n"] for c in calls[:2]) == [1, 2] and calls[0].body["size"] == "512x512"
    assert calls[-1].body["response_format"] == "url"
    assert calls[0].headers["Authorization"] == "Bearer tok-local-123456"


async def test_a_keyless_local_server_works_and_a_missing_key_skips_the_entry(tmp_path: Path,
                                                                             fake: FakeOpenAI) -> None:
    keyless = f'[providers.lan]\nbase_url = "{fake.base_url}"\nmodels = ["flux"]\n'
    [lan] = build_compat(make_config(tmp_path, {}, keyless))
    try:
        images = await lan.generate(GenerationRequest("a tree", "flux", "1024x1024"))
    finally:
        await lan.aclose()
    assert len(images) == 1
    assert build_compat(make_config(tmp_path, {}, LOCAL_SD.format(url=fake.base_url))) == []


@pytest.mark.parametrize(("table", "message"), [
    ('[providers.bad]\nmodels = ["x"]\n', "providers.bad.base_url"),
    ('[providers.bad]\nbase_url = "http://h/v1"\n', "providers.bad.models"),
    ('[providers.bad]\nbase_url = "http://h/v1"\nmodels = ["x"]\nsizes = ["big"]\n', "not a size"),
    ('[providers.bad]\nbase_url = "http://h/v1"\nmodels = ["x"]\nmax_per_call = 50\n', "max_per_call"),
    ('[providers.bad]\nbase_url = "http://h/v1"\nmodels = ["x"]\nresponse_format = "png"\n', "response_format"),
])
def test_bad_entries_are_config_errors_naming_the_key(tmp_path: Path, table: str, message: str) -> None:
    with pytest.raises(ConfigError, match=message):
        build_core(make_config(tmp_path, {}, table))


async def test_xai_defaults_can_be_overridden(tmp_path: Path, fake: FakeOpenAI) -> None:
    toml = '[providers.xai]\nmodels = ["grok-2-image-1212"]\nconcurrency = 1\n'
    [xai] = build_compat(make_config(tmp_path, xai_env(fake), toml))
    await xai.aclose()
    assert xai.capabilities.default_model == "grok-2-image-1212" and xai.capabilities.concurrency == 1

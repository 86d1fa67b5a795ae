"""OpenAI-compatible services (xAI built in, others by configuration) through the real ``openai`` client."""

from __future__ import annotations

import logging
from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from bot.app import build_core
from bot.errors import ConfigError, ModelRetired, ProviderAuthError, ProviderBadResponse
from bot.models import ImagineOptions
from providers.base import GenerationRequest, ListedModel, ListsModels
from providers.compat import XAI_FAMILIES, XAI_RETIRED, XAIImages, build_compat
from tests.fakes.harness import CTX, OPENAI_KEY, USER, XAI_KEY, make_config
from tests.fakes.images import png
from tests.fakes.openai_api import FakeOpenAI, xai_entry

FAST_XAI = "[providers.xai]\ntimeout = 0.5\nmax_retries = 0\n"
DEFAULT = "grok-imagine-image-quality"


@pytest.fixture
async def fake() -> AsyncIterator[FakeOpenAI]:
    server = FakeOpenAI()
    async with server:
        yield server


def xai_env(fake: FakeOpenAI, **extra: str) -> dict[str, str]:
    return {"XAI_API_KEY": XAI_KEY, "XAI_BASE_URL": fake.base_url, **extra}


def _xai(tmp_path: Path, fake: FakeOpenAI, toml: str = FAST_XAI) -> XAIImages:
    [xai] = build_compat(make_config(tmp_path, xai_env(fake), toml))
    assert isinstance(xai, XAIImages)
    return xai


async def test_xai_default_model_works_with_nothing_configured(tmp_path: Path, fake: FakeOpenAI) -> None:
    core = build_core(make_config(tmp_path, xai_env(fake, IMAGEBOT_PROVIDERS="xai"), FAST_XAI))
    async with core:
        xai = core.registry.get("xai")
        assert xai is not None and xai.capabilities.default_model == DEFAULT
        names = [m.name for m in xai.capabilities.models]  # the built-in families, or what xAI lists
        assert names[0] == DEFAULT and "grok-imagine-image" in names and "grok-2-image" not in names
        result = await core.imagine(CTX, ImagineOptions("a robot", count=3))
        assert (result.provider, result.model, result.size, len(result.images)) == ("xai", DEFAULT, "1024x1024", 3)
        assert (await core.credits(USER)).balance == 500 - result.credits_spent
    [call] = fake.calls("generations")
    assert call.body["model"] == DEFAULT and call.body["n"] == 3 and call.body["response_format"] == "b64_json"
    assert (call.body["aspect_ratio"], call.body["resolution"]) == ("1:1", "1k")
    assert "size" not in call.body and "style" not in call.body and "quality" not in call.body
    assert call.headers["Authorization"] == f"Bearer {XAI_KEY}"


SIZE_CASES = [
    ("1024x1024", "1:1", "1k"), ("1408x768", "16:9", "1k"), ("704x1408", "1:2", "1k"), ("1296x864", "3:2", "1k"),
    ("2048x2048", "1:1", "2k"), ("2816x1536", "16:9", "2k"), ("1792x2560", "3:4", "2k"),
]


@pytest.mark.parametrize(("size", "ratio", "resolution"), SIZE_CASES, ids=[c[0] for c in SIZE_CASES])
async def test_xai_sizes_map_to_aspect_ratio_and_resolution(tmp_path: Path, fake: FakeOpenAI, size: str, ratio: str,
                                                            resolution: str) -> None:
    xai = _xai(tmp_path, fake)
    try:
        await xai.generate(GenerationRequest("a robot", DEFAULT, size, style="artistic", safety_id="5f2b" * 8))
    finally:
        await xai.aclose()
    [call] = fake.calls("generations")
    assert call.body["aspect_ratio"] == ratio and call.body["resolution"] == resolution and "size" not in call.body
    assert call.body["prompt"] == "a robot, artistic style"  # xAI takes no style: it is part of the prompt
    assert call.body["user"] == "5f2b" * 8 and "safety_identifier" not in call.body


def test_xai_models_declare_fixed_sizes_with_aspect_labels(tmp_path: Path) -> None:
    [xai] = build_compat(make_config(tmp_path, {"XAI_API_KEY": XAI_KEY}))
    caps = {m.name: m for m in xai.capabilities.models}
    quality, base = caps[DEFAULT], caps["grok-imagine-image"]
    assert quality.size_for_ratio("16:9") == "1408x768" and quality.size_for_aspect("portrait") == "864x1296"
    assert quality.aspect_of["2816x1536"] == "16:9" and "2816x1536" in quality.sizes
    assert "2048x2048" not in base.sizes  # the base model makes 1K only
    assert set(quality.ratios()) == {"1:1", "3:2", "2:3", "4:3", "3:4", "16:9", "9:16", "2:1", "1:2"}
    assert quality.size_problem("1000x1000") is not None and quality.free_sizes is None
    assert quality.max_per_call == 10 and quality.formats == ()
    assert quality.supports_reference and quality.max_references == 3 and not quality.supports_mask
    assert not quality.streaming and xai.previews == 0  # type: ignore[attr-defined]
    assert caps["grok-imagine-image-2.0"].qualities == ("low", "medium") and quality.qualities == ("medium",)
    assert all(not f.matches("grok-2-image") for f in XAI_FAMILIES) and "grok-imagine-image-pro" in XAI_RETIRED


async def test_grok_imagine_2_takes_a_quality_tier(tmp_path: Path, fake: FakeOpenAI) -> None:
    xai = _xai(tmp_path, fake)
    try:
        await xai.generate(GenerationRequest("a robot", "grok-imagine-image-2.0", "1024x1024", quality="low"))
        await xai.generate(GenerationRequest("a robot", DEFAULT, "1024x1024", quality="medium"))
    finally:
        await xai.aclose()
    first, second = fake.calls("generations")
    assert first.body["quality"] == "low" and "quality" not in second.body


async def test_xai_lists_its_image_models_with_aliases(tmp_path: Path, fake: FakeOpenAI) -> None:
    xai = _xai(tmp_path, fake)
    assert isinstance(xai, ListsModels) and xai.pinned == ()
    fake.xai_models = [xai_entry(DEFAULT, "2026-05-01", aliases=["grok-imagine-image-quality-latest"])]
    try:
        listed = await xai.list_models()
    finally:
        await xai.aclose()
    assert [m.id for m in listed] == [DEFAULT, "grok-imagine-image-quality-latest"]
    assert listed[0] == ListedModel(DEFAULT, listed[0].created) and listed[0].created > 0


async def test_xai_model_list_failure_and_garbage_are_mapped(tmp_path: Path, fake: FakeOpenAI) -> None:
    xai = _xai(tmp_path, fake)
    fake.queue("xai_models", "auth", "garbage")
    try:
        with pytest.raises(ProviderAuthError, match="XAI_API_KEY"):
            await xai.list_models()
        with pytest.raises(ProviderBadResponse):
            await xai.list_models()
    finally:
        await xai.aclose()


async def test_a_retired_xai_model_raises_model_retired(tmp_path: Path, fake: FakeOpenAI) -> None:
    xai = _xai(tmp_path, fake)
    fake.retired.add("grok-imagine-image")
    try:
        with pytest.raises(ModelRetired) as info:
            await xai.generate(GenerationRequest("a robot", "grok-imagine-image", "1024x1024"))
    finally:
        await xai.aclose()
    assert info.value.model == "grok-imagine-image" and info.value.provider == "xai"


@pytest.mark.parametrize(("model", "message"), [
    ("grok-2-image", "grok-2-image has been shut down by the vendor; use grok-imagine-image-quality"),
    ("grok-imagine-image-pro", "use grok-imagine-image-quality"),
    ("grok-9-image", "unknown model 'grok-9-image'"),
])
def test_a_pinned_retired_xai_model_stops_the_bot_at_start(tmp_path: Path, model: str, message: str) -> None:
    with pytest.raises(ConfigError, match=message):
        build_core(make_config(tmp_path, {"XAI_API_KEY": XAI_KEY}, f'[providers.xai]\nmodel = "{model}"\n'))


async def test_xai_defaults_can_be_overridden(tmp_path: Path, fake: FakeOpenAI) -> None:
    toml = '[providers.xai]\nmodels = ["grok-imagine-image-quality-latest", "grok-imagine-image"]\nconcurrency = 1\n'
    xai = _xai(tmp_path, fake, toml)
    await xai.aclose()
    assert xai.capabilities.default_model == "grok-imagine-image-quality-latest"
    assert xai.capabilities.concurrency == 1 and xai.pinned == ("grok-imagine-image-quality-latest",
                                                                "grok-imagine-image")
    assert xai.capabilities.models[0].family == DEFAULT


async def test_a_reference_for_xai_goes_to_its_json_edits(tmp_path: Path, fake: FakeOpenAI) -> None:
    env = {**xai_env(fake), "OPENAI_API_KEY": OPENAI_KEY, "OPENAI_BASE_URL": fake.base_url,
           "IMAGEBOT_PROVIDERS": "xai"}
    core = build_core(make_config(tmp_path, env, FAST_XAI))
    async with core:
        result = await core.imagine(CTX, ImagineOptions("a castle", reference=png()))
        assert result.provider == "xai"
    [call] = fake.calls("edits")
    assert call.body["prompt"] == "a castle" and call.body["image"]["url"].startswith("data:image/png;base64,")
    assert fake.calls("chat") == [] and fake.calls("generations") == []  # edited, not described


async def test_xai_needs_its_key(tmp_path: Path) -> None:
    assert build_compat(make_config(tmp_path, {})) == []


async def test_xai_auth_error_names_its_env_var(tmp_path: Path, fake: FakeOpenAI,
                                                caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.DEBUG)
    xai = _xai(tmp_path, fake)
    fake.queue("generations", "auth")
    try:
        with pytest.raises(ProviderAuthError, match="XAI_API_KEY") as info:
            await xai.generate(GenerationRequest("a robot", DEFAULT, "1024x1024"))
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
        assert mysd is not None and not isinstance(mysd, ListsModels)  # its table is its model list
        caps = {m.name: m for m in mysd.capabilities.models}
        assert caps["sdxl"].sizes == ("512x512", "1024x1024") and caps["sdxl"].max_per_call == 2
        assert caps["sd15"].supports_reference and caps["sd15"].max_per_call == 4
        result = await core.imagine(CTX, ImagineOptions("a boat", count=3, size="512x512"))
        assert (result.provider, result.model, len(result.images)) == ("mysd", "sdxl", 3)
        result = await core.imagine(CTX, ImagineOptions("a boat", model="sd15", count=1, size="512x512"))
        assert len(result.images) == 1
    calls = fake.calls("generations")
    assert sorted(c.body["n"] for c in calls[:2]) == [1, 2] and calls[0].body["size"] == "512x512"
    assert calls[0].body["response_format"] == "b64_json" and calls[-1].body["response_format"] == "url"
    assert calls[0].headers["Authorization"] == "Bearer tok-local-123456"
    assert not any(k in c.body for c in calls for k in ("style", "safety_identifier", "output_format", "stream"))


async def test_a_keyless_local_server_works_and_a_missing_key_skips_the_entry(tmp_path: Path,
                                                                             fake: FakeOpenAI) -> None:
    keyless = f'[providers.lan]\nbase_url = "{fake.base_url}"\nmodels = ["flux"]\n'
    [lan] = build_compat(make_config(tmp_path, {}, keyless))
    try:
        images = await lan.generate(GenerationRequest("a tree", "flux", "1024x1024", style="vivid"))
    finally:
        await lan.aclose()
    assert len(images) == 1 and fake.calls("generations")[0].body["prompt"] == "a tree, vivid style"
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


@pytest.mark.parametrize("behaviour", ["ok", "badurl", "bigurl"])
async def test_url_answers_are_downloaded_within_bounds(tmp_path: Path, fake: FakeOpenAI, behaviour: str) -> None:
    toml = (f'[providers.lan]\nbase_url = "{fake.base_url}"\nmodels = ["flux"]\nresponse_format = "url"\n'
            "download_max_mb = 1\ntimeout = 0.5\nmax_retries = 0\n")
    [lan] = build_compat(make_config(tmp_path, {}, toml))
    fake.queue("generations", behaviour)
    try:
        if behaviour == "ok":
            [image] = await lan.generate(GenerationRequest("a tree", "flux", "1024x1024"))
            assert image.mime == "image/png" and len(fake.files) == 1
        else:
            with pytest.raises(ProviderBadResponse) as info:
                await lan.generate(GenerationRequest("a tree", "flux", "1024x1024"))
            assert behaviour != "bigurl" or "larger than the 1 MB limit" in info.value.message
    finally:
        await lan.aclose()

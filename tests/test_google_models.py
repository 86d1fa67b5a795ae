"""Which Gemini models exist comes from ``models.list``: parsing, families, lifecycle, pinning, retirement."""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from bot.config import Config
from bot.errors import ConfigError, ModelRetired, ProviderAuthError, ProviderUnavailable
from providers.base import GenerationRequest, ListsModels, TextProvider
from providers.google_images import FAMILIES, RETIRED, GoogleImages, build_google, check_pinned
from providers.google_text import TEXT_MODEL, GoogleText, build_google_text
from tests.fakes.google_api import FakeGoogle
from tests.fakes.harness import google_env as _google_env
from tests.fakes.harness import make_config

FAST = "[providers.google]\ntimeout = 2\nmax_retries = 0\n"
IMAGE_IDS = {"gemini-nano-banana-2.1", "gemini-3-pro-image", "gemini-3.1-flash-lite-image", "gemini-3.1-flash-image"}
TEXT_IDS = {"gemini-3.5-flash-lite", "gemini-3.8-flash", "gemini-3.6-flash", "gemini-3.1-flash-lite",
            "gemini-2.5-flash-lite"}


@pytest.fixture
async def fake() -> AsyncIterator[FakeGoogle]:
    server = FakeGoogle()
    async with server:
        yield server
    assert server.calls("imagen") == []


def config(tmp_path: Path, fake: FakeGoogle, toml: str = FAST) -> Config:
    return make_config(tmp_path, _google_env(fake.base_url), toml)


@pytest.fixture
async def provider(tmp_path: Path, fake: FakeGoogle) -> AsyncIterator[GoogleImages]:
    [built] = build_google(config(tmp_path, fake))
    try:
        yield built
    finally:
        await built.aclose()


@pytest.fixture
async def text(tmp_path: Path, fake: FakeGoogle) -> AsyncIterator[GoogleText]:
    built = build_google_text(config(tmp_path, fake))
    assert built is not None
    try:
        yield built
    finally:
        await built.aclose()


async def test_both_providers_list_their_models(provider: GoogleImages, text: GoogleText) -> None:
    assert isinstance(provider, ListsModels) and isinstance(text, ListsModels) and isinstance(text, TextProvider)
    assert provider.families[0].template.name == "gemini-nano-banana-2.1"
    assert not hasattr(text, "capabilities")  # a text provider: one ``model`` at a time


async def test_list_models_parses_the_listing(provider: GoogleImages, fake: FakeGoogle) -> None:
    listed = await provider.list_models()
    # Only generateContent models of an image family: no text, embedding, speech, video or live models.
    assert {m.id for m in listed} == IMAGE_IDS
    by_id = {m.id: m for m in listed}
    assert by_id["gemini-nano-banana-2.1"].created > by_id["gemini-3.1-flash-image"].created > 0
    assert all(m.shutdown_date is None for m in listed)
    [call] = fake.calls("models")
    assert call.path.endswith("/models")


async def test_paged_listing_and_changes_show(provider: GoogleImages, fake: FakeGoogle) -> None:
    fake.page_size = 3
    fake.remove_model("gemini-3-pro-image")
    fake.add_model("gemini-nano-banana-2.2")  # a new model of a known family needs no code
    fake.add_model("gemini-2.5-flash-image")  # shut down: belongs to no family, never offered
    fake.add_model("gemini-nano-banana-2.3", ("countTokens",))  # cannot generate: not ours
    listed = {m.id: m for m in await provider.list_models()}
    assert set(listed) == IMAGE_IDS - {"gemini-3-pro-image"} | {"gemini-nano-banana-2.2"}
    assert listed["gemini-nano-banana-2.2"].created == 0 and listed["gemini-nano-banana-2.2"].shutdown_date is None
    assert len(fake.calls("models")) > 1  # followed nextPageToken


async def test_documented_shutdown_dates_reach_the_listing(provider: GoogleImages,
                                                           monkeypatch: pytest.MonkeyPatch) -> None:
    """The API's Model has no lifecycle field: dates come from the module's documented table."""
    import providers.google_images as gi

    monkeypatch.setitem(gi.LIFECYCLE, "gemini-3.1-flash-image", ("2026-05-28", "2027-01-15"))
    listed = {m.id: m for m in await provider.list_models()}
    assert listed["gemini-3.1-flash-image"].shutdown_date == "2027-01-15"
    assert listed["gemini-nano-banana-2.1"].shutdown_date is None


async def test_list_models_failures_are_mapped(provider: GoogleImages, fake: FakeGoogle) -> None:
    fake.queue("models", "auth")
    with pytest.raises(ProviderAuthError):
        await provider.list_models()
    fake.queue("models", "down")
    with pytest.raises(ProviderUnavailable):
        await provider.list_models()


async def test_any_model_of_a_known_family_draws(provider: GoogleImages, fake: FakeGoogle) -> None:
    fake.add_model("gemini-nano-banana-2.2", like="gemini-nano-banana-2.1")
    [image] = await provider.generate(GenerationRequest("a fox", "gemini-nano-banana-2.2", "2752x1536"))
    call = fake.calls("gemini")[-1]
    assert call.path.endswith("/models/gemini-nano-banana-2.2:generateContent")
    assert call.body["generationConfig"]["imageConfig"] == {"aspectRatio": "16:9", "imageSize": "2K"}
    assert image.data


async def test_pinned_models_come_from_the_config(tmp_path: Path, fake: FakeGoogle) -> None:
    toml = FAST + 'models = ["gemini-3.1-flash-lite-image", "gemini-3-pro-image"]\n'
    [provider] = build_google(config(tmp_path, fake, toml))
    await provider.aclose()
    assert provider.pinned == ("gemini-3.1-flash-lite-image", "gemini-3-pro-image")
    assert [m.name for m in provider.capabilities.models] == list(provider.pinned)
    assert provider.capabilities.default_model == "gemini-3.1-flash-lite-image"
    lite = provider.capabilities.model("gemini-3.1-flash-lite-image")
    assert lite is not None and lite.family == "gemini-3.1-flash-lite-image" and "4096x4096" not in lite.sizes
    [single] = build_google(config(tmp_path, fake, FAST + 'model = "gemini-3-pro-image"\n'))
    await single.aclose()
    assert single.pinned == ("gemini-3-pro-image",) and single.capabilities.default_model == "gemini-3-pro-image"


@pytest.mark.parametrize(("model", "replacement"), [("imagen-4.0-generate-001", "gemini-nano-banana-2.1"),
                                                    ("imagen-3.0-generate-002", "gemini-nano-banana-2.1"),
                                                    ("gemini-2.5-flash-image", "gemini-nano-banana-2.1"),
                                                    ("gemini-3-pro-image-preview", "gemini-3-pro-image")])
async def test_a_pinned_shut_down_model_stops_the_bot_naming_its_replacement(
    tmp_path: Path, fake: FakeGoogle, model: str, replacement: str
) -> None:
    with pytest.raises(ConfigError, match=f"{model} has been shut down by Google; use {replacement}"):
        build_google(config(tmp_path, fake, FAST + f'model = "{model}"\n'))


async def test_retired_ids_are_only_in_the_retired_list(provider: GoogleImages) -> None:
    offered = {m.name for m in provider.capabilities.models} | {f.template.name for f in provider.families}
    assert not offered & set(RETIRED)
    assert all(not r.startswith("imagen") for r in offered)
    assert all(any(r.startswith(f.template.name) for f in provider.families) for r in RETIRED.values())
    assert "use gemini-nano-banana-2.1" in (provider.model_hint("imagen-4.0-generate-001") or "")
    with pytest.raises(ConfigError, match="unknown model 'dall-e-3'"):
        check_pinned("google", ("dall-e-3",), FAMILIES, RETIRED)


async def test_previews_setting(tmp_path: Path, fake: FakeGoogle) -> None:
    [default] = build_google(config(tmp_path, fake))
    [off] = build_google(config(tmp_path, fake, FAST + "previews = 0\n"))
    await default.aclose()
    await off.aclose()
    assert (default.previews, off.previews) == (2, 0)
    assert not any(m.streaming for m in default.capabilities.models)  # Gemini sends no partial images
    with pytest.raises(ConfigError, match="previews"):
        build_google(config(tmp_path, fake, FAST + "previews = 5\n"))


async def test_text_models_are_listed_without_speech_or_live_variants(text: GoogleText, fake: FakeGoogle) -> None:
    assert text.model == TEXT_MODEL == "gemini-3.5-flash-lite" and text.pinned == ()
    listed = {m.id: m for m in await text.list_models()}
    assert set(listed) == TEXT_IDS  # gemini-3.8-flash-tts and the -live model are skipped
    assert listed["gemini-3.1-flash-lite"].shutdown_date == "2027-05-07"
    assert await text.enhance("a cat", limit=400)
    assert fake.calls("text")[-1].path.endswith("/models/gemini-3.5-flash-lite:generateContent")


async def test_text_model_is_pinned_and_a_retired_one_refused(tmp_path: Path, fake: FakeGoogle) -> None:
    pinned = build_google_text(config(tmp_path, fake, FAST + 'text_model = "gemini-3.8-flash"\n'))
    assert pinned is not None
    await pinned.aclose()
    assert pinned.pinned == ("gemini-3.8-flash",) and pinned.model == "gemini-3.8-flash"
    with pytest.raises(ConfigError, match="gemini-2.5-flash has been shut down by Google; use gemini-3.5-flash-lite"):
        build_google_text(config(tmp_path, fake, FAST + 'text_model = "gemini-2.5-flash"\n'))


async def test_a_text_model_gone_while_running_is_retired(text: GoogleText, fake: FakeGoogle) -> None:
    fake.retired.add("gemini-3.5-flash-lite")
    with pytest.raises(ModelRetired) as info:
        await text.enhance("a cat", limit=400)
    assert info.value.model == "gemini-3.5-flash-lite" and info.value.provider == "google"
    text.model = "gemini-3.8-flash"  # what the catalogue does next
    assert await text.enhance("a cat", limit=400)

"""OpenAI images through the real ``openai`` client against a loopback fake of today's HTTP API."""

from __future__ import annotations

import hashlib
import logging
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import openai
import pytest

from bot.app import build_core
from bot.errors import (
    ConfigError,
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
from providers.base import GenerationRequest, ListedModel, ListsModels
from providers.openai_images import OPENAI_FAMILIES, OPENAI_RETIRED, OpenAIModels, build_openai, shutdown_of
from tests.fakes.harness import CTX, FAST, OPENAI_KEY, USER, make_config, openai_env
from tests.fakes.images import png
from tests.fakes.openai_api import FakeOpenAI, model_entry

DEFAULT = "gpt-image-2.5-sunburst"
RETIRED_IDS = ("gpt-image-1", "gpt-image-1-mini", "gpt-image-1.5", "chatgpt-image-latest", "dall-e-2", "dall-e-3")
LEGACY = ("response_format", "style", "user", "input_fidelity")
OAI = "[providers.openai]\ntimeout = 0.5\nmax_retries = 0\n"


@pytest.fixture
async def fake() -> AsyncIterator[FakeOpenAI]:
    server = FakeOpenAI()
    server.slow_seconds = 1.0
    async with server:
        yield server


def only_openai(fake: FakeOpenAI, **extra: str) -> dict[str, str]:
    return openai_env(fake.base_url, IMAGEBOT_PROVIDERS="openai", **extra)


def _provider(tmp_path: Path, fake: FakeOpenAI, toml: str | None = None) -> OpenAIModels:
    [provider] = build_openai(make_config(tmp_path, openai_env(fake.base_url), FAST if toml is None else toml))
    assert isinstance(provider, OpenAIModels)
    return provider


def safety_hash(user: str) -> str:
    return hashlib.sha256(f"imagebot:{user}".encode()).hexdigest()[:32]


# -- the default model, with nothing configured ------------------------------------------------------


async def test_default_model_works_with_nothing_configured(tmp_path: Path, fake: FakeOpenAI) -> None:
    core = build_core(make_config(tmp_path, only_openai(fake)))
    async with core:
        result = await core.imagine(CTX, ImagineOptions("a red fox in snow", count=3, quality="hd"))
        assert (result.provider, result.model, len(result.images)) == ("openai", DEFAULT, 3)
        assert (await core.credits(USER)).balance == 500 - result.credits_spent
        assert all(i.path.exists() and i.path.is_relative_to(tmp_path / "data") for i in result.images)
    [call] = fake.calls("generations")
    assert {k: call.body[k] for k in ("model", "prompt", "n", "size", "quality")} == {
        "model": DEFAULT, "prompt": "a red fox in snow", "n": 3, "size": "1024x1024", "quality": "high"}
    assert not set(LEGACY) & set(call.body)  # results are always base64; no legacy parameter is sent
    assert call.headers["Authorization"] == f"Bearer {OPENAI_KEY}"


async def test_capabilities_are_declared_per_family(tmp_path: Path, fake: FakeOpenAI) -> None:
    provider = _provider(tmp_path, fake)
    await provider.aclose()
    assert isinstance(provider, ListsModels) and provider.pinned == () and provider.previews == 2
    assert provider.capabilities.default_model == DEFAULT == provider.families[0].template.name
    caps = {m.name: m for m in provider.capabilities.models}
    assert list(caps) == ["gpt-image-2.5-sunburst", "gpt-image-2.5-flare", "gpt-image-2", "gpt-image-2.6-sunburst",
                          "gpt-image-2.6-flare"]
    sunburst, two, flare26 = caps["gpt-image-2.5-sunburst"], caps["gpt-image-2"], caps["gpt-image-2.6-flare"]
    assert sunburst.qualities == ("low", "medium", "high", "max") and two.qualities == ("low", "medium", "high")
    assert sunburst.size_problem("3840x2160") is None and sunburst.size_problem("1000x1000") is not None
    assert sunburst.size_problem("4096x1024") is not None and two.size_problem("2112x688") is not None  # > 3:1
    assert sunburst.size_for_ratio("16:9") == "1536x864" and sunburst.size_for_ratio("21:9") is not None
    assert flare26.free_sizes is None and flare26.sizes == ("1024x1024", "1536x1024", "1024x1536")
    assert flare26.backgrounds == () and sunburst.backgrounds == ("transparent", "opaque")
    for m in caps.values():
        # image_edit_params.py: "up to 16 images" names gpt-image-2 and the 2.5 models, not the 2.6 ones.
        inputs = 1 if m.name.startswith("gpt-image-2.6-") else 16
        assert m.formats == ("png", "webp", "jpeg") and m.max_references == inputs and m.supports_mask
        assert m.streaming and m.supports_reference and m.prompt_limit == 32000 and m.max_per_call == 10
        assert m.family == m.name  # the family's built-in default
    # Retired ids are known only as retired, with what replaced them.
    assert set(RETIRED_IDS) == set(provider.retired_models) == set(OPENAI_RETIRED)
    assert provider.retired_models["gpt-image-1"] == "gpt-image-2.5-sunburst or gpt-image-2.5-flare"
    assert all(not f.matches(r) for f in OPENAI_FAMILIES for r in RETIRED_IDS)


def test_a_dated_snapshot_belongs_to_its_family() -> None:
    from providers.openai_images import family_of

    assert family_of(OPENAI_FAMILIES, "gpt-image-2-2026-04-21").prefix == "gpt-image-2"  # type: ignore[union-attr]
    assert family_of(OPENAI_FAMILIES, "gpt-image-2.5-flare-2026-09-08").prefix == "gpt-image-2.5-flare"  # type: ignore[union-attr]
    assert family_of(OPENAI_FAMILIES, "gpt-image-2.7-nova") is None  # an unknown successor is not guessed at


# -- every option maps onto the wire -----------------------------------------------------------------


FAMILY_CASES = [
    # model, size, quality -> wire quality, format, background
    ("gpt-image-2.5-sunburst", "3840x2160", "max", "max", "webp", "transparent"),
    ("gpt-image-2.5-flare-2026-09-08", "1536x864", "low", "low", "png", "opaque"),
    ("gpt-image-2", "2048x688", "high", "high", "jpeg", "opaque"),
    ("gpt-image-2-2026-04-21", "1024x1024", "medium", "medium", "webp", None),
    ("gpt-image-2.6-flare", "1536x1024", "high", "high", "jpeg", None),
    ("gpt-image-2.6-sunburst", "1024x1536", "low", "low", "png", None),
]


@pytest.mark.parametrize(("model", "size", "tier", "wire", "fmt", "background"), FAMILY_CASES,
                         ids=[c[0] for c in FAMILY_CASES])
async def test_options_map_to_wire_params_per_family(tmp_path: Path, fake: FakeOpenAI, model: str, size: str,
                                                     tier: str, wire: str, fmt: str, background: str | None) -> None:
    provider = _provider(tmp_path, fake, OAI + "output_compression = 70\n")
    if model not in {m.name for m in provider.capabilities.models}:  # a listed snapshot, as the catalogue adds it
        from providers.openai_images import pinned_models

        provider.capabilities = type(provider.capabilities)(
            models=provider.capabilities.models + pinned_models("openai", [model], OPENAI_FAMILIES, {}),
            default_model=DEFAULT)
    safety = safety_hash("console:local:alice")
    try:
        [image] = await provider.generate(GenerationRequest(
            "a lighthouse", model, size, style="photographic", quality=tier, output_format=fmt,
            background=background, safety_id=safety))
    finally:
        await provider.aclose()
    [call] = fake.calls("generations")
    body = call.body
    assert body["model"] == model and body["size"] == size and body["quality"] == wire
    assert body["prompt"] == "a lighthouse, photographic style"  # style folded into the prompt
    assert body["output_format"] == fmt and image.mime == f"image/{fmt}"
    assert body.get("output_compression") == (70 if fmt in ("webp", "jpeg") else None)
    assert body.get("background") == background
    assert body["safety_identifier"] == safety and "alice" not in body["safety_identifier"]
    assert not set(LEGACY) & set(body) and "stream" not in body and "moderation" not in body
    assert (image.input_tokens, image.output_tokens) == (50, 4160)


async def test_natural_style_and_defaults_send_only_what_is_asked(tmp_path: Path, fake: FakeOpenAI) -> None:
    provider = _provider(tmp_path, fake)
    try:
        await provider.generate(GenerationRequest("a fox", "gpt-image-2", "1024x1024"))
    finally:
        await provider.aclose()
    [call] = fake.calls("generations")
    assert call.body == {"model": "gpt-image-2", "prompt": "a fox", "n": 1, "size": "1024x1024", "quality": "medium"}


async def test_moderation_setting_is_sent_on_generations_only(tmp_path: Path, fake: FakeOpenAI) -> None:
    provider = _provider(tmp_path, fake, OAI + 'moderation = "low"\n')
    try:
        await provider.generate(GenerationRequest("a fox", DEFAULT, "1024x1024"))
        await provider.generate(GenerationRequest("a fox", DEFAULT, "1024x1024", reference=png()))
    finally:
        await provider.aclose()
    assert fake.calls("generations")[0].body["moderation"] == "low"
    assert "moderation" not in fake.calls("edits")[0].body  # images.edit has no such parameter


@pytest.mark.parametrize(("toml", "message"), [
    ('moderation = "strict"\n', "providers.openai.moderation"),
    ("output_compression = 150\n", "providers.openai.output_compression"),
    ("previews = 5\n", "providers.openai.previews"),
])
def test_bad_option_settings_are_config_errors(tmp_path: Path, toml: str, message: str) -> None:
    with pytest.raises(ConfigError, match=message):
        build_openai(make_config(tmp_path, openai_env("http://127.0.0.1:9/v1"), OAI + toml))


async def test_reference_goes_to_edits_as_multipart(tmp_path: Path, fake: FakeOpenAI) -> None:
    reference = png(40, 40, (10, 200, 10))
    core = build_core(make_config(tmp_path, only_openai(fake)))
    async with core:
        result = await core.imagine(CTX, ImagineOptions("make it a watercolor", reference=reference, count=2))
        assert len(result.images) == 2
    assert fake.calls("generations") == []
    [edit] = fake.calls("edits")
    assert edit.files["image"] == reference and "image" in edit.fields
    assert edit.body["model"] == DEFAULT and edit.body["n"] == "2" and edit.body["prompt"] == "make it a watercolor"
    assert not set(LEGACY) & set(edit.body)  # input_fidelity is for retired models only (omit for gpt-image-2)


async def test_usage_is_on_the_first_image_of_each_call(tmp_path: Path, fake: FakeOpenAI) -> None:
    provider = _provider(tmp_path, fake)
    fake.usage = {"input_tokens": 12, "output_tokens": 3000}
    try:
        images = await provider.generate(GenerationRequest("two foxes", DEFAULT, "1024x1024", count=2))
    finally:
        await provider.aclose()
    assert [(i.input_tokens, i.output_tokens) for i in images] == [(12, 3000), (0, 0)]


# -- retired models -----------------------------------------------------------------------------------


@pytest.mark.parametrize("model", RETIRED_IDS)
async def test_fake_refuses_retired_models_with_model_not_found(tmp_path: Path, fake: FakeOpenAI, model: str) -> None:
    provider = _provider(tmp_path, fake)
    try:
        with pytest.raises(ModelRetired) as info:
            await provider.generate(GenerationRequest("a fox", model, "1024x1024"))
    finally:
        await provider.aclose()
    assert info.value.retryable and info.value.model == model and info.value.provider == "openai"
    assert info.value.code == "IMG-PROV-RETIRED" and OPENAI_KEY not in str(info.value)


async def test_a_model_retired_while_running_raises_model_retired(tmp_path: Path, fake: FakeOpenAI) -> None:
    provider = _provider(tmp_path, fake)
    try:
        await provider.generate(GenerationRequest("a fox", "gpt-image-2", "1024x1024"))
        fake.retired.add("gpt-image-2")
        with pytest.raises(ModelRetired, match="no longer serves the model gpt-image-2"):
            await provider.generate(GenerationRequest("a fox", "gpt-image-2", "1024x1024"))
        with pytest.raises(ModelRetired):
            await provider.generate(GenerationRequest("a fox", "gpt-image-2", "1024x1024", reference=png()))
    finally:
        await provider.aclose()


# -- the fake speaks today's API (so the provider is tested against it) -------------------------------


@pytest.mark.parametrize(("params", "code"), [
    ({"response_format": "b64_json"}, "unknown_parameter"),
    ({"style": "vivid"}, "unknown_parameter"),
    ({"quality": "hd"}, "invalid_value"),
    ({"quality": "standard"}, "invalid_value"),
    ({"model": "gpt-image-2", "quality": "max"}, "invalid_value"),
    ({"size": "1000x1000"}, "invalid_size"),
    ({"size": "3072x512"}, "invalid_size"),
    ({"size": "4096x2304"}, "invalid_size"),
    ({"model": "gpt-image-2.6-flare", "size": "1536x864"}, "invalid_size"),
    ({"background": "transparent", "output_format": "jpeg"}, "invalid_value"),
])
async def test_fake_refuses_what_gpt_image_models_refuse(fake: FakeOpenAI, params: dict[str, Any], code: str) -> None:
    client = openai.AsyncOpenAI(api_key=OPENAI_KEY, base_url=fake.base_url, max_retries=0, timeout=2)
    try:
        with pytest.raises(openai.BadRequestError) as info:
            await client.images.generate(**{"model": DEFAULT, "prompt": "a fox", **params})
    finally:
        await client.close()
    assert info.value.code == code


async def test_bad_size_from_the_vendor_is_a_mapped_error(tmp_path: Path, fake: FakeOpenAI) -> None:
    provider = _provider(tmp_path, fake)
    try:
        with pytest.raises(ProviderBadResponse, match="refused the request"):
            await provider.generate(GenerationRequest("a fox", "gpt-image-2.6-flare", "2048x2048"))
    finally:
        await provider.aclose()


# -- streaming previews -------------------------------------------------------------------------------


class Previews:
    def __init__(self) -> None:
        self.got: list[tuple[int, bytes]] = []

    async def __call__(self, data: bytes, index: int) -> None:
        self.got.append((index, data))


@pytest.mark.parametrize("route", ["generations", "edits"])
async def test_streaming_shows_each_partial_and_returns_only_the_final_image(tmp_path: Path, fake: FakeOpenAI,
                                                                           route: str) -> None:
    provider = _provider(tmp_path, fake)
    sink = Previews()
    reference = png(30, 30) if route == "edits" else None
    try:
        [image] = await provider.generate(GenerationRequest(
            "a fox", DEFAULT, "1536x1024", reference=reference, previews=3, on_preview=sink, output_format="webp"))
    finally:
        await provider.aclose()
    [call] = fake.calls(route)
    assert str(call.body["stream"]).lower() == "true" and str(call.body["partial_images"]) == "3"
    assert [i for i, _ in sink.got] == [0, 1, 2]
    assert all(data.startswith(b"RIFF") for _, data in sink.got)  # decoded webp previews
    assert image.data not in [d for _, d in sink.got] and image.mime == "image/webp"  # the final image only
    assert (image.input_tokens, image.output_tokens) == (50, 4160)  # usage from the completed event


@pytest.mark.parametrize(("previews", "count", "sink"), [(0, 1, True), (2, 2, True), (2, 1, False)],
                         ids=["previews-off", "several-images", "no-sink"])
async def test_no_streaming_when_previews_are_off_or_do_not_fit(tmp_path: Path, fake: FakeOpenAI, previews: int,
                                                                count: int, sink: bool) -> None:
    provider = _provider(tmp_path, fake)
    try:
        images = await provider.generate(GenerationRequest("a fox", DEFAULT, "1024x1024", count=count,
                                                           previews=previews, on_preview=Previews() if sink else None))
    finally:
        await provider.aclose()
    assert len(images) == count
    [call] = fake.calls("generations")
    assert "stream" not in call.body and "partial_images" not in call.body


@pytest.mark.parametrize("behaviour", ["cutstream", "nocomplete", "streamerror"])
async def test_a_broken_stream_is_a_retryable_failed_attempt(tmp_path: Path, fake: FakeOpenAI,
                                                             behaviour: str) -> None:
    provider = _provider(tmp_path, fake)
    sink = Previews()
    fake.queue("generations", behaviour)
    try:
        with pytest.raises(ProviderUnavailable) as info:
            await provider.generate(GenerationRequest("a fox", DEFAULT, "1024x1024", previews=2, on_preview=sink))
        # The next attempt streams to the end.
        [image] = await provider.generate(GenerationRequest("a fox", DEFAULT, "1024x1024", previews=2,
                                                            on_preview=sink))
    finally:
        await provider.aclose()
    assert info.value.retryable and info.value.provider == "openai" and OPENAI_KEY not in str(info.value)
    assert image.data


async def test_a_failing_preview_sink_does_not_fail_the_image(tmp_path: Path, fake: FakeOpenAI) -> None:
    async def broken(data: bytes, index: int) -> None:
        raise RuntimeError("chat platform down")

    provider = _provider(tmp_path, fake)
    try:
        [image] = await provider.generate(GenerationRequest("a fox", DEFAULT, "1024x1024", previews=1,
                                                            on_preview=broken))
    finally:
        await provider.aclose()
    assert image.mime == "image/png"


def test_previews_setting(tmp_path: Path) -> None:
    env = openai_env("http://127.0.0.1:9/v1")
    assert build_openai(make_config(tmp_path, env, "[providers.openai]\npreviews = 0\n"))[0].previews == 0
    assert build_openai(make_config(tmp_path, env, "[providers.openai]\npreviews = 3\n"))[0].previews == 3


# -- the vendor's model list --------------------------------------------------------------------------


async def test_list_models_returns_the_vendors_list_with_shutdown_dates(tmp_path: Path, fake: FakeOpenAI) -> None:
    provider = _provider(tmp_path, fake)
    fake.models = [model_entry("gpt-image-2", "2026-04-21", "2027-03-01"), model_entry("gpt-image-2.5-flare")]
    try:
        listed = await provider.list_models()
        fake.models = fake.models[1:]  # a model disappears from the account's list
        later = await provider.list_models()
    finally:
        await provider.aclose()
    assert listed[0] == ListedModel("gpt-image-2", listed[0].created, "2027-03-01") and listed[0].created > 0
    assert listed[1].shutdown_date is None
    assert [m.id for m in later] == ["gpt-image-2.5-flare"]
    [call] = fake.calls("models")[:1]
    assert call.headers["Authorization"] == f"Bearer {OPENAI_KEY}"


async def test_list_models_failure_is_a_mapped_error(tmp_path: Path, fake: FakeOpenAI) -> None:
    provider = _provider(tmp_path, fake)
    fake.queue("models", "auth")
    try:
        with pytest.raises(ProviderAuthError) as info:
            await provider.list_models()
    finally:
        await provider.aclose()
    assert OPENAI_KEY not in str(info.value)


def test_shutdown_date_is_read_from_typed_or_extra_fields() -> None:
    import datetime as dt
    from types import SimpleNamespace

    from openai.types import Model

    typed = Model.model_validate({"id": "a", "created": 1, "object": "model", "owned_by": "x",
                                  "shutdown_date": "2027-01-14"})
    stamp = int(dt.datetime(2027, 1, 14, 12, tzinfo=dt.UTC).timestamp())
    extra = SimpleNamespace(shutdown_date=None, model_extra={"shutdown_date": stamp})
    assert shutdown_of(typed) == "2027-01-14" and shutdown_of(extra) == "2027-01-14"
    assert shutdown_of(Model.model_validate({"id": "c", "created": 1, "object": "model", "owned_by": "x"})) is None


# -- pinned models ------------------------------------------------------------------------------------


def test_pinned_models_come_from_config(tmp_path: Path) -> None:
    env = openai_env("http://127.0.0.1:9/v1")
    [one] = build_openai(make_config(tmp_path, env, '[providers.openai]\nmodel = "gpt-image-2-2026-04-21"\n'))
    assert one.pinned == ("gpt-image-2-2026-04-21",)  # type: ignore[attr-defined]
    assert one.capabilities.default_model == "gpt-image-2-2026-04-21"
    assert one.capabilities.models[0].family == "gpt-image-2" and one.capabilities.models[0].free_sizes is not None
    toml = '[providers.openai]\nmodels = ["gpt-image-2.6-flare", "gpt-image-2"]\n'
    [two] = build_openai(make_config(tmp_path, env, toml))
    assert [m.name for m in two.capabilities.models] == ["gpt-image-2.6-flare", "gpt-image-2"]


@pytest.mark.parametrize(("model", "message"), [
    ("gpt-image-1", "gpt-image-1 has been shut down by the vendor; use gpt-image-2.5-sunburst or gpt-image-2.5-flare"),
    ("dall-e-3", "dall-e-3 has been shut down"),
    ("chatgpt-image-latest", "use gpt-image-2 instead"),
    ("gpt-image-9", "unknown model 'gpt-image-9'"),
])
def test_a_pinned_retired_or_unknown_model_stops_the_bot_at_start(tmp_path: Path, model: str, message: str) -> None:
    with pytest.raises(ConfigError, match=message):
        build_core(make_config(tmp_path, openai_env("http://127.0.0.1:9/v1"),
                               f'[providers.openai]\nmodel = "{model}"\n'))


# -- errors -------------------------------------------------------------------------------------------


ERROR_CASES = [
    ("policy", ContentRejected),
    ("moderation", ContentRejected),
    ("rate", ProviderRateLimited),
    ("quota", ProviderUnavailable),
    ("auth", ProviderAuthError),
    ("forbidden", ProviderAuthError),
    ("notfound", ModelRetired),
    ("down", ProviderUnavailable),
    ("slow", ProviderTimeout),
    ("garbage", ProviderBadResponse),
    ("empty", ProviderBadResponse),
    ("notimage", ProviderBadResponse),
    ("badrequest", ProviderBadResponse),
]


@pytest.mark.parametrize(("behaviour", "expected"), ERROR_CASES, ids=[c[0] for c in ERROR_CASES])
async def test_sdk_errors_become_ours(tmp_path: Path, fake: FakeOpenAI, behaviour: str,
                                      expected: type[ProviderError]) -> None:
    provider = _provider(tmp_path, fake, "[providers.openai]\ntimeout = 0.3\nmax_retries = 0\n")
    fake.queue("generations", behaviour)
    try:
        with pytest.raises(expected) as info:
            await provider.generate(GenerationRequest("a fox", DEFAULT, "1024x1024"))
    finally:
        await provider.aclose()
    err = info.value
    assert type(err) is expected
    assert err.provider == "openai" and OPENAI_KEY not in str(err)
    if behaviour == "rate":
        assert err.retry_after == pytest.approx(0.02)  # type: ignore[attr-defined]
    if behaviour in ("auth", "forbidden"):
        assert "OPENAI_API_KEY" in err.message


async def test_connection_refused_is_unavailable(tmp_path: Path) -> None:
    [provider] = build_openai(make_config(tmp_path, openai_env("http://127.0.0.1:9/v1")))
    try:
        with pytest.raises(ProviderUnavailable, match="could not be reached"):
            await provider.generate(GenerationRequest("a fox", DEFAULT, "1024x1024"))
        with pytest.raises(ProviderUnavailable):
            await provider.list_models()  # type: ignore[attr-defined]
    finally:
        await provider.aclose()


async def test_retries_are_explicit_and_configurable(tmp_path: Path, fake: FakeOpenAI) -> None:
    provider = _provider(tmp_path, fake, "[providers.openai]\ntimeout = 2\nmax_retries = 1\n")
    assert provider.client.max_retries == 1 and provider.client.timeout == 2
    fake.queue("generations", "rate", "ok")
    try:
        images = await provider.generate(GenerationRequest("a fox", DEFAULT, "1024x1024"))
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
        assert info.value.refunded > 0 and (await core.credits(USER)).balance == 500
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
        await core.imagine(CTX, ImagineOptions("a fox"))
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


async def test_no_key_no_provider(tmp_path: Path) -> None:
    assert build_openai(make_config(tmp_path, {})) == []
    core = build_core(make_config(tmp_path, {}))
    assert core.registry.names() == ["local"] and core.registry.enhancer.name == "local"

"""Models come and go: the bot follows the vendors' lists, through the real SDKs and the real CLI.

What an operator and a user notice: the default model with nothing configured, a model retired mid-run
failing over uncharged with one log line, a pinned retired model stopping the start, lifecycle
warnings in ``imagebot providers``, and free previews of a streamed image.
"""

from __future__ import annotations

import asyncio
import datetime as dt
import json
import logging
import os
import sys
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest

from bot.app import build_core
from bot.errors import ConfigError
from bot.models import ImagineOptions
from tests.fakes.google_api import FakeGoogle
from tests.fakes.harness import CTX, GOOGLE_KEY, OPENAI_KEY, USER, google_env, make_config, openai_env
from tests.fakes.openai_api import FakeOpenAI, model_entry


@pytest.fixture
async def fakes() -> AsyncIterator[tuple[FakeOpenAI, FakeGoogle]]:
    oai, goo = FakeOpenAI(), FakeGoogle()
    async with oai, goo:
        yield oai, goo


async def test_each_providers_default_model_works_with_nothing_configured(
    tmp_path: Path, fakes: tuple[FakeOpenAI, FakeGoogle]
) -> None:
    oai, goo = fakes
    for env, provider, model in ((openai_env(oai.base_url), "openai", "gpt-image-2.5-sunburst"),
                                 (google_env(goo.base_url), "google", "gemini-nano-banana-2.1")):
        (tmp_path / provider).mkdir()
        core = build_core(make_config(tmp_path / provider, env, ""))
        async with core:
            result = await core.imagine(CTX, ImagineOptions("a lighthouse at dusk"))
            gen = await core.generation(result.generation_id)
        assert (result.provider, result.model, len(result.images)) == (provider, model, 1)
        assert result.credits_spent == 10 and gen is not None and gen.status == "COMPLETED"
    [call] = oai.calls("generations")
    assert call.body["model"] == "gpt-image-2.5-sunburst" and "response_format" not in call.body
    assert call.body["safety_identifier"] and "alice" not in call.body["safety_identifier"]


async def test_a_model_retired_mid_run_fails_over_uncharged_and_is_logged_once(
    tmp_path: Path, fakes: tuple[FakeOpenAI, FakeGoogle], caplog: pytest.LogCaptureFixture
) -> None:
    oai, _ = fakes
    core = build_core(make_config(tmp_path, openai_env(oai.base_url)))
    async with core:
        first = await core.imagine(CTX, ImagineOptions("a fox"))
        assert first.model == "gpt-image-2.5-sunburst"
        oai.retired.add("gpt-image-2.5-sunburst")  # the vendor pulls it while the bot runs
        with caplog.at_level(logging.WARNING):
            second = await core.imagine(CTX, ImagineOptions("a fox", count=2))
            third = await core.imagine(CTX, ImagineOptions("an owl"))
        assert second.model != "gpt-image-2.5-sunburst" and second.provider == "openai"
        assert third.model == second.model
        assert second.credits_spent == 20 and third.credits_spent == 10
        assert (await core.credits(USER)).balance == 500 - 10 - 20 - 10
        assert await core.store.audit() == []
    asked = [c.body["model"] for c in oai.calls("generations")]
    assert asked.count("gpt-image-2.5-sunburst") == 2  # the first success and the one 404; never again
    said = [r.getMessage() for r in caplog.records if "is retired" in r.getMessage()]
    assert len(said) == 1 and "gpt-image-2.5-sunburst" in said[0]


async def test_when_every_model_of_a_provider_is_gone_the_next_provider_serves(
    tmp_path: Path, fakes: tuple[FakeOpenAI, FakeGoogle]
) -> None:
    oai, goo = fakes
    config = make_config(tmp_path, {**openai_env(oai.base_url), **google_env(goo.base_url),
                                    "IMAGEBOT_PROVIDERS": "openai,google"})
    core = build_core(config)
    async with core:
        oai.retired.update(m["id"] for m in oai.models if m["id"].startswith("gpt-image"))
        result = await core.imagine(CTX, ImagineOptions("a fox"))
        assert result.provider == "google" and result.credits_spent == 10
        assert (await core.credits(USER)).balance == 490


@pytest.mark.parametrize(("pinned", "says"), [
    ("gpt-image-1", "gpt-image-1 has been shut down"),
    ("gpt-image-2.6-flare", "gpt-image-2.6-flare is no longer offered by openai"),
])
async def test_a_pinned_retired_model_stops_the_start_with_a_clear_error(
    tmp_path: Path, fakes: tuple[FakeOpenAI, FakeGoogle], pinned: str, says: str
) -> None:
    oai, _ = fakes
    oai.models = [m for m in oai.models if m["id"] != "gpt-image-2.6-flare"]
    toml = f'[providers.openai]\nmodel = "{pinned}"\nmax_retries = 0\n'
    with pytest.raises(ConfigError) as err:
        core = build_core(make_config(tmp_path, openai_env(oai.base_url), toml))
        await core.start()
    assert says in err.value.message and "use gpt-image-2.5" in err.value.message
    # The same through the real command: it stops at start, names the model, and leaks no key.
    (tmp_path / "imagebot.toml").write_text(toml)
    proc = await _imagebot(tmp_path, {**openai_env(oai.base_url)}, "run")
    assert proc["rc"] == 2 and says in proc["stderr"] and OPENAI_KEY not in proc["stderr"]


async def test_imagebot_providers_shows_lifecycle_and_warns_about_near_shutdowns(
    tmp_path: Path, fakes: tuple[FakeOpenAI, FakeGoogle]
) -> None:
    oai, goo = fakes
    soon = (dt.date.today() + dt.timedelta(days=12)).isoformat()
    oai.models = [m for m in oai.models if m["id"] != "gpt-image-2"] + [model_entry("gpt-image-2", "2026-04-21", soon)]
    env = {**openai_env(oai.base_url), **google_env(goo.base_url)}
    shown = await _imagebot(tmp_path, env, "providers")
    assert shown["rc"] == 0, shown["stderr"]
    out = shown["stdout"]
    assert f"gpt-image-2: deprecated, shuts down {soon} (12 days left)" in out
    assert "gpt-image-2.5-sunburst: active" in out and "gemini-nano-banana-2.1: active" in out
    assert f"warning: openai/gpt-image-2 shuts down on {soon} (12 days left)" in out
    assert "gpt-4o-mini: deprecated, shuts down 2027-01-14" in out  # the /enhance model too
    as_json = json.loads((await _imagebot(tmp_path, env, "providers", "--json"))["stdout"])
    [openai] = [p for p in as_json["providers"] if p["name"] == "openai"]
    entry = next(m for m in openai["models"] if m["name"] == "gpt-image-2")
    assert (entry["status"], entry["shutdown_date"], entry["days_left"]) == ("deprecated", soon, 12)
    assert openai["source"] == "vendor" and as_json["warnings"]
    assert OPENAI_KEY not in out + shown["stderr"] and GOOGLE_KEY not in out + shown["stderr"]


async def test_streamed_previews_are_saved_shown_and_free(tmp_path: Path,
                                                          fakes: tuple[FakeOpenAI, FakeGoogle]) -> None:
    oai, _ = fakes
    core = build_core(make_config(tmp_path, openai_env(oai.base_url)))
    seen: list[tuple[str, dict[str, Any]]] = []

    async def progress(stage: str, details: dict[str, Any]) -> None:
        seen.append((stage, details))

    async with core:
        result = await core.imagine(CTX, ImagineOptions("a fox", size="1536x1024"), progress=progress)
    previews = [d for stage, d in seen if stage == "preview"]
    assert [p["index"] for p in previews] == [1, 2]  # previews = 2 by default
    assert all(_exists(p["path"]) and "previews" in str(p["path"]) for p in previews)
    assert all(p["path"] not in {i.path for i in result.images} for p in previews)
    assert len(result.images) == 1 and result.credits_spent == 15 and result.balance == 485
    [call] = oai.calls("generations")
    assert call.body["stream"] is True and call.body["partial_images"] == 2


async def test_previews_off_by_setting(tmp_path: Path, fakes: tuple[FakeOpenAI, FakeGoogle]) -> None:
    oai, _ = fakes
    core = build_core(make_config(tmp_path, openai_env(oai.base_url), "[providers.openai]\npreviews = 0\n"))
    stages: list[str] = []

    async def progress(stage: str, details: dict[str, Any]) -> None:
        stages.append(stage)

    async with core:
        await core.imagine(CTX, ImagineOptions("a fox"), progress=progress)
    assert "preview" not in stages and not oai.calls("generations")[0].body.get("stream")


async def test_a_stream_cut_mid_way_fails_over_and_charges_only_what_arrived(
    tmp_path: Path, fakes: tuple[FakeOpenAI, FakeGoogle]
) -> None:
    oai, goo = fakes
    env = {**openai_env(oai.base_url), **google_env(goo.base_url), "IMAGEBOT_PROVIDERS": "openai,google"}
    core = build_core(make_config(tmp_path, env))

    async def progress(stage: str, details: dict[str, Any]) -> None:
        return None

    async with core:
        oai.queue("generations", "cutstream")
        result = await core.imagine(CTX, ImagineOptions("a fox"), progress=progress)
        assert result.provider == "google" and result.failed_over == ["openai"]
        assert result.credits_spent == 10 and (await core.credits(USER)).balance == 490


def _exists(path: Path) -> bool:
    return path.exists()


async def _imagebot(cwd: Path, env: dict[str, str], *args: str) -> dict[str, Any]:
    """The real ``imagebot`` command in a subprocess, while the fakes answer in this test's loop."""
    full = {**{k: v for k, v in os.environ.items() if not k.startswith(("IMAGEBOT_", "OPENAI_", "GOOGLE_", "XAI_"))},
            "IMAGEBOT_DATABASE": str(cwd / "cli.sqlite3"), "IMAGEBOT_DATA_DIR": str(cwd / "data"), **env}
    proc = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "bot", *args, cwd=cwd, env=full, stdin=asyncio.subprocess.DEVNULL,
        stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE)
    out, err = await asyncio.wait_for(proc.communicate(), 60)
    return {"rc": proc.returncode, "stdout": out.decode(), "stderr": err.decode()}


async def test_the_vendors_reported_usage_is_recorded_and_shown_by_imagebot_usage(
    tmp_path: Path, fakes: tuple[FakeOpenAI, FakeGoogle]
) -> None:
    oai, _ = fakes
    env = openai_env(oai.base_url)
    config = make_config(tmp_path, {**env, "IMAGEBOT_DATABASE": str(tmp_path / "cli.sqlite3")}, "")
    core = build_core(config)
    async with core:
        await core.imagine(CTX, ImagineOptions("a fox", count=2))
    shown = await _imagebot(tmp_path, env, "usage", "--json")
    [row] = json.loads(shown["stdout"])["rows"]
    assert (row["images"], row["credits"]) == (2, 20)
    assert (row["input_tokens"], row["output_tokens"]) == (oai.usage["input_tokens"], oai.usage["output_tokens"])
    text = (await _imagebot(tmp_path, env, "usage"))["stdout"]
    assert f"tokens={oai.usage['input_tokens']} in/{oai.usage['output_tokens']} out" in text

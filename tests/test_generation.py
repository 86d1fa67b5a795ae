"""Generation on its own seam (``bot.generation``), seen through the core's public API on the vendor fakes:
preview counts, reference descriptions when the text model is retired, and the facade adapters rely on."""

from __future__ import annotations

import inspect
import logging
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest

from bot.app import build_core
from bot.core import AdjustResult, Imagebot, Progress
from bot.errors import GenerationFailed
from bot.models import ImagineOptions
from tests.fakes.harness import CTX, OPENAI_KEY, USER, make_config, openai_env
from tests.fakes.images import png
from tests.fakes.openai_api import FakeOpenAI


@pytest.fixture
async def oai() -> AsyncIterator[FakeOpenAI]:
    async with FakeOpenAI() as fake:
        yield fake


def described_by_openai(oai: FakeOpenAI) -> dict[str, str]:
    """A compatible service that takes no reference (``mysd``, table ``NO_EDITS``) draws; OpenAI's text
    model describes the reference."""
    return {**openai_env(oai.base_url), "IMAGEBOT_PROVIDERS": "mysd", "IMAGEBOT_ENHANCER": "openai"}


def no_edits(oai: FakeOpenAI) -> str:
    return f'[providers.mysd]\nbase_url = "{oai.base_url}"\nmodels = ["sd15"]\n'



@pytest.mark.parametrize(("setting", "wanted"), [("", 2), ("[providers.openai]\npreviews = 3\n", 3)])
async def test_each_preview_says_how_many_were_requested(tmp_path: Path, oai: FakeOpenAI,
                                                         setting: str, wanted: int) -> None:
    core = build_core(make_config(tmp_path, openai_env(oai.base_url), setting))
    seen: list[dict[str, Any]] = []

    async def progress(stage: str, details: dict[str, Any]) -> None:
        if stage == "preview":
            seen.append(details)

    async with core:
        result = await core.imagine(CTX, ImagineOptions("a fox"), progress=progress)
    assert [(p["index"], p["of"]) for p in seen] == [(i, wanted) for i in range(1, wanted + 1)]
    assert {"path", "data", "mime", "provider", "model"} <= set(seen[0])
    assert result.credits_spent == 10  # previews stay free
    [call] = oai.calls("generations")
    assert call.body["partial_images"] == wanted


async def test_a_reference_is_described_by_the_next_text_model_when_the_first_is_retired(
    tmp_path: Path, oai: FakeOpenAI, caplog: pytest.LogCaptureFixture
) -> None:
    core = build_core(make_config(tmp_path, described_by_openai(oai), no_edits(oai)))
    async with core:
        oai.retired.add("gpt-6-luna")
        with caplog.at_level(logging.WARNING):
            result = await core.imagine(CTX, ImagineOptions("a castle", reference=png(30, 20)))
        assert result.provider == "mysd" and result.failed_over == []
        assert result.credits_spent == 10 and (await core.credits(USER)).balance == 490
        assert core.registry.enhancer.model == "gpt-5.6-luna"
        assert core.registry.get("mysd") is not None and core.registry.get("mysd").capabilities.models  # type: ignore[union-attr]
    assert [c.body["model"] for c in oai.calls("chat")] == ["gpt-6-luna", "gpt-5.6-luna"]
    [call] = oai.calls("generations")
    assert call.body["prompt"].startswith("a castle. In the manner of the reference: A red square")
    said = [r.getMessage() for r in caplog.records if "left the rotation" in r.getMessage()]
    assert len(said) == 1 and "gpt-6-luna" in said[0]
    assert OPENAI_KEY not in caplog.text


async def test_a_gone_describer_fails_the_attempt_over_but_never_retires_the_image_model(
    tmp_path: Path, oai: FakeOpenAI
) -> None:
    toml = '[providers.openai]\nvision_model = "gpt-5.4-mini"\nmax_retries = 0\n' + no_edits(oai)
    core = build_core(make_config(tmp_path, described_by_openai(oai), toml))
    async with core:
        oai.retired.add("gpt-5.4-mini")  # the pinned describer: nothing to move to
        models_before = core.registry.get("mysd").capabilities.models  # type: ignore[union-attr]
        with pytest.raises(GenerationFailed) as err:
            await core.imagine(CTX, ImagineOptions("a castle", reference=png(30, 20)))
        assert err.value.code == "IMG-PROV-DOWN" and "not charged" in err.value.message
        assert (await core.credits(USER)).balance == 500 and await core.store.audit() == []
        assert core.registry.get("mysd").capabilities.models == models_before  # type: ignore[union-attr]
        mysd = core.registry.catalogue.listings.get("mysd")
        assert mysd is None or mysd.dropped == {}  # no "mysd model ... retired" line
        plain = await core.imagine(CTX, ImagineOptions("a castle"))  # without a reference all is well
        assert plain.provider == "mysd" and plain.credits_spent == 10
    assert oai.calls("generations")[0].body["prompt"] == "a castle"


def test_the_core_facade_keeps_the_api_adapters_are_written_against() -> None:
    public = {name for name, _ in inspect.getmembers(Imagebot) if not name.startswith("_")}
    assert {"start", "close", "plan", "imagine", "reroll", "variations", "upscale", "enhance", "credits",
            "adjust", "admin_adjust", "usage_report", "generation", "delivery_failed"} <= public
    params = inspect.signature(Imagebot.imagine).parameters
    assert list(params)[:3] == ["self", "ctx", "options"] and {"progress", "command"} <= set(params)
    assert {"progress"} <= set(inspect.signature(Imagebot.reroll).parameters)
    assert list(inspect.signature(Imagebot.start).parameters) == ["self", "sweep", "catalogue"]
    assert Progress is not None and AdjustResult.__dataclass_fields__.keys() == {
        "target", "kind", "amount", "old_balance", "new_balance"}


async def test_the_core_exposes_its_parts(tmp_path: Path) -> None:
    core = build_core(make_config(tmp_path, {}))
    async with core:
        assert core.store is not None and core.images is not None and core.registry is not None
        assert core.config is not None and core.limiter is not None
        plan = core.plan(CTX, ImagineOptions("a fox", size="256x256"))
        assert plan.attempts[0].provider.name == "local" and plan.total == 3

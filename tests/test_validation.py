"""Every validation error: a stable code, a message naming the limit, and nothing charged or recorded."""

from __future__ import annotations

from pathlib import Path

import pytest

from bot.app import build_core
from bot.errors import ValidationError
from bot.models import ImagineOptions
from bot.textcommands import parse_imagine
from tests.doubles import ctx_for, make_config

CTX = ctx_for()


@pytest.fixture
async def core(tmp_path: Path):
    c = build_core(make_config(tmp_path, IMAGEBOT_MAX_COUNT="4"))
    async with c:
        yield c


async def assert_refused(core, options: ImagineOptions, code: str, *fragments: str) -> None:  # type: ignore[no-untyped-def]
    with pytest.raises(ValidationError) as err:
        await core.imagine(CTX, options)
    assert err.value.code == code
    for fragment in fragments:
        assert fragment in err.value.message
    summary = await core.credits(CTX.identity)
    assert summary.balance == 50 and summary.recent == []


@pytest.mark.parametrize(
    ("options", "code", "fragments"),
    [
        (ImagineOptions(prompt="   "), "IMG-VALID-PROMPT", ["empty"]),
        (ImagineOptions(prompt="x" * 4001), "IMG-VALID-PROMPT", ["4001", "4000"]),
        (ImagineOptions(prompt="fox", size="100x100"), "IMG-VALID-SIZE", ["1024x1024", "square"]),
        (ImagineOptions(prompt="fox", size="huge"), "IMG-VALID-SIZE", ["'huge'"]),
        (ImagineOptions(prompt="fox", style="cubist"), "IMG-VALID-STYLE", ["natural, vivid, artistic, photographic"]),
        (ImagineOptions(prompt="fox", quality="ultra"), "IMG-VALID-QUALITY",
         ["low, medium, high, max", "standard and hd"]),
        (ImagineOptions(prompt="fox", count=0), "IMG-VALID-COUNT", ["1 to 4"]),
        (ImagineOptions(prompt="fox", count=5), "IMG-VALID-COUNT", ["1 to 4"]),
        (ImagineOptions(prompt="fox", count="two"), "IMG-VALID-COUNT", ["'two'"]),
        (ImagineOptions(prompt="fox", count="-1"), "IMG-VALID-COUNT", []),
        (ImagineOptions(prompt="fox", provider="midjourney"), "IMG-VALID-PROVIDER", ["'midjourney'", "local"]),
        (ImagineOptions(prompt="fox", provider="local/sdxl"), "IMG-VALID-MODEL", ["local-sketch"]),
        (ImagineOptions(prompt="fox", reference=b"not an image"), "IMG-VALID-REFERENCE", ["readable image"]),
    ],
)
async def test_bad_input_is_refused_without_charge(core, options, code, fragments) -> None:  # type: ignore[no-untyped-def]
    await assert_refused(core, options, code, *fragments)


async def test_count_cap_is_at_most_ten_whatever_the_config(tmp_path: Path) -> None:
    from bot.errors import ConfigError

    with pytest.raises(ConfigError, match="IMAGEBOT_MAX_COUNT"):
        make_config(tmp_path, IMAGEBOT_MAX_COUNT="11")


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("a fox --colour red", "Unknown option --colour"),
        ("a fox --size", "--size needs a value"),
        ("a fox --count 2 --count 3", "--count is given twice"),
        ("a fox --size 512x512 --aspect square", "not both"),
        ("a fox --seed abc", "--seed"),
    ],
)
def test_flag_errors_name_the_flag(text: str, message: str) -> None:
    with pytest.raises(ValidationError, match=message) as err:
        parse_imagine(text)
    assert err.value.code == "IMG-VALID-FLAG"


def test_flags_parse_with_apostrophes_and_equals() -> None:
    options = parse_imagine("a fox's tail --size=1792x1024 --style vivid --quality hd -n 2 --provider local")
    assert options == ImagineOptions(
        prompt="a fox's tail", size="1792x1024", style="vivid", quality="hd", count="2", provider="local"
    )


async def test_aspect_names_map_to_the_models_sizes(core) -> None:  # type: ignore[no-untyped-def]
    for aspect, size in (("landscape", "1792x1024"), ("portrait", "1024x1792"), ("square", "1024x1024")):
        result = await core.imagine(CTX, ImagineOptions(prompt="fox", size=aspect, quality="standard"))
        assert result.size == size


async def test_prompt_is_trimmed_and_whitespace_collapsed(core) -> None:  # type: ignore[no-untyped-def]
    result = await core.imagine(CTX, ImagineOptions(prompt="  a   red\nfox  ", size="256x256"))
    assert result.prompt == "a red fox"

"""The local console: the new /imagine flags and streaming previews, on the real core (SQLite file) with
provider doubles in the real registry."""

from __future__ import annotations

import io
from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from bot.console import HELP, console_context, handle_line, run_console
from bot.core import Imagebot
from bot.textcommands import IMAGINE_USAGE, parse_imagine
from tests.doubles import ScriptedProvider, make_config, make_core
from tests.fakes.discord_harness import StreamingProvider

START = 50


@pytest.fixture
async def stream(tmp_path: Path) -> AsyncIterator[tuple[Imagebot, StreamingProvider]]:
    provider = StreamingProvider(previews=2, gap=0.01)
    core = make_core(make_config(tmp_path, IMAGEBOT_STARTING_CREDITS="500"), [provider])
    await core.start()
    try:
        yield core, provider
    finally:
        await core.close()


def _head(path: Path) -> bytes:
    return path.read_bytes()[:4]


def test_every_new_flag_is_translated_as_typed() -> None:
    options = parse_imagine("a fox --size 16:9 --quality max --format webp --background transparent -n 2")
    assert (options.prompt, options.size, options.quality, options.output_format, options.background, options.count) \
        == ("a fox", "16:9", "max", "webp", "transparent", "2")
    aliased = parse_imagine("a fox --ar 21:9 --output-format=jpeg --bg opaque")
    assert (aliased.size, aliased.output_format, aliased.background) == ("21:9", "jpeg", "opaque")
    for text in (IMAGINE_USAGE, HELP):
        for word in ("16:9", "low|medium|high|max", "png|webp|jpeg", "transparent"):
            assert word in text, (word, text)


async def test_previews_are_saved_and_their_paths_printed_while_the_model_draws(
        stream: tuple[Imagebot, StreamingProvider], tmp_path: Path) -> None:
    core, provider = stream
    heard: list[str] = []
    reply = await handle_line(core, console_context(), "/imagine a lighthouse --size 1024x1024", notify=heard.append)
    assert [line.split(":")[0] for line in heard] == ["preview 1 saved", "preview 2 saved"]
    for line in heard:
        path = Path(line.split(": ", 1)[1])
        assert path.parent.name == "previews" and _head(path) == b"\x89PNG"
    assert "Saved:" in reply
    summary = await core.credits(console_context().identity)
    plan = core.plan(console_context(), parse_imagine("a lighthouse --size 1024x1024"))
    assert summary.balance == 500 - plan.price_per_image  # previews are free


async def test_the_console_loop_prints_previews_before_the_result(stream: tuple[Imagebot, StreamingProvider]) -> None:
    core, _ = stream
    lines = iter(["/imagine a kite --format webp --background transparent --quality hd\n", "/quit\n"])
    out = io.StringIO()
    await run_console(core, stdin=lambda: next(lines), out=out)
    text = out.getvalue()
    assert text.index("preview 1 saved: ") < text.index("preview 2 saved: ") < text.index("Saved:")
    request = stream[1].requests[0]
    assert (request.output_format, request.background, request.quality) == ("webp", "transparent", "high")


async def test_a_bad_format_is_refused_with_the_choices_and_costs_nothing(tmp_path: Path) -> None:
    plain = ScriptedProvider("plain")
    core = make_core(make_config(tmp_path), [plain])
    await core.start()
    try:
        ctx = console_context()
        reply = await handle_line(core, ctx, "/imagine a fox --format gif")
        assert reply.startswith("Error: format must be one of png, webp, jpeg; got 'gif'.")
        reply = await handle_line(core, ctx, "/imagine a fox --format webp")
        assert "webp is not available for plain-model" in reply and "png" in reply
        assert plain.calls == 0
        assert (await core.credits(ctx.identity)).balance == START
        assert await core.store.recent_generations(ctx.identity) == []
    finally:
        await core.close()

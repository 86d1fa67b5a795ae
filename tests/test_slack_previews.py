"""/imagine's new flags and streaming previews on Slack: the real Bolt app in HTTP mode, signed requests,
the fake Web API and response_url, the real core on SQLite, provider doubles in the real registry."""

from __future__ import annotations

import asyncio
import json
import time
from pathlib import Path

from bot.models import ImagineOptions
from bot.slack_app.blocks import REROLL
from bot.slack_app.progress import PREVIEW_NOTES, ProgressNotes
from tests.doubles import ScriptedProvider, ctx_for
from tests.fakes.discord_harness import StreamingProvider
from tests.fakes.slack_api import TEAM_ID
from tests.fakes.slack_harness import SlackHarness

ANN = "U0ANN0001"
START = 50


def _price(h: SlackHarness, options: ImagineOptions) -> int:
    plan = h.core.plan(ctx_for(ANN, TEAM_ID, "slack"), options)
    return plan.price_per_image * plan.count


async def test_previews_update_the_progress_message_as_text_and_only_the_result_is_uploaded(tmp_path: Path) -> None:
    stream = StreamingProvider(previews=2, gap=0.05, delay=1.2)
    h = await SlackHarness.start(tmp_path, providers=[stream])
    try:
        status, body = await h.command("/imagine", "a lighthouse --size 1024x1024", key="p1")
        assert status == 200 and "Generating 1 image" in json.loads(body)["text"]
        await h.fake.until(lambda: h.fake.uploads, timeout=10)
        await h.idle()
        notes = [r for r in h.fake.responses.get("p1", []) if "preview" in str(r.get("text"))]
        # The first preview at once, the second a second later at most (coalesced), both replacing the
        # command's own ephemeral answer rather than adding messages.
        assert [r["text"] for r in notes] == ["Drawing… (preview 1 of 2)", "Drawing… (preview 2 of 2)"]
        assert all(r["replace_original"] is True and r["response_type"] == "ephemeral" for r in notes)
        [upload] = h.fake.uploads  # no file per preview
        assert len(upload.files) == 1 and len(h.fake.called("files.getUploadURLExternal")) == 1
        assert await h.balance(ANN) == START - _price(h, ImagineOptions("a lighthouse", size="1024x1024"))
    finally:
        await h.close()


async def test_a_fast_stream_tells_at_most_the_allowed_notes_and_buttons_never_replace_the_result(
        tmp_path: Path) -> None:
    stream = StreamingProvider(previews=3, gap=0.01, delay=0.05)
    h = await SlackHarness.start(tmp_path, providers=[stream])
    try:
        await h.command("/imagine", "a kite --size 256x256", key="p2")
        await h.fake.until(lambda: h.fake.uploads, timeout=10)
        await h.idle()
        notes = [r for r in h.fake.responses.get("p2", []) if "preview" in str(r.get("text"))]
        assert 1 <= len(notes) <= PREVIEW_NOTES
        gen_id = h.fake.messages[-1]["blocks"][1]["elements"][0]["value"]

        assert await h.click(REROLL, gen_id, key="b1") == 200
        await h.fake.until(lambda: len(h.fake.uploads) == 2, timeout=10)
        await h.idle()
        button_notes = [r for r in h.fake.responses.get("b1", []) if "preview" in str(r.get("text"))]
        # A button's response_url belongs to the public result message: never replaced, one note at most.
        assert len(button_notes) == 1 and button_notes[0]["replace_original"] is False
    finally:
        await h.close()


async def test_format_background_and_quality_flags_reach_the_provider_and_reroll_keeps_them(tmp_path: Path) -> None:
    stream = StreamingProvider(previews=0)
    h = await SlackHarness.start(tmp_path, providers=[stream], IMAGEBOT_STARTING_CREDITS="500")
    try:
        status, _ = await h.command(
            "/imagine", "a glass bottle --size 21:9 --quality hd --format webp --background transparent", key="o1")
        assert status == 200
        await h.fake.until(lambda: h.fake.messages, timeout=10)
        await h.idle()
        [request] = stream.requests
        model = stream.capabilities.models[0]
        assert (request.output_format, request.background, request.quality) == ("webp", "transparent", "high")
        assert request.size == model.size_for_ratio("21:9")

        gen_id = h.fake.messages[-1]["blocks"][1]["elements"][0]["value"]
        await h.click(REROLL, gen_id, key="o2")
        await h.fake.until(lambda: len(stream.requests) == 2, timeout=10)
        await h.idle()
        again = stream.requests[1]
        assert (again.output_format, again.background, again.quality, again.size) == (
            "webp", "transparent", "high", request.size)
    finally:
        await h.close()


async def test_a_bad_format_is_refused_in_the_ack_with_the_choices_and_nothing_is_charged(tmp_path: Path) -> None:
    plain = ScriptedProvider("plain")
    h = await SlackHarness.start(tmp_path, providers=[plain])
    try:
        status, body = await h.command("/imagine", "a fox --format gif", key="bad")
        text = json.loads(body)["text"]
        assert status == 200 and "format must be one of png, webp, jpeg" in text and "gif" in text
        assert "--format png|webp|jpeg" in text  # the usage line follows
        status, body = await h.command("/imagine", "a fox --background transparent", key="bad2")
        assert "transparent background is not available for plain-model" in json.loads(body)["text"]
        await asyncio.sleep(0.1)
        assert plain.calls == 0 and h.fake.uploads == []
        assert await h.balance(ANN) == START
        assert h.db_counts()["generations"] == 0
    finally:
        await h.close()


async def test_closing_the_notes_drops_a_waiting_preview_at_once() -> None:
    told: list[str] = []

    async def tell(text: str, blocks: object = None, *, replace: bool = False) -> None:
        told.append(text)

    notes = ProgressNotes(tell, replace=True)  # type: ignore[arg-type]
    await notes("preview", {"index": 1, "of": 2})
    await asyncio.sleep(0.01)
    await notes("preview", {"index": 2, "of": 2})  # waits for the 1 s interval
    started = time.perf_counter()
    notes.close()
    assert time.perf_counter() - started < 0.01
    await asyncio.sleep(1.1)
    assert told == ["Drawing… (preview 1 of 2)"]

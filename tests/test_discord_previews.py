"""/imagine's new options, streaming previews and progress timing on Discord: the real discord.py client
against the loopback fake, the real core on SQLite, provider doubles in the real registry."""

from __future__ import annotations

import asyncio
import re
import time
from pathlib import Path
from typing import Any

import discord

from bot.discord_app.progress import ProgressMessage
from bot.models import ImagineOptions
from providers.base import BACKGROUNDS, FORMATS, QUALITIES, STYLES, GeneratedImage, GenerationRequest
from tests.doubles import ScriptedProvider, ctx_for, tiny_png
from tests.fakes.discord_api import GUILD_ID
from tests.fakes.discord_harness import DiscordHarness, StreamingProvider, is_preview

START = 50


def _index(content: str) -> int:
    """The preview number in "… preview 2" or "… preview 2 of 3"."""
    match = re.search(r"preview (\d+)", content)
    assert match, content
    return int(match[1])


def _price(h: DiscordHarness, options: ImagineOptions) -> int:
    assert h.core is not None
    plan = h.core.plan(ctx_for("111", str(GUILD_ID), "discord"), options)
    return plan.price_per_image * plan.count


def _imagine_options(h: DiscordHarness) -> dict[str, Any]:
    command = next(c for c in h.fake.commands["global"] if c["name"] == "imagine")
    return {o["name"]: o for o in command["options"]}


async def test_the_synced_command_offers_every_option_as_choices_or_autocomplete(tmp_path: Path) -> None:
    async with DiscordHarness(tmp_path, providers=[StreamingProvider()]) as h:
        options = _imagine_options(h)
        values = {name: [c["value"] for c in o.get("choices", [])] for name, o in options.items()}
        assert values["quality"] == list(QUALITIES) == ["low", "medium", "high", "max"]
        assert values["style"] == list(STYLES)
        assert values["format"] == list(FORMATS) == ["png", "webp", "jpeg"]
        assert values["background"] == list(BACKGROUNDS)
        assert options["size"]["autocomplete"] and options["provider"]["autocomplete"]
        for o in options.values():  # what Discord accepts in a command's options
            assert len(o["name"]) <= 32 and len(o["description"]) <= 100 and len(o.get("choices", [])) <= 25

        token = await h.command("imagine", [h.payloads.opt("prompt", "x"), h.payloads.opt("size", "", focused=True)],
                                autocomplete=True)
        call = await h.fake.wait_for(lambda: next(iter(h.fake.for_token(token)), None))
        sizes = [c["value"] for c in call.json["data"]["choices"]]
        assert sizes[:5] == ["1024x1024", "256x256", "square", "landscape", "portrait"]
        assert {"16:9", "21:9", "3:2", "9:16"} <= set(sizes) and len(sizes) <= 25


async def test_format_background_quality_and_a_ratio_reach_the_provider_and_come_back_on_reroll(
        tmp_path: Path) -> None:
    stream = StreamingProvider(previews=0)
    async with DiscordHarness(tmp_path, providers=[stream], IMAGEBOT_STARTING_CREDITS="500") as h:
        token = await h.imagine("a glass bottle", size="16:9", quality="high", format="webp",
                                background="transparent")
        result = await h.result(token)
        [request] = stream.requests
        model = stream.capabilities.models[0]
        assert (request.output_format, request.background, request.quality) == ("webp", "transparent", "high")
        assert request.size == model.size_for_ratio("16:9")
        assert request.size in result.embeds[0]["description"]

        message = h.fake.messages[h.fake.originals[token]]
        reroll = next(b["custom_id"] for row in message["components"] for b in row["components"]
                      if b["label"] == "Re-roll")
        await h.result(await h.send(h.payloads.click(message, reroll)))
        again = stream.requests[1]
        assert (again.output_format, again.background, again.quality, again.size) == (
            "webp", "transparent", "high", request.size)


async def test_an_option_the_model_cannot_make_is_refused_privately_before_any_credit_moves(tmp_path: Path) -> None:
    async with DiscordHarness(tmp_path, providers=[ScriptedProvider("plain")]) as h:  # png only, no backgrounds
        token = await h.imagine("a fox", format="webp")
        first = await h.fake.wait_for(lambda: next(iter(h.fake.for_token(token)), None))
        assert first.path.endswith("/callback") and first.json["type"] == 4 and first.ephemeral
        text = first.json["data"]["content"]
        assert "webp" in text and "png" in text and "IMG-VALID-FORMAT" in text
        assert await h.balance(111) == START
        assert h.core is not None and await h.core.store.recent_generations(h.core_identity(111)) == []


async def test_previews_reach_discord_as_coalesced_edits_and_are_free(tmp_path: Path) -> None:
    # Three previews 0.4 s apart, the result 0.8 s after the last: the second is coalesced away.
    stream = StreamingProvider(previews=3, gap=0.4, delay=0.8)
    async with DiscordHarness(tmp_path, providers=[stream]) as h:
        token = await h.imagine("a lighthouse at dusk", size="1024x1024")
        result = await h.result(token)
        previews = h.previews(token)
        assert previews, "no preview reached Discord"
        for call in previews:
            assert call.method == "PATCH" and call.path.endswith("/messages/@original")
            assert call.files[0][1][:8] == b"\x89PNG\r\n\x1a\n"
            assert call.content.startswith("\N{ARTIST PALETTE} Drawing with stream (stream-model)… preview ")
        shown = [_index(c.content) for c in previews]
        assert shown == sorted(shown) and shown[-1] == 3 and len(shown) < 3, shown  # newest wins
        assert all(b.at - a.at >= 0.95 for a, b in zip(previews, previews[1:], strict=False)), "over 1 edit/s"
        calls = h.fake.for_token(token)
        assert calls.index(result) > calls.index(previews[-1])
        assert not any(is_preview(c) for c in calls[calls.index(result):]), "a preview landed after the result"
        assert [name for name, _ in result.files] == [f"imagebot-{result.files[0][0].split('-')[1]}-1.png"]
        assert await h.balance(111) == START - _price(h, ImagineOptions("a lighthouse at dusk", size="1024x1024"))


async def test_a_preview_still_waiting_when_the_images_are_ready_is_dropped_not_sent_late(tmp_path: Path) -> None:
    # The second preview comes 0.2 s after the first was shown and the result right after it: its edit is
    # still waiting for the 1 s interval, so it must be dropped, and the result must not wait for it.
    stream = StreamingProvider(previews=2, gap=0.6, delay=0.05)
    async with DiscordHarness(tmp_path, providers=[stream]) as h:
        token = await h.imagine("a red kite", size="256x256")
        result = await h.result(token)
        await asyncio.sleep(1.2)  # anything late would have arrived by now
        calls = h.fake.for_token(token)
        assert [_index(c.content) for c in h.previews(token)] == [1]
        assert calls.index(result) == max(i for i, c in enumerate(calls) if c.files), "an edit after the result"
        assert result.at - stream.finished[0] < 0.3, "the result waited for a pending preview edit"


class Timed(ScriptedProvider):
    def __init__(self, delay: float) -> None:
        super().__init__("timed", delay=delay)
        self.finished: list[float] = []

    async def generate(self, request: GenerationRequest) -> list[GeneratedImage]:
        images = await super().generate(request)
        self.finished.append(time.perf_counter())
        return images


async def test_a_result_never_waits_out_the_progress_settle(tmp_path: Path) -> None:
    """Issue 10: with a provider slower than the 0.5 s settle, "Uploading…" started a new edit task that
    close() waited out, so every result came 0.5 s late. Now the text goes out at once and the upload follows."""
    timed = Timed(delay=0.7)
    async with DiscordHarness(tmp_path, providers=[timed]) as h:
        for prompt in ("first", "second", "third"):
            token = await h.imagine(prompt, size="256x256")
            result = await h.result(token)
            edits = [c.content for c in h.fake.for_token(token) if c.method == "PATCH" and c.content]
            assert edits[-1].startswith("\N{OUTBOX TRAY} Uploading 1 image")
            assert result.at - timed.finished[-1] < 0.35, f"the result came {result.at - timed.finished[-1]:.2f} s late"


class FakeInteraction:
    """Just enough of ``discord.Interaction`` for ``ProgressMessage``: records edits, each taking ``rtt``."""

    id = 1
    filesize_limit = 10 * 1024 * 1024

    def __init__(self, rtt: float = 0.0) -> None:
        self.rtt = rtt
        self.edits: list[tuple[float, str, list[str] | None]] = []

    async def edit_original_response(self, *, content: str, attachments: list[discord.File] | None = None,
                                     **_: Any) -> None:
        await asyncio.sleep(self.rtt)
        names = None if attachments is None else [f.filename for f in attachments]
        self.edits.append((time.perf_counter(), content, names))


async def test_close_cancels_a_waiting_edit_at_once_and_waits_only_for_one_on_the_wire() -> None:
    fake = FakeInteraction()
    progress = ProgressMessage(fake, settle=0.5)  # type: ignore[arg-type]
    progress.show("Generating…")
    progress.show("Uploading…")
    started = time.perf_counter()
    await progress.close()
    assert time.perf_counter() - started < 0.05
    assert [e[1] for e in fake.edits] == ["Uploading…"]  # flushed at once, not after the settle

    slow = FakeInteraction(rtt=0.2)
    progress = ProgressMessage(slow, settle=0.01)  # type: ignore[arg-type]
    await progress.update("preview", {"index": 1, "data": tiny_png(1), "mime": "image/png", "provider": "p"})
    await asyncio.sleep(0.05)  # the preview's edit is on the wire now
    await progress.update("preview", {"index": 2, "data": tiny_png(2), "mime": "image/png", "provider": "p"})
    await progress.close(flush=False)
    assert [(e[1], e[2]) for e in slow.edits] == [("\N{ARTIST PALETTE} Drawing with p… preview 1", ["preview-1.png"])]
    assert progress.previews_shown == 1
    await asyncio.sleep(0.3)
    assert len(slow.edits) == 1, "an edit was sent after close()"


async def test_a_preview_never_stands_in_for_a_result_delivered_elsewhere(tmp_path: Path) -> None:
    stream = StreamingProvider(previews=1, gap=0.01, delay=0.8)
    async with DiscordHarness(tmp_path, providers=[stream]) as h:
        # The channel refuses the result's upload (missing permissions): it goes privately instead.
        h.fake.fail("PATCH", r"/messages/@original$", 50013, when=lambda c: bool(c.files) and not is_preview(c))
        token = await h.imagine("a heron", size="256x256")
        result = await h.result(token)
        assert h.previews(token) and result.method == "POST" and result.ephemeral
        await h.fake.wait_for(lambda: "sent them to you in a private reply" in (h.texts(token) or [""])[-1])
        original = h.fake.messages[h.fake.originals[token]]
        assert original["attachments"] == [], "the preview is still shown where the result should be"

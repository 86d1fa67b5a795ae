"""/imagine on Discord: the real discord.py client against the loopback fake, real SQLite, real images."""

from __future__ import annotations

import io
import random
from pathlib import Path

from PIL import Image

from bot.errors import ProviderUnavailable
from providers.base import GeneratedImage, GenerationRequest
from providers.local import LocalRenderer
from tests.doubles import ScriptedProvider, tiny_png
from tests.fakes.discord_api import GUILD_ID
from tests.fakes.discord_harness import DiscordHarness


def _callbacks(h: DiscordHarness, token: str) -> list:
    return [c for c in h.fake.for_token(token) if c.path.endswith("/callback")]


class WatchingProvider(ScriptedProvider):
    """Notes, the moment it is called, whether Discord had already received the defer."""

    def __init__(self, fake: object) -> None:
        super().__init__("fake", delay=0.7)
        self.fake = fake
        self.seen_defer: list[bool] = []

    async def generate(self, request: GenerationRequest) -> list[GeneratedImage]:
        self.seen_defer.append(any(c.path.endswith("/callback") for c in self.fake.calls))  # type: ignore[attr-defined]
        return await super().generate(request)


async def test_defers_before_any_work_then_edits_progress_and_posts_images(tmp_path: Path) -> None:
    async with DiscordHarness(tmp_path) as h:
        watching = WatchingProvider(h.fake)
        h.providers = [watching]
        await h.restart()
        token = await h.imagine("a red fox", size="512x512", count=2)
        result = await h.result(token)
        calls = h.fake.for_token(token)
        assert calls[0].path.endswith("/callback") and calls[0].json == {"type": 5}
        assert watching.seen_defer == [True], "the provider ran before the interaction was acknowledged"
        edits = [c.content for c in calls if c.method == "PATCH" and c.content]
        assert any(e.startswith("\N{ARTIST PALETTE} Generating with fake") for e in edits)
        assert edits[-1].startswith("\N{OUTBOX TRAY} Uploading 2 images")
        assert result.method == "PATCH" and result.path.endswith("/messages/@original")
        assert [name for name, _ in result.files] == [f"imagebot-{name.split('-')[1]}-{i}.png"
                                                     for i, (name, _) in enumerate(result.files, 1)]
        for _, data in result.files:
            assert Image.open(io.BytesIO(data)).size == (256, 256)
        description = result.embeds[0]["description"]
        assert "<@111>: a red fox" in description
        assert "fake (fake-model) · 512x512" in description and "10 credits spent · 40 left" in description
        assert result.json["content"] is None
        ids = [b["custom_id"] for row in result.json["components"] for b in row["components"]]
        assert ids[0].startswith("ib:rr:") and any(i.startswith("ib:va:") and i.endswith(":1") for i in ids)
        assert await h.balance(111) == 40


async def test_queue_position_is_shown_while_waiting_for_the_provider(tmp_path: Path) -> None:
    slow = ScriptedProvider("slow", delay=0.8, concurrency=1)
    async with DiscordHarness(tmp_path, providers=[slow]) as h:
        first = await h.imagine("first", size="256x256", user_id=1)
        await h.fake.wait_for(lambda: slow.calls == 1)
        second = await h.imagine("second", size="256x256", user_id=2)
        await h.result(first)
        await h.result(second)
        texts = h.texts(second)
        queued = [i for i, t in enumerate(texts) if "Queued: position 1 for slow" in t]
        generating = [i for i, t in enumerate(texts) if "Generating with slow" in t]
        uploading = [i for i, t in enumerate(texts) if "Uploading 1 image" in t]
        assert queued and generating and uploading and queued[0] < generating[0] < uploading[0], texts


async def test_bad_input_is_refused_privately_in_the_first_response_and_costs_nothing(tmp_path: Path) -> None:
    async with DiscordHarness(tmp_path) as h:
        token = await h.imagine("a fox", size="999x999")
        await h.fake.wait_for(lambda: _callbacks(h, token))
        (reply,) = h.fake.for_token(token)
        assert reply.json["type"] == 4 and reply.ephemeral
        assert "IMG-VALID-SIZE" in reply.json["data"]["content"] and "1024x1024" in reply.json["data"]["content"]
        assert await h.balance(111) == 50


async def test_provider_failure_is_shown_in_the_original_response_and_refunded(tmp_path: Path) -> None:
    down = ScriptedProvider("down", behaviour=lambda r, i: ProviderUnavailable("down"))
    async with DiscordHarness(tmp_path, providers=[down]) as h:
        token = await h.imagine("a fox", size="256x256")
        text = await h.fake.wait_for(lambda: next((t for t in h.texts(token) if "IMG-PROV-DOWN" in t), None))
        assert "not charged" in text
        assert await h.balance(111) == 50


def noisy_png(seed: int, side: int = 512) -> bytes:
    """A photo-like PNG that compresses badly (hundreds of kilobytes)."""
    rng = random.Random(seed)
    image = Image.frombytes("RGB", (side, side), rng.randbytes(side * side * 3))
    out = io.BytesIO()
    image.save(out, format="PNG")
    return out.getvalue()


async def test_images_are_reencoded_to_fit_the_interactions_upload_limit(tmp_path: Path) -> None:
    big = ScriptedProvider("big", behaviour=lambda r, i: [GeneratedImage(noisy_png(n)) for n in range(r.count)])
    async with DiscordHarness(tmp_path, providers=[big]) as h:
        limit = 200_000
        token = await h.imagine("a detailed harbour at night", size="512x512", count=3, limit=limit)
        result = await h.result(token)
        assert len(result.files) == 3
        assert all(len(noisy_png(0)) > limit for _ in range(1))
        assert sum(len(data) for _, data in result.files) <= limit
        for name, data in result.files:
            assert name.endswith((".webp", ".jpg"))
            Image.open(io.BytesIO(data)).verify()
        assert await h.balance(111) == 50 - 15


async def test_a_413_from_discord_shrinks_the_upload_and_retries(tmp_path: Path) -> None:
    big = ScriptedProvider("big", behaviour=lambda r, i: [GeneratedImage(noisy_png(n, 300)) for n in range(r.count)])
    async with DiscordHarness(tmp_path, providers=[big]) as h:
        h.fake.fail("PATCH", r"/messages/@original$", 40005, when=lambda c: bool(c.files))
        token = await h.imagine("a fox", size="512x512", count=2)
        result = await h.result(token)
        refused = [c for c in h.fake.for_token(token) if c.status == 413]
        assert len(refused) == 1
        assert sum(len(d) for _, d in result.files) < sum(len(d) for _, d in refused[0].files)
        assert result.path.endswith("/messages/@original")
        assert await h.balance(111) == 40


async def test_missing_permission_falls_back_to_a_private_reply_and_still_charges(tmp_path: Path) -> None:
    async with DiscordHarness(tmp_path) as h:
        h.fake.fail("PATCH", r"/messages/@original$", 50013, when=lambda c: bool(c.files))
        token = await h.imagine("a fox", size="256x256")
        result = await h.result(token)
        assert result.method == "POST" and result.ephemeral and result.embeds
        note = await h.fake.wait_for(lambda: next((t for t in h.texts(token) if "private reply" in t), None))
        assert "may not post" in note
        assert await h.balance(111) == 47


async def test_when_no_reply_may_carry_files_the_images_go_by_direct_message(tmp_path: Path) -> None:
    async with DiscordHarness(tmp_path) as h:
        h.fake.fail("PATCH", r"/messages/@original$", 50013, when=lambda c: bool(c.files))
        h.fake.fail("POST", r"/webhooks/\d+/[^/]+$", 50013, when=lambda c: bool(c.files))
        token = await h.imagine("a fox", size="256x256")
        dm = await h.fake.wait_for(lambda: next((c for c in h.fake.dms() if c.files), None))
        assert dm.embeds and len(dm.files) == 1
        note = await h.fake.wait_for(lambda: next((t for t in h.texts(token) if "direct message" in t), None))
        assert "may not post" in note
        assert await h.balance(111) == 47


async def test_expired_interaction_delivers_by_direct_message(tmp_path: Path) -> None:
    async with DiscordHarness(tmp_path) as h:
        h.fake.fail("PATCH", r"/messages/@original$", 10062, times=10, when=lambda c: bool(c.files))
        token = await h.imagine("a fox", size="256x256")
        dm = await h.fake.wait_for(lambda: next((c for c in h.fake.dms() if c.files), None))
        assert dm.embeds and "a fox" in dm.embeds[0]["description"]
        assert not dm.json.get("components"), "server buttons do not belong in a DM"
        assert not [c for c in h.fake.for_token(token) if c.method == "POST" and c.token and c.files]
        assert await h.balance(111) == 47


async def test_images_that_reach_nobody_are_refunded(tmp_path: Path) -> None:
    async with DiscordHarness(tmp_path) as h:
        h.fake.fail("PATCH", r"/messages/@original$", 10062, times=10)
        h.fake.fail("POST", r"/channels/\d+/messages$", 50007, times=10)
        await h.imagine("a fox", size="256x256", count=2)
        assert h.core is not None
        store, me = h.core.store, h.core_identity(111)

        async def refunded() -> bool:
            gens = await store.recent_generations(me)
            return bool(gens) and gens[0].status == "FAILED"

        await h.until(refunded)
        (gen,) = await store.recent_generations(me)
        assert (gen.error_code, gen.credits_consumed) == ("IMG-DELIVERY-001", 0)
        assert await h.balance(111) == 50
        assert await store.audit() == []


async def test_interaction_expired_before_the_defer_does_no_work_and_says_so_by_dm(tmp_path: Path) -> None:
    provider = ScriptedProvider("fake")
    async with DiscordHarness(tmp_path, providers=[provider]) as h:
        h.fake.fail("POST", r"/callback$", 10062)
        await h.imagine("a fox", size="256x256")
        dm = await h.fake.wait_for(lambda: next(iter(h.fake.dms()), None))
        assert "IMG-DISCORD-EXPIRED" in dm.content and "Nothing was charged" in dm.content
        assert provider.calls == 0 and await h.balance(111) == 50


async def test_reference_attachment_is_downloaded_when_the_job_runs_and_recorded(tmp_path: Path) -> None:
    """The defer does not wait for Discord's CDN: the job row names the attachment, and the job fetches it."""
    async with DiscordHarness(tmp_path, providers=[LocalRenderer()]) as h:
        png = tiny_png(7)
        url = h.fake.serve("ref.png", png)
        aid, resolved = h.payloads.attachment_resolved(url, len(png))
        options = [h.payloads.opt("prompt", "like this"), h.payloads.opt("size", "256x256"),
                   h.payloads.opt("reference", aid, 11)]
        token = await h.command("imagine", options, resolved=resolved)
        await h.result(token)
        assert h.core is not None
        (gen,) = await h.core.store.recent_generations(h.core_identity(111))
        assert gen.options["reference_urls"] == [url] and gen.status == "COMPLETED"
        assert h.fake.for_token(token)[0].json == {"type": 5}


async def test_a_reference_that_is_not_an_image_is_refused_up_front(tmp_path: Path) -> None:
    async with DiscordHarness(tmp_path) as h:
        aid, resolved = h.payloads.attachment_resolved("http://127.0.0.1:9/x.txt", 10, "x.txt", "text/plain")
        options = [h.payloads.opt("prompt", "like this"), h.payloads.opt("reference", aid, 11)]
        token = await h.command("imagine", options, resolved=resolved)
        await h.fake.wait_for(lambda: _callbacks(h, token))
        assert "IMG-VALID-REFERENCE" in _callbacks(h, token)[0].json["data"]["content"]


async def test_count_up_to_ten_is_one_message_with_ten_files(tmp_path: Path) -> None:
    provider = ScriptedProvider("many", behaviour=lambda r, i: [GeneratedImage(tiny_png(n)) for n in range(r.count)])
    async with DiscordHarness(tmp_path, providers=[provider]) as h:
        token = await h.imagine("many", size="256x256", count=10)
        result = await h.result(token)
        assert len(result.files) == 10
        rows = result.json["components"]
        assert len(rows) == 5 and all(len(r["components"]) <= 5 for r in rows)


async def test_unknown_command_still_gets_an_answer(tmp_path: Path) -> None:
    async with DiscordHarness(tmp_path) as h:
        token = await h.command("paint", [])
        await h.fake.wait_for(lambda: _callbacks(h, token))
        reply = _callbacks(h, token)[0]
        assert reply.ephemeral and "IMG-DISCORD-SYNC" in reply.json["data"]["content"]
        assert GUILD_ID

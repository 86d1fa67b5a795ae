"""The shared job runner (``bot.jobs``) through the real adapters: discord.py and Bolt against the loopback
fakes, the console, the real core on SQLite. Shutdown drains jobs in flight on every platform; delivery
falls back through every target, then refunds and says so; a delivery under way is shielded from the
shutdown's cancellation."""

from __future__ import annotations

import asyncio
import io
import threading
from pathlib import Path

from bot.console import console_context, run_console
from bot.models import Identity
from tests.doubles import ScriptedProvider, make_config, make_core
from tests.fakes.discord_harness import DiscordHarness, delivered
from tests.fakes.slack_api import TEAM_ID
from tests.fakes.slack_harness import SlackHarness
from tests.test_slack_http import GatedProvider

START = 50  # the harnesses' starting credits
PRICE = 3  # one 256x256 image


async def _generation(h: DiscordHarness, user_id: int = 111) -> tuple[str, str | None, int]:
    assert h.core is not None
    (gen,) = await h.core.store.recent_generations(h.core_identity(user_id))
    return gen.status, gen.error_code, gen.credits_consumed


async def test_discord_drains_a_job_in_flight_at_shutdown_so_it_still_delivers(tmp_path: Path) -> None:
    slow = ScriptedProvider("slow", delay=0.8)
    async with DiscordHarness(tmp_path, providers=[slow], grace=5) as h:
        token = await h.imagine("a fox at dusk", size="256x256")
        await h.fake.wait_for(lambda: slow.calls == 1)
        await h.stop_bot()  # SIGTERM while the provider is still drawing
        result = delivered(h.fake.for_token(token))
        assert result is not None and "a fox at dusk" in result.embeds[0]["description"]
        await h.start_bot()
        assert await h.balance(111) == START - PRICE
        assert await _generation(h) == ("COMPLETED", None, PRICE)
        assert h.core is not None and await h.core.store.audit() == []


async def test_discord_job_still_running_after_the_grace_is_refunded_and_told(tmp_path: Path) -> None:
    slow = ScriptedProvider("slow", delay=5)
    async with DiscordHarness(tmp_path, providers=[slow], grace=0.2) as h:
        token = await h.imagine("a very slow fox", size="256x256")
        await h.fake.wait_for(lambda: slow.calls == 1)
        await h.stop_bot()
        note = next((t for t in h.texts(token) if "IMG-CANCELLED" in t), None)
        assert note is not None and "not charged" in note, h.texts(token)
        assert delivered(h.fake.for_token(token)) is None
        await h.start_bot()
        assert await h.balance(111) == START
        assert await _generation(h) == ("FAILED", "IMG-CANCELLED", 0)


async def test_delivery_falls_back_through_every_target_then_refunds_and_says_so(tmp_path: Path) -> None:
    async with DiscordHarness(tmp_path) as h:
        h.fake.fail("PATCH", r"/messages/@original$", 50013, when=lambda c: bool(c.files))  # here
        h.fake.fail("POST", r"/webhooks/\d+/[^/]+$", 50013, when=lambda c: bool(c.files))  # private reply
        h.fake.fail("POST", r"/channels/\d+/messages$", 50007)  # direct message
        token = await h.imagine("a parcel nobody gets", size="256x256")
        note = await h.fake.wait_for(lambda: next((t for t in h.texts(token) if "IMG-DELIVERY-001" in t), None))
        assert note.startswith("I couldn't deliver your images") and f"Your {PRICE} credits were refunded" in note
        tried = [(c.method, c.status) for c in h.fake.calls if c.files]
        assert tried == [("PATCH", 403), ("POST", 403), ("POST", 403)], tried  # in order, each refused once
        assert await h.balance(111) == START
        assert await _generation(h) == ("FAILED", "IMG-DELIVERY-001", 0)


async def test_a_delivery_under_way_at_shutdown_is_shielded_and_arrives(tmp_path: Path) -> None:
    async with DiscordHarness(tmp_path, providers=[ScriptedProvider("fast")], grace=0.05, finish_timeout=5) as h:
        h.fake.stall("PATCH", r"/messages/@original$", 1.0, when=lambda c: bool(c.files))
        token = await h.imagine("a fox in transit", size="256x256")
        await h.fake.wait_for(lambda: any("Uploading" in t for t in h.texts(token)))
        await h.stop_bot()  # the upload is on the wire: the cancellation must not cut it
        result = delivered(h.fake.for_token(token))
        assert result is not None and result.path.endswith("/messages/@original")
        assert not any("IMG-DELIVERY-CANCELLED" in t for t in h.texts(token))
        await h.start_bot()
        assert await h.balance(111) == START - PRICE
        assert await _generation(h) == ("COMPLETED", None, PRICE)


async def test_a_delivery_stuck_past_the_finish_timeout_is_refunded_and_told(tmp_path: Path) -> None:
    async with DiscordHarness(tmp_path, providers=[ScriptedProvider("fast")], grace=0.05, finish_timeout=0.3) as h:
        h.fake.stall("PATCH", r"/messages/@original$", 3.0, when=lambda c: bool(c.files))
        token = await h.imagine("a fox stuck in the post", size="256x256")
        await h.fake.wait_for(lambda: any("Uploading" in t for t in h.texts(token)))
        await h.stop_bot()
        note = next((t for t in h.texts(token) if "IMG-DELIVERY-CANCELLED" in t), None)
        assert note is not None and f"{PRICE} credits refunded" in note, h.texts(token)
        await h.start_bot()
        assert await h.balance(111) == START
        assert await _generation(h) == ("FAILED", "IMG-DELIVERY-CANCELLED", 0)


async def test_slack_job_still_running_after_the_grace_is_refunded_and_told(tmp_path: Path) -> None:
    gated = GatedProvider()
    slack = await SlackHarness.start(tmp_path, providers=[gated])
    try:
        await slack.command("/imagine", "a fox behind a gate --size 256x256", key="g")
        await slack.fake.until(lambda: gated.calls == 1)
        await slack.bot.close(timeout=0.2)
        note = next((t for t in slack.fake.replies("g") if "IMG-CANCELLED" in t), None)
        assert note is not None and "not charged" in note
        assert slack.fake.uploads == [] and slack.bot.busy == 0
        assert await slack.balance("U0ANN0001") == START
        (gen,) = await slack.core.store.recent_generations(Identity("slack", TEAM_ID, "U0ANN0001"))
        assert (gen.status, gen.error_code) == ("FAILED", "IMG-CANCELLED")
    finally:
        gated.gate.set()
        await slack.close()


async def test_slack_takes_no_new_jobs_while_draining(tmp_path: Path) -> None:
    gated = GatedProvider()
    slack = await SlackHarness.start(tmp_path, providers=[gated])
    try:
        await slack.command("/imagine", "the first fox --size 256x256", key="first")
        await slack.fake.until(lambda: gated.calls == 1)
        closing = asyncio.create_task(slack.bot.close(timeout=5))
        await asyncio.sleep(0.05)
        _, late = await slack.command("/imagine", "a late fox --size 256x256", key="late")
        assert "IMG-RESTARTING" in late and gated.calls == 1  # told in the ack; nothing reserved
        gated.gate.set()  # the job in flight finishes and delivers during the drain
        await closing
        assert [u.initial_comment for u in slack.fake.uploads if "the first fox" in u.initial_comment]
        assert await slack.balance("U0ANN0001") == START - PRICE
    finally:
        gated.gate.set()
        await slack.close()


async def test_the_console_drains_the_command_in_flight_when_stopped(tmp_path: Path) -> None:
    slow = ScriptedProvider("slow", delay=0.6)
    core = make_core(make_config(tmp_path), [slow])
    await core.start()
    quit_now = threading.Event()
    lines = iter(["/imagine a console fox --size 256x256\n"])

    def read() -> str:
        try:
            return next(lines)
        except StopIteration:
            quit_now.wait(5)
            return "/quit\n"

    out = io.StringIO()
    try:
        console = asyncio.create_task(run_console(core, stdin=read, out=out, grace=5))
        for _ in range(500):  # until the provider is drawing
            if slow.calls:
                break
            await asyncio.sleep(0.01)
        console.cancel()  # SIGTERM mid-command
        await asyncio.gather(console, return_exceptions=True)
        text = out.getvalue()
        assert "a console fox" in text and "Saved:" in text and f"{PRICE} credits spent" in text
        gens = await core.store.recent_generations(console_context().identity)
        assert [g.status for g in gens] == ["COMPLETED"]
    finally:
        quit_now.set()
        await core.close()

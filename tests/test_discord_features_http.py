"""Issue 13 on Discord HTTP interactions: the fake POSTs signed interactions to the real ``WebServer``; the
ingress answers in the response (a modal, a message update, a confirm step, a /history page with its contact
sheet) and queues; a worker on another core over the same SQLite file delivers through the courier."""

from __future__ import annotations

import io
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import aiohttp
import discord.http
import pytest
from PIL import Image

from bot.app import build_core
from bot.config import Config
from bot.core import Imagebot
from bot.discord_app.courier import DiscordCourier
from bot.discord_app.http_interactions import DiscordInteractions, mount
from bot.models import Identity
from bot.web import WebServer
from tests.doubles import make_config, tiny_png
from tests.fakes.discord_api import GUILD_ID, MANAGE_GUILD, FakeDiscord, Payloads
from tests.worker_process import OtherProcess

USER, MEMBER, ADMIN = 111, 222, 999


@dataclass
class Bot:
    fake: FakeDiscord
    payloads: Payloads
    config: Config
    core: Imagebot
    web: WebServer
    interactions: DiscordInteractions
    session: aiohttp.ClientSession

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.web.port}/discord/interactions"

    async def send(self, payload: dict[str, Any]) -> Any:
        status, answer = await self.fake.interact(self.url, payload, session=self.session)
        assert status == 200, answer
        await self.interactions.idle()
        return answer

    async def balance(self, user: int = USER) -> int:
        return await self.core.store.balance(Identity("discord", str(GUILD_ID), str(user)))

    async def generations(self, user: int = USER) -> list[Any]:
        return await self.core.store.recent_generations(Identity("discord", str(GUILD_ID), str(user)), 50)

    async def deliver(self, token: str) -> Any:
        """Run a worker (another "process") until the job of this interaction is posted."""
        config = make_config(Path(self.config.database).parent, **self.fake.env(), IMAGEBOT_ROLE="worker")
        core = build_core(config)
        await core.start()
        other = OtherProcess.start(core, DiscordCourier.from_config(config))
        try:
            return await self.fake.wait_for(lambda: next(
                (c for c in self.fake.for_token(token) if (c.files or c.embeds) and c.status < 300), None))
        finally:
            await self.fake.wait_for(lambda: other.worker.outcomes)
            await other.close()

    async def imagine(self, prompt: str = "a lighthouse", *extra: dict[str, Any], **kw: Any) -> tuple[Any, str]:
        """An /imagine, delivered: the posted call and its generation id."""
        p = self.payloads
        payload = p.command("imagine", [p.opt("prompt", prompt), p.opt("size", "256x256"), *extra], **kw)
        answer = await self.send(payload)
        assert answer["type"] == 5, answer
        call = await self.deliver(payload["token"])
        return call, call.embeds[0]["footer"]["text"].split()[-1]

    def message(self, token: str) -> dict[str, Any]:
        return self.fake.messages[self.fake.originals[token]]


@pytest.fixture
async def bot(tmp_path: Path) -> AsyncIterator[Bot]:
    saved = discord.http.Route.BASE
    fake = await FakeDiscord().start()
    config = make_config(tmp_path, **fake.env(), DISCORD_PUBLIC_KEY=fake.public_key, IMAGEBOT_ROLE="ingress")
    core = build_core(config)  # the offline renderer: real pixels, a model that takes a mask
    await core.start()
    web = WebServer("127.0.0.1", 0)
    interactions = mount(web, core, config)
    assert interactions is not None
    await web.start()
    session = aiohttp.ClientSession()
    try:
        yield Bot(fake, Payloads(fake), config, core, web, interactions, session)
    finally:
        await session.close()
        await web.stop()
        await core.close()
        await fake.stop()
        discord.http.Route.BASE = saved


def ids(components: list[dict[str, Any]]) -> list[str]:
    return [c["custom_id"] for row in components for c in row["components"]]


def private(answer: dict[str, Any]) -> bool:
    return answer["type"] == 4 and answer["data"].get("flags") == 64


async def admin_sets(bot: Bot, key: str, value: str) -> dict[str, Any]:
    p = bot.payloads
    answer: dict[str, Any] = await bot.send(p.command("settings", [p.opt("key", key), p.opt("value", value)],
                                                      user_id=ADMIN, permissions=MANAGE_GUILD))
    return answer


async def test_edit_button_answers_with_the_modal_and_its_submit_is_queued_and_delivered(bot: Bot) -> None:
    call, gen = await bot.imagine()
    components = call.json["components"]
    assert f"ib:ed:{gen}:0" in ids(components) and f"ib:dl:{gen}" in ids(components)
    message = bot.message(call.token)

    modal = await bot.send(bot.payloads.click(message, f"ib:ed:{gen}:0"))
    assert modal["type"] == 9 and modal["data"]["custom_id"] == f"ib:ed:{gen}:0"
    assert modal["data"]["components"][0]["component"]["custom_id"] == "instruction"
    assert await bot.balance() == 47

    submit = bot.payloads.modal_submit(f"ib:ed:{gen}:0", {"instruction": "add a full moon"}, message=message)
    assert await bot.send(submit) == {"type": 5, "data": {}}
    edited = await bot.deliver(submit["token"])
    latest = (await bot.generations())[0]
    assert latest.command == "edit" and latest.prompt == "add a full moon"
    assert await bot.balance() == 47 - latest.credits_consumed
    assert Image.open(io.BytesIO(edited.files[0][1])).size == (256, 256)

    empty = await bot.send(bot.payloads.modal_submit(f"ib:ed:{gen}:0", {"instruction": ""}))
    assert private(empty) and "(IMG-VALID" in empty["data"]["content"]
    elsewhere = await bot.send(bot.payloads.click(message, f"ib:ed:{gen}:0", guild_id=12345))
    assert private(elsewhere) and "IMG-NOTFOUND" in elsewhere["data"]["content"]
    assert await bot.balance() == 47 - latest.credits_consumed


async def test_zoom_out_select_is_queued_and_keeps_the_original_in_the_middle(bot: Bot) -> None:
    call, gen = await bot.imagine("a red fox on snow")
    message = bot.message(call.token)
    payload = bot.payloads.select(message, f"ib:op:{gen}:0", ["zoom-2"])
    assert (await bot.send(payload))["type"] == 5
    zoomed = await bot.deliver(payload["token"])
    result = Image.open(io.BytesIO(zoomed.files[0][1])).convert("RGB")
    original = Image.open(io.BytesIO(call.files[0][1])).convert("RGB")
    assert result.size == (512, 512)  # 2x, at a size the offline renderer makes
    middle = result.crop((128, 128, 384, 384))
    assert middle.tobytes() == original.tobytes()  # the original, pixel for pixel, in the middle
    border = result.crop((0, 0, 128, 512)).getcolors(maxcolors=1 << 20) or []
    assert len(border) > 1  # the new area was drawn, not left empty

    junk = await bot.send(bot.payloads.select(message, f"ib:op:{gen}:0", ["zoom-9"]))
    assert private(junk) and "IMG-VALID-OUTPAINT" in junk["data"]["content"]


async def test_confirm_step_charges_only_after_the_click(bot: Bot) -> None:
    await admin_sets(bot, "confirm_above", "5")
    p = bot.payloads
    payload = p.command("imagine", [p.opt("prompt", "a big one"), p.opt("size", "512x512"), p.opt("count", 2, 4)])
    ask = await bot.send(payload)
    assert private(ask) and "from 50 to 40" in ask["data"]["content"]
    confirm, cancel = ids(ask["data"]["components"])
    assert confirm.startswith("ib:ok:") and cancel.startswith("ib:no:")
    assert await bot.balance() == 50 and await bot.generations() == []

    click = p.click({"id": "1", "channel_id": "1", "flags": 64}, confirm)
    assert await bot.send(click) == {"type": 5, "data": {}}
    assert await bot.balance() == 40  # reserved when confirmed
    posted = await bot.deliver(click["token"])
    assert len(posted.files) == 2 and await bot.balance() == 40
    again = await bot.send(p.click({"id": "1", "channel_id": "1"}, confirm))
    assert private(again) and "IMG-NOTFOUND-PROPOSAL" in again["data"]["content"]

    ask2 = await bot.send(p.command("imagine", [p.opt("prompt", "x"), p.opt("size", "512x512"), p.opt("count", 2, 4)]))
    cancelled = await bot.send(p.click({"id": "1", "channel_id": "1"}, ids(ask2["data"]["components"])[1]))
    assert cancelled["type"] == 7 and cancelled["data"]["components"] == []
    assert await bot.balance() == 40 and len(await bot.generations()) == 1


async def test_settings_refused_for_members_nothing_changed_and_private_results(bot: Bot) -> None:
    p = bot.payloads
    key = Identity("discord", str(GUILD_ID), str(USER)).server_key
    before = await bot.core.store.server_settings(key)
    refused = await bot.send(p.command("settings", [p.opt("key", "visibility"), p.opt("value", "private")]))
    assert private(refused) and "(IMG-PERM" in refused["data"]["content"]
    assert await bot.core.store.server_settings(key) == before
    bad = await admin_sets(bot, "confirm_above", "-3")
    assert private(bad) and "confirm_above" in bad["data"]["content"]
    assert await bot.core.store.server_settings(key) == before

    saved = await admin_sets(bot, "visibility", "private")
    assert "* visibility: private" in saved["data"]["content"]
    shown = await bot.send(p.command("settings"))
    assert private(shown) and "* visibility: private" in shown["data"]["content"]
    payload = p.command("imagine", [p.opt("prompt", "a secret"), p.opt("size", "256x256")])
    assert await bot.send(payload) == {"type": 5, "data": {"flags": 64}}
    await bot.deliver(payload["token"])
    assert not bot.fake.to_channel(1) and not bot.fake.dms()


async def test_history_pages_carry_the_contact_sheet_and_show_posts_a_result_free(bot: Bot) -> None:
    for n in range(11):
        await bot.imagine(f"picture number {n}")
    page1 = await bot.send(bot.payloads.command("history"))
    assert private(page1)
    assert page1["data"]["embeds"][0]["title"].startswith("Your results: page 1 of 2 (11 in all)")
    [(name, sheet)] = page1["files"]
    assert name == "history-1.png" and Image.open(io.BytesIO(sheet)).format == "PNG"
    buttons = {c.get("label"): c for row in page1["data"]["components"] for c in row["components"]}
    assert buttons["Prev"]["disabled"] and not buttons["Next"].get("disabled")

    page2 = await bot.send(bot.payloads.click({"id": "1", "channel_id": "1", "flags": 64},
                                              buttons["Next"]["custom_id"]))
    assert page2["type"] == 7 and page2["data"]["embeds"][0]["title"].startswith("Your results: page 2 of 2")
    assert [n for n, _ in page2["files"]] == ["history-2.png"]

    gen = page1["data"]["components"][0]["components"][0]["options"][0]["value"]
    show = bot.payloads.command("show", [bot.payloads.opt("id", gen)], user_id=MEMBER)
    assert await bot.send(show) == {"type": 5, "data": {}}
    posted = await bot.fake.wait_for(lambda: next((c for c in bot.fake.for_token(show["token"]) if c.files), None))
    assert posted.embeds[0]["footer"]["text"].endswith(gen) and f"ib:rr:{gen}" in ids(posted.json["components"])
    assert await bot.balance(MEMBER) == 50 and await bot.balance() == 50 - 11 * 3

    for bad in ("nope", "0" * 32):
        miss = await bot.send(bot.payloads.command("show", [bot.payloads.opt("id", bad)]))
        assert private(miss) and "IMG-NOTFOUND" in miss["data"]["content"]
    beyond = await bot.send(bot.payloads.command("history", [bot.payloads.opt("page", 9, 4)]))
    assert private(beyond) and "IMG-VALID-PAGE" in beyond["data"]["content"]
    junk = await bot.send(bot.payloads.command("history", [bot.payloads.opt("page", "two")]))
    assert private(junk) and "IMG-VALID-PAGE" in junk["data"]["content"]


async def test_delete_updates_the_message_for_the_asker_only(bot: Bot) -> None:
    call, gen = await bot.imagine()
    message = bot.message(call.token)
    other = await bot.send(bot.payloads.click(message, f"ib:dl:{gen}", user_id=MEMBER))
    assert private(other) and "(IMG-PERM" in other["data"]["content"]
    gone = await bot.send(bot.payloads.click(message, f"ib:dl:{gen}"))
    assert gone["type"] == 7 and gone["data"]["embeds"] == [] and gone["data"]["components"] == []
    show = await bot.send(bot.payloads.command("show", [bot.payloads.opt("id", gen)]))
    assert private(show) and "deleted" in show["data"]["content"]
    assert await bot.balance() == 47


async def test_help_and_bad_describe_input_are_answered_in_the_response(bot: Bot) -> None:
    p = bot.payloads
    help_ = await bot.send(p.command("help"))
    assert private(help_) and "Your balance: 50 credits." in help_["data"]["content"]
    missing = await bot.send(p.command("describe", []))
    assert private(missing) and "IMG-VALID-REFERENCE" in missing["data"]["content"]
    aid, resolved = p.attachment_resolved("http://127.0.0.1:9/x.txt", 10, "x.txt", "text/plain")
    text = await bot.send(p.command("describe", [p.opt("image", aid, 11)], resolved=resolved))
    assert private(text) and "must be an image" in text["data"]["content"]
    assert await bot.balance() == 50 and await bot.generations() == []


async def test_describe_is_queued_delivered_with_imagine_buttons_that_work(bot: Bot) -> None:
    p = bot.payloads
    url = bot.fake.serve("photo.png", tiny_png(42))
    aid, resolved = p.attachment_resolved(url, len(tiny_png(42)), "photo.png")
    payload = p.command("describe", [p.opt("image", aid, 11)], resolved=resolved)
    assert await bot.send(payload) == {"type": 5, "data": {}}
    call = await bot.deliver(payload["token"])
    gen = call.embeds[0]["footer"]["text"].split()[-1]
    assert ids(call.json["components"]) == [f"ib:im:{gen}:{n}" for n in range(4)]
    described = (await bot.generations())[0]
    prompts = (described.result_text or "").split("\n")
    assert described.command == "describe" and len(prompts) == 4

    click = p.click(bot.message(payload["token"]), f"ib:im:{gen}:1")
    assert (await bot.send(click))["type"] == 5
    await bot.deliver(click["token"])
    latest = (await bot.generations())[0]
    assert latest.command == "imagine" and latest.prompt == prompts[1]
    assert await bot.balance() == 50 - described.credits_consumed - latest.credits_consumed

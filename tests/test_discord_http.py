"""Discord over HTTP interactions: no gateway. The fake POSTs signed interactions to the bot's
``/discord/interactions`` on the shared HTTP server (a real aiohttp client against the real ``WebServer``);
the ingress answers in the response and queues; a worker on another core over the same SQLite file
(another "process") runs the job and delivers through the Discord courier to the fake.
"""

from __future__ import annotations

import dataclasses
import json
import sqlite3
import time
from collections.abc import AsyncIterator
from contextlib import closing
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import aiohttp
import discord.http
import pytest
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from bot.config import Config
from bot.core import Imagebot
from bot.discord_app.courier import DiscordCourier
from bot.discord_app.http_interactions import DiscordInteractions, mount
from bot.models import Identity
from bot.web import WebServer
from providers.base import GeneratedImage, GenerationRequest
from tests.doubles import ScriptedProvider, make_config, make_core, tiny_png
from tests.fakes.discord_api import GUILD_ID, MANAGE_GUILD, FakeDiscord, Payloads
from tests.worker_process import OtherProcess

USER = 111
MEMBER = 222


@dataclass
class Bot:
    fake: FakeDiscord
    payloads: Payloads
    config: Config
    core: Imagebot
    web: WebServer
    interactions: DiscordInteractions
    session: aiohttp.ClientSession
    provider: ScriptedProvider
    references: list[bytes | None]

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.web.port}/discord/interactions"

    async def send(self, payload: dict[str, Any], **kw: Any) -> tuple[int, Any]:
        return await self.fake.interact(self.url, payload, session=self.session, **kw)

    async def imagine(self, prompt: str, *extra: dict[str, Any], **kw: Any) -> tuple[str, int, Any]:
        payload = self.payloads.command("imagine", [self.payloads.opt("prompt", prompt), *extra], **kw)
        status, answer = await self.send(payload)
        return payload["token"], status, answer

    async def balance(self, user: int = USER) -> int:
        return await self.core.store.balance(Identity("discord", str(GUILD_ID), str(user)))

    async def settle(self) -> None:
        """Until the ingress's own tasks (enqueue, tells) are done."""
        await self.interactions.idle()


@pytest.fixture
async def bot(tmp_path: Path) -> AsyncIterator[Bot]:
    saved = discord.http.Route.BASE
    fake = await FakeDiscord().start()
    config = make_config(tmp_path, **fake.env(), DISCORD_PUBLIC_KEY=fake.public_key, IMAGEBOT_ROLE="ingress")
    references: list[bytes | None] = []

    def behaviour(request: GenerationRequest, index: int) -> list[GeneratedImage]:
        references.append(request.reference)
        return [GeneratedImage(tiny_png(index * 10 + i)) for i in range(request.count)]

    provider = ScriptedProvider("fake", behaviour=behaviour)
    model = dataclasses.replace(provider.capabilities.models[0], supports_reference=True, max_references=1)
    provider.capabilities = dataclasses.replace(provider.capabilities, models=(model,))
    core = make_core(config, [provider])
    await core.start()
    web = WebServer("127.0.0.1", 0)
    interactions = mount(web, core, config)
    assert interactions is not None
    await web.start()
    session = aiohttp.ClientSession()
    try:
        yield Bot(fake, Payloads(fake), config, core, web, interactions, session, provider, references)
    finally:
        await session.close()
        await web.stop()
        await core.close()
        await fake.stop()
        discord.http.Route.BASE = saved


async def start_worker(bot: Bot) -> OtherProcess:
    config = make_config(Path(bot.config.database).parent, **bot.fake.env(), IMAGEBOT_ROLE="worker")
    core = make_core(config, [bot.provider])
    await core.start()
    courier = DiscordCourier.from_config(config)
    return OtherProcess.start(core, courier)


def ledger_sum(database: str, user: int) -> tuple[int, int]:
    with closing(sqlite3.connect(database)) as conn:
        balance = conn.execute("SELECT balance FROM accounts WHERE user_id = ?", (str(user),)).fetchone()[0]
        rows = conn.execute("SELECT COALESCE(SUM(delta), 0) FROM ledger WHERE user_id = ?", (str(user),)).fetchone()[0]
    return int(balance), int(rows)


def generations(database: str) -> int:
    with closing(sqlite3.connect(database)) as conn:
        return int(conn.execute("SELECT COUNT(*) FROM generations").fetchone()[0])


def custom_ids(call: Any) -> list[str]:
    return [c["custom_id"] for row in (call.json or {}).get("components", []) for c in row.get("components", [])]


def delivered(bot: Bot, token: str) -> Any:
    return next((c for c in bot.fake.for_token(token) if c.files and c.status < 300), None)


# -- the endpoint refuses what Discord did not sign -------------------------------------------------

async def test_unsigned_badly_signed_and_garbage_requests_get_401(bot: Bot) -> None:
    body = json.dumps({"type": 1}).encode()
    async with bot.session.post(bot.url, data=body) as resp:
        assert resp.status == 401
    other = Ed25519PrivateKey.generate()
    stamp = str(int(time.time()))
    forged = {"X-Signature-Ed25519": other.sign(stamp.encode() + body).hex(), "X-Signature-Timestamp": stamp}
    async with bot.session.post(bot.url, data=body, headers=forged) as resp:
        assert resp.status == 401
    async with bot.session.post(bot.url, data=b"\xff" * 100, headers={"X-Signature-Ed25519": "zz",
                                                                    "X-Signature-Timestamp": "now"}) as resp:
        assert resp.status == 401
    async with bot.session.post(bot.url, data=b"not json", headers=bot.fake.signed(b"not json")) as resp:
        assert resp.status == 401  # signed, but not an interaction
    tampered = bot.fake.signed(body)
    async with bot.session.post(bot.url, data=body + b" ", headers=tampered) as resp:
        assert resp.status == 401
    stale = bot.fake.signed(body, timestamp=int(time.time()) - 3600)
    async with bot.session.post(bot.url, data=body, headers=stale) as resp:
        assert resp.status == 401
    assert generations(bot.config.database) == 0


async def test_ping_gets_pong(bot: Bot) -> None:
    assert await bot.send({"type": 1, "id": "1", "application_id": "1"}) == (200, {"type": 1})


# -- commands ----------------------------------------------------------------------------------------

async def test_imagine_is_deferred_then_a_worker_delivers_it_charged_once(bot: Bot) -> None:
    token, status, answer = await bot.imagine("a red fox")
    assert (status, answer) == (200, {"type": 5, "data": {}})
    await bot.settle()
    assert not bot.fake.for_token(token)  # the ingress posts nothing itself
    held = await bot.balance()
    assert held < 50  # reserved as it was queued

    other = await start_worker(bot)
    try:
        call = await bot.fake.wait_for(lambda: delivered(bot, token))
        await bot.fake.wait_for(lambda: other.worker.outcomes)
    finally:
        await other.close()
    assert call.method == "PATCH" and call.path.endswith("/messages/@original")
    assert call.files[0][1] == tiny_png(0)
    gen = call.embeds[0]["footer"]["text"].split()[-1]
    assert custom_ids(call) == [f"ib:rr:{gen}", f"ib:en:{gen}", f"ib:va:{gen}:0", f"ib:up:{gen}:0", f"ib:ed:{gen}:0",
                                f"ib:op:{gen}:0", f"ib:dl:{gen}"]
    assert list(other.worker.outcomes.values()) == ["delivered"]
    balance, rows = ledger_sum(bot.config.database, USER)
    assert balance == rows == held == await bot.balance()

    # A button pressed on that result: deferred, queued by the ingress, delivered by a worker.
    message = bot.fake.messages[bot.fake.originals[token]]
    click = bot.payloads.click(message, f"ib:rr:{gen}")
    assert await bot.send(click) == (200, {"type": 5, "data": {}})
    await bot.settle()
    other = await start_worker(bot)
    try:
        reroll = await bot.fake.wait_for(lambda: delivered(bot, click["token"]))
        await bot.fake.wait_for(lambda: other.worker.outcomes)
    finally:
        await other.close()
    assert reroll.files and custom_ids(reroll)[0].startswith("ib:rr:")
    balance, rows = ledger_sum(bot.config.database, USER)
    assert balance == rows < held
    assert generations(bot.config.database) == 2


async def test_reference_attachment_is_downloaded_and_used(bot: Bot) -> None:
    url = bot.fake.serve("ref.png", tiny_png(77))
    aid, resolved = bot.payloads.attachment_resolved(url, len(tiny_png(77)))
    token, status, answer = await bot.imagine("like this", bot.payloads.opt("reference", aid, 11), resolved=resolved)
    assert (status, answer["type"]) == (200, 5)
    await bot.settle()
    other = await start_worker(bot)
    try:
        await bot.fake.wait_for(lambda: delivered(bot, token))
    finally:
        await other.close()
    assert bot.references == [tiny_png(77)]


async def test_bad_input_is_refused_at_once_privately_nothing_charged(bot: Bot) -> None:
    _, status, answer = await bot.imagine("a fox", bot.payloads.opt("size", "13x7"))
    assert status == 200 and answer["type"] == 4 and answer["data"]["flags"] == 64
    assert "(IMG-" in answer["data"]["content"]
    big = bot.payloads.attachment_resolved("http://127.0.0.1:1/x.png", 50 * 1024 * 1024)
    _, status, answer = await bot.imagine("a fox", bot.payloads.opt("reference", big[0], 11), resolved=big[1])
    assert answer["type"] == 4 and "MiB" in answer["data"]["content"]
    await bot.settle()
    assert await bot.balance() == 50 and generations(bot.config.database) == 0


async def test_short_balance_is_told_in_the_response_nothing_charged(bot: Bot) -> None:
    """Reserved before the answer: a refusal is the (private) answer itself, and no job exists."""
    ann = Identity("discord", str(GUILD_ID), str(USER))
    await bot.core.adjust("test", ann, "set", 0)
    token, status, answer = await bot.imagine("a fox")
    assert status == 200 and answer["type"] == 4 and answer["data"]["flags"] == 64
    assert "credit" in answer["data"]["content"].lower() and "(IMG-" in answer["data"]["content"]
    await bot.settle()
    assert bot.fake.for_token(token) == []
    assert await bot.balance() == 0 and generations(bot.config.database) == 0


async def test_credits_are_answered_in_the_response(bot: Bot) -> None:
    status, answer = await bot.send(bot.payloads.command("credits"))
    assert status == 200 and answer["type"] == 4 and answer["data"]["flags"] == 64
    assert "Balance: 50 credits" in answer["data"]["content"]


async def test_admin_grant_and_a_member_refused(bot: Bot) -> None:
    grant = bot.payloads.command("credits-admin", [bot.payloads.sub("grant", [
        bot.payloads.opt("member", str(MEMBER), 6), bot.payloads.opt("amount", 25, 4)])],
        permissions=MANAGE_GUILD, resolved=bot.payloads.member_resolved(MEMBER))
    assert await bot.send(grant) == (200, {"type": 5, "data": {"flags": 64}})
    await bot.settle()
    [told] = bot.fake.for_token(grant["token"])
    assert "Granted" in (told.content or "") and await bot.balance(MEMBER) == 75

    sneaky = bot.payloads.command("credits-admin", [bot.payloads.sub("set", [
        bot.payloads.opt("member", str(USER), 6), bot.payloads.opt("amount", 9999, 4)])])
    status, answer = await bot.send(sneaky)
    assert answer["type"] == 4 and answer["data"]["flags"] == 64 and "(IMG-PERM" in answer["data"]["content"]
    await bot.settle()
    assert await bot.balance() == 50


async def test_enhance_is_delivered_with_its_imagine_button(bot: Bot) -> None:
    payload = bot.payloads.command("enhance", [bot.payloads.opt("prompt", "a fox")])
    assert (await bot.send(payload))[1]["type"] == 5
    await bot.settle()
    other = await start_worker(bot)
    try:
        call = await bot.fake.wait_for(lambda: next((c for c in bot.fake.for_token(payload["token"])
                                                     if c.embeds), None))
    finally:
        await other.close()
    assert custom_ids(call)[0].startswith("ib:im:") and "a fox" in json.dumps(call.embeds)

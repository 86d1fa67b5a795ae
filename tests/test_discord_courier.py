"""The Discord courier delivers a job's result from its address alone, against the loopback fake.

What a user would notice: the image arrives (in the interaction's own response while its token lives,
else in the channel, else by DM) with the same buttons as the in-process delivery; a result nobody can
take ends as ``Undeliverable`` (the worker refunds it); a note never raises.
"""

from __future__ import annotations

import hashlib
import io
import random
import time
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import discord.http
import pytest
from PIL import Image

from bot.couriers import Undeliverable
from bot.discord_app.courier import DiscordCourier
from bot.models import EnhanceResult, ImagineResult, StoredImage
from tests.doubles import make_config, tiny_png
from tests.fakes.discord_api import APP_ID, CHANNEL_ID, GUILD_ID, FakeDiscord

GEN = "0123456789abcdef0123456789abcdef"
USER = 4242


@pytest.fixture
async def fake() -> AsyncIterator[FakeDiscord]:
    saved = discord.http.Route.BASE
    server = await FakeDiscord().start()
    try:
        yield server
    finally:
        await server.stop()
        discord.http.Route.BASE = saved


@pytest.fixture
async def courier(fake: FakeDiscord, tmp_path: Path) -> AsyncIterator[DiscordCourier]:
    c = DiscordCourier.from_config(make_config(tmp_path, **fake.env()))
    try:
        yield c
    finally:
        await c.aclose()


def address(token: str = "tok-1", **kw: Any) -> dict[str, Any]:
    base = {"platform": "discord", "application_id": str(APP_ID), "token": token, "channel_id": str(CHANNEL_ID),
            "user_id": str(USER), "guild_id": str(GUILD_ID), "ephemeral": False, "message": "@original",
            "display_name": "Ada"}
    return {**base, **kw}


def stored(tmp_path: Path, data: bytes, n: int = 0, mime: str = "image/png") -> StoredImage:
    path = tmp_path / f"img-{n}.png"
    path.write_bytes(data)
    with Image.open(io.BytesIO(data)) as im:
        w, h = im.size
    return StoredImage(hashlib.sha256(data).hexdigest(), path, mime, len(data), w, h)


def result(tmp_path: Path, count: int = 1) -> ImagineResult:
    images = [stored(tmp_path, tiny_png(i), i) for i in range(count)]
    return ImagineResult(GEN, "a red fox", images, "fake", "fake-model", "256x256", "natural", "standard",
                         count, count, 0, 40)


def custom_ids(call: Any) -> list[str]:
    return [c["custom_id"] for row in (call.json or {}).get("components", []) for c in row.get("components", [])]


LIVE = time.time() + 600


async def test_result_edits_the_deferred_response_with_image_and_buttons(fake, courier, tmp_path) -> None:
    await courier.deliver(address(), LIVE, result(tmp_path))
    [call] = fake.for_token("tok-1")
    assert call.method == "PATCH" and call.path.endswith("/messages/@original")
    assert [name for name, _ in call.files] == ["imagebot-89abcdef-1.png"]
    assert call.files[0][1] == tiny_png(0)
    assert custom_ids(call) == [f"ib:rr:{GEN}", f"ib:en:{GEN}", f"ib:va:{GEN}:0", f"ib:up:{GEN}:0", f"ib:ed:{GEN}:0",
                                f"ib:op:{GEN}:0", f"ib:dl:{GEN}"]
    assert "Ada" in call.embeds[0]["author"]["name"] and f"generation {GEN}" in call.embeds[0]["footer"]["text"]
    assert not fake.to_channel(CHANNEL_ID) and not fake.dms()


async def test_follow_up_when_the_address_names_no_message(fake, courier, tmp_path) -> None:
    await courier.deliver(address(message="", ephemeral=True), LIVE, result(tmp_path))
    [call] = fake.for_token("tok-1")
    assert call.method == "POST" and call.files and call.ephemeral


async def test_ten_images_and_their_buttons_in_one_message(fake, courier, tmp_path) -> None:
    await courier.deliver(address(), LIVE, result(tmp_path, 10))
    [call] = fake.for_token("tok-1")
    assert len(call.files) == 10
    assert len(custom_ids(call)) == 4 + 20 and f"ib:up:{GEN}:9" in custom_ids(call)


async def test_expired_token_goes_to_the_channel(fake, courier, tmp_path) -> None:
    await courier.deliver(address(), time.time() - 1, result(tmp_path))
    assert not fake.for_token("tok-1")
    [call] = fake.to_channel(CHANNEL_ID)
    assert call.files and custom_ids(call)[0] == f"ib:rr:{GEN}"
    assert call.content == f"<@{USER}>"


async def test_gone_webhook_goes_to_the_channel(fake, courier, tmp_path) -> None:
    fake.fail("PATCH", r"/webhooks/", 50027)
    await courier.deliver(address(), LIVE, result(tmp_path))
    assert fake.to_channel(CHANNEL_ID)[0].files
    assert len(fake.for_token("tok-1")) == 1  # no note into a dead interaction


async def test_refused_channel_goes_to_a_dm_without_buttons(fake, courier, tmp_path) -> None:
    fake.fail("POST", rf"/channels/{CHANNEL_ID}/messages", 50013)
    await courier.deliver(address(), time.time() - 1, result(tmp_path))
    [dm] = fake.dms()
    assert dm.files and not custom_ids(dm)


async def test_private_command_skips_the_channel(fake, courier, tmp_path) -> None:
    await courier.deliver(address(ephemeral=True), time.time() - 1, result(tmp_path))
    assert not fake.to_channel(CHANNEL_ID)
    assert fake.dms()[0].files


async def test_fallback_leaves_a_note_in_the_live_response(fake, courier, tmp_path) -> None:
    fake.fail("PATCH", r"/webhooks/", 50013)
    await courier.deliver(address(), LIVE, result(tmp_path))
    assert fake.to_channel(CHANNEL_ID)[0].files
    note = fake.for_token("tok-1")[-1]
    assert note.status == 200 and "posted them in this channel" in (note.content or "")


async def test_all_refused_is_undeliverable(fake, courier, tmp_path) -> None:
    fake.fail("PATCH", r"/webhooks/", 50027)
    fake.fail("POST", r"/channels/\d+/messages", 50013, times=5)
    with pytest.raises(Undeliverable):
        await courier.deliver(address(), LIVE, result(tmp_path))
    assert not [c for c in fake.calls if c.files and c.status < 300]


async def test_unreadable_images_are_undeliverable(fake, courier, tmp_path) -> None:
    res = result(tmp_path)
    res.images[0].path.unlink()
    with pytest.raises(Undeliverable):
        await courier.deliver(address(), LIVE, res)


async def test_large_images_are_fitted_to_the_interaction_limit(fake, courier, tmp_path) -> None:
    rng = random.Random(1)
    noise = Image.frombytes("RGB", (512, 512), bytes(rng.getrandbits(8) for _ in range(512 * 512 * 3)))
    out = io.BytesIO()
    noise.save(out, format="PNG")
    big = out.getvalue()
    res = result(tmp_path)
    res.images = [stored(tmp_path, big, 7)]
    await courier.deliver(address(upload_limit=len(big) // 2 + 16 * 1024), LIVE, res)
    [call] = fake.for_token("tok-1")
    assert len(call.files[0][1]) < len(big) and not call.files[0][0].endswith(".png")


async def test_too_large_retries_at_half_size(fake, courier, tmp_path) -> None:
    fake.fail("PATCH", r"/webhooks/", 40005)
    await courier.deliver(address(), LIVE, result(tmp_path))
    calls = fake.for_token("tok-1")
    assert [c.status for c in calls] == [413, 200] and calls[1].files


async def test_enhance_result_has_its_imagine_button(fake, courier) -> None:
    res = EnhanceResult(GEN, "fox", "a red fox in the snow, golden hour", 1, 39, "local")
    await courier.deliver(address(), LIVE, res)
    [call] = fake.for_token("tok-1")
    assert custom_ids(call) == [f"ib:im:{GEN}"] and not call.files
    assert "golden hour" in call.embeds[0]["description"]


async def test_tell_replaces_the_deferred_text_while_live(fake, courier) -> None:
    assert await courier.tell(address(), LIVE, "Out of credits")
    [call] = fake.for_token("tok-1")
    assert call.method == "PATCH" and call.content == "Out of credits"


async def test_tell_follows_up_privately_when_the_edit_is_refused(fake, courier) -> None:
    fake.fail("PATCH", r"/webhooks/", 50013)
    assert await courier.tell(address(), LIVE, "Out of credits")
    follow = fake.for_token("tok-1")[-1]
    assert follow.method == "POST" and follow.ephemeral and follow.content == "Out of credits"


async def test_tell_after_the_deadline_is_a_dm(fake, courier) -> None:
    assert await courier.tell(address(), time.time() - 1, "Refunded")
    assert not fake.for_token("tok-1")
    assert [c.content for c in fake.dms()] == ["Refunded"]


async def test_tell_reaching_nobody_is_false(fake, courier) -> None:
    fake.fail("POST", r"/users/@me/channels", 50007)
    assert await courier.tell(address(), time.time() - 1, "Refunded") is False
    assert await courier.tell({}, LIVE, "x") is False

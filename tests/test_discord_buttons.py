"""Persistent buttons (Re-roll, Variations, Upscale, Enhance, Imagine this) and /enhance on Discord."""

from __future__ import annotations

import io
from pathlib import Path
from typing import Any

from PIL import Image

from tests.doubles import ScriptedProvider
from tests.fakes.discord_harness import DiscordHarness


def _buttons(message: dict[str, Any]) -> dict[str, str]:
    return {b["label"]: b["custom_id"] for row in message["components"] for b in row["components"] if "label" in b}


async def _press(h: DiscordHarness, message: dict[str, Any], label: str, **kw: Any) -> str:
    return await h.send(h.payloads.click(message, _buttons(message)[label], **kw))


def _message(h: DiscordHarness, token: str) -> dict[str, Any]:
    return h.fake.messages[h.fake.originals[token]]


async def test_buttons_work_after_a_restart_and_the_presser_pays(tmp_path: Path) -> None:
    async with DiscordHarness(tmp_path) as h:
        token = await h.imagine("a lighthouse", size="256x256")
        await h.result(token)
        message = _message(h, token)
        assert set(_buttons(message)) == {"Re-roll", "Enhance", "Variations", "Upscale", "Edit", "Delete"}

        await h.restart()  # new client, new core, same database: nothing is kept in memory

        reroll = await _press(h, message, "Re-roll", user_id=222)
        first = await h.result(reroll)
        assert h.fake.for_token(reroll)[0].json == {"type": 5}
        assert "<@222>: a lighthouse" in first.embeds[0]["description"]

        upscale = await _press(h, message, "Upscale", user_id=222)
        big = await h.result(upscale)
        assert Image.open(io.BytesIO(big.files[0][1])).size == (512, 512)

        variation = await _press(h, message, "Variations", user_id=222)
        await h.result(variation)
        assert h.core is not None
        gens = await h.core.store.recent_generations(h.core_identity(222))
        assert sorted(g.command for g in gens) == ["reroll", "upscale", "variations"]
        assert await h.balance(111) == 47  # the original asker paid only for the first image
        assert await h.balance(222) == 50 - 3 - 5 - 3


async def test_upscale_where_the_provider_cannot_says_so_clearly(tmp_path: Path) -> None:
    async with DiscordHarness(tmp_path, providers=[ScriptedProvider("fake")]) as h:
        token = await h.imagine("a lighthouse", size="256x256")
        await h.result(token)
        press = await _press(h, _message(h, token), "Upscale")
        text = await h.fake.wait_for(lambda: next((t for t in h.texts(press) if "IMG-PROV-UNSUPPORTED" in t), None))
        assert "Upscale is not supported by fake" in text
        assert await h.balance(111) == 47


async def test_buttons_from_another_server_are_refused(tmp_path: Path) -> None:
    async with DiscordHarness(tmp_path) as h:
        token = await h.imagine("a lighthouse", size="256x256")
        await h.result(token)
        press = await _press(h, _message(h, token), "Re-roll", guild_id=12345)
        text = await h.fake.wait_for(lambda: next((t for t in h.texts(press) if "IMG-NOTFOUND" in t), None))
        assert "no longer known" in text


async def test_enhance_command_then_imagine_this_button(tmp_path: Path) -> None:
    async with DiscordHarness(tmp_path) as h:
        token = await h.command("enhance", [h.payloads.opt("prompt", "a cat")])
        await h.fake.wait_for(lambda: _message(h, token).get("components") if token in h.fake.originals else None)
        message = _message(h, token)
        assert h.fake.for_token(token)[0].json == {"type": 5}
        description = message["embeds"][0]["description"]
        assert description.startswith("Enhanced prompt:") and "1 credit spent" in description
        assert list(_buttons(message)) == ["Imagine this"]

        await h.restart()
        press = await _press(h, message, "Imagine this")
        result = await h.result(press)
        assert h.core is not None
        latest = (await h.core.store.recent_generations(h.core_identity(111), 1))[0]
        assert latest.command == "imagine" and len(latest.prompt) > len("a cat")
        assert latest.prompt[:30] in result.embeds[0]["description"].replace("\\", "")


async def test_enhance_button_under_an_image(tmp_path: Path) -> None:
    async with DiscordHarness(tmp_path) as h:
        token = await h.imagine("a dog", size="256x256")
        await h.result(token)
        press = await _press(h, _message(h, token), "Enhance")
        await h.fake.wait_for(lambda: h.fake.originals.get(press) and _message(h, press).get("components"))
        assert list(_buttons(_message(h, press))) == ["Imagine this"]
        assert await h.balance(111) == 50 - 3 - 1

"""End to end: /imagine on Discord (real discord.py against the Discord fake) served by OpenAI (the real
openai SDK streaming from the OpenAI fake). Previews show as edits of the deferred answer, free."""

from __future__ import annotations

from pathlib import Path

from tests.fakes.discord_harness import DiscordHarness
from tests.fakes.harness import OPENAI_KEY, openai_env
from tests.fakes.openai_api import FakeOpenAI

START = 50


async def test_openai_previews_reach_discord_as_edits_and_only_the_result_is_charged(tmp_path: Path) -> None:
    async with FakeOpenAI() as oai:
        oai.stream_gap = 1.1  # a model that takes its time: each partial arrives a second apart
        env = {**openai_env(oai.base_url), "IMAGEBOT_PROVIDERS": "openai"}
        async with DiscordHarness(tmp_path, **env) as h:
            token = await h.imagine("a lighthouse at dusk", size="1536x1024", format="webp")
            result = await h.result(token, timeout=20)
            previews = h.previews(token)
            assert [c.method for c in previews] == ["PATCH", "PATCH"]  # previews = 2 by default
            assert all(c.path.endswith("/messages/@original") for c in previews)
            assert all(c.files[0][1][:4] == b"RIFF" for c in previews)  # the partial images themselves
            calls = h.fake.for_token(token)
            assert calls.index(result) > calls.index(previews[-1])
            assert len(result.files) == 1
            assert await h.balance(111) == START - 15  # one 1536x1024 medium image; previews are free
            [call] = oai.calls("generations")
            assert call.body["stream"] is True and call.body["partial_images"] == 2
            assert call.body["output_format"] == "webp" and call.body["size"] == "1536x1024"
            assert all(OPENAI_KEY not in str(c.json) for c in h.fake.calls)  # never shown to anyone

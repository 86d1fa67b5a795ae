"""Slack delivery from any process: the courier posts a job's outcome from its address and the bot token
alone (the real slack_sdk client against the loopback fake), and the in-process path stores that address."""

from __future__ import annotations

import hashlib
import json
import sqlite3
import time
from collections.abc import AsyncIterator
from contextlib import closing
from pathlib import Path
from typing import Any

import pytest

from bot.couriers import Undeliverable
from bot.models import EnhanceResult, ImagineResult, StoredImage
from bot.slack_app.blocks import DELETE, EDIT, ENHANCE, IMAGINE_THIS, MORE, REROLL, VARIATIONS
from bot.slack_app.courier import SlackCourier
from tests.fakes.images import png
from tests.fakes.slack_api import TEAM_ID, FakeSlack
from tests.fakes.slack_harness import SlackHarness, slack_config
from tests.test_slack_http import GatedProvider

ANN = "U0ANN0001"
GID = "ab" * 16


@pytest.fixture
async def fake() -> AsyncIterator[FakeSlack]:
    server = await FakeSlack().start()
    yield server
    await server.close()


@pytest.fixture
async def courier(tmp_path: Path, fake: FakeSlack) -> AsyncIterator[SlackCourier]:
    # A worker's environment: the bot token only, no signing secret and no app token.
    config = slack_config(tmp_path, fake, SLACK_SIGNING_SECRET="")
    made = SlackCourier.from_config(config)
    yield made
    await made.aclose()


def address(fake: FakeSlack, *, channel: str = "C0GEN0001", key: str = "job", thread_ts: str = "") -> dict[str, Any]:
    return {"platform": "slack", "team_id": fake.team_id, "channel_id": channel, "user_id": ANN,
            "response_url": fake.response_url(key), "thread_ts": thread_ts}


def result(tmp_path: Path, count: int = 2) -> ImagineResult:
    images = []
    for i in range(count):
        data = png(32, 32, (10 * i, 80, 160))
        path = tmp_path / f"img{i}.png"
        path.write_bytes(data)
        images.append(StoredImage(hashlib.sha256(data).hexdigest(), path, "image/png", len(data), 32, 32))
    return ImagineResult(generation_id=GID, prompt="a red fox", images=images, provider="local", model="local-1",
                         size="256x256", style="", quality="standard", requested=count, credits_spent=count,
                         credits_refunded=0, balance=48)


def soon() -> float:
    return time.time() + 1500


def action_ids(message: dict[str, Any]) -> list[str]:
    return [e["action_id"] for block in message.get("blocks", []) if block["type"] == "actions"
            for e in block["elements"]]


async def test_images_reach_the_channel_with_the_in_process_buttons(tmp_path: Path, fake: FakeSlack,
                                                                    courier: SlackCourier) -> None:
    await courier.deliver(address(fake, thread_ts="1700000000.000100"), soon(), result(tmp_path))
    [upload] = fake.uploads
    assert upload.channel_id == "C0GEN0001"
    assert upload.thread_ts == "1700000000.000100"
    assert f"<@{ANN}>" in upload.initial_comment and "a red fox" in upload.initial_comment
    assert [f[2] for f in upload.files] == [(tmp_path / f"img{i}.png").read_bytes() for i in range(2)]
    [buttons] = fake.messages
    assert buttons["channel"] == "C0GEN0001"
    assert action_ids(buttons) == [REROLL, f"{VARIATIONS}_0", f"{VARIATIONS}_1", ENHANCE, f"{EDIT}_0", f"{EDIT}_1",
                                   MORE, DELETE]
    values = [e["value"] for b in buttons["blocks"] if b["type"] == "actions" for e in b["elements"]]
    files = ",".join(f["id"] for f in json.loads(fake.called("files.completeUploadExternal")[0].args["files"]))
    assert values == [GID, f"{GID}:0", f"{GID}:1", GID, f"{GID}:0", f"{GID}:1", GID, f"{GID}|{files}"]
    assert all(c.authorized for c in fake.calls)


async def test_a_channel_that_refuses_the_bot_sends_the_images_by_dm(tmp_path: Path, fake: FakeSlack,
                                                                     courier: SlackCourier) -> None:
    fake.blocked["C0GEN0001"] = "not_in_channel"
    await courier.deliver(address(fake, key="dm"), soon(), result(tmp_path, 1))
    [upload] = fake.uploads
    assert upload.channel_id == "D0ANN0001"
    assert action_ids(fake.dms(ANN)[0]) == [REROLL, VARIATIONS, ENHANCE, EDIT, MORE, DELETE]
    assert any("direct message" in text for text in fake.replies("dm"))  # told why, privately


async def test_every_way_refused_is_undeliverable(tmp_path: Path, fake: FakeSlack, courier: SlackCourier) -> None:
    fake.blocked["C0GEN0001"] = "channel_not_found"
    fake.blocked["D0ANN0001"] = "cannot_dm_bot"
    with pytest.raises(Undeliverable) as caught:
        await courier.deliver(address(fake), soon(), result(tmp_path))
    assert fake.uploads == []
    assert "xoxb" not in str(caught.value)


async def test_a_revoked_token_is_undeliverable_without_trying_the_dm(tmp_path: Path, fake: FakeSlack,
                                                                      courier: SlackCourier) -> None:
    fake.fail("files.getUploadURLExternal", "token_revoked", times=5)
    with pytest.raises(Undeliverable):
        await courier.deliver(address(fake), soon(), result(tmp_path))
    assert fake.called("conversations.open") == []


async def test_tell_uses_the_response_url_while_it_lives(fake: FakeSlack, courier: SlackCourier) -> None:
    assert await courier.tell(address(fake, key="live"), soon(), "Your credits were refunded.")
    assert fake.replies("live") == ["Your credits were refunded."]
    assert fake.responses["live"][0]["response_type"] == "ephemeral"
    assert fake.ephemerals == []


async def test_tell_past_deliver_by_posts_an_ephemeral_in_the_channel(fake: FakeSlack, courier: SlackCourier) -> None:
    assert await courier.tell(address(fake, key="old", thread_ts="1.2"), time.time() - 1, "Interrupted; refunded.")
    assert "old" not in fake.responses
    [note] = fake.ephemerals
    assert (note["channel"], note["user"], note["text"], note["thread_ts"]) == ("C0GEN0001", ANN,
                                                                                "Interrupted; refunded.", "1.2")


async def test_tell_falls_back_to_a_dm_and_reports_when_nobody_took_it(fake: FakeSlack,
                                                                         courier: SlackCourier) -> None:
    fake.dead_urls.add("used")  # a response_url used up before its time
    fake.blocked["C0GEN0001"] = "not_in_channel"
    assert await courier.tell(address(fake, key="used"), soon(), "Refunded.")
    assert [m["text"] for m in fake.dms(ANN)] == ["Refunded."]
    fake.blocked["D0ANN0001"] = "cannot_dm_bot"
    assert await courier.tell(address(fake, key="used"), soon(), "Again.") is False


async def test_an_enhanced_prompt_arrives_privately_with_imagine_this(fake: FakeSlack, courier: SlackCourier) -> None:
    enhanced = EnhanceResult(generation_id=GID, original="fox", enhanced="a red fox at dawn, watercolour",
                             credits_spent=1, balance=49, enhancer="local")
    await courier.deliver(address(fake, key="enh"), soon(), enhanced)
    [reply] = fake.responses["enh"]
    assert "a red fox at dawn" in reply["text"]
    assert action_ids(reply) == [IMAGINE_THIS]
    await courier.deliver(address(fake, key="enh"), time.time() - 1, enhanced)  # response_url dead: ephemeral
    assert action_ids(fake.ephemerals[0]) == [IMAGINE_THIS]


# -- the in-process path stores a resumable job ----------------------------------------------------------

def stored_jobs(database: str) -> list[dict[str, Any]]:
    """The jobs table as another process would read it."""
    with closing(sqlite3.connect(database)) as conn:
        conn.row_factory = sqlite3.Row
        return [dict(row) for row in conn.execute("SELECT id, state, address, deliver_by FROM jobs")]


async def test_an_in_process_command_stores_its_slack_address(tmp_path: Path) -> None:
    gated = GatedProvider()
    slack = await SlackHarness.start(tmp_path, providers=[gated])
    try:
        before = time.time()
        status, _ = await slack.command("/imagine", "a red fox --size 256x256", key="k1", thread_ts="1.5")
        assert status == 200
        await slack.fake.until(lambda: gated.calls)
        [job] = stored_jobs(slack.config.database)  # while it runs: any worker could resume it from this
        assert job["state"] == "running"
        assert json.loads(job["address"]) == {
            "platform": "slack", "team_id": TEAM_ID, "channel_id": "C0GEN0001", "user_id": ANN,
            "response_url": slack.fake.response_url("k1"), "thread_ts": "1.5"}
        assert before + 29 * 60 - 5 < job["deliver_by"] < time.time() + 29 * 60 + 5
        gated.gate.set()
        await slack.fake.until(lambda: slack.fake.uploads)
        await slack.idle()
    finally:
        gated.gate.set()
        await slack.close()

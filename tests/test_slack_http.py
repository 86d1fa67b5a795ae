"""/imagine over Slack's HTTP mode: the real Bolt app, signed requests, the fake Web API, a real SQLite file."""

from __future__ import annotations

import asyncio
import io
import json
import logging
import time
from collections.abc import AsyncIterator
from pathlib import Path

import pytest
from PIL import Image

from bot.errors import ProviderUnavailable
from bot.models import Identity
from bot.slack_app.blocks import REROLL
from providers.base import Capabilities, GeneratedImage, GenerationRequest, ModelInfo
from providers.local import render
from tests.fakes.slack_api import TEAM_ID, command_payload, form_body, signed_headers
from tests.fakes.slack_harness import BOT_TOKEN, SECRET, SlackHarness

ANN = "U0ANN0001"


class GatedProvider:
    """A provider double that holds every call until the test opens the gate."""

    name = "gated"

    def __init__(self, concurrency: int = 4) -> None:
        self.capabilities = Capabilities(
            models=(ModelInfo("gated-1", sizes=("256x256", "1024x1024"), max_per_call=4),),
            default_model="gated-1", concurrency=concurrency,
        )
        self.gate = asyncio.Event()
        self.calls = 0

    async def generate(self, request: GenerationRequest) -> list[GeneratedImage]:
        self.calls += 1
        await self.gate.wait()
        return [GeneratedImage(render(request.prompt, request.size, request.style, request.seed, i),
                               revised_prompt=f"{request.prompt}, revised")
                for i in range(request.count)]

    async def aclose(self) -> None:
        return None


@pytest.fixture
async def slack(tmp_path: Path) -> AsyncIterator[SlackHarness]:
    harness = await SlackHarness.start(tmp_path)
    yield harness
    await harness.close()


async def test_signed_imagine_uploads_into_the_channel_with_summary_and_buttons(slack: SlackHarness) -> None:
    status, body = await slack.command("/imagine", "a red fox --size 256x256 --count 2", key="k1")
    assert status == 200
    ack = json.loads(body)
    assert ack["response_type"] == "ephemeral" and "Generating 2 images" in ack["text"]
    await slack.fake.until(lambda: slack.fake.messages)
    await slack.idle()

    [upload] = slack.fake.uploads
    assert upload.channel_id == "C0GEN0001" and upload.thread_ts is None
    comment = upload.initial_comment
    for part in (f"<@{ANN}>", "a red fox", "local (local-sketch)", "256x256", "6 credits spent", "44 left"):
        assert part in comment
    assert len(upload.files) == 2
    for _, _, data in upload.files:
        with Image.open(io.BytesIO(data)) as img:
            assert img.size == (256, 256)
    [buttons] = slack.fake.messages
    elements = buttons["blocks"][-1]["elements"]
    assert [e["text"]["text"] for e in elements] == ["Re-roll", "Variations #1", "Variations #2", "Enhance",
                                                     "Edit #1", "Edit #2", "More…", "Delete"]
    gen_id = elements[0]["value"]
    assert elements[0]["action_id"] == REROLL
    gen = await slack.core.generation(gen_id)
    assert gen is not None and gen.status == "COMPLETED" and gen.credits_consumed == 6
    assert (gen.platform, gen.server_id, gen.user_id) == ("slack", TEAM_ID, ANN)
    assert await slack.balance(ANN) == 44
    assert all(c.authorized for c in slack.fake.calls)


async def test_upload_goes_into_the_thread_it_was_invoked_from(slack: SlackHarness) -> None:
    status, _ = await slack.command("/imagine", "a lighthouse -s 256x256", thread_ts="1700000000.000001")
    assert status == 200
    await slack.fake.until(lambda: slack.fake.messages)
    [upload] = slack.fake.uploads
    assert upload.thread_ts == "1700000000.000001"
    assert slack.fake.messages[0]["thread_ts"] == "1700000000.000001"


@pytest.mark.parametrize("mutate", ["unsigned", "bad-signature", "wrong-secret", "stale", "tampered"])
async def test_forged_unsigned_or_stale_requests_get_401_and_change_nothing(slack: SlackHarness, mutate: str) -> None:
    body = form_body(command_payload(slack.fake, "/imagine", "a red fox --size 256x256"))
    headers = signed_headers(SECRET, body)
    if mutate == "unsigned":
        headers = {"Content-Type": "application/x-www-form-urlencoded"}
    elif mutate == "bad-signature":
        headers["X-Slack-Signature"] = "v0=" + "0" * 64
    elif mutate == "wrong-secret":
        headers = signed_headers("not-the-secret", body)
    elif mutate == "stale":
        headers = signed_headers(SECRET, body, timestamp=int(time.time()) - 6 * 60)
    elif mutate == "tampered":
        body = body.replace("red+fox", "blue+fox")
    before = slack.db_counts()
    status, _, _ = await slack.post(body, headers)
    assert status == 401
    await asyncio.sleep(0.1)
    assert slack.fake.calls == [] and slack.fake.uploads == [] and slack.fake.responses == {}
    assert slack.db_counts() == before
    assert slack.bot.busy == 0


@pytest.mark.parametrize(("text", "named"), [
    ("a fox --sise 1024x1024", "--sise"),
    ("a fox --size 99x99", "99x99"),
    ("a fox --count 50", "count"),
    ("a fox --style glossy", "glossy"),
    ("a fox --provider nope", "nope"),
    ("--size 256x256", "prompt is empty"),
])
async def test_bad_flags_get_an_ephemeral_usage_line_and_no_charge(slack: SlackHarness, text: str, named: str) -> None:
    status, body = await slack.command("/imagine", text)
    assert status == 200
    ack = json.loads(body)
    assert ack["response_type"] == "ephemeral"
    assert named in ack["text"] and "Usage: /imagine" in ack["text"]
    await asyncio.sleep(0.05)
    assert slack.bot.busy == 0
    assert slack.db_counts()["generations"] == 0 and slack.db_counts()["ledger"] == 0
    assert slack.fake.uploads == [] and slack.fake.called("files.getUploadURLExternal") == []


async def test_the_ack_returns_before_the_work_and_reports_the_queue_position(tmp_path: Path) -> None:
    provider = GatedProvider(concurrency=1)
    slack = await SlackHarness.start(tmp_path, providers=[provider])
    try:
        first = await slack.post(*_signed(slack, "a slow fox --size 256x256", "first"))
        assert first[0] == 200 and "Generating 1 image" in json.loads(first[1])["text"]
        assert first[2] < 1.0  # answered while the provider is still holding the job
        await slack.fake.until(lambda: provider.calls == 1)
        assert slack.fake.uploads == [] and slack.bot.busy == 1

        second = await slack.post(*_signed(slack, "a second fox --size 256x256", "second", user="U0BOB0001"))
        assert second[0] == 200
        await slack.fake.until(lambda: slack.fake.replies("second"))
        assert "Waiting in line: position 1" in slack.fake.replies("second")[0]
        assert slack.fake.uploads == []

        provider.gate.set()
        await slack.fake.until(lambda: len(slack.fake.uploads) == 2)
        await slack.idle()
        [first_upload] = [u for u in slack.fake.uploads if "a slow fox" in u.initial_comment]
        assert "Revised prompt: a slow fox, revised" in first_upload.initial_comment
        assert "gated (gated-1)" in first_upload.initial_comment
    finally:
        provider.gate.set()
        await slack.close()


def _signed(slack: SlackHarness, text: str, key: str, user: str = ANN) -> tuple[str, dict[str, str]]:
    body = form_body(command_payload(slack.fake, "/imagine", text, key=key, user=user))
    return body, signed_headers(SECRET, body)


async def test_not_in_channel_tells_the_user_and_delivers_by_dm(slack: SlackHarness) -> None:
    slack.fake.blocked["C0PRIV001"] = "not_in_channel"
    await slack.command("/imagine", "a secret garden --size 256x256", channel="C0PRIV001", key="priv")
    await slack.fake.until(lambda: slack.fake.messages)
    await slack.idle()
    [upload] = slack.fake.uploads
    assert upload.channel_id == "D0ANN0001"
    assert slack.fake.called("conversations.open")[0].args["users"] == ANN
    [notice] = slack.fake.replies("priv")
    assert "not_in_channel" in notice and "direct message" in notice
    assert slack.fake.responses["priv"][0]["response_type"] == "ephemeral"
    assert await slack.balance(ANN) == 47  # delivered somewhere: charged


async def test_images_delivered_nowhere_are_refunded(slack: SlackHarness) -> None:
    slack.fake.blocked["C0PRIV001"] = "channel_not_found"
    slack.fake.blocked["D0ANN0001"] = "messages_tab_disabled"
    await slack.command("/imagine", "a lost parcel --size 256x256", channel="C0PRIV001", key="lost")
    await slack.fake.until(lambda: len(slack.fake.replies("lost")) == 2)
    await slack.idle()
    assert slack.fake.uploads == []
    assert "not charged (3 credits returned)" in slack.fake.replies("lost")[1]
    assert await slack.balance(ANN) == 50
    [gen] = await slack.core.store.recent_generations(_ann())
    assert gen.status == "FAILED" and gen.credits_consumed == 0
    assert await slack.core.store.audit() == []


async def test_ratelimited_waits_for_retry_after_then_delivers(slack: SlackHarness) -> None:
    slack.fake.fail("files.completeUploadExternal", "ratelimited", headers={"Retry-After": "1"})
    await slack.command("/imagine", "a patient snail --size 256x256")
    await slack.fake.until(lambda: slack.fake.uploads, timeout=8)
    first, second = slack.fake.called("files.completeUploadExternal")
    assert second.at - first.at >= 1.0
    await slack.idle()
    assert await slack.balance(ANN) == 47


@pytest.mark.parametrize(("method", "error", "extra", "user_says", "log_says"), [
    ("files.getUploadURLExternal", "missing_scope", {"needed": "files:write"}, "missing a permission (files:write)",
     "Bot Token Scopes"),
    ("files.completeUploadExternal", "invalid_auth", {}, "misconfigured", "SLACK_BOT_TOKEN was refused"),
])
async def test_operator_errors_are_logged_with_the_fix_and_refunded(
    slack: SlackHarness, caplog: pytest.LogCaptureFixture, method: str, error: str, extra: dict[str, str],
    user_says: str, log_says: str,
) -> None:
    caplog.set_level(logging.INFO)
    slack.fake.fail(method, error, **extra)
    await slack.command("/imagine", "a broken pipe --size 256x256", key="op")
    await slack.fake.until(lambda: slack.fake.replies("op"))
    await slack.idle()
    [reply] = slack.fake.replies("op")
    assert user_says in reply and "not charged" in reply
    assert log_says in caplog.text
    assert BOT_TOKEN not in caplog.text and SECRET not in caplog.text
    assert slack.fake.called("conversations.open") == []  # a DM would fail the same way
    assert await slack.balance(ANN) == 50


async def test_prompt_text_can_not_ping_the_channel(slack: SlackHarness) -> None:
    await slack.command("/imagine", "a cat &lt;b&gt; <!channel> and <@U0BOB0001|bob> --size 256x256")
    await slack.fake.until(lambda: slack.fake.messages)
    comment = slack.fake.uploads[0].initial_comment
    assert "<!channel>" not in comment and "<@U0BOB0001" not in comment
    assert "a cat &lt;b&gt; @channel and @bob" in comment
    gen = (await slack.core.store.recent_generations(_ann()))[0]
    assert gen.prompt == "a cat <b> @channel and @bob"


def _ann() -> Identity:
    return Identity("slack", TEAM_ID, ANN)


class DownProvider:
    """A provider double whose service is down: every call fails the way a 503 does."""

    name = "down"

    def __init__(self) -> None:
        self.capabilities = Capabilities(models=(ModelInfo("down-1", sizes=("256x256",)),), default_model="down-1")

    async def generate(self, request: GenerationRequest) -> list[GeneratedImage]:
        raise ProviderUnavailable("The image service is unavailable right now.")

    async def aclose(self) -> None:
        return None


async def test_a_provider_failure_is_told_privately_and_costs_nothing(tmp_path: Path) -> None:
    slack = await SlackHarness.start(tmp_path, providers=[DownProvider()])
    try:
        status, body = await slack.command("/imagine", "a red fox --size 256x256", key="down")
        assert status == 200 and "Generating" in body
        await slack.fake.until(lambda: slack.fake.replies("down"))
        await slack.idle()
        [reply] = slack.fake.replies("down")
        assert "unavailable" in reply and "not charged" in reply and "IMG-PROV-DOWN" in reply
        assert slack.fake.uploads == [] and await slack.balance(ANN) == 50
    finally:
        await slack.close()


async def test_not_enough_credits_is_told_privately_and_changes_nothing(tmp_path: Path) -> None:
    slack = await SlackHarness.start(tmp_path, IMAGEBOT_STARTING_CREDITS="2")
    try:
        status, ack = await slack.command("/imagine", "a red fox --size 256x256", key="poor")
        await slack.idle()
        # Refused before the ack: the refusal is the acknowledgement itself, and no job was made.
        assert status == 200 and "IMG-CREDITS-001" in ack
        assert slack.fake.uploads == [] and await slack.balance(ANN) == 2
        assert slack.db_counts()["generations"] == 0
    finally:
        await slack.close()

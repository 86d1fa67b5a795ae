"""Issue 13's modal and buttons over the other ways Slack reaches the bot: Socket Mode (``run_slack`` as
``imagebot run`` starts it, envelopes over the fake websocket, modal answers on the socket's ack) and role
ingress (HTTP mode, the job queued before the ack and delivered by a worker in "another process")."""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest

from bot.app import build_core
from bot.models import Identity
from bot.slack_app import run_slack
from bot.slack_app.blocks import CONFIRM, EDIT, EDIT_BLOCK, EDIT_INPUT, MORE, OUTPAINT
from tests.fakes.slack_api import TEAM_ID, FakeSlack, action_payload, command_payload, view_submission_payload
from tests.fakes.slack_harness import SlackHarness, slack_config
from tests.test_slack_ingress import start_worker

ANN = "U0ANN0001"


def buttons_of(message: dict[str, Any]) -> dict[str, str]:
    return {e["action_id"]: e["value"] for b in message.get("blocks", []) if b["type"] == "actions"
            for e in b["elements"]}


@pytest.fixture
async def fake() -> AsyncIterator[FakeSlack]:
    server = await FakeSlack().start()
    yield server
    await server.close()


async def test_socket_mode_routes_the_edit_modal_and_the_canvas_buttons(tmp_path: Path, fake: FakeSlack) -> None:
    config = slack_config(tmp_path, fake, SLACK_APP_TOKEN="xapp-1-A0APP0001-test", SLACK_SIGNING_SECRET="")
    async with build_core(config) as core:
        task = asyncio.create_task(run_slack(core, config))
        try:
            await fake.send_envelope("slash_commands", command_payload(fake, "/imagine", "a socket fox --size 256x256"))
            await fake.until(lambda: fake.messages)
            buttons = buttons_of(fake.messages[0])

            press = action_payload(fake, EDIT, buttons[EDIT], key="e")
            press["trigger_id"] = "777.888.socket"
            await fake.send_envelope("interactive", press)
            await fake.until(lambda: fake.views)
            view = fake.views[0]
            assert view["trigger_id"] == "777.888.socket"

            # A refusal comes back on the socket's ack and keeps the modal open.
            empty = await fake.send_envelope("interactive", view_submission_payload(
                fake, view, {EDIT_BLOCK: {EDIT_INPUT: ""}}))
            await fake.until(lambda: empty in fake.acks)
            assert fake.acks[empty]["response_action"] == "errors" and EDIT_BLOCK in fake.acks[empty]["errors"]
            assert len(fake.uploads) == 1

            done = await fake.send_envelope("interactive", view_submission_payload(
                fake, view, {EDIT_BLOCK: {EDIT_INPUT: "paint it blue"}}))
            await fake.until(lambda: done in fake.acks)
            assert fake.acks[done] == {}  # closes the modal
            await fake.until(lambda: len(fake.messages) == 2)
            assert "paint it blue" in fake.uploads[1].initial_comment

            await fake.send_envelope("interactive", action_payload(fake, MORE, buttons[MORE], key="more"))
            await fake.until(lambda: fake.responses.get("more"))
            offered = buttons_of(fake.responses["more"][0])
            pan = f"{OUTPAINT}_0_pan-left"
            await fake.send_envelope("interactive", action_payload(fake, pan, offered[pan], key="pan"))
            await fake.until(lambda: len(fake.messages) == 3)
            assert len(fake.uploads) == 3
        finally:
            task.cancel()
            await asyncio.gather(task, return_exceptions=True)


@pytest.fixture
async def ingress(tmp_path: Path) -> AsyncIterator[SlackHarness]:
    harness = await SlackHarness.start(tmp_path, IMAGEBOT_ROLE="ingress", IMAGEBOT_STARTING_CREDITS="500")
    yield harness
    await harness.close()


async def test_ingress_queues_an_edit_and_a_confirmed_command_for_a_worker(ingress: SlackHarness) -> None:
    other = await start_worker(ingress)
    try:
        await ingress.command("/imagine", "a red fox --size 256x256", key="i")
        await ingress.fake.until(lambda: ingress.fake.messages)
        buttons = buttons_of(ingress.fake.messages[0])
        assert await ingress.balance(ANN) == 497

        await ingress.click(EDIT, buttons[EDIT], key="e")
        await ingress.fake.until(lambda: ingress.fake.views)
        status, body = await ingress.submit(ingress.fake.views[0], {EDIT_BLOCK: {EDIT_INPUT: "add snow"}})
        assert status == 200 and body == ""
        await ingress.fake.until(lambda: any(t.startswith("Queued: an edit of image 1")
                                             for t in ingress.fake.replies("e")))
        await ingress.fake.until(lambda: len(ingress.fake.uploads) == 2)
        assert "add snow" in ingress.fake.uploads[1].initial_comment
        assert await ingress.balance(ANN) == 494

        _, body = await ingress.command("/imagine", "a big mural --size 1024x1024 --count 6", key="q")
        confirm = buttons_of(json.loads(body))[CONFIRM]
        assert await ingress.balance(ANN) == 494
        await ingress.click(CONFIRM, confirm, key="yes")
        await ingress.fake.until(lambda: any(t.startswith("Queued: your images") for t in ingress.fake.replies("yes")))
        await ingress.fake.until(lambda: len(ingress.fake.uploads) == 3, timeout=15)
        assert len(ingress.fake.uploads[2].files) == 6
        await ingress.fake.until(lambda: len(other.worker.outcomes) == 3)
        assert await ingress.balance(ANN) == 434
    finally:
        await other.close()


async def test_ingress_marks_a_private_workspaces_job_and_the_worker_posts_it_by_dm(ingress: SlackHarness) -> None:
    ingress.fake.user("U0BOSS001", admin=True)
    await ingress.command("/settings", "visibility private", user="U0BOSS001", key="s")
    await ingress.fake.until(lambda: ingress.fake.replies("s"))
    assert "visibility: private" in ingress.fake.replies("s")[0]
    _, body = await ingress.command("/imagine", "a secret garden --size 256x256", key="p")
    assert json.loads(body)["text"].startswith("Queued:")
    [gen] = await ingress.core.store.recent_generations(Identity("slack", TEAM_ID, ANN), 1)
    job = await ingress.core.store.job(gen.id)
    assert job is not None and job.state == "queued" and job.address["private"] is True

    other = await start_worker(ingress)  # delivers it as the workspace wants: to the asker's DM only
    try:
        await ingress.fake.until(lambda: ingress.fake.uploads)
        await ingress.fake.until(lambda: other.worker.outcomes)
    finally:
        await other.close()
    assert [u.channel_id for u in ingress.fake.uploads] == ["D0ANN0001"]
    assert all(m["channel"] == "D0ANN0001" for m in ingress.fake.messages)

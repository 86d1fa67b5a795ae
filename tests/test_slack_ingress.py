"""IMAGEBOT_ROLE=ingress on Slack: commands and buttons are acked and queued, never run in the taking
process; a worker built on another core on the same SQLite file (another "process") runs and delivers
them through the Slack courier. Also: ``/slack/events`` on the process's shared HTTP server."""

from __future__ import annotations

import asyncio
import json
import sqlite3
from collections.abc import AsyncIterator
from contextlib import closing
from pathlib import Path

import aiohttp
import pytest

from bot.slack_app import run_slack
from bot.slack_app.blocks import IMAGINE_THIS, REROLL
from bot.slack_app.courier import SlackCourier
from bot.web import WebServer
from tests.fakes.slack_api import FakeSlack, command_payload, form_body, signed_headers
from tests.fakes.slack_harness import SECRET, SlackHarness, make_core, slack_config
from tests.worker_process import OtherProcess

ANN = "U0ANN0001"
BOB = "U0BOB0001"


async def start_worker(slack: SlackHarness) -> OtherProcess:
    config = slack_config(Path(slack.config.database).parent, slack.fake, IMAGEBOT_ROLE="worker",
                          SLACK_SIGNING_SECRET="")
    core = make_core(config, None)
    await core.start()
    courier = SlackCourier.from_config(config)
    return OtherProcess.start(core, courier)


@pytest.fixture
async def slack(tmp_path: Path) -> AsyncIterator[SlackHarness]:
    harness = await SlackHarness.start(tmp_path, IMAGEBOT_ROLE="ingress")
    yield harness
    await harness.close()


def ledger_sum(database: str, user: str) -> tuple[int, int]:
    """(the account's balance, the sum of its ledger rows): equal when nothing was charged twice."""
    with closing(sqlite3.connect(database)) as conn:
        balance = conn.execute("SELECT balance FROM accounts WHERE user_id = ?", (user,)).fetchone()[0]
        rows = conn.execute("SELECT COALESCE(SUM(delta), 0) FROM ledger WHERE user_id = ?", (user,)).fetchone()[0]
    return int(balance), int(rows)


async def test_an_imagine_is_queued_by_ingress_and_delivered_by_another_process(slack: SlackHarness) -> None:
    status, body = await slack.command("/imagine", "a red fox --size 256x256 --count 2", key="k1")
    assert status == 200
    ack = json.loads(body)
    # Reserved and queued before the ack, which says so itself.
    assert ack["response_type"] == "ephemeral" and ack["text"].startswith("Queued: 2 images of “a red fox”")
    assert "ahead" not in ack["text"]
    await slack.idle()
    await asyncio.sleep(0.2)
    assert slack.fake.responses.get("k1", []) == []
    assert slack.fake.uploads == []  # the ingress process runs nothing
    assert await slack.balance(ANN) == 44  # reserved at once

    other = await start_worker(slack)
    try:
        await slack.fake.until(lambda: slack.fake.messages)
        [upload] = slack.fake.uploads
        assert upload.channel_id == "C0GEN0001" and len(upload.files) == 2
        assert f"<@{ANN}>" in upload.initial_comment and "6 credits spent" in upload.initial_comment
        buttons = {e["action_id"]: e["value"] for e in slack.fake.messages[0]["blocks"][-1]["elements"]}
        await slack.fake.until(lambda: other.worker.outcomes)
        assert list(other.worker.outcomes.values()) == ["delivered"]

        # A button pressed on the worker's result is queued by ingress and delivered by the worker too.
        assert await slack.click(REROLL, buttons[REROLL], key="b1") == 200
        await slack.fake.until(lambda: len(slack.fake.uploads) == 2)
        assert any(text.startswith("Queued: a re-roll") for text in slack.fake.replies("b1"))
        await slack.fake.until(lambda: len(other.worker.outcomes) == 2)
    finally:
        await other.close()
    assert await slack.balance(ANN) == 38  # 6 credits each, charged once
    balance, rows = ledger_sum(slack.config.database, ANN)
    assert balance == rows == 38
    assert slack.db_counts()["generations"] == 2


async def test_an_enhance_is_queued_and_its_answer_arrives_privately_from_the_worker(slack: SlackHarness) -> None:
    status, body = await slack.command("/enhance", "a fox", key="e1")
    assert status == 200 and json.loads(body)["text"].startswith("Queued: enhancing your prompt")
    other = await start_worker(slack)
    try:
        await slack.fake.until(lambda: len(slack.fake.responses.get("e1", [])) == 1)
    finally:
        await other.close()
    answer = slack.fake.responses["e1"][0]
    assert answer["response_type"] == "ephemeral" and "a fox" in answer["text"]
    assert [e["action_id"] for e in answer["blocks"][-1]["elements"]] == [IMAGINE_THIS]
    assert list(other.worker.outcomes.values()) == ["delivered"]


async def test_the_queue_position_is_told_and_a_refusal_charges_nothing(slack: SlackHarness) -> None:
    await slack.command("/imagine", "one --size 256x256", key="a")
    _, second = await slack.command("/imagine", "two --size 256x256", key="b")
    assert "(1 job ahead of it)" in second
    before = slack.db_counts()
    # Refused as the in-process path refuses, in the ack: queued jobs count as running; a price over the balance.
    status, third = await slack.command("/imagine", "three --size 256x256", key="c")
    assert status == 200 and "2 jobs running" in third
    status, fourth = await slack.command("/imagine", "four --size 1024x1024 --count 10", user=BOB, key="d")
    assert status == 200 and "needs 100 credits and you have 50" in fourth
    await slack.idle()
    assert slack.db_counts()["reservations"] == before["reservations"]
    assert slack.db_counts()["generations"] == before["generations"]
    assert await slack.balance(ANN) == 44
    assert await slack.balance(BOB) == 50


# -- the process's one HTTP server -----------------------------------------------------------------

async def test_slack_events_are_served_on_the_shared_http_server(tmp_path: Path) -> None:
    fake = await FakeSlack().start()
    config = slack_config(tmp_path, fake)
    core = make_core(config, None)
    await core.start()
    web = WebServer("127.0.0.1", 0)
    task = asyncio.create_task(run_slack(core, config, web=web))
    port = await web.start()
    try:
        async with aiohttp.ClientSession() as session:
            body = form_body(command_payload(fake, "/imagine", "a red fox --size 256x256", key="w"))
            url = f"http://127.0.0.1:{port}/slack/events"
            async with session.post(url, data=body.encode(), headers=signed_headers(SECRET, body)) as resp:
                assert resp.status == 200
                assert "Generating 1 image" in json.loads(await resp.text())["text"]
            async with session.post(url, data=body.encode(),
                                    headers={"Content-Type": "application/x-www-form-urlencoded"}) as resp:
                assert resp.status == 401
            async with session.get(f"http://127.0.0.1:{port}/healthz") as resp:
                assert await resp.text() == "ok"
        await fake.until(lambda: fake.messages)
        assert len(fake.uploads) == 1
    finally:
        task.cancel()
        await asyncio.gather(task, return_exceptions=True)
        await web.stop()
        await core.close()
        await fake.close()

"""Slack's /describe <https URL> end to end, as a Slack user tries it: a real ``python -m bot run`` process
in Slack HTTP mode (the real slack-bolt app, a real SQLite file, the offline describer), signed requests,
the loopback Slack fake, and a loopback https server holding the image.

The https server's certificate is self-signed, made for this test; the bot process trusts it because
``SSL_CERT_FILE`` names it in that process's environment, as an operator would add a private CA. Nothing in
the bot is configured or patched for the test."""

from __future__ import annotations

import io
import json
import os
import re
import sqlite3
from collections.abc import AsyncIterator
from contextlib import closing
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import aiohttp
import pytest
from PIL import Image

from bot.slack_app.blocks import DESCRIBE_IMAGINE
from tests.fakes.scale_harness import ROOT, Bot, free_port
from tests.fakes.slack_api import (
    TEAM_ID,
    FakeSlack,
    action_body,
    action_payload,
    command_payload,
    form_body,
    signed_headers,
)
from tests.fakes.tls import HttpsFiles, self_signed

SECRET = "describe-https-signing-secret-0123"
TOKEN = "xoxb-describe-https-token"
ANN = "U0ANN0001"
CHANNEL = "C0GEN0001"
STARTING = 50
#: What /describe costs here: not the default (1), so the charge is this price and nothing else.
DESCRIBE_PRICE = 4
#: The served image: a solid colour, wider than tall, so the offline describer's words name it.
COLOUR = (200, 80, 30)
DESCRIPTION = f"a wide picture with a dominant colour of rgb{COLOUR}"
WAIT = 15.0


def solid_png(size: tuple[int, int] = (96, 64), colour: tuple[int, int, int] = COLOUR) -> bytes:
    out = io.BytesIO()
    Image.new("RGB", size, colour).save(out, format="PNG")
    return out.getvalue()


@dataclass
class Setup:
    slack: FakeSlack
    images: HttpsFiles
    bot: Bot
    database: Path
    http: aiohttp.ClientSession

    async def command(self, command: str, text: str, key: str) -> tuple[int, str]:
        body = form_body(command_payload(self.slack, command, text, key=key, user=ANN, channel=CHANNEL))
        return await self._post(body)

    async def click(self, action_id: str, value: str, key: str) -> tuple[int, str]:
        return await self._post(action_body(action_payload(self.slack, action_id, value, key=key, user=ANN)))

    async def _post(self, body: str) -> tuple[int, str]:
        async with self.http.post(f"{self.bot.url}/slack/events", data=body.encode(),
                                  headers=signed_headers(SECRET, body)) as resp:
            return resp.status, await resp.text()

    async def reply(self, key: str, count: int = 1) -> dict[str, Any]:
        """The ``count``-th message posted to the command's response_url (the log on a timeout)."""
        try:
            await self.slack.until(lambda: len(self.slack.responses.get(key, [])) >= count, timeout=WAIT)
        except AssertionError as exc:
            raise AssertionError(f"no reply {count} on {key!r}; bot log:\n{self.bot.logs()}") from exc
        return self.slack.responses[key][count - 1]

    async def balance_told(self, key: str) -> str:
        """What /credits tells the user."""
        status, _ = await self.command("/credits", "", key)
        assert status == 200
        return str((await self.reply(key))["text"])

    def rows(self, sql: str, params: tuple[Any, ...] = ()) -> list[tuple[Any, ...]]:
        with closing(sqlite3.connect(self.database)) as conn:
            return list(conn.execute(sql, params).fetchall())

    def ledger_consistent(self) -> int:
        """The user's balance, checked to equal the sum of their ledger rows, with no credits left held."""
        [(balance,)] = self.rows("SELECT balance FROM accounts WHERE server_id = ? AND user_id = ?", (TEAM_ID, ANN))
        [(total,)] = self.rows("SELECT COALESCE(SUM(delta), 0) FROM ledger WHERE server_id = ? AND user_id = ?",
                               (TEAM_ID, ANN))
        assert balance == total
        assert self.rows("SELECT id FROM reservations WHERE status = 'held'") == []
        return int(balance)


def bot_env(database: Path, data_dir: Path, slack: FakeSlack, port: int, trust: Path) -> dict[str, str]:
    """A bot in Slack HTTP mode with no image service configured (the offline sketch and describer), which
    trusts the certificate ``trust`` and nothing else."""
    env = {k: v for k, v in os.environ.items()
           if not k.startswith(("IMAGEBOT_", "SLACK_", "DISCORD_", "OPENAI_", "GOOGLE_", "GEMINI_", "XAI_", "SSL_"))}
    env.update({
        "PYTHONPATH": str(ROOT), "PYTHONUNBUFFERED": "1",
        "IMAGEBOT_DATABASE": str(database), "IMAGEBOT_DATA_DIR": str(data_dir),
        "IMAGEBOT_STARTING_CREDITS": str(STARTING), "IMAGEBOT_ENHANCER": "local",
        "IMAGEBOT_USER_RATE": "1000/minute", "IMAGEBOT_SERVER_RATE": "100000/hour",
        "IMAGEBOT_HTTP_HOST": "127.0.0.1", "IMAGEBOT_HTTP_PORT": str(port),
        "SLACK_BOT_TOKEN": TOKEN, "SLACK_SIGNING_SECRET": SECRET, "SLACK_API_URL": slack.api_url,
        "SSL_CERT_FILE": str(trust),
    })
    return env


@pytest.fixture
async def setup(tmp_path: Path) -> AsyncIterator[Setup]:
    certificate = self_signed(tmp_path / "tls")
    slack = await FakeSlack().start()
    images = await HttpsFiles(certificate).start()
    workdir = tmp_path / "bot"
    workdir.mkdir()
    (workdir / "imagebot.toml").write_text(f"[pricing]\nenhance = {DESCRIBE_PRICE}\n")
    database = tmp_path / "imagebot.sqlite3"
    port = free_port()
    bot = Bot("bot", "all", bot_env(database, tmp_path / "data", slack, port, certificate.cert), workdir,
              workdir / "bot", port)
    http = aiohttp.ClientSession()
    try:
        await bot.start(timeout=WAIT)
        yield Setup(slack, images, bot, database, http)
    finally:
        code = await bot.stop(grace=10)
        await http.close()
        await images.close()
        await slack.close()
    assert code == 0, bot.logs()


def prompt_sections(message: dict[str, Any]) -> list[dict[str, Any]]:
    return [b for b in message.get("blocks") or [] if b.get("type") == "section" and "accessory" in b]


async def test_describe_an_https_image_suggests_prompts_with_imagine_buttons_and_charges_its_price(
        setup: Setup) -> None:
    url = setup.images.serve("/fox.png", solid_png())
    assert await setup.balance_told("before") == f"Balance: {STARTING} credits\nSpent so far: 0 credits on 0 images"

    status, body = await setup.command("/describe", f"<{url}>", "d")  # Slack wraps links as <url>
    assert status == 200
    ack = json.loads(body)
    assert ack["response_type"] == "ephemeral" and ack["text"].startswith("Describing the image")

    answer = await setup.reply("d")
    assert answer["response_type"] == "ephemeral", answer
    assert setup.images.gets("/fox.png") == 1 and len(setup.images.requests) == 1  # fetched once, over https
    sections = prompt_sections(answer)
    prompts = [s["text"]["text"].split(". ", 1)[1] for s in sections]
    assert len(prompts) == 4 and prompts[0] == DESCRIPTION, answer  # the served picture, described
    assert all(p.startswith(DESCRIPTION) for p in prompts) and len(set(prompts)) == 4
    assert f"1. {DESCRIPTION}" in answer["text"]
    [(gen_id, command, state, reserved, consumed)] = setup.rows(
        "SELECT id, command, status, credits_reserved, credits_consumed FROM generations")
    assert (command, state, reserved, consumed) == ("describe", "COMPLETED", DESCRIBE_PRICE, DESCRIBE_PRICE)
    for i, section in enumerate(sections):
        button = section["accessory"]
        assert (button["type"], button["text"]["text"]) == ("button", "Imagine")
        assert (button["action_id"], button["value"]) == (f"{DESCRIBE_IMAGINE}_{i}", f"{gen_id}:{i}")
    left = STARTING - DESCRIBE_PRICE
    context = [b for b in answer["blocks"] if b["type"] == "context"]
    assert f"{DESCRIBE_PRICE} credits spent · {left} left" in context[-1]["elements"][0]["text"]

    # Charged the describe price, once, and the ledger says the same.
    told = await setup.balance_told("after")
    assert told.startswith(f"Balance: {left} credits\nSpent so far: {DESCRIBE_PRICE} credits"), told
    assert setup.ledger_consistent() == left
    assert setup.rows("SELECT kind, delta, amount FROM ledger WHERE request_id = ? ORDER BY id", (gen_id,)) == [
        ("reserve", -DESCRIBE_PRICE, DESCRIBE_PRICE), ("consume", 0, DESCRIBE_PRICE)]

    # A suggestion's Imagine button makes that image in the channel.
    status, _ = await setup.click(f"{DESCRIBE_IMAGINE}_1", f"{gen_id}:1", "di")
    assert status == 200
    await setup.slack.until(lambda: setup.slack.uploads, timeout=WAIT)
    [upload] = setup.slack.uploads
    assert upload.channel_id == CHANNEL and len(upload.files) == 1
    assert prompts[1] in upload.initial_comment
    assert setup.images.gets("/fox.png") == 1  # the button reads the prompt back, not the image
    await setup.slack.until(lambda: setup.slack.messages, timeout=WAIT)  # the result's buttons: delivered
    spent = re.search(r"(\d+) credits? spent", upload.initial_comment)
    assert spent is not None, upload.initial_comment
    assert setup.ledger_consistent() == left - int(spent[1])


async def test_describe_an_https_url_that_is_missing_or_untrusted_is_said_and_charges_nothing(
        setup: Setup, tmp_path: Path) -> None:
    gone = setup.images.serve("/gone.png", b"no such image", status=404, content_type="text/plain")
    status, body = await setup.command("/describe", f"<{gone}>", "gone")
    assert status == 200 and json.loads(body)["text"].startswith("Describing the image")
    reply = await setup.reply("gone")
    assert "could not be downloaded" in reply["text"] and "Nothing was charged" in reply["text"], reply
    assert setup.images.gets("/gone.png") == 1  # the TLS handshake succeeded: the server answered 404

    # A server whose certificate the bot does not trust is never asked for the image.
    stranger = await HttpsFiles(self_signed(tmp_path / "untrusted", "stranger")).start()
    try:
        url = stranger.serve("/fox.png", solid_png())
        status, _ = await setup.command("/describe", f"<{url}>", "stranger")
        assert status == 200
        reply = await setup.reply("stranger")
        assert "could not be downloaded" in reply["text"] and "Nothing was charged" in reply["text"], reply
        assert stranger.requests == []
    finally:
        await stranger.close()

    assert setup.slack.uploads == []
    assert setup.rows("SELECT status, credits_consumed FROM generations") == [("FAILED", 0), ("FAILED", 0)]
    assert setup.ledger_consistent() == STARTING
    assert f"Balance: {STARTING} credits" in await setup.balance_told("credits")

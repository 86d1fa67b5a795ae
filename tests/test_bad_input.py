"""Bad input that used to run (the black-box campaign of the "prove it holds" issue), tried as a user or
a sender would: each is answered clearly and changes no credit.

- a signed Slack command or button without the asker's user or workspace id;
- admin amounts such as ``1,5`` (once granted 15) and ``2,50`` (250);
- a non-numeric ``X-Slack-Request-Timestamp`` or a JSON content type on ``/slack/events`` (once a 500
  with a logged traceback, before any signature check);
- prompts of only zero-width, NUL, control or bidi characters (once accepted and charged);
- Slack Socket Mode without a network (once a 70-line traceback every 11 s).
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import time
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest

from bot.app import build_core
from bot.console import handle_line
from bot.errors import ValidationError
from bot.models import ImagineOptions
from bot.slack_app.blocks import REROLL
from bot.slack_app.socket_mode import SOCKET_LOGGER, socket_handler
from bot.textcommands import parse_imagine
from bot.validation import clean_prompt, parse_amount
from tests.doubles import ctx_for, make_config
from tests.fakes.slack_api import action_body, action_payload, command_payload, form_body, signed_headers
from tests.fakes.slack_harness import SECRET, SlackHarness

ANN = "U0ANN0001"
BOB = "U0BOB0001"
ADA = "U0ADA0001"  # a workspace admin
EMPTY = {"accounts": 0, "ledger": 0, "generations": 0, "reservations": 0}


@pytest.fixture
async def slack(tmp_path: Path) -> AsyncIterator[SlackHarness]:
    harness = await SlackHarness.start(tmp_path)
    harness.fake.user(ADA, admin=True)
    yield harness
    await harness.close()


def no_tracebacks(caplog: pytest.LogCaptureFixture) -> None:
    assert [r for r in caplog.records if r.exc_info or r.levelno >= logging.ERROR] == []
    assert "Traceback" not in caplog.text


# -- a signed Slack payload without the asker's ids ------------------------------------------------------

MISSING = {
    "no user_id": lambda p: p.pop("user_id"),
    "empty user_id": lambda p: p.update(user_id=""),
    "no team_id": lambda p: p.pop("team_id"),
    "empty team_id": lambda p: p.update(team_id=""),
    "neither": lambda p: (p.pop("user_id"), p.pop("team_id")),
    "not an id": lambda p: p.update(user_id="../../etc"),
}


@pytest.mark.parametrize("command", ["/imagine a red fox --size 256x256", "/enhance a fox", "/credits",
                                     f"/credits grant <@{BOB}|bob> 5"])
@pytest.mark.parametrize("change", list(MISSING))
async def test_a_command_without_user_or_team_runs_nothing(slack: SlackHarness, command: str, change: str,
                                                           caplog: pytest.LogCaptureFixture) -> None:
    name, _, text = command.partition(" ")
    payload = command_payload(slack.fake, name, text, user=ADA, key="id")
    MISSING[change](payload)
    body = form_body(payload)
    status, reply, _ = await slack.post(body, signed_headers(SECRET, body))
    assert status == 200
    ack = json.loads(reply)
    assert ack["response_type"] == "ephemeral" and "IMG-SLACK-IDENTITY" in ack["text"]
    assert "nothing was charged" in ack["text"]
    await asyncio.sleep(0.05)
    assert slack.bot.busy == 0 and slack.db_counts() == EMPTY
    assert slack.fake.uploads == [] and slack.fake.called("users.info") == []
    no_tracebacks(caplog)


def _no_team(p: dict[str, Any]) -> None:
    p.pop("team")
    p["user"].pop("team_id")


BUTTON_MISSING = {
    "no user": lambda p: p.pop("user"),
    "user without id": lambda p: p["user"].pop("id"),
    "empty user id": lambda p: p["user"].update(id=""),
    "user is a string": lambda p: p.update(user=ANN),
    "no team": _no_team,
    "team id is a number": lambda p: (p["team"].update(id=12), p["user"].pop("team_id")),
}


@pytest.mark.parametrize("change", list(BUTTON_MISSING))
async def test_a_button_without_user_or_team_runs_nothing(slack: SlackHarness, change: str,
                                                          caplog: pytest.LogCaptureFixture) -> None:
    # A real generation to re-roll, so only the missing ids can stop it.
    await slack.command("/imagine", "a red fox --size 256x256", key="first")
    await slack.fake.until(lambda: slack.fake.messages)
    await slack.idle()
    gen_id = slack.fake.messages[0]["blocks"][-1]["elements"][0]["value"]
    before, balance = slack.db_counts(), await slack.balance(ANN)

    payload = action_payload(slack.fake, REROLL, gen_id, key="press")
    BUTTON_MISSING[change](payload)
    body = action_body(payload)
    status, _, _ = await slack.post(body, signed_headers(SECRET, body))
    assert status == 200
    await slack.fake.until(lambda: slack.fake.replies("press"))
    assert "IMG-SLACK-IDENTITY" in slack.fake.replies("press")[0]
    await slack.idle()
    assert slack.db_counts() == before and await slack.balance(ANN) == balance
    assert len(slack.fake.uploads) == 1
    no_tracebacks(caplog)


# -- admin amounts -----------------------------------------------------------------------------------------

@pytest.mark.parametrize(("text", "amount"), [
    ("15", 15), ("+15", 15), (" 7 ", 7), ("007", 7), ("1,000", 1000), ("1,000,000", 1_000_000),
    ("1_000", 1000), ("１５", 15), ("１，０００", 1000), (25, 25),
])
def test_unambiguous_amounts_are_read(text: object, amount: int) -> None:
    assert parse_amount(text) == amount


@pytest.mark.parametrize("text", [
    "1,5", "2,50", "1,0000", "01,000", "1,00,000", ",100", "100,", "1.5", "1.000", "2.50", "1 000", "1'000",
    "-3", "−3", "1e3", "0x10", "5²", "٣", "½", "", "   ", "ten", "1,000,001", "9" * 5000, True, 2.0, None, [5],
])
def test_ambiguous_or_bad_amounts_are_refused(text: object) -> None:
    with pytest.raises(ValidationError) as err:
        parse_amount(text)
    assert err.value.code == "IMG-VALID-AMOUNT" and "whole number" in err.value.message
    assert len(err.value.message) < 300  # a pasted essay is not echoed back


async def test_slack_grant_of_1_comma_5_is_refused_and_1_comma_000_grants_a_thousand(slack: SlackHarness) -> None:
    for text, key in ((f"grant <@{BOB}|bob> 1,5", "a"), (f"grant <@{BOB}|bob> 2,50", "b")):
        await slack.command("/credits", text, user=ADA, key=key)
        await slack.fake.until(lambda k=key: slack.fake.replies(k))  # type: ignore[misc]
        await slack.idle()
        assert "IMG-VALID-AMOUNT" in slack.fake.replies(key)[0] and "thousands" in slack.fake.replies(key)[0]
    assert await slack.balance(BOB) == 50
    assert slack.db_counts()["ledger"] == 0

    await slack.command("/credits", f"grant <@{BOB}|bob> 1,000", user=ADA, key="c")
    await slack.fake.until(lambda: slack.fake.replies("c"))
    await slack.idle()
    assert "balance 50 -> 1050" in slack.fake.replies("c")[0]
    assert await slack.balance(BOB) == 1050


async def test_console_grant_of_2_comma_50_is_refused(tmp_path: Path) -> None:
    admin = ctx_for("root", "local", "console", admin=True)
    async with build_core(make_config(tmp_path)) as core:
        reply = await handle_line(core, admin, "/credits grant bob 2,50")
        assert "IMG-VALID-AMOUNT" in reply
        summary = await core.credits(ctx_for("bob", "local", "console").identity)
        assert summary.balance == 50


# -- the HTTP edge ----------------------------------------------------------------------------------------

async def test_malformed_timestamps_and_content_types_get_4xx_not_500(slack: SlackHarness,
                                                                     caplog: pytest.LogCaptureFixture) -> None:
    body = form_body(command_payload(slack.fake, "/imagine", "a red fox --size 256x256"))
    cases: list[tuple[dict[str, str], str, int]] = []
    for stamp in ("abc", "", "1e9", "-5", " ", "١٧٠٠٠٠٠٠٠٠", "9" * 40, "12.5"):
        headers = signed_headers(SECRET, body)
        headers["X-Slack-Request-Timestamp"] = stamp
        cases.append((headers, body, 401))
    headers = signed_headers(SECRET, body)
    headers["Content-Type"] = "application/json"  # a form body, signed, said to be JSON
    cases.append((headers, body, 400))
    unsigned_json = {"Content-Type": "application/json", "X-Slack-Request-Timestamp": "soon"}
    cases.append((unsigned_json, '{"type": "url_verification"', 401))
    for broken in ("{not json", "[1, 2]", '"a string"', "payload=%7Bnot+json"):
        cases.append((signed_headers(SECRET, broken) | {"Content-Type": "application/json"}, broken, 400))
    for headers, sent, expected in cases:
        status, _, _ = await slack.post(sent, headers)
        assert status == expected, (headers, sent)
    await asyncio.sleep(0.05)
    assert slack.db_counts() == EMPTY and slack.fake.calls == []
    no_tracebacks(caplog)


async def test_a_replayed_signed_command_is_refused(slack: SlackHarness) -> None:
    body = form_body(command_payload(slack.fake, "/imagine", "a red fox --size 256x256", key="r"))
    headers = signed_headers(SECRET, body)
    assert (await slack.post(body, headers))[0] == 200
    await slack.fake.until(lambda: slack.fake.uploads)
    await slack.idle()
    balance = await slack.balance(ANN)
    assert (await slack.post(body, headers))[0] == 401
    await asyncio.sleep(0.05)
    await slack.idle()
    assert await slack.balance(ANN) == balance and len(slack.fake.uploads) == 1


# -- prompts with nothing visible -------------------------------------------------------------------------

INVISIBLE = ["\u200b\u200b\u200b", "\x00", "\x00\x01\x02\x7f", "\u202e\u202d\u2066", "\ufeff", "\u2060\u200e",
             "\x1b\x07 \t\n", "\U000e0041\U000e0042", "\u3164", "\u0301\u0301", "\ud800"]


@pytest.mark.parametrize("prompt", INVISIBLE)
async def test_a_prompt_of_invisible_characters_is_refused_and_charges_nothing(tmp_path: Path, prompt: str) -> None:
    ctx = ctx_for()
    async with build_core(make_config(tmp_path)) as core:
        for run in (lambda: core.imagine(ctx, ImagineOptions(prompt=prompt, size="256x256")),
                    lambda: core.enhance(ctx, prompt)):
            with pytest.raises(ValidationError) as err:
                await run()
            assert err.value.code == "IMG-VALID-PROMPT"
            assert "visible" in err.value.message or "empty" in err.value.message
        summary = await core.credits(ctx.identity)
        assert summary.balance == 50 and summary.recent == []


async def test_slack_imagine_of_zero_width_spaces_is_refused_in_the_ack(slack: SlackHarness) -> None:
    for key, text in (("zw", "\u200b\u200b --size 256x256"), ("nul", "\x00\x00"), ("en", "\u202e")):
        command = "/enhance" if key == "en" else "/imagine"
        status, reply = await slack.command(command, text, key=key)
        assert status == 200 and "IMG-VALID-PROMPT" in json.loads(reply)["text"]
    await asyncio.sleep(0.05)
    assert slack.bot.busy == 0 and slack.db_counts()["ledger"] == 0 and slack.db_counts()["generations"] == 0


@pytest.mark.parametrize(("prompt", "kept"), [
    ("a fox\u200b in the snow", "a fox in the snow"),
    ("a\x00fox", "a fox"),
    ("\u202ea fox\u202c", "a fox"),
    ("👨\u200d👩\u200d👧 a family of foxes", "👨\u200d👩\u200d👧 a family of foxes"),
    ("雪の中の狐", "雪の中の狐"),
    ("un renard à la crème brûlée", "un renard à la crème brûlée"),
    ("روباه در برف می\u200cدود", "روباه در برف می\u200cدود"),
    ("🏴\U000e0067\U000e0062\U000e0073\U000e0063\U000e0074\U000e007f a Scottish fox",
     "🏴\U000e0067\U000e0062\U000e0073\U000e0063\U000e0074\U000e007f a Scottish fox"),
])
async def test_visible_text_is_kept_and_invisible_parts_are_dropped(tmp_path: Path, prompt: str, kept: str) -> None:
    assert clean_prompt(prompt) == kept
    async with build_core(make_config(tmp_path)) as core:
        result = await core.imagine(ctx_for(), ImagineOptions(prompt=prompt, size="256x256"))
        assert result.prompt == kept


# -- flags --------------------------------------------------------------------------------------------------

def test_a_flag_with_an_empty_value_is_refused() -> None:
    with pytest.raises(ValidationError, match="--size needs a value"):
        parse_imagine("a fox --size=")
    with pytest.raises(ValidationError, match="Unknown option --sise"):
        parse_imagine("a fox --sise=")


def test_a_dash_a_phone_typed_for_two_hyphens_is_still_a_flag() -> None:
    options = parse_imagine("a fox \u2014size 16:9 \u2013count 2 in a \u2014 storm")
    assert (options.size, options.count, options.prompt) == ("16:9", "2", "a fox in a \u2014 storm")


# -- Socket Mode without a network --------------------------------------------------------------------------

class Link:
    """A TCP hop in front of the fake Slack that can be cut: while down, open connections are dropped and
    new ones are closed at once (as a dead network looks to the client, minus the wait)."""

    def __init__(self, target: int) -> None:
        self.target = target
        self.up = False
        self.refused = 0
        self._open: set[asyncio.StreamWriter] = set()
        self._server: asyncio.Server | None = None
        self.port = 0

    async def start(self) -> Link:
        self._server = await asyncio.start_server(self._accept, "127.0.0.1", 0)
        self.port = self._server.sockets[0].getsockname()[1]
        return self

    def cut(self) -> None:
        self.up = False
        for writer in list(self._open):
            writer.transport.abort()

    async def close(self) -> None:
        self.cut()
        if self._server is not None:
            self._server.close()
            await self._server.wait_closed()

    async def _accept(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        if not self.up:
            self.refused += 1
            writer.transport.abort()
            return
        up_reader, up_writer = await asyncio.open_connection("127.0.0.1", self.target)
        self._open.update((writer, up_writer))

        async def pipe(src: asyncio.StreamReader, dst: asyncio.StreamWriter) -> None:
            with contextlib.suppress(OSError, asyncio.CancelledError):
                while data := await src.read(65536):
                    dst.write(data)
                    await dst.drain()
            dst.transport.abort()

        try:
            await asyncio.gather(pipe(reader, up_writer), pipe(up_reader, writer))
        finally:
            self._open.difference_update((writer, up_writer))


async def until(check: Any, timeout: float = 20.0) -> None:
    deadline = time.monotonic() + timeout
    while not check():
        if time.monotonic() > deadline:
            raise AssertionError("condition not reached")
        await asyncio.sleep(0.02)


async def test_socket_mode_without_network_logs_one_line_per_outage(tmp_path: Path,
                                                                    caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.INFO)
    slack = await SlackHarness.start(tmp_path, http=False, SLACK_APP_TOKEN="xapp-1-A0APP0001-test",
                                     SLACK_SIGNING_SECRET="")
    port = int(slack.fake.url.rsplit(":", 1)[1])
    link = await Link(port).start()
    slack.fake.url = f"http://127.0.0.1:{link.port}"  # every call and the websocket go through the link
    handler = socket_handler(slack.bot.app, "xapp-1-A0APP0001-test", ping_interval=0.1)
    handler.client.web_client.base_url = slack.fake.api_url
    connecting = asyncio.create_task(handler.connect_async())
    try:
        await until(lambda: link.refused >= 8)  # several rounds of retries while Slack cannot be reached
        link.up = True
        await connecting
        await until(lambda: "connected after" in caplog.text)

        link.cut()  # the network goes away under an established session
        refused = link.refused
        await until(lambda: link.refused >= refused + 8)
        link.up = True
        await until(lambda: "connected again" in caplog.text)

        envelope = await slack.fake.send_envelope("slash_commands",
                                                  command_payload(slack.fake, "/credits", "", key="after"))
        await slack.fake.until(lambda: envelope in slack.fake.acks)
    finally:
        connecting.cancel()
        await handler.close_async()  # type: ignore[no-untyped-call]
        await link.close()
        await slack.close()

    socket = [r for r in caplog.records if r.name.startswith(SOCKET_LOGGER) and r.levelno >= logging.WARNING]
    said = [r.getMessage() for r in socket]
    starts = ("Slack Socket Mode: cannot connect (", "Slack Socket Mode: connected after",
              "Slack Socket Mode: lost the connection (", "Slack Socket Mode: connected again after")
    assert len(said) == 4 and all(line.startswith(start) for line, start in zip(said, starts, strict=True)), said
    assert all(len(line) < 250 and "\n" not in line for line in said)
    no_tracebacks(caplog)

"""Slack's text formats: what a person typed goes to the provider; what is posted back pings nobody."""

from __future__ import annotations

import asyncio
import time

import pytest

from bot.jobs import AckGate
from bot.slack_app.blocks import parse_value
from bot.slack_app.text import escape, to_plain


@pytest.mark.parametrize(("slack", "plain"), [
    ("a red fox", "a red fox"),
    ("<@U123ABC|ann> in <#C123|general>", "@ann in #general"),
    ("<@U123ABC> waves", "@U123ABC waves"),
    ("hello <!channel> and <!subteam^S123|@team>", "hello @channel and @team"),
    ("see <https://example.com|the site> or <https://x.test>", "see the site or https://x.test"),
    ("fish &amp; chips &lt;3 &gt;", "fish & chips <3 >"),
])
def test_slack_text_becomes_what_was_typed(slack: str, plain: str) -> None:
    assert to_plain(slack) == plain


def test_escaped_text_has_no_markup_left() -> None:
    assert escape("<!channel> & <@U1>") == "&lt;!channel&gt; &amp; &lt;@U1&gt;"
    assert to_plain(escape("a <b> & c")) == "a <b> & c"


@pytest.mark.parametrize("value", ["", "abc", "0" * 31, "G" * 32, "0" * 32 + ":x", "0" * 32 + ":123", None])
def test_button_values_other_than_ours_are_refused(value: str | None) -> None:
    with pytest.raises(ValueError):
        parse_value(value)


def test_button_values_carry_the_generation_and_image() -> None:
    assert parse_value("a" * 32) == ("a" * 32, 0)
    assert parse_value("a" * 32 + ":3") == ("a" * 32, 3)


async def test_jobs_let_pending_acks_go_first_but_are_never_starved() -> None:
    pacing = AckGate(max_wait=0.2)
    order: list[str] = []

    async def job() -> None:
        await pacing.wait()
        order.append("job")

    with pacing:  # a request being answered
        task = asyncio.create_task(job())
        await asyncio.sleep(0.05)
        order.append("ack")
    await task
    assert order == ["ack", "job"]

    with pacing:  # a request that never finishes cannot hold jobs back for more than max_wait
        started = time.monotonic()
        await pacing.wait()
        assert 0.15 <= time.monotonic() - started < 1.0
    started = time.monotonic()
    await pacing.wait()  # nothing in flight: no wait at all
    assert time.monotonic() - started < 0.05

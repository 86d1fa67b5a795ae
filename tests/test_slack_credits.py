"""/credits over Slack: balances for everyone; grant, revoke, set and usage only for workspace admins and
owners (asked of users.info) or ids in IMAGEBOT_SLACK_ADMINS."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from bot.models import Identity
from tests.fakes.slack_api import TEAM_ID
from tests.fakes.slack_harness import SlackHarness

ANN = "U0ANN0001"  # a member
BOB = "U0BOB0001"  # the target
ADA = "U0ADA0001"  # a workspace admin
OLI = "U0OLI0001"  # configured in IMAGEBOT_SLACK_ADMINS


@pytest.fixture
async def slack(tmp_path: Path) -> AsyncIterator[SlackHarness]:
    harness = await SlackHarness.start(tmp_path, IMAGEBOT_SLACK_ADMINS=f"{OLI}, W0GRID001")
    harness.fake.user(ADA, admin=True)
    harness.fake.user(ANN)
    yield harness
    await harness.close()


async def _credits(slack: SlackHarness, text: str, user: str, key: str) -> str:
    before = len(slack.fake.replies(key))
    status, body = await slack.command("/credits", text, user=user, key=key)
    assert status == 200
    if body.startswith("{"):  # refused at the ack (bad syntax)
        return body
    await slack.fake.until(lambda: len(slack.fake.replies(key)) > before)
    await slack.idle()
    assert slack.fake.responses[key][-1]["response_type"] == "ephemeral"
    return slack.fake.replies(key)[-1]


async def test_credits_shows_balance_and_recent_usage(slack: SlackHarness) -> None:
    await slack.command("/imagine", "a red fox --size 256x256", user=ANN)
    await slack.fake.until(lambda: slack.fake.uploads)
    await slack.idle()
    reply = await _credits(slack, "", ANN, "c")
    assert "Balance: 47 credits" in reply and "/imagine completed" in reply and "a red fox" in reply


async def test_members_are_refused_and_nothing_changes(slack: SlackHarness) -> None:
    await slack.balance(BOB)
    before = slack.db_counts()
    for text in (f"grant <@{BOB}|bob> 100", f"set <@{BOB}|bob> 0", f"revoke <@{BOB}|bob> 20", "usage"):
        reply = await _credits(slack, text, ANN, "m")
        assert "Only workspace admins and owners" in reply and "Nothing was changed" in reply
    assert slack.db_counts() == before
    assert await slack.balance(BOB) == 50
    assert {c.args["user"] for c in slack.fake.called("users.info")} == {ANN}


async def test_workspace_admins_grant_revoke_set_and_see_usage(slack: SlackHarness) -> None:
    reply = await _credits(slack, f"grant <@{BOB}|bob> 100", ADA, "a")
    assert reply == f"Granted 100 credits to <@{BOB}>: balance 50 -> 150."
    reply = await _credits(slack, f"revoke <@{BOB}|bob> 20", ADA, "a")
    assert "balance 150 -> 130" in reply
    reply = await _credits(slack, f"set <@{BOB}|bob> 0", ADA, "a")
    assert reply == f"Set <@{BOB}>'s balance to 0 (was 130)."
    assert await slack.balance(BOB) == 0
    actors = {row["actor"] for row in await slack.core.store.ledger_rows(_id(BOB))}
    assert f"slack:{slack.fake.team_id}:{ADA}" in actors
    reply = await _credits(slack, "usage 30", ADA, "a")
    assert reply.startswith("Usage in the last 30 days:")
    assert await slack.core.store.audit() == []


async def test_configured_admin_ids_need_no_slack_admin_flag(slack: SlackHarness) -> None:
    reply = await _credits(slack, f"grant <@{BOB}|bob> 5", OLI, "o")
    assert "balance 50 -> 55" in reply
    assert slack.fake.called("users.info") == []


@pytest.mark.parametrize(("text", "says"), [
    (f"grant <@{BOB}|bob> -5", "whole number"),
    (f"grant <@{BOB}|bob> lots", "whole number"),
    (f"grant <@{BOB}|bob> 99999999", "1,000,000"),
    (f"revoke <@{BOB}|bob> 51", ""),
    ("grant bob 5", "Mention the user"),
    ("grant <@U0BOB0001|bob>", "Usage: /credits grant"),
    ("steal <@U0BOB0001|bob> 5", "Usage: /credits"),
])
async def test_bad_admin_input_changes_nothing(slack: SlackHarness, text: str, says: str) -> None:
    await slack.balance(BOB)
    before = slack.db_counts()
    reply = await _credits(slack, text, ADA, "bad")
    assert says in reply and "IMG-" in reply
    assert slack.db_counts() == before and await slack.balance(BOB) == 50


async def test_users_info_without_the_scope_is_reported_and_changes_nothing(slack: SlackHarness) -> None:
    slack.fake.fail("users.info", "missing_scope", needed="users:read")
    reply = await _credits(slack, f"grant <@{BOB}|bob> 100", ADA, "s")
    assert "missing a permission (users:read)" in reply
    await asyncio.sleep(0.05)
    assert await slack.balance(BOB) == 50


def _id(user: str) -> Identity:
    return Identity("slack", TEAM_ID, user)

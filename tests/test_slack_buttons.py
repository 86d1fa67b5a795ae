"""Block Kit buttons (Re-roll, Variations, Enhance, Imagine this): their state comes from the database, so
they keep working after the bot restarts."""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from bot.models import Identity
from bot.slack_app.blocks import ENHANCE, IMAGINE_THIS, REROLL, VARIATIONS
from storage.sqlite import GenerationRow
from tests.fakes.slack_harness import SlackHarness

ANN = "U0ANN0001"
BOB = "U0BOB0001"


@pytest.fixture
async def slack(tmp_path: Path) -> AsyncIterator[SlackHarness]:
    harness = await SlackHarness.start(tmp_path)
    yield harness
    await harness.close()


async def _imagine(slack: SlackHarness, text: str, **kw: str) -> dict[str, str]:
    """Run /imagine and return the buttons under the images: action_id -> value."""
    before = len(slack.fake.messages)
    await slack.command("/imagine", text, **kw)
    await slack.fake.until(lambda: len(slack.fake.messages) > before)
    await slack.idle()
    return {e["action_id"]: e["value"] for e in slack.fake.messages[-1]["blocks"][-1]["elements"]}


async def test_reroll_and_variations_work_after_a_restart(slack: SlackHarness) -> None:
    buttons = await _imagine(slack, "a red fox --size 256x256 --count 2 --style vivid")
    gen_id = buttons[REROLL]
    await slack.restart()

    assert await slack.click(REROLL, buttons[REROLL], user=BOB, key="reroll") == 200
    await slack.fake.until(lambda: len(slack.fake.uploads) == 2)
    await slack.idle()
    reroll = slack.fake.uploads[1]
    assert reroll.channel_id == "C0GEN0001" and len(reroll.files) == 2
    assert f"<@{BOB}>" in reroll.initial_comment and "a red fox" in reroll.initial_comment
    assert "· vivid ·" in reroll.initial_comment
    assert reroll.files[0][2] != slack.fake.uploads[0].files[0][2]  # a new seed, new pictures
    assert await slack.balance(BOB) == 44  # the presser pays, 2 x 3 credits

    await slack.click(f"{VARIATIONS}_1", buttons[f"{VARIATIONS}_1"], key="var")
    await slack.fake.until(lambda: len(slack.fake.uploads) == 3)
    await slack.idle()
    [_, reroll_gen, variation_gen] = await _all_generations(slack)
    assert reroll_gen.command == "reroll" and variation_gen.command == "variations"
    assert variation_gen.options.get("reference_sha256") == (await slack.core.generation(gen_id)).images[1].sha256


async def test_enhance_then_imagine_this_reads_the_text_from_the_database(slack: SlackHarness) -> None:
    buttons = await _imagine(slack, "a small cat --size 256x256")
    await slack.restart()
    await slack.click(ENHANCE, buttons[ENHANCE], key="enh")
    await slack.fake.until(lambda: slack.fake.replies("enh"))
    await slack.idle()
    [reply] = slack.fake.responses["enh"]
    assert reply["response_type"] == "ephemeral" and "Enhanced prompt:" in reply["text"]
    imagine_this = reply["blocks"][-1]["elements"][0]
    assert imagine_this["action_id"] == IMAGINE_THIS and imagine_this["text"]["text"] == "Imagine this"
    enhanced = (await slack.core.generation(imagine_this["value"])).result_text
    assert enhanced and enhanced.startswith("a small cat, ")

    await slack.restart()
    await slack.click(IMAGINE_THIS, imagine_this["value"], key="it", thread_ts="1700000000.000009")
    await slack.fake.until(lambda: len(slack.fake.uploads) == 2)
    await slack.idle()
    upload = slack.fake.uploads[1]
    assert enhanced in upload.initial_comment and upload.thread_ts == "1700000000.000009"


async def test_slash_enhance_is_ephemeral_with_an_imagine_this_button(slack: SlackHarness) -> None:
    status, body = await slack.command("/enhance", "a tiny robot", key="e")
    assert status == 200 and "Enhancing" in body
    await slack.fake.until(lambda: slack.fake.replies("e"))
    [reply] = slack.fake.responses["e"]
    assert reply["response_type"] == "ephemeral" and "a tiny robot" in reply["text"]
    assert reply["blocks"][-1]["elements"][0]["action_id"] == IMAGINE_THIS
    assert slack.fake.uploads == [] and await slack.balance(ANN) == 49

    status, body = await slack.command("/enhance", "   ")
    assert "Usage: /enhance" in body


async def test_buttons_from_another_workspace_or_forged_values_change_nothing(slack: SlackHarness) -> None:
    buttons = await _imagine(slack, "a red fox --size 256x256")
    before = slack.db_counts()
    await slack.click(REROLL, buttons[REROLL], team_id="T0OTHER01", key="other")
    await slack.click(IMAGINE_THIS, buttons[REROLL], key="notenh")  # an imagine id is not an enhance id
    await slack.click(REROLL, "../../etc/passwd", key="forged")
    await slack.fake.until(lambda: all(slack.fake.replies(k) for k in ("other", "notenh", "forged")))
    await slack.idle()
    assert "no longer known" in slack.fake.replies("other")[-1]
    assert "no longer known" in slack.fake.replies("notenh")[-1]
    assert "not one of mine" in slack.fake.replies("forged")[-1]
    assert len(slack.fake.uploads) == 1
    after = slack.db_counts()
    assert after["generations"] == before["generations"] and after["ledger"] == before["ledger"]


async def _all_generations(slack: SlackHarness) -> list[GenerationRow]:
    rows: list[GenerationRow] = []
    for user in (ANN, BOB):
        rows += await slack.core.store.recent_generations(Identity("slack", slack.fake.team_id, user), 10)
    return sorted(rows, key=lambda g: g.created_at)

"""Issue 13 on Slack, through the real Bolt app (HTTP mode, signed requests) and the real core on a SQLite file,
against the loopback Slack fake: Edit (a modal), More… (zoom out, pan, make square), Delete, /describe,
/history, /show, /help, /settings, the confirm step and private results. Every check is what a person would
notice: the images that arrive, the words they read, their balance."""

from __future__ import annotations

import io
import json
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest
from PIL import Image

from bot.models import Context, Identity
from bot.slack_app.blocks import (
    CANCEL,
    CONFIRM,
    DELETE,
    DESCRIBE_IMAGINE,
    EDIT,
    EDIT_BLOCK,
    EDIT_INPUT,
    EDIT_VIEW,
    HISTORY_PAGE,
    MORE,
    OUTPAINT,
    REROLL,
    SHOW,
)
from tests.fakes.slack_api import TEAM_ID, action_payload
from tests.fakes.slack_harness import SlackHarness

ANN = "U0ANN0001"
BOB = "U0BOB0001"
BOSS = "U0BOSS001"
CHANNEL = "C0GEN0001"


@pytest.fixture
async def slack(tmp_path: Path) -> AsyncIterator[SlackHarness]:
    harness = await SlackHarness.start(tmp_path)
    yield harness
    await harness.close()


@pytest.fixture
async def rich(tmp_path: Path) -> AsyncIterator[SlackHarness]:
    """Enough credits for costly commands."""
    harness = await SlackHarness.start(tmp_path, IMAGEBOT_STARTING_CREDITS="500")
    yield harness
    await harness.close()


def buttons_of(message: dict[str, Any]) -> dict[str, str]:
    """action_id -> value of every button under a result."""
    return {e["action_id"]: e["value"] for b in message.get("blocks", []) if b["type"] == "actions"
            for e in b["elements"]}


async def imagine(slack: SlackHarness, text: str, **kw: Any) -> dict[str, str]:
    """Run /imagine, wait for the result, return its buttons."""
    before = len(slack.fake.messages)
    status, _ = await slack.command("/imagine", text, **kw)
    assert status == 200
    await slack.fake.until(lambda: len(slack.fake.messages) > before)
    await slack.idle()
    return buttons_of(slack.fake.messages[-1])


def ack_text(body: str) -> str:
    return str(json.loads(body)["text"]) if body else ""


async def last_reply(slack: SlackHarness, key: str, count: int = 1) -> dict[str, Any]:
    await slack.fake.until(lambda: len(slack.fake.responses.get(key, [])) >= count)
    await slack.idle()
    return slack.fake.responses[key][-1]


def png_size(data: bytes) -> tuple[int, int]:
    with Image.open(io.BytesIO(data)) as img:
        return img.size


# -- Edit ---------------------------------------------------------------------------------------------------

async def test_edit_opens_a_modal_and_its_submission_uploads_an_edited_image_charged_like_one(
        slack: SlackHarness) -> None:
    buttons = await imagine(slack, "a red fox --size 256x256 --count 2")
    assert await slack.balance(ANN) == 44
    assert {f"{EDIT}_0", f"{EDIT}_1", MORE, DELETE} <= set(buttons)

    payload = action_payload(slack.fake, f"{EDIT}_1", buttons[f"{EDIT}_1"], key="edit")
    payload["trigger_id"] = "12345.98765.abcd"
    status, _ = await slack.interact(payload)
    assert status == 200
    await slack.fake.until(lambda: slack.fake.views)
    [opened] = slack.fake.called("views.open")
    assert opened.args["trigger_id"] == "12345.98765.abcd"
    [view] = slack.fake.views
    assert view["callback_id"] == EDIT_VIEW and view["title"]["text"] == "Edit image 2"
    assert view["blocks"][-1]["element"]["type"] == "plain_text_input"
    assert await slack.balance(ANN) == 44  # opening the box costs nothing

    status, body = await slack.submit(view, {EDIT_BLOCK: {EDIT_INPUT: "make the sky stormy"}})
    assert status == 200 and body == ""  # an empty ack closes the modal
    await slack.fake.until(lambda: len(slack.fake.uploads) == 2)
    await slack.idle()
    edited = slack.fake.uploads[1]
    assert edited.channel_id == CHANNEL and len(edited.files) == 1
    assert "make the sky stormy" in edited.initial_comment and "3 credits spent" in edited.initial_comment
    assert png_size(edited.files[0][2]) == (256, 256)
    assert await slack.balance(ANN) == 41  # one 256x256 image
    assert any("Generating an edit of image 2" in t for t in slack.fake.replies("edit"))
    gen = await slack.core.generation(buttons_of(slack.fake.messages[-1])[REROLL])
    assert gen is not None and gen.command == "edit" and gen.options.get("source") == buttons[REROLL]


async def test_an_empty_or_unaffordable_edit_is_refused_inside_the_modal_and_charges_nothing(
        slack: SlackHarness) -> None:
    buttons = await imagine(slack, "a lighthouse --size 256x256")
    await slack.click(EDIT, buttons[EDIT], key="e")
    await slack.fake.until(lambda: slack.fake.views)
    view = slack.fake.views[0]
    before = slack.db_counts()

    status, body = await slack.submit(view, {EDIT_BLOCK: {EDIT_INPUT: "   "}})
    answer = json.loads(body)
    assert status == 200 and answer["response_action"] == "errors" and EDIT_BLOCK in answer["errors"]

    await slack.core.adjust("test", Identity("slack", TEAM_ID, ANN), "set", 0)
    status, body = await slack.submit(view, {EDIT_BLOCK: {EDIT_INPUT: "add a moon"}})
    answer = json.loads(body)
    assert answer["response_action"] == "errors" and "you have 0" in answer["errors"][EDIT_BLOCK]

    forged = {**view, "private_metadata": "{\"g\": \"../../etc\"}"}
    status, body = await slack.submit(forged, {EDIT_BLOCK: {EDIT_INPUT: "add a moon"}})
    assert "not one of mine" in json.loads(body)["errors"][EDIT_BLOCK]
    await slack.idle()
    assert len(slack.fake.uploads) == 1
    after = slack.db_counts()
    assert after["generations"] == before["generations"] and after["reservations"] == before["reservations"]


async def test_an_expired_trigger_is_explained(slack: SlackHarness) -> None:
    buttons = await imagine(slack, "a kite --size 256x256")
    slack.fake.fail("views.open", "expired_trigger_id")
    await slack.click(EDIT, buttons[EDIT], key="late")
    reply = await last_reply(slack, "late")
    assert "press Edit again" in reply["text"]
    assert slack.fake.views == []


# -- More…: zoom out, pan, make square ----------------------------------------------------------------------

async def test_more_offers_the_canvas_changes_and_zoom_out_keeps_the_original_in_the_middle(
        rich: SlackHarness) -> None:
    buttons = await imagine(rich, "a red fox --size 256x256")
    original = rich.fake.uploads[0].files[0][2]
    spent = await rich.balance(ANN)

    await rich.click(MORE, buttons[MORE], key="more")
    reply = await last_reply(rich, "more")
    offered = {e["action_id"]: e["value"] for b in reply["blocks"] if b["type"] == "actions" for e in b["elements"]}
    labels = [e["text"]["text"] for b in reply["blocks"] if b["type"] == "actions" for e in b["elements"]]
    assert "Zoom out 2x" in labels and "Make square" not in labels  # already square
    assert await rich.balance(ANN) == spent  # asking costs nothing

    zoom = f"{OUTPAINT}_0_zoom-2"
    assert await rich.click(zoom, offered[zoom], key="zoom") == 200
    await rich.fake.until(lambda: len(rich.fake.uploads) == 2)
    await rich.idle()
    [(_, _, data)] = rich.fake.uploads[1].files
    assert rich.fake.replies("zoom")[0].startswith("Generating “zoom out 2x” of image 1")
    with Image.open(io.BytesIO(data)) as big, Image.open(io.BytesIO(original)) as small:
        w, h = big.size
        assert (w, h) == (512, 512)
        left, top = (w - small.width) // 2, (h - small.height) // 2
        middle = big.convert("RGB").crop((left, top, left + small.width, top + small.height))
        assert middle.tobytes() == small.convert("RGB").tobytes()  # pixel for pixel
    assert await rich.balance(ANN) < spent


async def test_forged_canvas_and_menu_values_change_nothing(slack: SlackHarness) -> None:
    buttons = await imagine(slack, "a red fox --size 256x256")
    before, balance = slack.db_counts(), await slack.balance(ANN)
    gid = buttons[REROLL]
    await slack.click(f"{OUTPAINT}_0_spin", f"{gid}:0:spin", key="op")
    await slack.click(MORE, "not-an-id", key="m")
    await slack.click(f"{HISTORY_PAGE}_next", "-1", key="h")
    await slack.click(CONFIRM, "x' OR 1=1 --", key="c")
    await slack.click(DELETE, f"{gid}|../../x", key="d")
    for key in ("op", "m", "h", "c", "d"):
        reply = await last_reply(slack, key)
        assert "not one of mine" in reply["text"], key
    assert slack.db_counts() == before and await slack.balance(ANN) == balance
    assert slack.fake.deleted_messages == [] and slack.fake.deleted_files == []


# -- Delete -------------------------------------------------------------------------------------------------

def _press_on(slack: SlackHarness, message: dict[str, Any], action_id: str, **kw: Any) -> dict[str, Any]:
    """A press on that very message (its ts), as Slack sends it."""
    payload = action_payload(slack.fake, action_id, buttons_of(message)[action_id], channel=message["channel"], **kw)
    payload["container"]["message_ts"] = payload["message"]["ts"] = message["ts"]
    return payload


async def test_delete_by_someone_else_is_refused_and_by_the_asker_removes_images_and_buttons(
        slack: SlackHarness) -> None:
    buttons = await imagine(slack, "a red fox --size 256x256 --count 2")
    message = slack.fake.messages[-1]
    gid = buttons[REROLL]
    balance = await slack.balance(ANN)

    await slack.interact(_press_on(slack, message, DELETE, user=BOB, key="bob"))
    reply = await last_reply(slack, "bob")
    assert "Only the person who asked for it, or an admin" in reply["text"]
    assert slack.fake.deleted_messages == [] and slack.fake.deleted_files == []
    assert (await slack.core.generation(gid)).deleted_at is None

    await slack.interact(_press_on(slack, message, DELETE, key="ann"))
    reply = await last_reply(slack, "ann")
    assert "Deleted that result" in reply["text"]
    assert slack.fake.deleted_messages == [(CHANNEL, message["ts"])]
    assert len(slack.fake.deleted_files) == 2
    assert (await slack.core.generation(gid)).deleted_at is not None
    assert await slack.balance(ANN) == balance  # spent stays spent

    _, body = await slack.command("/show", gid, key="again")
    reply = await last_reply(slack, "again")
    assert "deleted" in reply["text"]


async def test_a_workspace_admin_may_delete_anyones_result(slack: SlackHarness) -> None:
    await imagine(slack, "a red fox --size 256x256")
    message = slack.fake.messages[-1]
    slack.fake.user(BOSS, admin=True)
    await slack.interact(_press_on(slack, message, DELETE, user=BOSS, key="boss"))
    reply = await last_reply(slack, "boss")
    assert "Deleted that result" in reply["text"]
    assert slack.fake.deleted_messages == [(CHANNEL, message["ts"])]


# -- /show, /history ------------------------------------------------------------------------------------------

async def test_show_after_a_restart_posts_the_result_again_free_with_its_buttons(slack: SlackHarness) -> None:
    buttons = await imagine(slack, "a blue heron --size 256x256 --count 2")
    gid = buttons[REROLL]
    first = slack.fake.uploads[0]
    balance = await slack.balance(ANN)
    await slack.restart()

    status, body = await slack.command("/show", gid, user=BOB, key="show", channel="C0OTHER01")
    assert status == 200
    await slack.fake.until(lambda: len(slack.fake.messages) == 2)
    await slack.idle()
    again = slack.fake.uploads[1]
    assert again.channel_id == "C0OTHER01"
    assert [f[2] for f in again.files] == [f[2] for f in first.files]
    assert buttons_of(slack.fake.messages[-1])[REROLL] == gid
    assert f"id {gid}" in slack.fake.messages[-1]["blocks"][0]["elements"][0]["text"]
    assert await slack.balance(ANN) == balance and await slack.balance(BOB) == 50  # free for everyone


async def test_show_and_history_bad_input_gets_a_clear_message_and_changes_nothing(slack: SlackHarness) -> None:
    buttons = await imagine(slack, "a red fox --size 256x256")
    before, balance = slack.db_counts(), await slack.balance(ANN)
    _, body = await slack.command("/show", "")
    assert "Give the generation's id" in ack_text(body) and "Usage: /show" in ack_text(body)
    _, body = await slack.command("/show", "two ids")
    assert "Give one id" in ack_text(body)
    await slack.command("/show", "0" * 32, key="unknown")
    assert "no longer known" in (await last_reply(slack, "unknown"))["text"]
    await slack.command("/show", buttons[REROLL], team_id="T0OTHER01", key="elsewhere")
    assert "no longer known" in (await last_reply(slack, "elsewhere"))["text"]
    _, body = await slack.command("/history", "second")
    assert "The page must be a whole number" in ack_text(body) and "Usage: /history" in ack_text(body)
    await slack.command("/history", "9", key="far")
    assert "only 1 page" in (await last_reply(slack, "far"))["text"]
    assert slack.db_counts() == before and await slack.balance(ANN) == balance
    assert len(slack.fake.uploads) == 1


async def test_history_pages_ten_at_a_time_with_a_contact_sheet_and_show_buttons(rich: SlackHarness) -> None:
    for n in range(12):
        await imagine(rich, f"picture {n} --size 256x256")
    uploads = len(rich.fake.uploads)

    await rich.command("/history", "", key="h")
    reply = await last_reply(rich, "h")
    sections = [b for b in reply["blocks"] if b["type"] == "section" and "accessory" in b]
    assert len(sections) == 10
    assert "page 1 of 2" in reply["text"] and "12 results" in reply["text"]
    assert "picture 11" in sections[0]["text"]["text"] and "3 credits" in sections[0]["text"]["text"]
    nav = {e["action_id"]: e["value"] for b in reply["blocks"] if b["type"] == "actions" for e in b["elements"]}
    assert nav == {f"{HISTORY_PAGE}_next": "2"}
    await rich.fake.until(lambda: len(rich.fake.uploads) == uploads + 1)
    sheet = rich.fake.uploads[-1]
    assert sheet.channel_id == "D0ANN0001" and png_size(sheet.files[0][2])[0] > 0  # the thumbnails, privately

    assert await rich.click(f"{HISTORY_PAGE}_next", "2", key="p2") == 200
    page2 = await last_reply(rich, "p2")
    assert page2["replace_original"] is True and "page 2 of 2" in page2["text"]
    items = [b for b in page2["blocks"] if b["type"] == "section" and "accessory" in b]
    assert len(items) == 2 and "picture 1 ·" in items[0]["text"]["text"] and "picture 0" in items[1]["text"]["text"]
    back = {e["action_id"] for b in page2["blocks"] if b["type"] == "actions" for e in b["elements"]}
    assert back == {f"{HISTORY_PAGE}_prev"}

    show = items[1]["accessory"]
    assert show["action_id"].startswith(SHOW)
    messages = len(rich.fake.messages)
    await rich.click(show["action_id"], show["value"], key="s")
    await rich.fake.until(lambda: len(rich.fake.messages) == messages + 1)
    await rich.idle()
    assert "picture 0" in rich.fake.uploads[-1].initial_comment


# -- /describe -----------------------------------------------------------------------------------------------

@pytest.mark.parametrize(("text", "words"), [
    ("", "needs an image"),
    ("http://example.com/fox.png", "not an https URL"),
    ("ftp://example.com/fox.png", "not an https URL"),
    ("https://example.com/a.png https://example.com/b.png", "one image URL"),
    ("https://user:pw@example.com/a.png", "user name or password"),
    ("a picture of a fox", "one image URL"),
    ("fox.png", "not an https URL"),
])
async def test_describe_bad_input_says_what_it_needs_and_charges_nothing(slack: SlackHarness, text: str,
                                                                        words: str) -> None:
    before = slack.db_counts()
    status, body = await slack.command("/describe", text)
    assert status == 200 and words in ack_text(body)
    assert "cannot carry a file" in ack_text(body)  # says why Slack needs a URL
    await slack.idle()
    assert slack.db_counts() == before and await slack.balance(ANN) == 50


async def test_describe_an_unreachable_url_is_refunded_and_said(slack: SlackHarness) -> None:
    status, body = await slack.command("/describe", "<https://127.0.0.1:9/fox.png>", key="d")
    assert status == 200 and "Describing the image" in ack_text(body)
    reply = await last_reply(slack, "d")
    assert "could not be downloaded" in reply["text"] and "charged" in reply["text"]
    assert await slack.balance(ANN) == 50


async def test_describe_prompts_each_have_an_imagine_button(slack: SlackHarness) -> None:
    # The describe job itself, from image bytes (the console's form: Slack's URL fetch needs the internet).
    await imagine(slack, "a red fox --size 256x256")
    image = slack.fake.uploads[0].files[0][2]
    ctx = Context(Identity("slack", TEAM_ID, ANN), channel_id=CHANNEL)
    described = await slack.core.describe(ctx, image)
    assert len(described.prompts) == 4

    await slack.click(f"{DESCRIBE_IMAGINE}_2", f"{described.generation_id}:2", key="di")
    await slack.fake.until(lambda: len(slack.fake.uploads) == 2)
    await slack.idle()
    assert described.prompts[2][:40] in slack.fake.uploads[1].initial_comment.replace("&amp;", "&")


# -- /help, /settings, private results ------------------------------------------------------------------------

async def test_help_lists_commands_prices_and_the_balance_privately(slack: SlackHarness) -> None:
    status, _ = await slack.command("/help", "", key="help")
    assert status == 200
    reply = await last_reply(slack, "help")
    assert reply["response_type"] == "ephemeral"
    for part in ("/imagine", "/describe", "/history", "/show", "/settings", "credits", "Your balance: 50 credits"):
        assert part in reply["text"], part


async def test_settings_are_refused_for_non_admins_and_nothing_changes(slack: SlackHarness) -> None:
    await slack.command("/settings", "visibility private confirm_above 10", key="no")
    reply = await last_reply(slack, "no")
    assert "Only workspace admins and owners" in reply["text"] and "Nothing was changed" in reply["text"]
    ctx = Context(Identity("slack", TEAM_ID, ANN))
    assert (await slack.core.server_settings(ctx)).overridden == frozenset()
    await slack.command("/settings", "", key="show")
    shown = await last_reply(slack, "show")
    assert "visibility: public" in shown["text"]


async def test_settings_bad_input_is_named_and_nothing_changes(slack: SlackHarness) -> None:
    slack.fake.user(BOSS, owner=True)
    _, body = await slack.command("/settings", "visibility", user=BOSS)
    assert "has no value" in ack_text(body) and "Usage: /settings" in ack_text(body)
    await slack.command("/settings", "colour red", user=BOSS, key="key")
    assert "colour" in (await last_reply(slack, "key"))["text"]
    await slack.command("/settings", "visibility sideways", user=BOSS, key="value")
    assert "visibility" in (await last_reply(slack, "value"))["text"]
    ctx = Context(Identity("slack", TEAM_ID, BOSS))
    assert (await slack.core.server_settings(ctx)).overridden == frozenset()


async def test_an_admin_makes_results_private_an_ephemeral_note_and_the_images_by_dm(slack: SlackHarness) -> None:
    slack.fake.user(BOSS, admin=True)
    await slack.command("/settings", "visibility private", user=BOSS, key="set")
    changed = await last_reply(slack, "set")
    assert "Changed: visibility" in changed["text"] and "visibility: private" in changed["text"]

    await slack.command("/imagine", "a secret garden --size 256x256", key="p")
    await slack.fake.until(lambda: slack.fake.uploads)
    await slack.idle()
    [upload] = slack.fake.uploads
    assert upload.channel_id == "D0ANN0001"  # not the channel
    assert all(m["channel"] == "D0ANN0001" for m in slack.fake.messages)
    note = await last_reply(slack, "p")
    assert note["response_type"] == "ephemeral" and "direct messages" in note["text"]
    assert "a secret garden" in note["text"]


# -- the confirm step -----------------------------------------------------------------------------------------

async def test_a_costly_imagine_asks_first_and_charges_only_after_the_click(rich: SlackHarness) -> None:
    status, body = await rich.command("/imagine", "a big mural --size 1024x1024 --count 6", key="q")
    answer = json.loads(body)
    assert "costs 60 credits" in answer["text"] and "You have 500; 440 after" in answer["text"]
    buttons = {e["action_id"]: e["value"] for b in answer["blocks"] if b["type"] == "actions" for e in b["elements"]}
    assert set(buttons) == {CONFIRM, CANCEL}
    await rich.idle()
    assert await rich.balance(ANN) == 500 and rich.db_counts()["generations"] == 0 and rich.fake.uploads == []

    await rich.click(CONFIRM, buttons[CONFIRM], user=BOB, key="bob")  # only the asker may confirm
    assert "someone else's" in (await last_reply(rich, "bob"))["text"]
    assert rich.db_counts()["generations"] == 0

    await rich.click(CONFIRM, buttons[CONFIRM], key="yes")
    await rich.fake.until(lambda: rich.fake.uploads, timeout=15)
    await rich.idle()
    assert len(rich.fake.uploads[0].files) == 6 and await rich.balance(ANN) == 440
    first = rich.fake.responses["yes"][0]
    assert first["replace_original"] is True and "Generating your images" in first["text"]

    await rich.click(CONFIRM, buttons[CONFIRM], key="twice")
    assert "already used" in (await last_reply(rich, "twice"))["text"]
    assert len(rich.fake.uploads) == 1 and await rich.balance(ANN) == 440


async def test_cancel_charges_nothing_and_a_cheap_command_does_not_ask(rich: SlackHarness) -> None:
    _, body = await rich.command("/imagine", "a big mural --size 1024x1024 --count 6", key="q")
    buttons = {e["action_id"]: e["value"] for b in json.loads(body)["blocks"] if b["type"] == "actions"
               for e in b["elements"]}
    await rich.click(CANCEL, buttons[CANCEL], key="no")
    reply = await last_reply(rich, "no")
    assert reply["replace_original"] is True and "nothing was charged" in reply["text"]
    assert await rich.balance(ANN) == 500 and rich.db_counts()["generations"] == 0

    _, body = await rich.command("/imagine", "a stamp --size 256x256")
    assert "Generating 1 image" in ack_text(body)


async def test_a_costly_button_asks_first_too(rich: SlackHarness) -> None:
    buttons = await imagine(rich, "a wall --size 1024x1024 --count 2")  # 20 credits: no question
    assert await rich.balance(ANN) == 480
    await rich.core.change_settings(Context(Identity("slack", TEAM_ID, BOSS), is_admin=True),
                                    {"confirm_above": "15"})
    await rich.click(REROLL, buttons[REROLL], key="r")
    reply = await last_reply(rich, "r")
    assert "A re-roll costs 20 credits" in reply["text"]
    confirm = next(e for b in reply["blocks"] if b["type"] == "actions" for e in b["elements"]
                   if e["action_id"] == CONFIRM)
    assert await rich.balance(ANN) == 480
    await rich.click(CONFIRM, confirm["value"], key="ok")
    await rich.fake.until(lambda: len(rich.fake.uploads) == 2, timeout=15)
    await rich.idle()
    assert await rich.balance(ANN) == 460


def test_manifest_declares_the_new_commands_and_interactivity() -> None:
    path = Path(__file__).resolve().parents[1] / "bot" / "slack_app" / "manifest.json"
    manifest = json.loads(path.read_text())
    commands = {c["command"]: c for c in manifest["features"]["slash_commands"]}
    assert {"/imagine", "/enhance", "/credits", "/describe", "/history", "/show", "/help", "/settings"} == set(commands)
    assert all(c["should_escape"] is True for c in commands.values())
    assert manifest["settings"]["interactivity"]["is_enabled"] is True  # buttons and modals

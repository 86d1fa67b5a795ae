"""The console's issue-13 commands as an operator types them: /edit, /zoom, /describe, /history, /show,
/delete, /help, /settings and the confirm step, on the real core (a real SQLite file, the real registry
with the offline local renderer). What is checked is what a person notices: the replies, the saved files
and their pixels, and the credits."""

from __future__ import annotations

import io
import re
import sqlite3
from collections.abc import AsyncIterator
from pathlib import Path

import pytest
from PIL import Image, ImageChops

from bot.app import build_core
from bot.canvas import plan_canvas
from bot.console import console_context, handle_line, run_console
from bot.core import Imagebot
from bot.errors import ValidationError
from bot.models import Context
from bot.textcommands import (
    SETTINGS_USAGE,
    ImageCommand,
    parse_describe,
    parse_edit,
    parse_history,
    parse_settings,
    parse_zoom,
)
from tests.doubles import make_config

START = 500


@pytest.fixture
async def core(tmp_path: Path) -> AsyncIterator[Imagebot]:
    bot = build_core(make_config(tmp_path, IMAGEBOT_STARTING_CREDITS=str(START)))
    await bot.start(catalogue=False)
    try:
        yield bot
    finally:
        await bot.close()


async def say(core: Imagebot, line: str, ctx: Context | None = None) -> str:
    return await handle_line(core, ctx or console_context(), line)


def generation_of(reply: str) -> str:
    return next(line.split()[1] for line in reply.splitlines() if line.startswith("generation "))


def saved(reply: str) -> list[Path]:
    return [Path(line.strip()) for line in reply.splitlines() if line.startswith("  /") and line.strip()
            .endswith((".png", ".webp", ".jpeg"))]


def head(path: Path) -> bytes:
    return path.read_bytes()[:4]


async def balance(core: Imagebot) -> int:
    return (await core.credits(console_context().identity)).balance


def generation_rows(core: Imagebot) -> int:
    conn = sqlite3.connect(core.config.database)
    try:
        return int(conn.execute("SELECT COUNT(*) FROM generations").fetchone()[0])
    finally:
        conn.close()


async def made(core: Imagebot, line: str = "/imagine a red fox --size 512x512 --count 2") -> tuple[str, list[Path]]:
    reply = await say(core, line)
    assert "Saved:" in reply, reply
    return generation_of(reply), saved(reply)


async def test_edit_changes_the_chosen_image_and_costs_one_image(core: Imagebot) -> None:
    gid, originals = await made(core)
    assert len(originals) == 2
    before = await balance(core)
    reply = await say(core, f"/edit {gid} image 2 make the sky purple")
    assert reply.startswith("make the sky purple\n1 image · local"), reply
    edited = saved(reply)
    assert len(edited) == 1 and edited[0].exists() and edited[0] not in originals
    assert edited[0].read_bytes() != originals[1].read_bytes()
    assert await balance(core) == before - 5  # one 512x512 medium image
    new_id = generation_of(reply)
    assert new_id != gid and f"Next: /edit {new_id} <instruction>" in reply  # one image: no [image N]


async def test_zoom_out_keeps_the_original_pixel_for_pixel_in_the_middle(core: Imagebot) -> None:
    gid, originals = await made(core, "/imagine a lighthouse --size 512x512")
    before = await balance(core)
    reply = await say(core, f"/zoom {gid} zoom-2")
    assert "Saved:" in reply, reply
    [result] = saved(reply)
    model = core.registry.providers["local"].capabilities.models[0]
    layout = plan_canvas(512, 512, "zoom-2", model)
    x, y, w, h = layout.box
    with Image.open(result) as zoomed, Image.open(originals[0]) as original:
        assert zoomed.size == layout.size and zoomed.size[0] > 512
        assert (w, h) == original.size
        middle = zoomed.convert("RGB").crop((x, y, x + w, y + h))
        assert ImageChops.difference(middle, original.convert("RGB")).getbbox() is None
        outside = zoomed.convert("RGB").crop((0, 0, x, zoomed.size[1]))
        assert outside.getbbox() is not None  # the new area was drawn
    assert await balance(core) < before


async def test_describe_reads_a_file_and_suggests_four_prompts(core: Imagebot, tmp_path: Path) -> None:
    _, [picture, _] = await made(core)
    copy = tmp_path / "my picture.png"
    copy.write_bytes(picture.read_bytes())
    before = await balance(core)
    reply = await say(core, f'/describe "{copy}"')
    assert reply.startswith("Suggested prompts:\n  1. "), reply
    assert all(f"  {n}. " in reply for n in range(1, 5)) and "  5. " not in reply
    assert "To draw one: /imagine <prompt>" in reply
    assert await balance(core) == before - 1


async def test_history_pages_ten_at_a_time_with_a_contact_sheet(core: Imagebot) -> None:
    ids = [(await made(core, f"/imagine kite number {n} --size 256x256 --quality low"))[0] for n in range(11)]
    first = await say(core, "/history")
    assert first.startswith("Your results here, page 1 of 2 (11 results):"), first
    listed = [line for line in first.splitlines() if line.startswith("  ") and " · /imagine · " in line]
    assert len(listed) == 10 and listed[0].startswith(f"  1. {ids[-1]} · /imagine · kite number 10")
    assert "More: /history 2" in first
    sheet = Path(next(line for line in first.splitlines() if line.startswith("Contact sheet: ")).split(": ", 1)[1])
    assert sheet.parent.name == "previews" and head(sheet) == b"\x89PNG"
    with Image.open(sheet) as opened:
        assert opened.size[0] > 256
    second = await say(core, "/history 2")
    assert second.startswith("Your results here, page 2 of 2") and f"  1. {ids[0]} · /imagine · kite number 0" in second
    assert "More:" not in second


async def test_show_is_free_and_delete_removes_it_from_history_but_keeps_the_files(core: Imagebot) -> None:
    gid, files = await made(core)
    before = await balance(core)
    shown = await say(core, f"/show {gid}")
    assert shown.startswith("(shown again, free)\na red fox") and saved(shown) == files
    assert await balance(core) == before
    deleted = await say(core, f"/delete {gid}")
    assert deleted.startswith(f"Deleted {gid} from your history.")
    assert "You have no results here yet." in await say(core, "/history")
    assert (await say(core, f"/show {gid}")).startswith("Error: That result was deleted.")
    assert all(path.exists() for path in files) and await balance(core) == before


async def test_help_has_the_prices_the_balance_and_the_console_forms(core: Imagebot) -> None:
    reply = await say(core, "/help")
    assert "Prices here (credits per image):" in reply and "1024x1024 medium: 10 credits" in reply
    assert f"Your balance: {START} credits." in reply
    assert "In this console:" in reply and "/zoom <id> [image N] <op>" in reply
    assert await balance(core) == START


async def test_settings_show_and_change_apply_to_the_next_command(core: Imagebot) -> None:
    shown = await say(core, "/settings")
    assert "Settings of this server" in shown and "price_multiplier: 1" in shown
    changed = await say(core, '/settings max_images 2 blocklist "purple sky, /neon+/"')
    assert changed.startswith("Changed max_images, blocklist."), changed
    assert "* max_images: 2" in changed and "by console:local:" in changed
    back = await say(core, "/settings max_images default blocklist default")
    assert "* max_images" not in back and "* blocklist" not in back


async def test_the_blocklist_refuses_an_edit_at_no_cost_and_lets_others_through(core: Imagebot) -> None:
    gid, _ = await made(core)
    await say(core, '/settings blocklist "purple sky, /neon+/"')
    before, rows = await balance(core), generation_rows(core)
    for line in (f"/edit {gid} make the purple sky darker", f"/edit {gid} add neonnn signs"):
        refused = await say(core, line)
        assert refused.startswith("Error: ") and "Moderation is not available" not in refused, refused
    assert await balance(core) == before and generation_rows(core) == rows
    allowed = await say(core, f"/edit {gid} make the sky green")
    assert "Saved:" in allowed and await balance(core) == before - 5


async def test_a_non_admin_cannot_change_the_settings(core: Imagebot) -> None:
    ctx = console_context()
    guest = Context(ctx.identity, channel_id=ctx.channel_id, is_admin=False, display_name="guest")
    reply = await say(core, "/settings max_images 1", guest)
    assert reply.startswith("Error: Only server admins can change the settings. Nothing was changed.")
    assert "* max_images" not in await say(core, "/settings")


async def test_the_console_imagine_honours_the_server_price_multiplier(core: Imagebot) -> None:
    await say(core, "/settings price_multiplier 2")
    before = await balance(core)
    await made(core, "/imagine a cat --size 512x512")
    assert await balance(core) == before - 10


async def test_a_costly_command_asks_first_and_charges_only_after_yes(core: Imagebot) -> None:
    lines = iter([
        "/settings confirm_above 5\n",
        "/imagine a red fox --size 1024x1024\n", "n\n",
        "/imagine a red fox --size 1024x1024\n", "y\n",
        "/imagine a tiny fox --size 256x256 --quality low\n",
        "/quit\n",
    ])
    out = io.StringIO()
    await run_console(core, stdin=lambda: next(lines), out=out)
    text = out.getvalue()
    question = f"This costs 10 credits; your balance after it would be {START - 10}. Confirm? [y/N] "
    assert text.count(question) == 2, text
    assert "Cancelled: nothing was charged." in text
    assert text.count("Saved:") == 2  # the yes, and the cheap one that did not ask
    assert await balance(core) == START - 10 - 2  # 256x256 low: 2 credits, unasked
    assert generation_rows(core) == 2


async def test_no_answer_means_no(core: Imagebot) -> None:
    await say(core, "/settings confirm_above 5")
    reply = await say(core, "/imagine a red fox --size 1024x1024")  # handle_line without anyone to ask
    assert reply == "Cancelled: nothing was charged." and await balance(core) == START


BAD = [
    ("/edit", "Give the generation's id. Usage: /edit"),
    ("/edit {gid}", "Say what to change. Usage: /edit"),
    ("/edit {gid} image 3 make it blue", "That result has 2 images: there is no image 3."),
    ("/edit {gid} image 0 make it blue", "image must be a number from 1 to 10"),
    ("/edit nosuchgeneration make it blue", "That image is no longer known to the bot."),
    ("/edit a;b make it blue", "is not a generation id"),
    ("/zoom {gid}", "Say which way. Usage: /zoom"),
    ("/zoom {gid} sideways", "'sideways' is not an operation: use one of zoom-1.5, zoom-2"),
    ("/zoom {gid} zoom-2 twice", "Give one operation"),
    ("/zoom {gid} square", "The image is already square."),
    ("/history two", "The page must be a whole number from 1, got 'two'. Usage: /history"),
    ("/history 0", "The page must be a whole number from 1"),
    ("/history 7", "There is only 1 page"),
    ("/show", "Give the generation's id. Usage: /show"),
    ("/show a b", "Give one id"),
    ("/show nosuchgeneration", "That image is no longer known to the bot."),
    ("/delete", "Give the generation's id. Usage: /delete"),
    ("/delete nosuchgeneration", "That image is no longer known to the bot."),
    ("/describe", "Give the image to describe. Usage: /describe"),
    ("/describe {tmp}", "is a folder: give one image file in it."),
    ("/describe {tmp}/missing.png", "There is no file"),
    ("/describe {tmp}/big.png", "MiB; an image to describe may be at most 20 MiB."),
    ("/describe {tmp}/empty.png", "is empty."),
    ("/describe {tmp}/notes.txt", "That is not a readable image"),
    ("/settings size", "'size' has no value. Usage: /settings"),
    ("/settings nosuch 1", "Unknown setting 'nosuch'"),
    ("/settings max_images lots", "'lots' is not a whole number. Nothing was changed."),
    ('/settings blocklist "open', "A quote is not closed"),
    ("/settings size 1024x1024 size 512x512", "size is given twice."),
    ("/frobnicate now", "Unknown command /frobnicate. Type /help."),
]


@pytest.mark.parametrize(("line", "message"), BAD, ids=[line for line, _ in BAD])
async def test_bad_input_is_refused_clearly_and_changes_nothing(core: Imagebot, tmp_path: Path, line: str,
                                                                message: str) -> None:
    gid, files = await made(core)
    (tmp_path / "big.png").write_bytes(files[0].read_bytes() + b"\0" * (21 * 1024 * 1024))
    (tmp_path / "empty.png").write_bytes(b"")
    (tmp_path / "notes.txt").write_text("not a picture")
    settings = await say(core, "/settings")
    before, rows = await balance(core), generation_rows(core)
    reply = await say(core, line.format(gid=gid, tmp=tmp_path))
    assert message in reply, reply
    assert reply.startswith("Error: ") or reply.startswith("Unknown command")
    assert "Traceback" not in reply
    assert await balance(core) == before and generation_rows(core) == rows
    assert await say(core, "/settings") == settings
    assert all(path.exists() for path in files)


def test_settings_text_pairs_up_keys_and_values_with_quotes() -> None:
    assert parse_settings("") == {}
    assert parse_settings("size 1024x1024 providers openai,local") == {"size": "1024x1024",
                                                                       "providers": "openai,local"}
    assert parse_settings('blocklist "purple sky, /ne+on/" Max-Images 2') == {"blocklist": "purple sky, /ne+on/",
                                                                             "max_images": "2"}
    assert parse_settings("blocklist \u201cdon't, stop\u201d visibility private") == {
        "blocklist": "don't, stop", "visibility": "private"}
    assert parse_settings('model ""') == {"model": ""}
    for bad, message in (("size", "'size' has no value."), ("size 1 providers", "'providers' has no value."),
                         ('blocklist "a b', "A quote is not closed"), ("1024x1024 size", "is not a setting's name")):
        with pytest.raises(ValidationError, match=re.escape(message)) as caught:
            parse_settings(bad)
        assert SETTINGS_USAGE in caught.value.message and caught.value.code == "IMG-VALID-SETTING"


def test_image_numbers_and_operations_read_as_typed() -> None:
    assert parse_edit("abc image 3 make it blue") == ImageCommand("abc", 2, "make it blue")
    assert parse_edit("abc #2 sky") == ImageCommand("abc", 1, "sky")
    assert parse_edit("abc image of a cat") == ImageCommand("abc", 0, "image of a cat")
    assert parse_zoom("abc image 2 pan-left") == ImageCommand("abc", 1, "pan-left")
    assert [parse_zoom(f"abc {word}").text for word in ("2x", "1.5", "left", "Square", "zoom-1.5")] == [
        "zoom-2", "zoom-1.5", "pan-left", "square", "zoom-1.5"]
    assert (parse_history(""), parse_history("3"), parse_history("page 2")) == (1, 3, 2)
    assert parse_describe(' "~/my fox.png" ') == "~/my fox.png"

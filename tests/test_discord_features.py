"""Issue 13 on Discord (gateway): Edit, Zoom out / Pan / Make square, Delete, blends, /describe, /history,
/show, /help, /settings, the confirm step and private results. The real discord.py client against the
loopback Discord fake, the real core on SQLite, the offline renderer drawing real images."""

from __future__ import annotations

import dataclasses
import io
from pathlib import Path
from typing import Any

from PIL import Image

from bot.canvas import outpaint_canvas
from providers.base import GeneratedImage, GenerationRequest
from tests.doubles import ScriptedProvider, tiny_png
from tests.fakes.discord_api import CHANNEL_ID, MANAGE_GUILD, Call
from tests.fakes.discord_harness import DiscordHarness
from tests.fakes.harness import openai_env
from tests.fakes.openai_api import FakeOpenAI

ADMIN = 999


def components(message: dict[str, Any]) -> list[dict[str, Any]]:
    return [c for row in message.get("components") or [] for c in row.get("components") or []]


def by_label(message: dict[str, Any]) -> dict[str, str]:
    return {c["label"]: c["custom_id"] for c in components(message) if c.get("type") == 2}


def select(message: dict[str, Any], prefix: str) -> dict[str, Any]:
    return next(c for c in components(message) if c.get("type") == 3 and c["custom_id"].startswith(prefix))


def message_of(h: DiscordHarness, token: str) -> dict[str, Any]:
    return h.fake.messages[h.fake.originals[token]]


def callbacks(h: DiscordHarness, token: str) -> list[Call]:
    return [c for c in h.fake.for_token(token) if c.path.endswith("/callback")]


async def first_callback(h: DiscordHarness, token: str) -> Call:
    return await h.fake.wait_for(lambda: next(iter(callbacks(h, token)), None))  # type: ignore[no-any-return]


async def text_with(h: DiscordHarness, token: str, needle: str) -> str:
    return await h.fake.wait_for(  # type: ignore[no-any-return]
        lambda: next((t for t in h.texts(token) if needle in t), None))


async def imagined(h: DiscordHarness, prompt: str = "a lighthouse", **kw: Any) -> tuple[str, Call, dict[str, Any]]:
    token = await h.imagine(prompt, size=kw.pop("size", "256x256"), **kw)
    call = await h.result(token)
    return token, call, message_of(h, token)


def gen_of(call: Call) -> str:
    return str(call.embeds[0]["footer"]["text"].split()[-1])


def pixels(data: bytes) -> Image.Image:
    return Image.open(io.BytesIO(data)).convert("RGB")


async def generations(h: DiscordHarness, user: int = 111) -> list[Any]:
    assert h.core is not None
    return await h.core.store.recent_generations(h.core_identity(user), 50)


async def set_setting(h: DiscordHarness, key: str, value: str) -> str:
    token = await h.command("settings", [h.payloads.opt("key", key), h.payloads.opt("value", value)],
                            user_id=ADMIN, permissions=MANAGE_GUILD)
    return await text_with(h, token, "Saved:" if value else "(IMG-")


# -- Edit -------------------------------------------------------------------------------------------------

async def test_edit_opens_a_modal_and_its_submit_after_a_restart_edits_the_image(tmp_path: Path) -> None:
    async with DiscordHarness(tmp_path) as h:
        _, call, message = await imagined(h)
        gen = gen_of(call)
        assert {"Re-roll", "Enhance", "Variations", "Upscale", "Edit", "Delete"} <= set(by_label(message))
        assert all(len(c["custom_id"]) < 100 for c in components(message))

        press = await h.send(h.payloads.click(message, by_label(message)["Edit"]))
        modal = await first_callback(h, press)
        assert modal.json["type"] == 9
        assert modal.json["data"]["custom_id"] == f"ib:ed:{gen}:0"
        [field] = modal.json["data"]["components"]
        assert field["label"] == "What should change?" and field["component"]["custom_id"] == "instruction"
        assert await h.balance(111) == 47  # opening the box costs nothing

        await h.restart()  # the submit is read by its custom id: nothing about the modal is kept in memory
        submit = await h.send(h.payloads.modal_submit(f"ib:ed:{gen}:0", {"instruction": "make it night"},
                                                      message=message))
        edited = await h.result(submit)
        assert (await first_callback(h, submit)).json == {"type": 5}
        latest = (await generations(h))[0]
        assert latest.command == "edit" and latest.prompt == "make it night" and latest.status == "COMPLETED"
        assert await h.balance(111) == 47 - latest.credits_consumed and latest.credits_consumed > 0
        before, after = pixels(call.files[0][1]), pixels(edited.files[0][1])
        assert after.size == before.size and after.tobytes() != before.tobytes()
        assert "Edit" in by_label(message_of(h, submit))  # the edit has its own buttons


async def test_an_empty_edit_instruction_is_refused_and_costs_nothing(tmp_path: Path) -> None:
    async with DiscordHarness(tmp_path) as h:
        _, call, message = await imagined(h)
        submit = await h.send(h.payloads.modal_submit(f"ib:ed:{gen_of(call)}:0", {"instruction": "   "}))
        reply = await first_callback(h, submit)
        assert reply.json["type"] == 4 and reply.ephemeral and "(IMG-VALID" in reply.content
        assert await h.balance(111) == 47 and len(await generations(h)) == 1


# -- Zoom out, Pan, Make square ---------------------------------------------------------------------------

async def test_zoom_out_keeps_the_original_pixels_in_the_middle(tmp_path: Path) -> None:
    async with DiscordHarness(tmp_path) as h:
        _, call, message = await imagined(h, "a red fox on snow")
        assert h.core is not None
        ops = select(message, "ib:op:")
        assert {"zoom-2", "zoom-1.5", "pan-left"} <= {o["value"] for o in ops["options"]}
        assert "square" not in {o["value"] for o in ops["options"]}  # already square: not offered

        token = await h.send(h.payloads.select(message, ops["custom_id"], ["zoom-2"]))
        zoomed = await h.result(token)
        original = call.files[0][1]
        model = h.core.registry.get("local").capabilities.model(None)  # type: ignore[union-attr]
        canvas = outpaint_canvas(original, "zoom-2", model)
        x, y, w, hh = canvas.box
        result = pixels(zoomed.files[0][1])
        assert result.size == tuple(int(v) for v in canvas.size.split("x")) and result.size[0] > 256
        assert (w, hh) == (256, 256) and (x, y) == ((result.size[0] - 256) // 2, (result.size[1] - 256) // 2)
        assert result.crop((x, y, x + w, y + hh)).tobytes() == pixels(original).tobytes()  # pixel for pixel
        placed = Image.open(io.BytesIO(canvas.image)).convert("RGB")
        assert result.tobytes() != placed.tobytes()  # and the new area around it was drawn
        latest = (await generations(h))[0]
        assert latest.command == "outpaint" and await h.balance(111) == 47 - latest.credits_consumed


async def test_outpaint_is_not_offered_where_no_model_takes_a_mask_and_a_forged_op_is_refused(tmp_path: Path) -> None:
    async with DiscordHarness(tmp_path, providers=[ScriptedProvider("fake")]) as h:
        _, call, message = await imagined(h)
        assert not [c for c in components(message) if c.get("type") == 3]
        # A message posted where the model could not be asked (a courier in another process) lists them all.
        listed = {"type": 3, "custom_id": f"ib:op:{gen_of(call)}:0", "min_values": 1, "max_values": 1,
                  "options": [{"label": "Zoom out 2x", "value": "zoom-2"}]}
        stale = {**message, "components": [*message["components"], {"type": 1, "components": [listed]}]}
        token = await h.send(h.payloads.select(stale, listed["custom_id"], ["zoom-2"]))
        reply = await first_callback(h, token)
        assert reply.ephemeral and "IMG-VALID-OUTPAINT" in reply.content
        assert await h.balance(111) == 47


async def test_several_images_offer_edit_or_extend_per_image_privately(tmp_path: Path) -> None:
    async with DiscordHarness(tmp_path) as h:
        _, call, message = await imagined(h, count=3)
        rows = message["components"]
        assert len(rows) <= 5 and all(len(r["components"]) <= 5 for r in rows)
        press = await h.send(h.payloads.click(message, by_label(message)["Edit or extend…"]))
        picker = await first_callback(h, press)
        assert picker.ephemeral and picker.json["type"] == 4
        pick = next(c for row in picker.json["data"]["components"] for c in row["components"])
        assert [o["value"] for o in pick["options"]] == ["0", "1", "2"]
        panel_msg = {**message_of(h, press), "flags": 64}
        chosen = await h.send(h.payloads.select(panel_msg, pick["custom_id"], ["2"]))
        panel = await first_callback(h, chosen)
        assert panel.json["type"] == 7 and panel.json["data"]["content"] == "Image 3:"
        ids = [c["custom_id"] for row in panel.json["data"]["components"] for c in row["components"]]
        assert f"ib:ed:{gen_of(call)}:2" in ids and f"ib:op:{gen_of(call)}:2" in ids
        assert await h.balance(111) == 50 - 3 * 3


# -- Delete -----------------------------------------------------------------------------------------------

async def test_delete_only_by_the_asker_or_an_admin_then_show_says_it_is_gone(tmp_path: Path) -> None:
    async with DiscordHarness(tmp_path) as h:
        token, call, message = await imagined(h)
        gen = gen_of(call)
        other = await h.send(h.payloads.click(message, by_label(message)["Delete"], user_id=222))
        assert "(IMG-PERM" in (await first_callback(h, other)).content
        assert h.fake.deleted == []

        mine = await h.send(h.payloads.click(message, by_label(message)["Delete"]))
        await h.fake.wait_for(lambda: h.fake.deleted)
        assert h.fake.deleted == [message["id"]]
        assert (await first_callback(h, mine)).json == {"type": 6}
        show = await h.command("show", [h.payloads.opt("id", gen)])
        assert "deleted" in (await first_callback(h, show)).content
        assert await h.balance(111) == 47  # nothing refunded, nothing charged

        _, call2, message2 = await imagined(h, "a second one", user_id=222)
        admin = await h.send(h.payloads.click(message2, by_label(message2)["Delete"], user_id=ADMIN,
                                              permissions=MANAGE_GUILD))
        await h.fake.wait_for(lambda: len(h.fake.deleted) == 2)
        assert callbacks(h, admin)[0].json == {"type": 6}


# -- /show and the buttons after a restart ----------------------------------------------------------------

async def test_show_after_a_restart_posts_the_result_free_and_its_buttons_work(tmp_path: Path) -> None:
    async with DiscordHarness(tmp_path) as h:
        _, call, _ = await imagined(h)
        gen = gen_of(call)
        await h.restart()
        token = await h.command("show", [h.payloads.opt("id", gen)], user_id=222)
        shown = await h.result(token)
        assert shown.files[0][1] == call.files[0][1] and gen_of(shown) == gen
        assert await h.balance(222) == 50 and await h.balance(111) == 47
        message = message_of(h, token)
        assert {"Re-roll", "Edit", "Delete"} <= set(by_label(message))

        reroll = await h.send(h.payloads.click(message, by_label(message)["Re-roll"], user_id=222))
        await h.result(reroll)
        assert await h.balance(222) == 47

        for bad, code in (("not-an-id", "IMG-NOTFOUND"), ("0" * 32, "IMG-NOTFOUND")):
            miss = await h.command("show", [h.payloads.opt("id", bad)])
            reply = await first_callback(h, miss)
            assert reply.ephemeral and code in reply.content
        elsewhere = await h.command("show", [h.payloads.opt("id", gen)], guild_id=12345)
        assert "IMG-NOTFOUND" in (await first_callback(h, elsewhere)).content
        assert await h.balance(111) == 47 and await h.balance(222) == 47


# -- /history ---------------------------------------------------------------------------------------------

async def test_history_pages_with_prev_and_next_and_shows_one(tmp_path: Path) -> None:
    async with DiscordHarness(tmp_path) as h:
        for n in range(11):
            await imagined(h, f"picture number {n}")
        token = await h.command("history")
        assert (await first_callback(h, token)).json == {"type": 5, "data": {"flags": 64}}
        page1 = await h.fake.wait_for(lambda: next((c for c in h.fake.for_token(token) if c.embeds), None))
        embed = page1.embeds[0]
        assert embed["title"].startswith("Your results: page 1 of 2 (11 in all)")
        assert embed["description"].count("\n") == 9 and "picture number 10" in embed["description"]
        assert [name for name, _ in page1.files] == ["history-1.png"]
        assert embed["image"]["url"] == "attachment://history-1.png"
        assert Image.open(io.BytesIO(page1.files[0][1])).format == "PNG"
        message = {**message_of(h, token), "flags": 64}
        buttons = {c["label"]: c for c in components(message) if c.get("type") == 2}
        assert buttons["Prev"].get("disabled") and not buttons["Next"].get("disabled")

        nxt = await h.send(h.payloads.click(message, buttons["Next"]["custom_id"]))
        page2 = await h.fake.wait_for(lambda: next((c for c in h.fake.for_token(nxt) if c.embeds), None))
        assert page2.embeds[0]["title"].startswith("Your results: page 2 of 2")
        assert "picture number 0" in page2.embeds[0]["description"] and page2.method == "PATCH"
        message2 = {**message_of(h, nxt), "flags": 64}
        prev = next(c for c in components(message2) if c.get("label") == "Prev")
        back = await h.send(h.payloads.click(message2, prev["custom_id"]))
        page1b = await h.fake.wait_for(lambda: next((c for c in h.fake.for_token(back) if c.embeds), None))
        assert page1b.embeds[0]["title"].startswith("Your results: page 1 of 2")

        chooser = select(message, "ib:hs")
        wanted = chooser["options"][3]["value"]
        show = await h.send(h.payloads.select(message, "ib:hs", [wanted]))
        shown = await h.result(show)
        assert gen_of(shown) == wanted
        assert await h.balance(111) == 50 - 11 * 3

        beyond = await h.command("history", [h.payloads.opt("page", 7, 4)])
        assert "only 2 pages" in await text_with(h, beyond, "IMG-VALID-PAGE")


# -- /settings, private results ---------------------------------------------------------------------------

async def test_settings_are_refused_for_members_with_nothing_changed(tmp_path: Path) -> None:
    async with DiscordHarness(tmp_path) as h:
        assert h.core is not None
        ctx = h.core_identity(111)
        before = await h.core.store.server_settings(ctx.server_key)
        token = await h.command("settings", [h.payloads.opt("key", "visibility"), h.payloads.opt("value", "private")])
        text = await text_with(h, token, "(IMG-PERM")
        assert "Nothing was changed" in text
        assert await h.core.store.server_settings(ctx.server_key) == before
        shown = await h.command("settings")
        assert "visibility: public" in await text_with(h, shown, "visibility")

        bad = await h.command("settings", [h.payloads.opt("key", "max_images"), h.payloads.opt("value", "lots")],
                              user_id=ADMIN, permissions=MANAGE_GUILD)
        assert "max_images" in await text_with(h, bad, "(IMG-")
        half = await h.command("settings", [h.payloads.opt("key", "size")], user_id=ADMIN, permissions=MANAGE_GUILD)
        assert "both a setting and a value" in (await first_callback(h, half)).content
        assert await h.core.store.server_settings(ctx.server_key) == before


async def test_an_admin_makes_results_private_and_they_are_posted_ephemerally(tmp_path: Path) -> None:
    async with DiscordHarness(tmp_path, IMAGEBOT_DISCORD_ADMIN_ROLES="555") as h:
        token = await h.command("settings", [h.payloads.opt("key", "visibility"), h.payloads.opt("value", "private")],
                                user_id=ADMIN, roles=(555,))  # an admin role, without Manage Server
        assert "* visibility: private" in await text_with(h, token, "Saved: visibility = private.")
        image = await h.imagine("a secret garden", size="256x256")
        assert (await first_callback(h, image)).json == {"type": 5, "data": {"flags": 64}}
        posted = await h.result(image)
        # The result replaces the private "thinking…" response: only the asker sees it.
        assert posted.method == "PATCH" and posted.path.endswith("/messages/@original")
        assert not h.fake.to_channel(CHANNEL_ID)


# -- the confirm step ------------------------------------------------------------------------------------

async def test_the_confirm_step_charges_only_after_the_click_and_only_once(tmp_path: Path) -> None:
    async with DiscordHarness(tmp_path) as h:
        await set_setting(h, "confirm_above", "5")
        token = await h.imagine("a big one", size="512x512", count=2)
        ask = await first_callback(h, token)
        assert ask.ephemeral and ask.json["type"] == 4
        assert "This costs 10 credits: your balance would go from 50 to 40" in ask.content
        assert await h.balance(111) == 50 and await generations(h) == []
        message = {**message_of(h, token), "flags": 64}
        buttons = by_label(message)
        assert set(buttons) == {"Confirm", "Cancel"}

        someone = await h.send(h.payloads.click(message, buttons["Confirm"], user_id=222))
        assert "IMG-NOTFOUND-PROPOSAL" in (await first_callback(h, someone)).content
        assert await h.balance(111) == 50 and await h.balance(222) == 50

        confirm = await h.send(h.payloads.click(message, buttons["Confirm"]))
        result = await h.result(confirm)
        assert len(result.files) == 2 and await h.balance(111) == 40
        again = await h.send(h.payloads.click(message, buttons["Confirm"]))
        assert "IMG-NOTFOUND-PROPOSAL" in (await first_callback(h, again)).content
        assert await h.balance(111) == 40 and len(await generations(h)) == 1

        second = await h.imagine("another big one", size="512x512", count=2)
        await first_callback(h, second)
        cancel = await h.send(h.payloads.click({**message_of(h, second), "flags": 64},
                                               by_label(message_of(h, second))["Cancel"]))
        cancelled = await first_callback(h, cancel)
        assert cancelled.json["type"] == 7 and cancelled.json["data"]["content"] == "Cancelled. Nothing was charged."
        assert await h.balance(111) == 40 and len(await generations(h)) == 1


async def test_a_button_above_the_threshold_asks_first_too(tmp_path: Path) -> None:
    async with DiscordHarness(tmp_path) as h:
        _, _, message = await imagined(h, size="512x512", count=2)
        await set_setting(h, "confirm_above", "5")
        press = await h.send(h.payloads.click(message, by_label(message)["Re-roll"]))
        ask = await first_callback(h, press)
        assert ask.ephemeral and "balance would go from 40 to 30" in ask.content
        assert await h.balance(111) == 40


# -- blends, /describe, /help ----------------------------------------------------------------------------

class Blender(ScriptedProvider):
    """A model that takes four input images; records what it got."""

    def __init__(self) -> None:
        super().__init__("blend")
        model = dataclasses.replace(self.capabilities.models[0], supports_reference=True, max_references=4)
        self.capabilities = dataclasses.replace(self.capabilities, models=(model,))
        self.inputs: list[list[bytes]] = []

    async def generate(self, request: GenerationRequest) -> list[GeneratedImage]:
        self.inputs.append([i for i in (request.reference, *request.references) if i is not None])
        return await super().generate(request)


async def test_imagine_blends_up_to_four_reference_images(tmp_path: Path) -> None:
    blender = Blender()
    async with DiscordHarness(tmp_path, providers=[blender]) as h:
        options = [h.payloads.opt("prompt", "all of these together"), h.payloads.opt("size", "256x256")]
        resolved: dict[str, Any] = {"attachments": {}}
        for n, name in enumerate(("reference", "reference2", "reference3", "reference4")):
            url = h.fake.serve(f"ref{n}.png", tiny_png(500 + n))
            aid, one = h.payloads.attachment_resolved(url, len(tiny_png(500 + n)), f"ref{n}.png")
            resolved["attachments"].update(one["attachments"])
            options.append(h.payloads.opt(name, aid, 11))
        token = await h.command("imagine", options, resolved=resolved)
        await h.result(token)
        assert blender.inputs == [[tiny_png(500 + n) for n in range(4)]]

        bad_id, bad = h.payloads.attachment_resolved("http://127.0.0.1:9/x.txt", 10, "x.txt", "text/plain")
        refused = await h.command("imagine", [options[0], h.payloads.opt("reference3", bad_id, 11)], resolved=bad)
        assert "IMG-VALID-REFERENCE" in (await first_callback(h, refused)).content
        assert await h.balance(111) == 47 and len(blender.inputs) == 1


async def test_describe_suggests_four_prompts_each_with_an_imagine_button(tmp_path: Path) -> None:
    async with DiscordHarness(tmp_path) as h:
        url = h.fake.serve("photo.png", tiny_png(42))
        aid, resolved = h.payloads.attachment_resolved(url, len(tiny_png(42)), "photo.png")
        token = await h.command("describe", [h.payloads.opt("image", aid, 11)], resolved=resolved)
        reply = await h.fake.wait_for(lambda: next((c for c in h.fake.for_token(token) if c.embeds), None))
        assert "Suggested prompts:" in reply.embeds[0]["description"]
        message = message_of(h, token)
        labels = by_label(message)
        assert set(labels) == {"Imagine 1", "Imagine 2", "Imagine 3", "Imagine 4"}
        described = (await generations(h))[0]
        assert described.command == "describe"
        prompts = (described.result_text or "").split("\n")
        spent = described.credits_consumed
        assert len(prompts) == 4 and await h.balance(111) == 50 - spent

        press = await h.send(h.payloads.click(message, labels["Imagine 3"]))
        await h.result(press)
        latest = (await generations(h))[0]
        assert latest.command == "imagine" and latest.prompt == prompts[2]

        bad_id, bad = h.payloads.attachment_resolved("http://127.0.0.1:9/x.txt", 10, "x.txt", "text/plain")
        refused = await h.command("describe", [h.payloads.opt("image", bad_id, 11)], resolved=bad)
        answer = await first_callback(h, refused)
        assert answer.ephemeral and "IMG-VALID-REFERENCE" in answer.content
        assert len(await generations(h)) == 2


async def test_help_is_private_and_names_the_commands_prices_and_balance(tmp_path: Path) -> None:
    async with DiscordHarness(tmp_path) as h:
        token = await h.command("help")
        text = await text_with(h, token, "Commands:")
        assert (await first_callback(h, token)).json == {"type": 5, "data": {"flags": 64}}
        assert "/describe" in text and "/history" in text and "Your balance: 50 credits." in text
        assert len(text) <= 2000


async def test_the_new_commands_are_registered(tmp_path: Path) -> None:
    async with DiscordHarness(tmp_path) as h:
        commands = {c["name"]: c for c in h.fake.commands["global"]}
        assert {"imagine", "enhance", "describe", "history", "show", "help", "settings", "credits",
                "credits-admin"} == set(commands)
        imagine = {o["name"]: o for o in commands["imagine"]["options"]}
        assert all(imagine[f"reference{n}"]["type"] == 11 for n in ("", "2", "3", "4"))
        keys = {c["value"] for o in commands["settings"]["options"] if o["name"] == "key" for c in o["choices"]}
        assert {"visibility", "confirm_above", "moderation"} <= keys
        assert [o["name"] for o in commands["show"]["options"]] == ["id"]


async def test_a_prompt_flagged_sexual_passes_only_in_an_age_restricted_channel_where_allowed(tmp_path: Path) -> None:
    async with FakeOpenAI() as openai:
        openai.moderation.flag("nude", "sexual")
        env = openai_env(openai.base_url, IMAGEBOT_PROVIDERS="local", IMAGEBOT_MODERATION="on")
        async with DiscordHarness(tmp_path, **env) as h:
            await set_setting(h, "adult", "on")
            plain = await h.imagine("a nude study", size="256x256")
            refused = await first_callback(h, plain)
            assert refused.ephemeral and "sexual" in refused.content and "(IMG-MOD" in refused.content
            assert await h.balance(111) == 50

            payload = h.payloads.command("imagine", [h.payloads.opt("prompt", "a nude study"),
                                                     h.payloads.opt("size", "256x256")])
            payload["channel"]["nsfw"] = True  # Discord's age-restricted flag on the interaction's channel
            adult = await h.send(payload)
            await h.result(adult)
            assert (await first_callback(h, adult)).json == {"type": 5}
            assert await h.balance(111) == 47


async def test_a_describe_job_is_finished_once_its_prompts_are_posted(tmp_path: Path) -> None:
    """A finished job is never delivered again by a worker after its lease runs out (no second post)."""
    async with DiscordHarness(tmp_path) as h:
        url = h.fake.serve("photo.png", tiny_png(42))
        aid, resolved = h.payloads.attachment_resolved(url, len(tiny_png(42)), "photo.png")
        token = await h.command("describe", [h.payloads.opt("image", aid, 11)], resolved=resolved)
        await h.fake.wait_for(lambda: next((c for c in h.fake.for_token(token) if c.embeds), None))
        assert h.core is not None
        described = (await generations(h))[0]
        await h.until(lambda: _done(h, described.id), timeout=3)


async def _done(h: DiscordHarness, generation_id: str) -> bool:
    assert h.core is not None
    job = await h.core.store.job(generation_id)
    return job is not None and job.state == "done"

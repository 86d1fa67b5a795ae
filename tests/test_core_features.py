"""Issue 13 through the core, on a real SQLite file with the offline renderer: edit, zoom out (the original's
pixels kept), describe, history, show, delete, settings, the confirm step. The adapters' tests drive the same
calls through discord.py and slack-bolt."""

from __future__ import annotations

import dataclasses
import io
from collections.abc import AsyncIterator
from pathlib import Path

import pytest
from PIL import Image

from bot.core import Imagebot
from bot.errors import ImagebotError, NotFound, PermissionDenied, ValidationError
from bot.models import Context, ImagineOptions, ImagineResult
from bot.replies import help_text, settings_text
from providers.local import LocalRenderer
from tests.doubles import ctx_for, make_config, make_core

ADDRESS = {"platform": "test", "where": "nowhere"}


@pytest.fixture
async def core(tmp_path: Path) -> AsyncIterator[Imagebot]:
    bot = make_core(make_config(tmp_path), [LocalRenderer()])
    await bot.start(catalogue=False)
    yield bot
    await bot.close()


def job_ctx(user: str = "u1", *, admin: bool = False) -> Context:
    return dataclasses.replace(ctx_for(user, admin=admin), address=ADDRESS)


async def first(core: Imagebot, prompt: str = "a red fox", user: str = "u1") -> ImagineResult:
    return await core.imagine(ctx_for(user), ImagineOptions(prompt=prompt, size="256x256"))


async def test_edit_is_charged_like_one_image_and_keeps_the_size(core: Imagebot) -> None:
    made = await first(core)
    before = await core.store.balance(ctx_for().identity)
    edited = await core.edit(ctx_for(), made.generation_id, 0, "make it blue")
    assert edited.images and (edited.images[0].width, edited.images[0].height) == (256, 256)
    assert before - await core.store.balance(ctx_for().identity) == edited.credits_spent > 0
    gen = await core.store.generation(edited.generation_id)
    assert gen is not None and gen.command == "edit" and gen.options["source"] == made.generation_id


async def test_zoom_out_keeps_the_original_pixels_in_the_middle(core: Imagebot) -> None:
    made = await first(core)
    assert "zoom-2" in await core.outpaint_ops(ctx_for(), made.generation_id)
    zoomed = await core.outpaint(ctx_for(), made.generation_id, 0, "zoom-2")
    original = Image.open(made.images[0].path).convert("RGB")
    result = Image.open(zoomed.images[0].path).convert("RGB")
    w, h = original.size
    assert result.size[0] >= 2 * w - 16 and result.size[1] >= 2 * h - 16
    x, y = (result.size[0] - w) // 2, (result.size[1] - h) // 2
    assert result.crop((x, y, x + w, y + h)).tobytes() == original.tobytes()


async def test_an_unknown_outpaint_op_is_refused_and_costs_nothing(core: Imagebot) -> None:
    made = await first(core)
    before = await core.store.balance(ctx_for().identity)
    with pytest.raises(ValidationError, match="zoom-2"):
        await core.outpaint(ctx_for(), made.generation_id, 0, "zoom-9")
    assert await core.store.balance(ctx_for().identity) == before


async def test_describe_suggests_four_prompts(core: Imagebot) -> None:
    made = await first(core)
    described = await core.describe(ctx_for(), made.images[0].path.read_bytes())
    assert len(described.prompts) == 4 and len(set(described.prompts)) == 4
    with pytest.raises(ValidationError):
        await core.describe(ctx_for(), b"not an image")


async def test_history_pages_show_and_delete(core: Imagebot) -> None:
    for n in range(12):
        await first(core, f"fox number {n}")
    page1 = await core.history(ctx_for(), 1)
    page2 = await core.history(ctx_for(), 2)
    assert (len(page1.items), len(page2.items), page1.pages, page1.total) == (10, 2, 2, 12)
    assert page1.items[0].prompt == "fox number 11" and page1.sheet and page1.sheet.startswith(b"\x89PNG")
    with pytest.raises(ValidationError):
        await core.history(ctx_for(), 3)
    shown = await core.show(ctx_for("someone-else"), page1.items[0].generation_id)  # anyone in the server
    assert shown.prompt == "fox number 11" and shown.images
    with pytest.raises(NotFound):
        await core.show(dataclasses.replace(ctx_for(), identity=dataclasses.replace(
            ctx_for().identity, server_id="other")), page1.items[0].generation_id)
    with pytest.raises(PermissionDenied):
        await core.delete(ctx_for("someone-else"), page1.items[0].generation_id)
    await core.delete(ctx_for(), page1.items[0].generation_id)
    with pytest.raises(NotFound):
        await core.show(ctx_for(), page1.items[0].generation_id)
    assert (await core.history(ctx_for(), 1)).total == 11


async def test_settings_are_for_admins_and_apply(core: Imagebot) -> None:
    with pytest.raises(PermissionDenied):
        await core.change_settings(ctx_for(), {"max_images": "1"})
    assert (await core.server_settings(ctx_for())).overridden == frozenset()
    with pytest.raises(ValidationError, match="max_images"):
        await core.change_settings(ctx_for(admin=True), {"max_images": "many"})
    with pytest.raises(ValidationError, match="Unknown setting"):
        await core.change_settings(ctx_for(admin=True), {"colour": "red"})
    view = await core.change_settings(ctx_for(admin=True), {"max_images": "1", "price_multiplier": "2"})
    assert view.values["max_images"] == "1" and "max_images" in view.overridden and view.log
    assert "max_images" in settings_text(view)
    with pytest.raises(ValidationError, match="1"):
        await core.enqueue(job_ctx(), "imagine", options=ImagineOptions(prompt="two foxes", size="256x256", count=2),
                           queued=False)
    queued = await core.enqueue(job_ctx(), "imagine", options=ImagineOptions(prompt="a fox", size="256x256"),
                                queued=False)
    assert queued.price == 6  # 3 credits at 256x256, times 2
    await core.run(queued.generation_id)
    info = await core.help(ctx_for())
    assert ("1024x1024 medium", 20) in info.prices and "x2" in help_text(info)
    await core.change_settings(ctx_for(admin=True), {"max_images": "default"})
    assert "max_images" not in (await core.server_settings(ctx_for())).overridden


async def test_the_confirm_step_charges_only_after_the_click(core: Imagebot) -> None:
    ctx = job_ctx()
    options = ImagineOptions(prompt="ten foxes", size="1024x1024", count=6)
    short = await core.quote(ctx, "imagine", options=options)  # 60 of 50: not asked, the enqueue refuses it
    assert not short.confirm and short.price == 60
    await core.adjust("test", ctx.identity, "grant", 100)
    quote = await core.quote(ctx, "imagine", options=options)
    assert quote.confirm and quote.price == 60 and quote.proposal_id and quote.balance_after == 90
    balance = await core.store.balance(ctx.identity)
    with pytest.raises(NotFound):
        await core.enqueue_proposal(job_ctx("u2"), quote.proposal_id, queued=False)  # not theirs
    queued = await core.enqueue_proposal(ctx, quote.proposal_id, queued=False)
    result = await core.run(queued.generation_id)
    assert isinstance(result, ImagineResult) and len(result.images) == 6
    assert await core.store.balance(ctx.identity) == balance - 60
    with pytest.raises(NotFound):
        await core.enqueue_proposal(ctx, quote.proposal_id, queued=False)  # once only
    small = await core.quote(ctx, "imagine", options=ImagineOptions(prompt="one fox", size="256x256"))
    assert not small.confirm and small.proposal_id is None


async def test_every_new_command_refuses_bad_input_without_charging(core: Imagebot) -> None:
    made = await first(core)
    before = await core.store.balance(ctx_for().identity)
    for call in (lambda: core.edit(ctx_for(), made.generation_id, 0, "\u200b\u0000"),
                 lambda: core.edit(ctx_for(), "nope", 0, "blue"),
                 lambda: core.outpaint(ctx_for(), "nope", 0, "zoom-2"),
                 lambda: core.history(ctx_for(), 0),
                 lambda: core.show(ctx_for(), "nope"),
                 lambda: core.delete(ctx_for(), "nope")):
        with pytest.raises(ImagebotError):
            await call()
    assert await core.store.balance(ctx_for().identity) == before
    # A blend of more inputs than allowed
    png = io.BytesIO()
    Image.new("RGB", (8, 8)).save(png, "PNG")
    with pytest.raises(ValidationError, match="At most 4"):
        core.plan(ctx_for(), ImagineOptions(prompt="x", reference=png.getvalue(), references=(png.getvalue(),) * 4))


async def test_a_blocklist_pattern_may_hold_commas(core: Imagebot) -> None:
    view = await core.change_settings(ctx_for(admin=True), {"blocklist": "clown, /zo{1,3}m/"})
    assert view.values["blocklist"].count(",") >= 1 and "/zo{1,3}m/" in view.values["blocklist"]
    before = await core.store.balance(ctx_for().identity)
    with pytest.raises(ValidationError) as refused:
        await core.enqueue(job_ctx(), "imagine", options=ImagineOptions(prompt="zooom in", size="256x256"),
                           queued=False)
    assert refused.value.code == "IMG-MOD-BLOCKED"
    assert await core.store.balance(ctx_for().identity) == before


async def test_an_in_process_imagine_records_the_command_it_was_given(core: Imagebot) -> None:
    made = await core.imagine(ctx_for(), ImagineOptions(prompt="a fox", size="256x256"), command="remix")
    gen = await core.store.generation(made.generation_id)
    assert gen is not None and gen.command == "remix"

"""What happens for each command and button, as translations: interaction -> core call -> Discord calls.

A command that costs credits goes to ``core.accept`` first: above the server's threshold the asker gets a
private Confirm / Cancel and nothing is charged until Confirm (``core.enqueue_proposal``). Otherwise, and
on Confirm, it is reserved as a job (its row holding the interaction's token), then
deferred (privately where the server's visibility is private), then run here by the shared job runner
(``bot.jobs``) as a ``Job``: the core call, the progress display (edits of the original response) and the
delivery targets. A refusal is the first response, privately. Nothing is acknowledged without its job, so a
process killed after the defer leaves a job any worker resumes. Free commands (/history, /show, /help,
/settings, /credits) are deferred first, then answered. No rule about credits, limits, permissions,
delivery fallbacks or shutdown lives here: the core decides, this module words and posts.
"""

from __future__ import annotations

import dataclasses
import logging
from collections.abc import Awaitable, Callable, Sequence
from typing import Any

import discord

from bot.errors import ImagebotError, ValidationError
from bot.jobs import Job, Progress, owned_generation, prompt_of
from bot.models import (
    Context,
    DescribeResult,
    EnhanceResult,
    HistoryPage,
    ImagineOptions,
    ImagineResult,
    Queued,
    Quote,
)
from bot.references import REFERENCE_LIMIT
from bot.replies import (
    adjust_summary,
    credits_summary,
    error_text,
    help_text,
    plural,
    restarting_text,
    settings_text,
    usage_summary,
)
from bot.validation import clean_prompt

from .context import Press, Runtime, context_for, dm_refusal, identity_of, runtime_of
from .delivery import ImageOutlet, Outgoing, Reply, ReplyOutlet, Shown, ShownOutlet, defer, dm, say, to_file
from .embeds import confirm_text, describe_embed, enhance_embed, history_embed, result_embed
from .fitting import Upload
from .progress import ProgressMessage
from .views import (
    EditModal,
    confirm_view,
    describe_view,
    enhance_view,
    history_view,
    image_tools_view,
    modal_value,
    parse_custom_id,
    pick_view,
    result_view,
)

log = logging.getLogger(__name__)

EXPIRED = ("Discord gave up on your command before the bot could answer it (it was too slow to arrive). "
           "Nothing was charged: please run it again. (IMG-DISCORD-EXPIRED)")
INTERNAL = "Something went wrong on the bot's side; nothing was charged. (IMG-INTERNAL-001)"
CANCELLED = "Cancelled. Nothing was charged."
DELETED = "\N{WASTEBASKET} Deleted."
#: The image buttons whose job kind is the core's own name for it.
KINDS = {"rr": "reroll", "va": "variations", "up": "upscale"}

Work = Callable[[Progress | None], Awaitable[Any]]
Enqueue = Callable[[], Awaitable[Queued | None]]


def register(rt: Runtime) -> None:
    """The component handlers, registered on the runtime (the views only carry ids and look them up here)."""
    handlers: dict[str, Callable[[discord.Interaction, Runtime, Press], Awaitable[None]]] = {
        **dict.fromkeys(("rr", "va", "up", "en", "im"), _generation_button),
        "ed": _edit_pressed, "op": _outpaint_chosen, "tl": _tools_pressed, "pk": _image_picked,
        "dl": _delete_pressed, "hp": _history_page, "hs": _show_chosen, "ok": _confirm_pressed,
        "no": _cancel_pressed,
    }
    for action, handler in handlers.items():
        rt.buttons[action] = _guarded(handler)


def _guarded(handler: Callable[[discord.Interaction, Runtime, Press], Awaitable[None]],
             ) -> Callable[[discord.Interaction, Press], Awaitable[None]]:
    """A component callback's errors are only logged by discord.py: answer anyway. DMs turned off and user
    errors (an unknown generation...) are answered privately, as the first response."""
    async def run(interaction: discord.Interaction, press: Press) -> None:
        rt = runtime_of(interaction)
        try:
            if (refusal := dm_refusal(interaction, rt.settings)) is not None:
                await say(interaction, refusal)
                return
            await handler(interaction, rt, press)
        except ImagebotError as exc:
            await say(interaction, error_text(exc))
        except Exception:
            log.exception("component %s for %s failed", press.action, press.key)
            await say(interaction, INTERNAL)

    return run


async def _asker(interaction: discord.Interaction, rt: Runtime) -> tuple[Context, bool]:
    """The asker's context and whether this server posts results privately; a private one's address says
    so, so that no courier ever posts it in the channel."""
    ctx = context_for(interaction, rt.settings)
    if await rt.core.visibility(ctx) != "private":
        return ctx, False
    return context_for(interaction, rt.settings, ephemeral=True), True


async def _start(interaction: discord.Interaction, rt: Runtime, job: Job[Any], *, ephemeral: bool = False,
                 expired: str = EXPIRED) -> None:
    """Acknowledge first (Discord's 3 s), then hand the job to the runner (commands that move no credit)."""
    if not rt.jobs.accepting:
        await say(interaction, restarting_text())
        return
    if not await rt.jobs.acknowledge(lambda: defer(interaction, ephemeral=ephemeral)):
        await dm(interaction.user, expired)
        return
    # Awaited in discord.py's task for this interaction (measurably kinder to the defers of a burst than a
    # callback that returns at once); the job itself is the runner's, tracked and drained at shutdown.
    await rt.jobs.run(job)


async def _accept(interaction: discord.Interaction, rt: Runtime, ctx: Context, enqueue: Enqueue, *,
                  private: bool = False) -> None:
    """Reserve the job (its row written with the interaction's token), then defer, then run it here: no
    command is acknowledged without a job, so a process killed after the defer leaves a job any worker
    resumes. A refusal (nothing charged) is the first, private response; so is the confirm step
    (``enqueue`` answers None then). A defer Discord refuses gives the credits back."""
    if not rt.jobs.accepting:
        await say(interaction, restarting_text())
        return
    try:
        queued = await enqueue()
    except ImagebotError as exc:
        await say(interaction, error_text(exc))
        return
    if queued is None:
        return
    if not await rt.jobs.acknowledge(lambda: defer(interaction, ephemeral=private)):
        await rt.core.abandon(queued.generation_id)
        await dm(interaction.user, EXPIRED)
        return

    async def work(progress: Progress | None) -> Any:
        return await rt.core.run(queued.generation_id, progress)

    if queued.kind == "enhance":
        job: Job[Any] = _enhance_job(interaction, work)
    elif queued.kind == "describe":
        job = _describe_job(interaction, work)
    else:
        job = _images_job(interaction, rt, ctx, queued.kind, work)
    await rt.jobs.run(job)


async def _priced(interaction: discord.Interaction, rt: Runtime, ctx: Context, kind: str,
                  **args: Any) -> Queued | None:
    """The confirm step: above the server's threshold, a private Confirm / Cancel with the price and the
    balance after (None: answered); otherwise the job, reserved (``_accept`` runs it)."""
    accepted = await rt.core.accept(ctx, kind, queued=False, **args)
    if isinstance(accepted, Quote):
        assert accepted.proposal_id is not None
        await say(interaction, confirm_text(accepted), view=confirm_view(accepted.proposal_id))
        return None
    return accepted


async def _ops(rt: Runtime, ctx: Context, generation_id: str, index: int) -> tuple[str, ...] | None:
    """The outpaint ops to offer for an image; None when the core could not say (all are listed then, and
    the core refuses one the model cannot do, clearly and free)."""
    try:
        return await rt.core.outpaint_ops(ctx, generation_id, index)
    except Exception:  # noqa: BLE001 - a courtesy: the result is posted anyway
        log.warning("outpaint ops of %s unknown", generation_id, exc_info=True)
        return None


def _images_job(interaction: discord.Interaction, rt: Runtime, ctx: Context, kind: str,
                work: Work) -> Job[ImagineResult]:
    offered: list[tuple[str, ...] | None] = [None]

    async def run(progress: Progress | None) -> ImagineResult:
        result: ImagineResult = await work(progress)
        if len(result.images) == 1:
            offered[0] = await _ops(rt, ctx, result.generation_id, 0)
        return result

    def build(result: ImagineResult) -> Outgoing:
        return _outgoing(interaction, result, offered[0])

    return Job(kind, run, ImageOutlet(interaction, build), ProgressMessage(interaction))


def _outgoing(interaction: discord.Interaction, result: ImagineResult, ops: Sequence[str] | None) -> Outgoing:
    return Outgoing(embed=result_embed(result, interaction.user), images=result.images,
                    stem=f"imagebot-{result.generation_id[-8:]}", view=result_view(result, ops))


# -- /imagine, /describe and the image buttons ------------------------------------------------------

async def imagine_command(interaction: discord.Interaction, options: ImagineOptions,
                          references: Sequence[discord.Attachment | None]) -> None:
    """Up to four reference images (a blend); their URLs are fetched when the job runs, so the defer never
    waits for Discord's CDN."""
    rt = runtime_of(interaction)
    if (refusal := dm_refusal(interaction, rt.settings)) is not None:
        await say(interaction, refusal)
        return
    attached = [r for r in references if r is not None]
    try:
        for reference in attached:
            _check_reference(reference)
        ctx, private = await _asker(interaction, rt)
    except ImagebotError as exc:
        await say(interaction, error_text(exc))
        return
    if attached:
        options = dataclasses.replace(options, reference_urls=tuple(r.url for r in attached))
    await _accept(interaction, rt, ctx, lambda: _priced(interaction, rt, ctx, "imagine", options=options),
                  private=private)


async def describe_command(interaction: discord.Interaction, image: discord.Attachment) -> None:
    rt = runtime_of(interaction)
    if (refusal := dm_refusal(interaction, rt.settings)) is not None:
        await say(interaction, refusal)
        return
    try:
        _check_reference(image, what="The image to describe")
        ctx, private = await _asker(interaction, rt)
    except ImagebotError as exc:
        await say(interaction, error_text(exc))
        return
    options = ImagineOptions(prompt="", reference_urls=(image.url,))
    await _accept(interaction, rt, ctx, lambda: _priced(interaction, rt, ctx, "describe", options=options),
                  private=private)


def _check_reference(reference: discord.Attachment, *, what: str = "The reference") -> None:
    if reference.content_type and not reference.content_type.startswith("image/"):
        raise ValidationError(f"{what} must be an image (PNG, JPEG, WebP or GIF).", code="IMG-VALID-REFERENCE")
    if reference.size > REFERENCE_LIMIT:
        raise ValidationError(
            f"{what} is {reference.size // (1024 * 1024)} MiB; the limit is "
            f"{REFERENCE_LIMIT // (1024 * 1024)} MiB.", code="IMG-VALID-REFERENCE",
        )


def _describe_job(interaction: discord.Interaction, work: Work) -> Job[DescribeResult]:
    def render(result: DescribeResult) -> Reply:
        return Reply(embed=describe_embed(result, interaction.user), view=describe_view(result))

    return Job("describe", work, ReplyOutlet(interaction, render))


async def _generation_button(interaction: discord.Interaction, rt: Runtime, press: Press) -> None:
    """Re-roll, Variations, Upscale, Enhance, Imagine this (and Imagine n under /describe): the presser
    is the one who pays."""
    ctx, private = await _asker(interaction, rt)
    core, gen = rt.core, press.key

    async def enqueue() -> Queued | None:
        if press.action in KINDS:
            return await _priced(interaction, rt, ctx, KINDS[press.action], generation_id=gen, index=press.index or 0)
        if press.action == "en":
            prompt = await prompt_of(core, ctx, gen, enhanced=False)
            return await _priced(interaction, rt, ctx, "enhance", prompt=prompt)
        prompt = await prompt_of(core, ctx, gen, enhanced=True, index=press.index or 0)
        return await _priced(interaction, rt, ctx, "imagine", options=ImagineOptions(prompt=prompt))

    await _accept(interaction, rt, ctx, enqueue, private=private)


async def _edit_pressed(interaction: discord.Interaction, rt: Runtime, press: Press) -> None:
    """Opens "What should change?"; the submit arrives as its own interaction (``modal_submitted``), read
    by its custom id, so it works in whichever process receives it."""
    await owned_generation(rt.core, context_for(interaction, rt.settings), press.key)
    modal = EditModal(press.key, press.index or 0)
    await interaction.response.send_modal(modal)
    modal.stop()  # nothing waits for it in memory: ``modal_submitted`` reads the submit by its id


async def modal_submitted(interaction: discord.Interaction) -> None:
    """The Edit modal's submit (``Client.on_interaction``): priced, then run like any job."""
    data: Any = interaction.data or {}
    press = parse_custom_id(str(data.get("custom_id") or ""))
    if press is None or press.action != "ed":
        return

    async def edit(interaction: discord.Interaction, rt: Runtime, press: Press) -> None:
        text = modal_value(data.get("components"))
        ctx, private = await _asker(interaction, rt)
        await _accept(interaction, rt, ctx, lambda: _priced(
            interaction, rt, ctx, "edit", generation_id=press.key, index=press.index or 0, prompt=text),
            private=private)

    await _guarded(edit)(interaction, press)


async def _outpaint_chosen(interaction: discord.Interaction, rt: Runtime, press: Press) -> None:
    op = press.values[0] if press.values else ""
    ctx, private = await _asker(interaction, rt)
    await _accept(interaction, rt, ctx, lambda: _priced(
        interaction, rt, ctx, "outpaint", generation_id=press.key, index=press.index or 0, op=op), private=private)


async def _tools_pressed(interaction: discord.Interaction, rt: Runtime, press: Press) -> None:
    """Edit or extend… under several images: which one (privately; free)."""
    gen = await owned_generation(rt.core, context_for(interaction, rt.settings), press.key)
    await say(interaction, "Which image do you want to edit or extend?", view=pick_view(press.key, len(gen.images)))


async def _image_picked(interaction: discord.Interaction, rt: Runtime, press: Press) -> None:
    value = press.values[0] if press.values else ""
    if not value.isdigit() or int(value) > 24:
        raise ValidationError("Choose one of the images listed.", code="IMG-VALID-001")
    index = int(value)
    ops = await _ops(rt, context_for(interaction, rt.settings), press.key, index)
    await interaction.response.edit_message(content=f"Image {index + 1}:",
                                            view=image_tools_view(press.key, index, ops or ()))


async def _delete_pressed(interaction: discord.Interaction, rt: Runtime, press: Press) -> None:
    """The asker or an admin (the core decides); then the message goes too (its images stay in the
    store for the ledger's record until the operator prunes them)."""
    await rt.core.delete(context_for(interaction, rt.settings), press.key)
    await interaction.response.defer()  # a component's deferred update: "@original" is this message
    try:
        await interaction.delete_original_response()
    except discord.HTTPException as exc:
        log.info("could not delete result message %s: %s (%s)", press.key, exc.status, exc.code)
        await say(interaction, DELETED)


async def _confirm_pressed(interaction: discord.Interaction, rt: Runtime, press: Press) -> None:
    """Runs exactly what was quoted, once, for its asker only (the core refuses a second click)."""
    ctx, private = await _asker(interaction, rt)
    await _accept(interaction, rt, ctx, lambda: rt.core.enqueue_proposal(ctx, press.key, queued=False),
                  private=private)


async def _cancel_pressed(interaction: discord.Interaction, rt: Runtime, press: Press) -> None:
    """Nothing was stored against the balance: the proposal just expires."""
    await interaction.response.edit_message(content=CANCELLED, view=None)


# -- /history, /show -----------------------------------------------------------------------------------

def history_reply(page: HistoryPage) -> Reply:
    name = f"history-{page.page}.png"
    files = (Upload(page.sheet, name),) if page.sheet else ()
    return Reply(embed=history_embed(page, name if files else None), view=history_view(page), files=files)


async def history_command(interaction: discord.Interaction, page: int) -> None:
    rt = runtime_of(interaction)
    if (refusal := dm_refusal(interaction, rt.settings)) is not None:
        await say(interaction, refusal)
        return
    ctx = context_for(interaction, rt.settings, ephemeral=True)

    async def work(progress: Progress | None) -> Reply:
        try:
            return history_reply(await rt.core.history(ctx, page))
        except ImagebotError as exc:
            return Reply(text=error_text(exc))

    await _start(interaction, rt, Job("history", work, ReplyOutlet(interaction, _same)), ephemeral=True)


async def _history_page(interaction: discord.Interaction, rt: Runtime, press: Press) -> None:
    """Prev / Next: the same private message, another page."""
    page = await rt.core.history(context_for(interaction, rt.settings), int(press.key))
    reply = history_reply(page)
    await interaction.response.defer()
    await interaction.edit_original_response(embed=reply.embed, view=reply.view,
                                             attachments=[to_file(u) for u in reply.files])


async def show_command(interaction: discord.Interaction, generation_id: str) -> None:
    rt = runtime_of(interaction)
    if (refusal := dm_refusal(interaction, rt.settings)) is not None:
        await say(interaction, refusal)
        return
    try:
        await _show(interaction, rt, generation_id)
    except ImagebotError as exc:
        await say(interaction, error_text(exc))


async def _show_chosen(interaction: discord.Interaction, rt: Runtime, press: Press) -> None:
    await _show(interaction, rt, press.values[0] if press.values else "")


async def _show(interaction: discord.Interaction, rt: Runtime, generation_id: str) -> None:
    """A stored result again with all its buttons, free (nothing is charged, refunded or leased)."""
    ctx, private = await _asker(interaction, rt)
    result = await rt.core.show(ctx, generation_id)
    ops = await _ops(rt, ctx, result.generation_id, 0) if len(result.images) == 1 else None

    async def work(progress: Progress | None) -> Shown:
        return Shown(result)

    outlet = ShownOutlet(ImageOutlet(interaction, lambda r: _outgoing(interaction, r, ops)))
    await _start(interaction, rt, Job("show", work, outlet), ephemeral=private)


# -- /help, /settings ---------------------------------------------------------------------------------

async def help_command(interaction: discord.Interaction) -> None:
    rt = runtime_of(interaction)
    ctx = context_for(interaction, rt.settings, ephemeral=True)

    async def work(progress: Progress | None) -> str:
        try:
            return fit_text(help_text(await rt.core.help(ctx)), tail="… run /help in the console for the rest.")
        except ImagebotError as exc:
            return error_text(exc)

    await _start(interaction, rt, Job("help", work, ReplyOutlet(interaction, _text)), ephemeral=True)


async def settings_command(interaction: discord.Interaction, key: str | None, value: str | None) -> None:
    """No options: show. A key and a value: change it (admins only, decided by the core; the admin check
    of the context is the same as /credits-admin's: Manage Server or the configured admin roles)."""
    rt = runtime_of(interaction)
    if (refusal := dm_refusal(interaction, rt.settings)) is not None:
        await say(interaction, refusal)
        return
    if (key is None) != (value is None) or (key is not None and not key.strip()):
        await say(interaction, error_text(ValidationError(
            "Give both a setting and a value to change it, or neither to see the settings.", code="IMG-VALID-SETTING")))
        return
    ctx = context_for(interaction, rt.settings, ephemeral=True)

    async def work(progress: Progress | None) -> str:
        try:
            if key is not None and value is not None:
                view = await rt.core.change_settings(ctx, {key.strip(): value.strip()})
                return fit_text(f"Saved: {key.strip()} = {value.strip()[:200]}.\n" + settings_text(view))
            return fit_text(settings_text(await rt.core.server_settings(ctx)))
        except ImagebotError as exc:
            return error_text(exc)

    await _start(interaction, rt, Job("settings", work, ReplyOutlet(interaction, _text)), ephemeral=True,
                 expired=EXPIRED.replace("Nothing was charged", "Nothing was changed"))


# -- /enhance --------------------------------------------------------------------------------------

async def enhance_command(interaction: discord.Interaction, prompt: str) -> None:
    rt = runtime_of(interaction)
    if (refusal := dm_refusal(interaction, rt.settings)) is not None:
        await say(interaction, refusal)
        return
    try:
        text = clean_prompt(prompt)
    except ImagebotError as exc:
        await say(interaction, error_text(exc))
        return
    try:
        ctx, private = await _asker(interaction, rt)
    except ImagebotError as exc:
        await say(interaction, error_text(exc))
        return
    await _accept(interaction, rt, ctx, lambda: _priced(interaction, rt, ctx, "enhance", prompt=text),
                  private=private)


def _enhance_job(interaction: discord.Interaction, work: Callable[[Progress | None], Awaitable[EnhanceResult]],
                 ) -> Job[EnhanceResult]:
    def render(result: EnhanceResult) -> Reply:
        return Reply(embed=enhance_embed(result, interaction.user), view=enhance_view(result))

    return Job("enhance", work, ReplyOutlet(interaction, render))


# -- /credits and /credits-admin -------------------------------------------------------------------

async def credits_command(interaction: discord.Interaction) -> None:
    rt = runtime_of(interaction)
    if (refusal := dm_refusal(interaction, rt.settings)) is not None:
        await say(interaction, refusal)
        return
    if not rt.jobs.accepting:
        await say(interaction, restarting_text())
        return
    acknowledged = await rt.jobs.acknowledge(lambda: defer(interaction, ephemeral=True))
    ctx = context_for(interaction, rt.settings)

    async def work(progress: Progress | None) -> str:
        text = credits_summary(await rt.core.credits(ctx.identity))
        if ctx.identity.server_id.startswith("dm-"):
            text += "\n(This is your direct-message account; each server has its own.)"
        return text

    # Discord forgot the interaction: the balance goes by DM instead.
    await rt.jobs.run(Job("credits", work, ReplyOutlet(interaction, _text, direct=not acknowledged)))


async def adjust_command(interaction: discord.Interaction, kind: str, member: discord.abc.User, amount: int) -> None:
    rt = runtime_of(interaction)
    ctx = context_for(interaction, rt.settings)

    async def work(progress: Progress | None) -> str:
        try:
            result = await rt.core.admin_adjust(ctx, identity_of(interaction, member), kind, amount)
        except ImagebotError as exc:
            return error_text(exc)
        return adjust_summary(result, member.mention)

    await _start(interaction, rt, Job("admin", work, ReplyOutlet(interaction, _text)), ephemeral=True,
                 expired=EXPIRED.replace("Nothing was charged", "Nothing was changed"))


async def usage_command(interaction: discord.Interaction, days: int) -> None:
    rt = runtime_of(interaction)
    ctx = context_for(interaction, rt.settings)

    async def work(progress: Progress | None) -> str:
        try:
            rows = await rt.core.usage_report(ctx, since_seconds=days * 86400)
        except ImagebotError as exc:
            return error_text(exc)
        return _fit_text(f"Usage in the last {plural(days, 'day')}:\n" + usage_summary(
            [{**r, "user_id": f"<@{r['user_id']}>"} for r in rows]))

    await _start(interaction, rt, Job("usage", work, ReplyOutlet(interaction, _text)), ephemeral=True)


def _text(text: str) -> Reply:
    return Reply(text=text)


def _same(reply: Reply) -> Reply:
    return reply


def fit_text(text: str, limit: int = 2000, *, tail: str = "") -> str:
    """Whole lines up to Discord's 2000 characters, saying how many were left out."""
    if len(text) <= limit:
        return text
    lines = text.split("\n")
    kept: list[str] = []
    for i, line in enumerate(lines):
        rest = f"\n… {plural(len(lines) - i, 'more line')}{' ' + tail if tail else ''}"
        if len("\n".join([*kept, line])) + len(rest) > limit:
            return "\n".join(kept) + rest
        kept.append(line)
    return "\n".join(kept)


def _fit_text(text: str, limit: int = 2000) -> str:
    """Discord messages hold 2000 characters: cut whole lines and say how many were left out."""
    if len(text) <= limit:
        return text
    lines = text.split("\n")
    kept: list[str] = []
    for i, line in enumerate(lines):
        tail = f"\n… {len(lines) - i} more lines: run `imagebot usage` on the server for all of them."
        if len("\n".join([*kept, line])) + len(tail) > limit:
            return "\n".join(kept) + tail
        kept.append(line)
    return "\n".join(kept)


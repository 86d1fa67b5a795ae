"""What happens for each command and button, as translations: interaction -> core call -> Discord calls.

Every flow acknowledges first. Input that ``core.plan`` (sync, no I/O) refuses is answered in that first
response, privately; anything else is deferred at once and handed to the shared job runner (``bot.jobs``)
as a ``Job``: the core call, the progress display (edits of the original response) and the delivery
targets. No rule about credits, limits, delivery fallbacks or shutdown lives here.
"""

from __future__ import annotations

import asyncio
import dataclasses
import logging
from collections.abc import Awaitable, Callable
from typing import Any

import discord

from bot.errors import ImagebotError, ValidationError
from bot.jobs import Job, Progress, prompt_of
from bot.models import Context, EnhanceResult, ImagineOptions, ImagineResult
from bot.replies import adjust_summary, credits_summary, error_text, plural, restarting_text, usage_summary
from bot.validation import clean_prompt

from .context import Runtime, context_for, dm_refusal, identity_of, runtime_of
from .delivery import ImageOutlet, Outgoing, Reply, ReplyOutlet, defer, dm, say
from .embeds import enhance_embed, result_embed
from .progress import ProgressMessage
from .views import enhance_view, result_view

log = logging.getLogger(__name__)

EXPIRED = ("Discord gave up on your command before the bot could answer it (it was too slow to arrive). "
           "Nothing was charged: please run it again. (IMG-DISCORD-EXPIRED)")
INTERNAL = "Something went wrong on the bot's side; nothing was charged. (IMG-INTERNAL-001)"
#: Larger references are refused before download (providers take far less).
REFERENCE_LIMIT = 20 * 1024 * 1024
#: Seconds a reference download may take.
REFERENCE_TIMEOUT = 30.0

Work = Callable[[Progress | None], Awaitable[ImagineResult]]


def register(rt: Runtime) -> None:
    """The button handlers, registered on the runtime (the views only carry ids and look them up here)."""
    for action in ("rr", "va", "up", "en", "im"):
        rt.buttons[action] = button_pressed


async def _start(interaction: discord.Interaction, rt: Runtime, job: Job[Any], *, ephemeral: bool = False,
                 expired: str = EXPIRED) -> None:
    """Acknowledge first (Discord's 3 s), then hand the job to the runner."""
    if not rt.jobs.accepting:
        await say(interaction, restarting_text())
        return
    if not await rt.jobs.acknowledge(lambda: defer(interaction, ephemeral=ephemeral)):
        await dm(interaction.user, expired)
        return
    # Awaited in discord.py's task for this interaction (measurably kinder to the defers of a burst than a
    # callback that returns at once); the job itself is the runner's, tracked and drained at shutdown.
    await rt.jobs.run(job)


def _images_job(interaction: discord.Interaction, kind: str, work: Work) -> Job[ImagineResult]:
    def build(result: ImagineResult) -> Outgoing:
        return Outgoing(embed=result_embed(result, interaction.user), images=result.images,
                        stem=f"imagebot-{result.generation_id[-8:]}", view=result_view(result))

    return Job(kind, work, ImageOutlet(interaction, build), ProgressMessage(interaction))


# -- /imagine and the image buttons ----------------------------------------------------------------

async def imagine_command(interaction: discord.Interaction, options: ImagineOptions,
                          reference: discord.Attachment | None) -> None:
    rt = runtime_of(interaction)
    if (refusal := dm_refusal(interaction, rt.settings)) is not None:
        await say(interaction, refusal)
        return
    ctx = context_for(interaction, rt.settings)
    try:
        rt.core.plan(ctx, options)  # sync, no I/O: bad input is refused in the first, private response
        _check_reference(reference)
    except ImagebotError as exc:
        await say(interaction, error_text(exc))
        return

    async def work(progress: Progress | None) -> ImagineResult:
        opts = options
        if reference is not None:
            opts = dataclasses.replace(options, reference=await _download(reference))
        return await rt.core.imagine(ctx, opts, progress=progress)

    await _start(interaction, rt, _images_job(interaction, "imagine", work))


def _check_reference(reference: discord.Attachment | None) -> None:
    if reference is None:
        return
    if reference.content_type and not reference.content_type.startswith("image/"):
        raise ValidationError("The reference must be an image (PNG, JPEG, WebP or GIF).", code="IMG-VALID-REFERENCE")
    if reference.size > REFERENCE_LIMIT:
        raise ValidationError(
            f"The reference image is {reference.size // (1024 * 1024)} MiB; the limit is "
            f"{REFERENCE_LIMIT // (1024 * 1024)} MiB.", code="IMG-VALID-REFERENCE",
        )


async def _download(reference: discord.Attachment) -> bytes:
    """Bounded in size (checked before, from Discord's metadata) and in time; decoded by the core."""
    try:
        async with asyncio.timeout(REFERENCE_TIMEOUT):
            return await reference.read()
    except (discord.HTTPException, TimeoutError):
        raise ValidationError("The reference image could not be downloaded from Discord; attach it again.",
                              code="IMG-VALID-REFERENCE") from None


async def button_pressed(interaction: discord.Interaction, action: str, generation_id: str, index: int) -> None:
    """Re-roll, Variations, Upscale, Enhance, Imagine this: the presser is the one who pays."""
    rt = runtime_of(interaction)
    try:
        if (refusal := dm_refusal(interaction, rt.settings)) is not None:
            await say(interaction, refusal)
            return
        ctx = context_for(interaction, rt.settings)
        core = rt.core
        if action == "en":
            await _start(interaction, rt, _enhance_job(
                interaction, rt, ctx, lambda: prompt_of(core, ctx, generation_id, enhanced=False)))
            return
        works: dict[str, tuple[str, Work]] = {
            "rr": ("reroll", lambda p: core.reroll(ctx, generation_id, progress=p)),
            "va": ("variations", lambda p: core.variations(ctx, generation_id, index, progress=p)),
            "up": ("upscale", lambda p: core.upscale(ctx, generation_id, index, progress=p)),
        }

        async def imagine_this(p: Progress | None) -> ImagineResult:
            prompt = await prompt_of(core, ctx, generation_id, enhanced=True)
            return await core.imagine(ctx, ImagineOptions(prompt=prompt), progress=p)

        kind, work = works.get(action, ("imagine", imagine_this))
        await _start(interaction, rt, _images_job(interaction, kind, work))
    except Exception:  # a button callback's errors are only logged by discord.py: answer anyway
        log.exception("button %s for %s failed", action, generation_id)
        await say(interaction, INTERNAL)


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

    async def given() -> str:
        return text

    await _start(interaction, rt, _enhance_job(interaction, rt, context_for(interaction, rt.settings), given))


def _enhance_job(interaction: discord.Interaction, rt: Runtime, ctx: Context,
                 prompt: Callable[[], Awaitable[str]]) -> Job[EnhanceResult]:
    async def work(progress: Progress | None) -> EnhanceResult:
        return await rt.core.enhance(ctx, await prompt())

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


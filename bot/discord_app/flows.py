"""What happens for each command and button, as translations: interaction -> core call -> Discord calls.

A command that costs credits is reserved as a job first (``core.enqueue``, its row holding the
interaction's token), then deferred, then run here by the shared job runner (``bot.jobs``) as a ``Job``:
the core call, the progress display (edits of the original response) and the delivery targets. A refusal
is the first response, privately. Nothing is acknowledged without its job, so a process killed after the
defer leaves a job any worker resumes. No rule about credits, limits, delivery fallbacks or shutdown lives
here.
"""

from __future__ import annotations

import dataclasses
import logging
from collections.abc import Awaitable, Callable
from typing import Any

import discord

from bot.errors import ImagebotError, ValidationError
from bot.jobs import Job, Progress, prompt_of
from bot.models import EnhanceResult, ImagineOptions, ImagineResult, Queued
from bot.references import REFERENCE_LIMIT
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

Work = Callable[[Progress | None], Awaitable[ImagineResult]]


def register(rt: Runtime) -> None:
    """The button handlers, registered on the runtime (the views only carry ids and look them up here)."""
    for action in ("rr", "va", "up", "en", "im"):
        rt.buttons[action] = button_pressed


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


async def _accept(interaction: discord.Interaction, rt: Runtime, kind: str,
                  enqueue: Callable[[], Awaitable[Queued]]) -> None:
    """Reserve the job (its row written with the interaction's token), then defer, then run it here: no
    command is acknowledged without a job, so a process killed after the defer leaves a job any worker
    resumes. A refusal (nothing charged) is the first, private response; a defer Discord refuses gives the
    credits back."""
    if not rt.jobs.accepting:
        await say(interaction, restarting_text())
        return
    try:
        queued = await enqueue()
    except ImagebotError as exc:
        await say(interaction, error_text(exc))
        return
    if not await rt.jobs.acknowledge(lambda: defer(interaction)):
        await rt.core.abandon(queued.generation_id)
        await dm(interaction.user, EXPIRED)
        return

    async def work(progress: Progress | None) -> Any:
        return await rt.core.run(queued.generation_id, progress)

    job = _enhance_job(interaction, work) if kind == "enhance" else _images_job(interaction, kind, work)
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
        _check_reference(reference)
    except ImagebotError as exc:
        await say(interaction, error_text(exc))
        return
    if reference is not None:  # fetched when the job runs: the defer never waits for Discord's CDN
        options = dataclasses.replace(options, reference_urls=(reference.url,))
    await _accept(interaction, rt, "imagine", lambda: rt.core.enqueue(ctx, "imagine", options=options, queued=False))


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


async def button_pressed(interaction: discord.Interaction, action: str, generation_id: str, index: int) -> None:
    """Re-roll, Variations, Upscale, Enhance, Imagine this: the presser is the one who pays."""
    rt = runtime_of(interaction)
    try:
        if (refusal := dm_refusal(interaction, rt.settings)) is not None:
            await say(interaction, refusal)
            return
        ctx = context_for(interaction, rt.settings)
        core = rt.core
        kinds = {"rr": "reroll", "va": "variations", "up": "upscale"}

        async def enqueue() -> Queued:
            if action in kinds:
                return await core.enqueue(ctx, kinds[action], generation_id=generation_id, index=index, queued=False)
            prompt = await prompt_of(core, ctx, generation_id, enhanced=action != "en")
            if action == "en":
                return await core.enqueue(ctx, "enhance", prompt=prompt, queued=False)
            return await core.enqueue(ctx, "imagine", options=ImagineOptions(prompt=prompt), queued=False)

        await _accept(interaction, rt, kinds.get(action, "enhance" if action == "en" else "imagine"), enqueue)
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
    ctx = context_for(interaction, rt.settings)
    await _accept(interaction, rt, "enhance", lambda: rt.core.enqueue(ctx, "enhance", prompt=text, queued=False))


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


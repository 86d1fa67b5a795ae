"""What happens for each command and button, as translations: interaction -> core call -> Discord calls.

Every flow acknowledges first. Input that ``core.plan`` (sync, no I/O) refuses is answered in that first
response, privately; anything else is deferred at once, then the core runs and the original response is
edited with progress and the result. No rule about credits, limits or providers lives here.
"""

from __future__ import annotations

import asyncio
import dataclasses
import logging
from collections.abc import Awaitable, Callable

import discord

from bot.core import Progress
from bot.errors import ImagebotError, NotFound, ValidationError
from bot.models import Context, ImagineOptions, ImagineResult
from bot.replies import adjust_summary, credits_summary, error_text, plural, usage_summary
from bot.validation import clean_prompt

from .context import Runtime, context_for, dm_refusal, identity_of, runtime_of
from .delivery import Outgoing, deliver, dm, say
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

Generate = Callable[[Progress], Awaitable[ImagineResult]]


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
    if not await rt.acks.acknowledge(interaction):
        await dm(interaction.user, EXPIRED)
        return

    async def run(progress: Progress) -> ImagineResult:
        opts = options
        if reference is not None:
            opts = dataclasses.replace(options, reference=await _download(reference))
        return await rt.core.imagine(ctx, opts, progress=progress)

    await generate(interaction, rt, run)


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


async def generate(interaction: discord.Interaction, rt: Runtime, run: Generate) -> None:
    """Run a generation that was already deferred, with progress, then deliver it."""
    progress = ProgressMessage(interaction)
    try:
        result = await run(progress.update)
    except ImagebotError as exc:
        await progress.close(flush=False)
        await say(interaction, error_text(exc))
        return
    except Exception:
        log.exception("generation for interaction %s failed", interaction.id)
        await progress.close(flush=False)
        await say(interaction, INTERNAL)
        return
    try:
        progress.show(f"\N{OUTBOX TRAY} Uploading {plural(len(result.images), 'image')}…")
        await progress.close()
        out = Outgoing(embed=result_embed(result, interaction.user), images=result.images,
                       stem=f"imagebot-{result.generation_id[:8]}", view=result_view(result))
        await deliver(interaction, out, refund=lambda: rt.core.delivery_failed(result.generation_id))
    except asyncio.CancelledError:  # shutting down mid-upload: the images may have reached no one
        await asyncio.shield(rt.core.delivery_failed(result.generation_id, code="IMG-DELIVERY-CANCELLED"))
        raise
    except Exception:  # a bug after the charge: give the credits back, then say so
        log.exception("delivering generation %s failed", result.generation_id)
        refunded = await rt.core.delivery_failed(result.generation_id, code="IMG-INTERNAL-001")
        await say(interaction, f"Something went wrong on the bot's side while posting your images; "
                               f"{refunded} credits were refunded. (IMG-INTERNAL-001)")


async def button_pressed(interaction: discord.Interaction, action: str, generation_id: str, index: int) -> None:
    """Re-roll, Variations, Upscale, Enhance, Imagine this: the presser is the one who pays."""
    rt = runtime_of(interaction)
    try:
        if (refusal := dm_refusal(interaction, rt.settings)) is not None:
            await say(interaction, refusal)
            return
        if not await rt.acks.acknowledge(interaction):
            await dm(interaction.user, EXPIRED)
            return
        ctx = context_for(interaction, rt.settings)
        core = rt.core
        if action == "en":
            await enhance_flow(interaction, rt, ctx, lambda: _prompt_of(rt, ctx, generation_id, enhanced=False))
            return
        runs: dict[str, Generate] = {
            "rr": lambda p: core.reroll(ctx, generation_id, progress=p),
            "va": lambda p: core.variations(ctx, generation_id, index, progress=p),
            "up": lambda p: core.upscale(ctx, generation_id, index, progress=p),
        }

        async def imagine_this(p: Progress) -> ImagineResult:
            prompt = await _prompt_of(rt, ctx, generation_id, enhanced=True)
            return await core.imagine(ctx, ImagineOptions(prompt=prompt), progress=p)

        await generate(interaction, rt, runs.get(action, imagine_this))
    except Exception:  # a button callback's errors are only logged by discord.py: answer anyway
        log.exception("button %s for %s failed", action, generation_id)
        await say(interaction, INTERNAL)


async def _prompt_of(rt: Runtime, ctx: Context, generation_id: str, *, enhanced: bool) -> str:
    gen = await rt.core.generation(generation_id)
    if gen is None or gen.identity.server_key != ctx.identity.server_key:
        raise NotFound("That result is no longer known to the bot.", code="IMG-NOTFOUND-GEN")
    text = gen.result_text if enhanced else gen.prompt
    if not text:
        raise NotFound("That result has no prompt to use.", code="IMG-NOTFOUND-GEN")
    return text


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
    if not await rt.acks.acknowledge(interaction):
        await dm(interaction.user, EXPIRED)
        return

    async def given() -> str:
        return text

    await enhance_flow(interaction, rt, context_for(interaction, rt.settings), given)


async def enhance_flow(interaction: discord.Interaction, rt: Runtime, ctx: Context,
                       prompt: Callable[[], Awaitable[str]]) -> None:
    try:
        result = await rt.core.enhance(ctx, await prompt())
    except ImagebotError as exc:
        await say(interaction, error_text(exc))
        return
    try:
        delivered = await say(interaction, None, embed=enhance_embed(result, interaction.user),
                              view=enhance_view(result))
    except Exception:  # a bug after the charge: refund rather than keep the credit
        log.exception("delivering enhance %s failed", result.generation_id)
        delivered = False
    if not delivered:
        await rt.core.delivery_failed(result.generation_id)


# -- /credits and /credits-admin -------------------------------------------------------------------

async def credits_command(interaction: discord.Interaction) -> None:
    rt = runtime_of(interaction)
    if (refusal := dm_refusal(interaction, rt.settings)) is not None:
        await say(interaction, refusal)
        return
    acknowledged = await rt.acks.acknowledge(interaction, ephemeral=True)
    ctx = context_for(interaction, rt.settings)
    text = credits_summary(await rt.core.credits(ctx.identity))
    if ctx.identity.server_id.startswith("dm-"):
        text += "\n(This is your direct-message account; each server has its own.)"
    if acknowledged:
        await say(interaction, text)
    else:
        await dm(interaction.user, text)


async def adjust_command(interaction: discord.Interaction, kind: str, member: discord.abc.User, amount: int) -> None:
    rt = runtime_of(interaction)
    if not await rt.acks.acknowledge(interaction, ephemeral=True):
        await dm(interaction.user, EXPIRED.replace("Nothing was charged", "Nothing was changed"))
        return
    ctx = context_for(interaction, rt.settings)
    try:
        result = await rt.core.admin_adjust(ctx, identity_of(interaction, member), kind, amount)
        text = adjust_summary(result, member.mention)
    except ImagebotError as exc:
        text = error_text(exc)
    await say(interaction, text)


async def usage_command(interaction: discord.Interaction, days: int) -> None:
    rt = runtime_of(interaction)
    if not await rt.acks.acknowledge(interaction, ephemeral=True):
        await dm(interaction.user, EXPIRED)
        return
    ctx = context_for(interaction, rt.settings)
    try:
        rows = await rt.core.usage_report(ctx, since_seconds=days * 86400)
        text = f"Usage in the last {plural(days, 'day')}:\n" + usage_summary(
            [{**r, "user_id": f"<@{r['user_id']}>"} for r in rows])
    except ImagebotError as exc:
        text = error_text(exc)
    await say(interaction, _fit_text(text))


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


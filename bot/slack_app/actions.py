"""The buttons. Each carries a generation id; everything else is read back from the database, so a
button pressed after a restart (or on another worker) does the same thing."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from bot.errors import ImagebotError, NotFound
from bot.models import Context, ImagineOptions
from bot.replies import plural
from storage.sqlite import GenerationRow

from .blocks import parse_value
from .commands import enhance_and_tell, usage_error
from .delivery import Destination
from .jobs import generate_and_deliver

if TYPE_CHECKING:
    from .app import SlackBot, Tell

Ack = Any


def _ctx(bot: SlackBot, body: dict[str, Any]) -> Context:
    user = body.get("user") or {}
    team = (body.get("team") or {}).get("id") or user.get("team_id") or (body.get("enterprise") or {}).get("id")
    channel = (body.get("channel") or {}).get("id") or (body.get("container") or {}).get("channel_id") or ""
    return bot.context(str(team or ""), str(user.get("id", "")), str(channel), str(user.get("username", "")))


def _where(ctx: Context, body: dict[str, Any]) -> Destination:
    thread = (body.get("container") or {}).get("thread_ts") or (body.get("message") or {}).get("thread_ts")
    return Destination(ctx.channel_id, ctx.identity.user_id, thread or None)


async def _start(ack: Ack, action: dict[str, Any], tell: Tell) -> tuple[str, int] | None:
    await ack()
    try:
        return parse_value(action.get("value"))
    except ValueError:
        await tell("That button is not one of mine any more.")
        return None


async def _generation(bot: SlackBot, ctx: Context, generation_id: str) -> GenerationRow:
    gen = await bot.core.generation(generation_id)
    if gen is None or (gen.platform, gen.server_id) != (ctx.identity.platform, ctx.identity.server_id):
        raise NotFound("That image is no longer known to the bot.", code="IMG-NOTFOUND-GEN")
    return gen


async def reroll(bot: SlackBot, ack: Ack, body: dict[str, Any], action: dict[str, Any], tell: Tell) -> None:
    if (value := await _start(ack, action, tell)) is None:
        return
    ctx = _ctx(bot, body)
    await tell("Re-rolling…")
    bot.spawn(generate_and_deliver(bot, _where(ctx, body), tell,
                                   lambda progress: bot.core.reroll(ctx, value[0], progress=progress)),
              tell, "reroll")


async def variations(bot: SlackBot, ack: Ack, body: dict[str, Any], action: dict[str, Any], tell: Tell) -> None:
    if (value := await _start(ack, action, tell)) is None:
        return
    ctx = _ctx(bot, body)
    await tell(f"Making variations of image {value[1] + 1}…")
    bot.spawn(generate_and_deliver(bot, _where(ctx, body), tell,
                                   lambda progress: bot.core.variations(ctx, value[0], value[1], progress=progress)),
              tell, "variations")


async def enhance(bot: SlackBot, ack: Ack, body: dict[str, Any], action: dict[str, Any], tell: Tell) -> None:
    if (value := await _start(ack, action, tell)) is None:
        return
    ctx = _ctx(bot, body)

    async def job() -> None:
        gen = await _generation(bot, ctx, value[0])
        await enhance_and_tell(bot, ctx, gen.prompt, tell)

    bot.spawn(job(), tell, "enhance")


async def imagine_this(bot: SlackBot, ack: Ack, body: dict[str, Any], action: dict[str, Any], tell: Tell) -> None:
    """Runs /imagine with the enhanced prompt stored for that /enhance (its ``result_text``)."""
    if (value := await _start(ack, action, tell)) is None:
        return
    ctx = _ctx(bot, body)

    async def job() -> None:
        gen = await _generation(bot, ctx, value[0])
        if gen.command != "enhance" or not gen.result_text:
            raise NotFound("That enhanced prompt is no longer known to the bot.", code="IMG-NOTFOUND-GEN")
        options = ImagineOptions(prompt=gen.result_text)
        try:
            plan = bot.core.plan(ctx, options)
        except ImagebotError as exc:
            await tell(usage_error(exc))
            return
        await tell(f"Generating {plural(plan.count, 'image')} from the enhanced prompt…")
        await generate_and_deliver(bot, _where(ctx, body), tell,
                                   lambda progress: bot.core.imagine(ctx, options, progress=progress))

    bot.spawn(job(), tell, "imagine")

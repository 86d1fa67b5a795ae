"""The buttons. Each carries a generation id; everything else is read back from the database, so a
button pressed after a restart (or on another worker) does the same thing. Whether the generation belongs
to the presser's workspace is checked once, by the core and the runner (``bot.jobs.prompt_of``).
``register(bot)`` attaches the listeners to the service object's Bolt app."""

from __future__ import annotations

from typing import Any

from bot.errors import ImagebotError
from bot.jobs import Progress, prompt_of
from bot.models import Context, ImagineOptions, ImagineResult, Queued
from bot.replies import plural

from .app import NO_IDENTITY, SlackBot, field, identified, text_field
from .blocks import ENHANCE, IMAGINE_THIS, REROLL, VARIATIONS_RE, parse_value
from .commands import enhance_job, images_job, queued_job, usage_error
from .delivery import Destination
from .respond import Tell

Ack = Any


def _ids(body: dict[str, Any]) -> tuple[str, str]:
    """(workspace, user) of the presser: ``team.id``, else ``user.team_id`` (an org-wide install), else the
    Enterprise Grid org; "" for what is missing or not a string."""
    user = field(body, "user")
    team = (text_field(field(body, "team"), "id") or text_field(user, "team_id")
            or text_field(field(body, "enterprise"), "id"))
    return team, text_field(user, "id")


def _ctx(bot: SlackBot, body: dict[str, Any]) -> Context:
    """The presser; ``identified`` was checked first (``_start``)."""
    team, user_id = _ids(body)
    channel = text_field(field(body, "channel"), "id") or text_field(field(body, "container"), "channel_id")
    return bot.context(team, user_id, channel, text_field(field(body, "user"), "username"),
                       response_url=text_field(body, "response_url"), thread_ts=_thread(body) or "")


def _thread(body: dict[str, Any]) -> str | None:
    thread = text_field(field(body, "container"), "thread_ts") or text_field(field(body, "message"), "thread_ts")
    return thread or None


def _where(ctx: Context, body: dict[str, Any]) -> Destination:
    return Destination(ctx.channel_id, ctx.identity.user_id, _thread(body))


async def _start(ack: Ack, body: dict[str, Any], action: dict[str, Any], tell: Tell) -> tuple[str, int] | None:
    """Ack, then the button's (generation id, image index); None, with the presser told why, when the
    payload lacks the presser's ids or the value is not one of this bot's."""
    await ack()
    if not identified(*_ids(body)):
        await tell(NO_IDENTITY)
        return None
    try:
        return parse_value(text_field(action, "value"))
    except ValueError:
        await tell("That button is not one of mine any more.")
        return None


async def reroll(bot: SlackBot, ack: Ack, body: dict[str, Any], action: dict[str, Any], tell: Tell) -> None:
    if (value := await _start(ack, body, action, tell)) is None:
        return
    ctx = _ctx(bot, body)
    if bot.queues:
        await bot.start(queued_job(bot, "reroll", tell, "a re-roll",
                                   lambda: bot.core.enqueue(ctx, "reroll", generation_id=value[0])), tell)
        return
    await tell("Re-rolling…")
    await bot.start(images_job(bot, "reroll", _where(ctx, body), tell,
                               lambda progress: bot.core.reroll(ctx, value[0], progress=progress)), tell)


async def variations(bot: SlackBot, ack: Ack, body: dict[str, Any], action: dict[str, Any], tell: Tell) -> None:
    if (value := await _start(ack, body, action, tell)) is None:
        return
    ctx = _ctx(bot, body)
    if bot.queues:
        await bot.start(queued_job(bot, "variations", tell, f"variations of image {value[1] + 1}",
                                   lambda: bot.core.enqueue(ctx, "variations", generation_id=value[0],
                                                            index=value[1])), tell)
        return
    await tell(f"Making variations of image {value[1] + 1}…")
    await bot.start(images_job(bot, "variations", _where(ctx, body), tell,
                               lambda progress: bot.core.variations(ctx, value[0], value[1], progress=progress)),
                    tell)


async def enhance(bot: SlackBot, ack: Ack, body: dict[str, Any], action: dict[str, Any], tell: Tell) -> None:
    if (value := await _start(ack, body, action, tell)) is None:
        return
    ctx = _ctx(bot, body)
    if bot.queues:
        async def enqueue() -> Queued:
            prompt = await prompt_of(bot.core, ctx, value[0], enhanced=False)
            return await bot.core.enqueue(ctx, "enhance", prompt=prompt)

        await bot.start(queued_job(bot, "enhance", tell, "the prompt's enhancement", enqueue), tell)
        return
    await bot.start(enhance_job(bot, ctx, lambda: prompt_of(bot.core, ctx, value[0], enhanced=False), tell), tell)


async def imagine_this(bot: SlackBot, ack: Ack, body: dict[str, Any], action: dict[str, Any], tell: Tell) -> None:
    """Runs /imagine with the enhanced prompt stored for that /enhance (its ``result_text``)."""
    if (value := await _start(ack, body, action, tell)) is None:
        return
    ctx = _ctx(bot, body)
    if bot.queues:
        async def enqueue() -> Queued:
            options = ImagineOptions(prompt=await prompt_of(bot.core, ctx, value[0], enhanced=True))
            return await bot.core.enqueue(ctx, "imagine", options=options)

        await bot.start(queued_job(bot, "imagine", tell, "images from the enhanced prompt", enqueue), tell)
        return

    async def work(progress: Progress | None) -> ImagineResult | None:
        options = ImagineOptions(prompt=await prompt_of(bot.core, ctx, value[0], enhanced=True))
        try:
            plan = bot.core.plan(ctx, options)
        except ImagebotError as exc:
            await tell(usage_error(exc))
            return None
        await tell(f"Generating {plural(plan.count, 'image')} from the enhanced prompt…")
        return await bot.core.imagine(ctx, options, progress=progress)

    await bot.start(images_job(bot, "imagine", _where(ctx, body), tell, work), tell)


def register(bot: SlackBot) -> None:
    """The button listeners, on the service object's Bolt app."""
    app = bot.app

    @app.action(REROLL)
    async def on_reroll(ack: Any, body: dict[str, Any], action: dict[str, Any]) -> None:
        await reroll(bot, ack, body, action, bot.tell(body))

    @app.action(VARIATIONS_RE)
    async def on_variations(ack: Any, body: dict[str, Any], action: dict[str, Any]) -> None:
        await variations(bot, ack, body, action, bot.tell(body))

    @app.action(ENHANCE)
    async def on_enhance_button(ack: Any, body: dict[str, Any], action: dict[str, Any]) -> None:
        await enhance(bot, ack, body, action, bot.tell(body))

    @app.action(IMAGINE_THIS)
    async def on_imagine_this(ack: Any, body: dict[str, Any], action: dict[str, Any]) -> None:
        await imagine_this(bot, ack, body, action, bot.tell(body))

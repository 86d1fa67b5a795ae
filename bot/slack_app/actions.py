"""The buttons. Each carries a generation id; everything else is read back from the database, so a
button pressed after a restart (or on another worker) does the same thing. Whether the generation belongs
to the presser's workspace is checked once, by the core and the runner (``bot.jobs.prompt_of``).
``register(bot)`` attaches the listeners to the service object's Bolt app."""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import Any

from bot.jobs import prompt_of
from bot.models import Context, ImagineOptions, Queued

from .app import NO_IDENTITY, SlackBot, field, identified, text_field
from .blocks import ENHANCE, IMAGINE_THIS, REROLL, VARIATIONS_RE, parse_value
from .commands import accept
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


def _value(body: dict[str, Any], action: dict[str, Any]) -> tuple[str, int] | str:
    """The button's (generation id, image index), or why it cannot run (the payload lacks the presser's
    ids, or the value is not one of this bot's)."""
    if not identified(*_ids(body)):
        return NO_IDENTITY
    try:
        return parse_value(text_field(action, "value"))
    except ValueError:
        return "That button is not one of mine any more."


async def _press(bot: SlackBot, ack: Ack, body: dict[str, Any], action: dict[str, Any], tell: Tell, kind: str,
                 what: str | Callable[[tuple[str, int]], str],
                 enqueue: Callable[[Context, tuple[str, int], bool], Awaitable[Queued]]) -> None:
    """Reserve the button's job, then ack (``commands.accept``); its images go to the button's channel."""
    value = _value(body, action)
    if isinstance(value, str):
        await ack()
        await tell(value)
        return
    ctx = _ctx(bot, body)
    where = None if kind == "enhance" else _where(ctx, body)
    await accept(bot, ack, tell, kind, what(value) if callable(what) else what,
                 lambda queued: enqueue(ctx, value, queued), where=where, say=False)


async def reroll(bot: SlackBot, ack: Ack, body: dict[str, Any], action: dict[str, Any], tell: Tell) -> None:
    await _press(bot, ack, body, action, tell, "reroll", "a re-roll", lambda ctx, v, queued: bot.core.enqueue(
        ctx, "reroll", generation_id=v[0], queued=queued))


async def variations(bot: SlackBot, ack: Ack, body: dict[str, Any], action: dict[str, Any], tell: Tell) -> None:
    await _press(bot, ack, body, action, tell, "variations", lambda v: f"variations of image {v[1] + 1}",
                 lambda ctx, v, queued: bot.core.enqueue(ctx, "variations", generation_id=v[0], index=v[1],
                                                         queued=queued))


async def enhance(bot: SlackBot, ack: Ack, body: dict[str, Any], action: dict[str, Any], tell: Tell) -> None:
    async def enqueue(ctx: Context, v: tuple[str, int], queued: bool) -> Queued:
        prompt = await prompt_of(bot.core, ctx, v[0], enhanced=False)
        return await bot.core.enqueue(ctx, "enhance", prompt=prompt, queued=queued)

    await _press(bot, ack, body, action, tell, "enhance", "enhancing the prompt", enqueue)


async def imagine_this(bot: SlackBot, ack: Ack, body: dict[str, Any], action: dict[str, Any], tell: Tell) -> None:
    """Runs /imagine with the enhanced prompt stored for that /enhance (its ``result_text``)."""
    async def enqueue(ctx: Context, v: tuple[str, int], queued: bool) -> Queued:
        options = ImagineOptions(prompt=await prompt_of(bot.core, ctx, v[0], enhanced=True))
        return await bot.core.enqueue(ctx, "imagine", options=options, queued=queued)

    await _press(bot, ack, body, action, tell, "imagine", "images from the enhanced prompt", enqueue)


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

"""The slash commands: /imagine, /enhance, /credits. Validate and ack first; the rest runs as a job."""

from __future__ import annotations

import dataclasses
import re
from typing import TYPE_CHECKING, Any

from bot.errors import ImagebotError, ValidationError
from bot.models import Context, Identity
from bot.replies import adjust_summary, credits_summary, enhance_summary, error_text, plural, usage_summary
from bot.textcommands import IMAGINE_USAGE, CreditsCommand, mention_user_id, parse_credits, parse_imagine

from .admin import is_workspace_admin
from .blocks import enhance_blocks
from .delivery import Destination
from .jobs import generate_and_deliver
from .settings import USER_ID_RE
from .text import escape, mention, to_plain

if TYPE_CHECKING:
    from .app import SlackBot, Tell

Ack = Any
ENHANCE_USAGE = "Usage: /enhance <a short prompt>"


def _ctx(bot: SlackBot, body: dict[str, Any]) -> Context:
    return bot.context(str(body.get("team_id") or body.get("enterprise_id") or ""), str(body.get("user_id", "")),
                       str(body.get("channel_id", "")), str(body.get("user_name", "")))


def usage_error(exc: ImagebotError) -> str:
    """A flag error with the usage line (once), escaped for Slack."""
    text = error_text(exc)
    if IMAGINE_USAGE not in text:
        text += f"\n{IMAGINE_USAGE}"
    return escape(text)


async def imagine(bot: SlackBot, ack: Ack, body: dict[str, Any], tell: Tell) -> None:
    ctx = _ctx(bot, body)
    try:
        options = parse_imagine(to_plain(str(body.get("text", ""))))
        plan = bot.core.plan(ctx, options)  # no I/O, no credit moved: bad flags stop here
    except ImagebotError as exc:
        await ack(response_type="ephemeral", text=usage_error(exc))
        return
    await ack(response_type="ephemeral",
              text=f"Generating {plural(plan.count, 'image')} of “{escape(plan.prompt)}”…")
    where = Destination(ctx.channel_id, ctx.identity.user_id, body.get("thread_ts") or None)
    bot.spawn(generate_and_deliver(bot, where, tell, lambda progress: bot.core.imagine(ctx, options, progress=progress),
                                   replace_progress=True),
              tell, "imagine")


async def enhance(bot: SlackBot, ack: Ack, body: dict[str, Any], tell: Tell) -> None:
    ctx = _ctx(bot, body)
    prompt = to_plain(str(body.get("text", ""))).strip()
    if not prompt:
        await ack(response_type="ephemeral", text=ENHANCE_USAGE)
        return
    await ack(response_type="ephemeral", text="Enhancing your prompt…")
    bot.spawn(enhance_and_tell(bot, ctx, prompt, tell), tell, "enhance")


async def enhance_and_tell(bot: SlackBot, ctx: Context, prompt: str, tell: Tell) -> None:
    result = await bot.core.enhance(ctx, prompt)
    summary = enhance_summary(result)
    await tell(escape(summary), enhance_blocks(result, summary))


async def credits(bot: SlackBot, ack: Ack, body: dict[str, Any], tell: Tell) -> None:
    ctx = _ctx(bot, body)
    try:
        parsed = parse_credits(str(body.get("text", "")))
    except ValidationError as exc:
        await ack(response_type="ephemeral", text=escape(error_text(exc)))
        return
    await ack()
    bot.spawn(_credits_job(bot, ctx, parsed, tell), tell, "credits")


def _target_id(text: str) -> str:
    user_id = mention_user_id(text)
    if not USER_ID_RE.match(user_id):
        raise ValidationError("Mention the user, like /credits grant @ann 100.", code="IMG-VALID-USER")
    return user_id


def _days(text: str | None) -> int:
    if text is None:
        return 7
    if not re.fullmatch(r"\d{1,3}", text) or not 1 <= int(text) <= 365:
        raise ValidationError(f"Usage: /credits usage [days 1-365]; got {text!r}.", code="IMG-VALID-FLAG")
    return int(text)


async def _credits_job(bot: SlackBot, ctx: Context, parsed: CreditsCommand, tell: Tell) -> None:
    if parsed.action == "show":
        await tell(escape(credits_summary(await bot.core.credits(ctx.identity))))
        return
    if not await is_workspace_admin(bot.client, ctx.identity.user_id, bot.settings.admins):
        await tell("Only workspace admins and owners can do that. Nothing was changed.")
        return
    admin_ctx = dataclasses.replace(ctx, is_admin=True)
    if parsed.action == "usage":
        days = _days(parsed.amount)
        rows = await bot.core.usage_report(admin_ctx, since_seconds=days * 86400)
        await tell(f"Usage in the last {plural(days, 'day')}:\n{escape(usage_summary(rows))}")
        return
    target_id = _target_id(parsed.target or "")
    target = Identity("slack", ctx.identity.server_id, target_id)
    result = await bot.core.admin_adjust(admin_ctx, target, parsed.action, parsed.amount)
    await tell(adjust_summary(result, mention(target_id)))


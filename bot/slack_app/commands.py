"""The slash commands: /imagine, /enhance, /describe (a charged job: priced, asked for above the workspace's
threshold, reserved, then acked; ``flow.accept``), and /credits, /history, /show, /help, /settings (free:
acked at once, answered by a job in the shared runner). ``register(bot)`` attaches the listeners to the
service object's Bolt app.

Slack slash commands carry no files, so /describe takes the public https URL of an image (the job fetches
it when it runs, as it fetches Discord attachments)."""

from __future__ import annotations

import dataclasses
import logging
import re
import urllib.parse
from typing import Any

from bot.errors import ImagebotError, ValidationError
from bot.jobs import Job, Progress
from bot.models import Context, HistoryPage, Identity, ImagineOptions
from bot.replies import (
    adjust_summary,
    credits_summary,
    error_text,
    help_text,
    plural,
    settings_text,
    usage_summary,
)
from bot.textcommands import (
    HISTORY_USAGE,
    IMAGINE_USAGE,
    SETTINGS_USAGE,
    SHOW_USAGE,
    CreditsCommand,
    mention_user_id,
    parse_credits,
    parse_generation_id,
    parse_history,
    parse_imagine,
    parse_settings,
)
from bot.validation import clean_prompt

from .admin import is_workspace_admin
from .app import NO_IDENTITY, SlackBot, identified, text_field
from .blocks import history_blocks
from .delivery import Destination, NotesOutlet, upload_sheet
from .flow import Answer, Order, accept, note_job, shown_job
from .respond import Tell
from .settings import USER_ID_RE
from .text import escape, mention, to_plain

log = logging.getLogger(__name__)
Ack = Any
ENHANCE_USAGE = "Usage: /enhance <a short prompt>"
DESCRIBE_USAGE = ("Usage: /describe <https URL of an image>. Slack slash commands cannot carry a file, so "
                  "give the public https address of a PNG, JPEG, WebP or GIF (for a picture in Slack: upload it "
                  "somewhere public, or use /describe from the console).")
#: The longest image URL /describe takes.
URL_MAX = 2000
#: What /help adds on Slack: how its commands differ from the other platforms'.
SLACK_HELP = ("On Slack: /describe takes the https URL of an image (slash commands carry no files); Edit opens "
              "a box for the instruction; More… lists Zoom out, Pan and Make square where the model can; "
              "/history sends its thumbnails to your direct messages with me.")
ADMINS_ONLY = "Only workspace admins and owners can change the settings. Nothing was changed."


def _team(body: dict[str, Any]) -> str:
    return text_field(body, "team_id") or text_field(body, "enterprise_id")


def _ctx(bot: SlackBot, body: dict[str, Any]) -> Context:
    """The asker; ``identified`` was checked first (``register``)."""
    return bot.context(_team(body), text_field(body, "user_id"), text_field(body, "channel_id"),
                       text_field(body, "user_name"), response_url=text_field(body, "response_url"),
                       thread_ts=text_field(body, "thread_ts"))


def _where(ctx: Context, body: dict[str, Any]) -> Destination:
    return Destination(ctx.channel_id, ctx.identity.user_id, text_field(body, "thread_ts") or None)


def _text(body: dict[str, Any]) -> str:
    return to_plain(text_field(body, "text"))


def usage_error(exc: ImagebotError, usage: str = IMAGINE_USAGE) -> str:
    """A flag error with the usage line (once), escaped for Slack."""
    text = error_text(exc)
    if usage not in text:
        text += f"\n{usage}"
    return escape(text)


async def imagine(bot: SlackBot, ack: Ack, body: dict[str, Any], tell: Tell) -> None:
    ctx = _ctx(bot, body)
    try:
        options = parse_imagine(_text(body))
        plan = bot.core.plan(ctx, options)  # no I/O, no credit moved: bad flags stop here
    except ImagebotError as exc:
        await ack(response_type="ephemeral", text=usage_error(exc))
        return
    what = f"{plural(plan.count, 'image')} of “{escape(plan.prompt)}”"
    await accept(bot, Answer(ack, tell, in_ack=True, usage=IMAGINE_USAGE), tell, ctx,
                 Order("imagine", what, {"options": options}), where=_where(ctx, body), replace=True)


async def enhance(bot: SlackBot, ack: Ack, body: dict[str, Any], tell: Tell) -> None:
    ctx = _ctx(bot, body)
    try:
        prompt = clean_prompt(_text(body))  # the core cleans it again; here a bad one stops before the ack
    except ValidationError as exc:
        await ack(response_type="ephemeral", text=f"{escape(error_text(exc))}\n{ENHANCE_USAGE}")
        return
    await accept(bot, Answer(ack, tell, in_ack=True), tell, ctx,
                 Order("enhance", "enhancing your prompt", {"prompt": prompt}))


def image_url(text: str) -> str:
    """/describe's argument: one public https URL (Slack sends links as ``<url>``, which ``to_plain`` unwraps)."""
    words = text.split()
    if not words:
        raise ValidationError("/describe needs an image.", code="IMG-VALID-REFERENCE")
    if len(words) > 1:
        raise ValidationError("Give one image URL, nothing else.", code="IMG-VALID-REFERENCE")
    url = words[0].strip("<>")
    try:
        parts = urllib.parse.urlsplit(url)
    except ValueError:
        parts = None
    if parts is None or parts.scheme.lower() != "https" or not parts.hostname or len(url) > URL_MAX:
        raise ValidationError("That is not an https URL of an image.", code="IMG-VALID-REFERENCE")
    if parts.username or parts.password:
        raise ValidationError("The image URL must not carry a user name or password.", code="IMG-VALID-REFERENCE")
    return url


async def describe(bot: SlackBot, ack: Ack, body: dict[str, Any], tell: Tell) -> None:
    ctx = _ctx(bot, body)
    try:
        url = image_url(_text(body))
    except ValidationError as exc:
        await ack(response_type="ephemeral", text=usage_error(exc, DESCRIBE_USAGE))
        return
    options = ImagineOptions(prompt="", reference_urls=(url,))
    await accept(bot, Answer(ack, tell, in_ack=True, usage=DESCRIBE_USAGE), tell, ctx,
                 Order("describe", "describing the image", {"options": options}))


async def credits(bot: SlackBot, ack: Ack, body: dict[str, Any], tell: Tell) -> None:
    ctx = _ctx(bot, body)
    try:
        parsed = parse_credits(text_field(body, "text"))
    except ValidationError as exc:
        await ack(response_type="ephemeral", text=escape(error_text(exc)))
        return
    await ack()

    async def work(progress: Progress | None) -> str:
        return await _credits_answer(bot, ctx, parsed)

    await bot.start(Job("credits", work, NotesOutlet(tell, "credits", _plain)), tell)


def _plain(text: str) -> tuple[str, None]:
    return text, None


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


async def _credits_answer(bot: SlackBot, ctx: Context, parsed: CreditsCommand) -> str:
    if parsed.action == "show":
        return escape(credits_summary(await bot.core.credits(ctx.identity)))
    if not await is_workspace_admin(bot.client, ctx.identity.user_id, bot.settings.admins):
        return "Only workspace admins and owners can do that. Nothing was changed."
    admin_ctx = dataclasses.replace(ctx, is_admin=True)
    if parsed.action == "usage":
        days = _days(parsed.amount)
        rows = await bot.core.usage_report(admin_ctx, since_seconds=days * 86400)
        return f"Usage in the last {plural(days, 'day')}:\n{escape(usage_summary(rows))}"
    target_id = _target_id(parsed.target or "")
    target = Identity("slack", ctx.identity.server_id, target_id)
    result = await bot.core.admin_adjust(admin_ctx, target, parsed.action, parsed.amount)
    return adjust_summary(result, mention(target_id))


# -- /history, /show, /help, /settings: free, acked at once ---------------------------------------------

async def history_answer(bot: SlackBot, ctx: Context, page_number: int) -> tuple[str, list[dict[str, Any]]]:
    """One page of /history as an ephemeral message; its contact sheet (when any) goes to the asker's DM,
    since an ephemeral message cannot carry a file."""
    page = await bot.core.history(ctx, page_number)
    header = history_header(page)
    if page.sheet is not None:
        sent = await upload_sheet(bot.client, ctx.identity.user_id, page.sheet,
                                  f"Your /history, page {page.page} of {page.pages}: the tiles are numbered like "
                                  "the list.")
        if sent:
            header += "\nThumbnails of this page: in your direct messages with me."
    return header, history_blocks(page, header)


def history_header(page: HistoryPage) -> str:
    if not page.total:
        return "You have no results in this workspace yet. Try /imagine."
    return (f"Your results in this workspace: page {page.page} of {page.pages} "
            f"({plural(page.total, 'result')} in all, newest first).")


async def history(bot: SlackBot, ack: Ack, body: dict[str, Any], tell: Tell) -> None:
    ctx = _ctx(bot, body)
    try:
        number = parse_history(_text(body))
    except ValidationError as exc:
        await ack(response_type="ephemeral", text=usage_error(exc, HISTORY_USAGE))
        return
    await ack()
    await bot.start(note_job("history", tell, lambda: history_answer(bot, ctx, number)), tell)


async def show(bot: SlackBot, ack: Ack, body: dict[str, Any], tell: Tell) -> None:
    ctx = _ctx(bot, body)
    try:
        generation_id = parse_generation_id(_text(body), SHOW_USAGE)
    except ValidationError as exc:
        await ack(response_type="ephemeral", text=usage_error(exc, SHOW_USAGE))
        return
    await ack(response_type="ephemeral", text="Posting that result again…")
    await bot.start(shown_job(bot, ctx, _where(ctx, body), tell, lambda: bot.core.show(ctx, generation_id)), tell)


async def help_command(bot: SlackBot, ack: Ack, body: dict[str, Any], tell: Tell) -> None:
    ctx = _ctx(bot, body)
    await ack()

    async def answer() -> str:
        return escape(f"{help_text(await bot.core.help(ctx))}\n{SLACK_HELP}")

    await bot.start(note_job("help", tell, answer), tell)


async def settings(bot: SlackBot, ack: Ack, body: dict[str, Any], tell: Tell) -> None:
    ctx = _ctx(bot, body)
    try:
        changes = parse_settings(_text(body))
    except ValidationError as exc:
        await ack(response_type="ephemeral", text=usage_error(exc, SETTINGS_USAGE))
        return
    await ack()
    await bot.start(note_job("settings", tell, lambda: settings_answer(bot, ctx, changes)), tell)


async def settings_answer(bot: SlackBot, ctx: Context, changes: dict[str, str]) -> str:
    """Show them (anyone), or change them (workspace admins and owners, asked of Slack now)."""
    admin = await is_workspace_admin(bot.client, ctx.identity.user_id, bot.settings.admins)
    ctx = dataclasses.replace(ctx, is_admin=admin)
    if not changes:
        return escape(settings_text(await bot.core.server_settings(ctx)))
    if not admin:
        return ADMINS_ONLY
    view = await bot.core.change_settings(ctx, changes)
    return f"Changed: {escape(', '.join(sorted(changes)))}.\n{escape(settings_text(view))}"


async def refused(ack: Ack, body: dict[str, Any]) -> bool:
    """A command without the asker's user and workspace ids is answered, and runs nothing."""
    if identified(_team(body), body.get("user_id")):
        return False
    await ack(response_type="ephemeral", text=NO_IDENTITY)
    return True


COMMANDS = {"/imagine": imagine, "/enhance": enhance, "/describe": describe, "/credits": credits,
            "/history": history, "/show": show, "/help": help_command, "/settings": settings}


def register(bot: SlackBot) -> None:
    """The slash command listeners, on the service object's Bolt app."""
    for name, handler in COMMANDS.items():
        _listen(bot, name, handler)


def _listen(bot: SlackBot, name: str, handler: Any) -> None:
    @bot.app.command(name)
    async def on_command(ack: Any, body: dict[str, Any]) -> None:
        if not await refused(ack, body):
            await handler(bot, ack, body, bot.tell(body))

"""The slash commands: /imagine, /enhance, /credits. Validate, reserve the job (``accept``), then ack; the rest
runs in the shared runner (``bot.jobs``), or with role ingress waits for any worker. ``register(bot)``
attaches the listeners to the service object's Bolt app."""

from __future__ import annotations

import dataclasses
import logging
import re
from collections.abc import Awaitable, Callable
from typing import Any

from bot.errors import ImagebotError, ValidationError
from bot.jobs import Job, Progress
from bot.models import Context, Identity, ImagineResult, Queued
from bot.replies import adjust_summary, credits_summary, error_text, plural, restarting_text, usage_summary
from bot.textcommands import IMAGINE_USAGE, CreditsCommand, mention_user_id, parse_credits, parse_imagine
from bot.validation import clean_prompt

from .admin import is_workspace_admin
from .app import NO_IDENTITY, SlackBot, identified, text_field
from .delivery import Destination, ImagesOutlet, NotesOutlet, enhance_message
from .progress import ProgressNotes
from .respond import Tell
from .settings import USER_ID_RE
from .text import escape, mention, to_plain

log = logging.getLogger(__name__)
Ack = Any
ENHANCE_USAGE = "Usage: /enhance <a short prompt>"


def _team(body: dict[str, Any]) -> str:
    return text_field(body, "team_id") or text_field(body, "enterprise_id")


def _ctx(bot: SlackBot, body: dict[str, Any]) -> Context:
    """The asker; ``identified`` was checked first (``register``)."""
    return bot.context(_team(body), text_field(body, "user_id"), text_field(body, "channel_id"),
                       text_field(body, "user_name"), response_url=text_field(body, "response_url"),
                       thread_ts=text_field(body, "thread_ts"))


def _text(body: dict[str, Any]) -> str:
    return to_plain(text_field(body, "text"))


def usage_error(exc: ImagebotError) -> str:
    """A flag error with the usage line (once), escaped for Slack."""
    text = error_text(exc)
    if IMAGINE_USAGE not in text:
        text += f"\n{IMAGINE_USAGE}"
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
    where = Destination(ctx.channel_id, ctx.identity.user_id, text_field(body, "thread_ts") or None)
    await accept(bot, ack, tell, "imagine", what, lambda queued: bot.core.enqueue(
        ctx, "imagine", options=options, queued=queued), where=where, replace=True)


async def accept(bot: SlackBot, ack: Ack, tell: Tell, kind: str, what: str,
                 enqueue: Callable[[bool], Awaitable[Queued]], *, where: Destination | None = None,
                 replace: bool = False, say: bool = True) -> None:
    """Reserve the job (its row written), then acknowledge: no command is acknowledged without a job, so a
    process killed after the ack leaves a job any worker resumes. A refusal (nothing charged) is the ack's
    own text. Role ingress queues it for the workers; otherwise it runs here, its images posted to
    ``where`` (None: an enhancement, a note). ``say``: the ack carries the "Generating…" line (a slash
    command's; a button's ack is empty and the line is a note)."""
    async def answer(text: str) -> None:
        if say:
            await ack(response_type="ephemeral", text=text)
        else:
            await ack()
            await tell(text)

    if not bot.queues and not bot.jobs.accepting:  # draining: reserve nothing this process will not run
        await answer(restarting_text())
        return
    try:
        queued = await enqueue(bot.queues)
    except ImagebotError as exc:
        await answer(usage_error(exc) if kind == "imagine" and say else escape(error_text(exc)))
        return
    except Exception:
        log.exception("slack %s could not be accepted", kind)
        await answer("Something went wrong on the bot's side; nothing was charged. (IMG-INTERNAL-001)")
        return
    if bot.queues:
        await answer(queued_text(queued, what))
        return
    if where is not None:
        await answer(f"Generating {what}…")
    elif say:
        await answer(f"{what[0].upper()}{what[1:]}…")
    else:
        await ack()  # a button's enhancement: its answer follows in a moment

    async def run(progress: Progress | None) -> Any:
        return await bot.core.run(queued.generation_id, progress)

    if where is None:
        await bot.start(Job(kind, run, NotesOutlet(tell, kind, enhance_message)), tell)
    else:
        await bot.start(images_job(bot, kind, where, tell, run, replace_progress=replace), tell)


def queued_text(queued: Queued, what: str) -> str:
    """Role ingress: the job is reserved and waits for a worker, which posts the result here."""
    ahead = f" ({plural(queued.ahead, 'job')} ahead of it)" if queued.ahead > 0 else ""
    cost = f", {plural(queued.price, 'credit')} held" if queued.price else ""
    return f"Queued: {what}{cost}{ahead}. It will be posted here when it is ready."


def images_job(bot: SlackBot, kind: str, where: Destination, tell: Tell,
               work: Callable[[Progress | None], Awaitable[ImagineResult | None]], *,
               replace_progress: bool = False) -> Job[ImagineResult]:
    """Images with progress notes, delivered to ``where`` (else the DM). ``replace_progress``: the
    response_url is a slash command's, whose answer may be updated in place."""

    def previews_of(name: str) -> int:
        return int(getattr(bot.core.registry.get(name), "previews", 0) or 0)

    notes = ProgressNotes(tell, replace=replace_progress, previews_of=previews_of)
    return Job(kind, work, ImagesOutlet(bot.client, where, tell, kind), notes)


async def enhance(bot: SlackBot, ack: Ack, body: dict[str, Any], tell: Tell) -> None:
    ctx = _ctx(bot, body)
    try:
        prompt = clean_prompt(_text(body))  # the core cleans it again; here a bad one stops before the ack
    except ValidationError as exc:
        await ack(response_type="ephemeral", text=f"{escape(error_text(exc))}\n{ENHANCE_USAGE}")
        return
    await accept(bot, ack, tell, "enhance", "enhancing your prompt",
                 lambda queued: bot.core.enqueue(ctx, "enhance", prompt=prompt, queued=queued))


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


async def refused(ack: Ack, body: dict[str, Any]) -> bool:
    """A command without the asker's user and workspace ids is answered, and runs nothing."""
    if identified(_team(body), body.get("user_id")):
        return False
    await ack(response_type="ephemeral", text=NO_IDENTITY)
    return True


def register(bot: SlackBot) -> None:
    """The slash command listeners, on the service object's Bolt app."""
    app = bot.app

    @app.command("/imagine")
    async def on_imagine(ack: Any, body: dict[str, Any]) -> None:
        if not await refused(ack, body):
            await imagine(bot, ack, body, bot.tell(body))

    @app.command("/enhance")
    async def on_enhance(ack: Any, body: dict[str, Any]) -> None:
        if not await refused(ack, body):
            await enhance(bot, ack, body, bot.tell(body))

    @app.command("/credits")
    async def on_credits(ack: Any, body: dict[str, Any]) -> None:
        if not await refused(ack, body):
            await credits(bot, ack, body, bot.tell(body))

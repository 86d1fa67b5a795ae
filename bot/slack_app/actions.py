"""The buttons, menus and the Edit modal. Each carries a generation id (or a proposal id, a page number);
everything else is read back from the database, so a button pressed after a restart (or on another worker)
does the same thing. Whether the generation belongs to the presser's workspace is checked once, by the core
and the runner (``bot.jobs.prompt_of``). ``register(bot)`` attaches the listeners to the service object's
Bolt app.

Edit opens a modal (``views.open`` with the press's trigger_id, which Slack honours for 3 seconds); its
submission (``view_submission``) carries no response_url and no channel, so the modal's ``private_metadata``
carries the image and where to answer (``blocks.EditTarget``). A refusal (an empty instruction, too few
credits) is shown in the modal itself, under the text box, and nothing is charged.
"""

from __future__ import annotations

import dataclasses
import logging
import re
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass
from typing import Any

from bot.canvas import LABELS
from bot.errors import ImagebotError, ValidationError
from bot.jobs import owned_generation, prompt_of
from bot.models import Context, ImagineOptions
from bot.replies import error_text
from bot.validation import clean_prompt

from .admin import is_workspace_admin
from .apierrors import error_code, report
from .app import NO_IDENTITY, SlackBot, field, identified, text_field
from .blocks import (
    CANCEL,
    CONFIRM,
    DELETE,
    DESCRIBE_IMAGINE_RE,
    EDIT_BLOCK,
    EDIT_INPUT,
    EDIT_RE,
    EDIT_VIEW,
    ENHANCE,
    HISTORY_RE,
    IMAGINE_THIS,
    MORE,
    OUTPAINT_RE,
    PAGE_RE,
    PROPOSAL_RE,
    REROLL,
    SHOW_RE,
    VALUE_RE,
    VARIATIONS_RE,
    EditTarget,
    edit_view,
    outpaint_blocks,
    parse_delete,
    parse_outpaint,
    parse_value,
)
from .commands import history_answer
from .delivery import SLACK_FAILURES, Destination
from .flow import Answer, ModalAnswer, Order, accept, addressed, begin, note_job, shown_job
from .respond import Tell

log = logging.getLogger(__name__)
Ack = Any
NOT_MINE = "That button is not one of mine any more."


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
    return bot.context(team, user_id, _channel(body), text_field(field(body, "user"), "username"),
                       response_url=text_field(body, "response_url"), thread_ts=_thread(body) or "")


def _channel(body: dict[str, Any]) -> str:
    return text_field(field(body, "channel"), "id") or text_field(field(body, "container"), "channel_id")


def _thread(body: dict[str, Any]) -> str | None:
    thread = text_field(field(body, "container"), "thread_ts") or text_field(field(body, "message"), "thread_ts")
    return thread or None


def _where(ctx: Context, body: dict[str, Any]) -> Destination:
    return Destination(ctx.channel_id, ctx.identity.user_id, _thread(body))


def _action_value(action: dict[str, Any]) -> str:
    """A button's value, or a menu's chosen option's."""
    return text_field(action, "value") or text_field(field(action, "selected_option"), "value")


@dataclass(frozen=True)
class Refusal:
    """Why a press cannot run: the payload lacks the presser's ids, or the value is not one of this bot's."""

    text: str


def _value(body: dict[str, Any], action: dict[str, Any],
           parse: Callable[[str | None], Any] = parse_value) -> Any:
    """The parsed value, or a ``Refusal``."""
    if not identified(*_ids(body)):
        return Refusal(NO_IDENTITY)
    try:
        return parse(_action_value(action))
    except ValueError:
        return Refusal(NOT_MINE)


async def _refuse(ack: Ack, tell: Tell, text: str) -> None:
    await ack()
    await tell(text)


async def _press(bot: SlackBot, ack: Ack, body: dict[str, Any], action: dict[str, Any], tell: Tell, kind: str,
                 what: str | Callable[[tuple[str, int]], str],
                 args: Callable[[Context, tuple[str, int]], Mapping[str, Any] | Awaitable[Mapping[str, Any]]]
                 ) -> None:
    """Price, reserve, then ack (``flow.accept``); its images go to the button's channel."""
    value = _value(body, action)
    if isinstance(value, Refusal):
        await _refuse(ack, tell, value.text)
        return
    ctx = _ctx(bot, body)

    async def made() -> Mapping[str, Any]:
        out = args(ctx, value)
        return await out if isinstance(out, Awaitable) else out

    where = None if kind in ("enhance", "describe") else _where(ctx, body)
    await accept(bot, Answer(ack, tell), tell, ctx, Order(kind, what(value) if callable(what) else what, made),
                 where=where)


async def reroll(bot: SlackBot, ack: Ack, body: dict[str, Any], action: dict[str, Any], tell: Tell) -> None:
    await _press(bot, ack, body, action, tell, "reroll", "a re-roll", lambda ctx, v: {"generation_id": v[0]})


async def variations(bot: SlackBot, ack: Ack, body: dict[str, Any], action: dict[str, Any], tell: Tell) -> None:
    await _press(bot, ack, body, action, tell, "variations", lambda v: f"variations of image {v[1] + 1}",
                 lambda ctx, v: {"generation_id": v[0], "index": v[1]})


async def enhance(bot: SlackBot, ack: Ack, body: dict[str, Any], action: dict[str, Any], tell: Tell) -> None:
    async def args(ctx: Context, v: tuple[str, int]) -> Mapping[str, Any]:
        return {"prompt": await prompt_of(bot.core, ctx, v[0], enhanced=False)}

    await _press(bot, ack, body, action, tell, "enhance", "enhancing the prompt", args)


async def imagine_this(bot: SlackBot, ack: Ack, body: dict[str, Any], action: dict[str, Any], tell: Tell) -> None:
    """Runs /imagine with the enhanced prompt stored for that /enhance (its ``result_text``), or with the
    ``index``-th prompt a /describe suggested."""
    async def args(ctx: Context, v: tuple[str, int]) -> Mapping[str, Any]:
        prompt = await prompt_of(bot.core, ctx, v[0], enhanced=True, index=v[1])
        return {"options": ImagineOptions(prompt=prompt)}

    await _press(bot, ack, body, action, tell, "imagine", "images from that prompt", args)


async def more(bot: SlackBot, ack: Ack, body: dict[str, Any], action: dict[str, Any], tell: Tell) -> None:
    """More…: a private list of the canvas operations (zoom out, pan, make square) each image's model can do,
    asked of the core now (``Imagebot.outpaint_ops``), so it is right wherever and whenever the result was
    posted. Free; a choice is charged like one new image."""
    value = _value(body, action, _plain_id)
    if isinstance(value, Refusal):
        await _refuse(ack, tell, value.text)
        return
    await ack()
    ctx = _ctx(bot, body)

    async def work() -> str | tuple[str, list[dict[str, Any]]]:
        gen = await owned_generation(bot.core, ctx, value)
        ops = {i: await bot.core.outpaint_ops(ctx, value, i) for i in range(min(len(gen.images), 10))}
        if not any(ops.values()):
            return ("This image can't be zoomed out, panned or made square: none of this bot's image models "
                    "can extend it (that needs a model that takes a mask).")
        return "Zoom out, pan or make square:", outpaint_blocks(value, ops)

    await bot.start(note_job("more", tell, work), tell)


async def outpaint(bot: SlackBot, ack: Ack, body: dict[str, Any], action: dict[str, Any], tell: Tell) -> None:
    """A canvas button from More…: zoom out, pan or make square one image (a new image, charged like one); the
    core refuses (nothing charged) what its model cannot do. The list is replaced by the progress."""
    value = _value(body, action, parse_outpaint)
    if isinstance(value, Refusal):
        await _refuse(ack, tell, value.text)
        return
    gid, index, op = value
    ctx = _ctx(bot, body)
    what = f"“{LABELS[op].lower()}” of image {index + 1}"
    await accept(bot, Answer(ack, tell, replace=True), tell, ctx,
                 Order("outpaint", what, {"generation_id": gid, "index": index, "op": op}),
                 where=_where(ctx, body), replace=True)


# -- Edit: a modal -----------------------------------------------------------------------------------------

async def edit(bot: SlackBot, ack: Ack, body: dict[str, Any], action: dict[str, Any], tell: Tell) -> None:
    """Open the Edit modal at once (its trigger lives 3 seconds); nothing is charged until it is submitted."""
    value = _value(body, action)
    if isinstance(value, Refusal):
        await _refuse(ack, tell, value.text)
        return
    trigger = text_field(body, "trigger_id")
    await ack()
    if not trigger:
        await tell("Slack sent this press without a way to open the edit box; press Edit again.")
        return
    ctx = _ctx(bot, body)
    gid, index = value
    target = EditTarget(gid, index, ctx.channel_id, _thread(body) or "", text_field(body, "response_url"))

    async def work() -> str | None:
        prompt = await prompt_of(bot.core, ctx, gid, enhanced=False)  # this workspace's image, or NotFound
        try:
            await bot.client.views_open(trigger_id=trigger, view=edit_view(target, prompt))
        except SLACK_FAILURES as exc:
            if error_code(exc) in ("expired_trigger_id", "invalid_trigger_id", "exchanged_trigger_id"):
                return "Slack closed the edit box before it opened (the press is only good for 3 seconds); " \
                       "press Edit again."
            return report(exc, "views.open")
        return None

    await bot.start(note_job("edit", tell, work), tell)


def _submitted_text(view: object) -> str:
    state = field(field(field(view, "state"), "values"), EDIT_BLOCK)
    return text_field(field(state, EDIT_INPUT), "value")


async def edit_submitted(bot: SlackBot, ack: Ack, body: dict[str, Any], tell_for: Callable[[str], Tell]) -> None:
    """The Edit modal's submission: price, reserve (charged like one image of its size), then close the modal;
    the edited image goes where the Edit button was."""
    answer_errors = ModalAnswer(ack, tell_for(""))
    if not identified(*_ids(body)):
        await answer_errors.refuse_text(NO_IDENTITY)
        return
    view = field(body, "view")
    try:
        target = EditTarget.load(text_field(view, "private_metadata"))
    except ValueError:
        await answer_errors.refuse_text("This edit box is not one of mine any more; press Edit again.")
        return
    try:
        instruction = clean_prompt(_submitted_text(view))  # the core cleans it again
    except ValidationError as exc:
        await answer_errors.refuse_text(error_text(exc))
        return
    team, user_id = _ids(body)
    ctx = bot.context(team, user_id, target.channel_id, text_field(field(body, "user"), "username"),
                      response_url=target.response_url, thread_ts=target.thread_ts)
    tell = tell_for(target.response_url)
    where = Destination(target.channel_id, user_id, target.thread_ts or None)
    order = Order("edit", f"an edit of image {target.index + 1}",
                  {"generation_id": target.generation_id, "index": target.index, "prompt": instruction})
    await accept(bot, ModalAnswer(ack, tell), tell, ctx, order, where=where)


# -- Delete ------------------------------------------------------------------------------------------------

async def delete(bot: SlackBot, ack: Ack, body: dict[str, Any], action: dict[str, Any], tell: Tell) -> None:
    """The asker (or a workspace admin) removes a result: the core marks it deleted (its ledger rows stay),
    then the images and the buttons go from the conversation. The credits spent stay spent."""
    value = _value(body, action, parse_delete)
    if isinstance(value, Refusal):
        await _refuse(ack, tell, value.text)
        return
    await ack()
    gid, files = value
    ctx = _ctx(bot, body)
    container = field(body, "container")
    ephemeral = field(container, "is_ephemeral") is True
    message_ts = text_field(container, "message_ts") or text_field(field(body, "message"), "ts")

    async def work() -> str | None:
        admin = await is_workspace_admin(bot.client, ctx.identity.user_id, bot.settings.admins)
        await bot.core.delete(dataclasses.replace(ctx, is_admin=admin), gid)
        for file_id in files:
            try:
                await bot.client.files_delete(file=file_id)
            except SLACK_FAILURES as exc:  # already gone, or not the bot's: the result is deleted all the same
                log.info("could not delete Slack file %s: %s", file_id, error_code(exc))
        removed = False
        if ephemeral:
            removed = await tell("", delete=True)
        elif message_ts and ctx.channel_id:
            try:
                await bot.client.chat_delete(channel=ctx.channel_id, ts=message_ts)
                removed = True
            except SLACK_FAILURES as exc:
                log.info("could not delete the result message: %s", error_code(exc))
        note = "Deleted that result." if removed or files else "Deleted that result from your history."
        return f"{note} The credits it cost are not returned. (id {gid})"

    await bot.start(note_job("delete", tell, work), tell)


# -- Show, history pages -------------------------------------------------------------------------------------

async def show(bot: SlackBot, ack: Ack, body: dict[str, Any], action: dict[str, Any], tell: Tell) -> None:
    value = _value(body, action, _plain_id)
    if isinstance(value, Refusal):
        await _refuse(ack, tell, value.text)
        return
    await ack()
    ctx = _ctx(bot, body)
    await bot.start(shown_job(bot, ctx, _where(ctx, body), tell, lambda: bot.core.show(ctx, value)), tell)


def _plain_id(value: str | None) -> str:
    match = VALUE_RE.fullmatch(value or "")
    if not match or match[2] is not None:
        raise ValueError("not a generation id")
    return match[1]


def _page(value: str | None) -> int:
    if not PAGE_RE.fullmatch(value or "") or int(value or "0") < 1:
        raise ValueError("not a page")
    return int(value or "1")


async def history_page(bot: SlackBot, ack: Ack, body: dict[str, Any], action: dict[str, Any], tell: Tell) -> None:
    """Prev/Next: the same ephemeral message shows the other page."""
    value = _value(body, action, _page)
    if isinstance(value, Refusal):
        await _refuse(ack, tell, value.text)
        return
    await ack()
    ctx = _ctx(bot, body)
    await bot.start(note_job("history", tell, lambda: history_answer(bot, ctx, value), replace=True), tell)


# -- the confirm step -------------------------------------------------------------------------------------

def _proposal(value: str | None) -> str:
    if not PROPOSAL_RE.fullmatch(value or ""):
        raise ValueError("not a proposal")
    return value or ""


async def confirm(bot: SlackBot, ack: Ack, body: dict[str, Any], action: dict[str, Any], tell: Tell) -> None:
    """Confirm: run exactly what was quoted, once (``Imagebot.enqueue_proposal``), reserved before the ack;
    its images go where the prompt was, and the prompt is replaced by the progress."""
    value = _value(body, action, _proposal)
    if isinstance(value, Refusal):
        await _refuse(ack, tell, value.text)
        return
    ctx = _ctx(bot, body)
    answer = Answer(ack, tell, replace=True)
    if not bot.queues and not bot.jobs.accepting:
        await answer.say("The bot is restarting and took no new work; nothing was charged. Press Confirm again "
                         "in a minute. (IMG-RESTARTING)")
        return
    try:
        ctx = await addressed(bot, ctx)
        queued = await bot.core.enqueue_proposal(ctx, value, queued=bot.queues)
    except ImagebotError as exc:
        await answer.refuse(exc)
        return
    except Exception:
        log.exception("slack confirm could not be accepted")
        await answer.say("Something went wrong on the bot's side; nothing was charged. (IMG-INTERNAL-001)")
        return
    await begin(bot, answer, tell, ctx, queued, _confirmed_what(queued.kind), where=_where(ctx, body), replace=True)


def _confirmed_what(kind: str) -> str:
    return {"imagine": "your images", "reroll": "a re-roll", "variations": "variations", "edit": "the edit",
            "outpaint": "the new canvas", "upscale": "the upscale", "enhance": "enhancing the prompt",
            "describe": "describing the image"}.get(kind, "it")


async def cancel(bot: SlackBot, ack: Ack, body: dict[str, Any], action: dict[str, Any], tell: Tell) -> None:
    """Cancel: nothing was reserved for a proposal, so nothing to give back; it expires unused."""
    await ack()
    await tell("Cancelled; nothing was charged.", replace=True)


# -- registration --------------------------------------------------------------------------------------------

Handler = Callable[[SlackBot, Ack, dict[str, Any], dict[str, Any], Tell], Awaitable[None]]
ACTIONS: list[tuple[str | re.Pattern[str], Handler]] = [
    (REROLL, reroll), (VARIATIONS_RE, variations), (ENHANCE, enhance), (IMAGINE_THIS, imagine_this),
    (DESCRIBE_IMAGINE_RE, imagine_this), (EDIT_RE, edit), (MORE, more), (OUTPAINT_RE, outpaint), (DELETE, delete),
    (SHOW_RE, show),
    (HISTORY_RE, history_page), (CONFIRM, confirm), (CANCEL, cancel),
]


def register(bot: SlackBot) -> None:
    """The button, menu and modal listeners, on the service object's Bolt app."""
    for action_id, handler in ACTIONS:
        _listen(bot, action_id, handler)

    @bot.app.view(EDIT_VIEW)
    async def on_edit_submitted(ack: Any, body: dict[str, Any]) -> None:
        await edit_submitted(bot, ack, body, bot.tell_url)


def _listen(bot: SlackBot, action_id: str | re.Pattern[str], handler: Handler) -> None:
    @bot.app.action(action_id)
    async def on_action(ack: Any, body: dict[str, Any], action: dict[str, Any]) -> None:
        await handler(bot, ack, body, action, bot.tell(body))


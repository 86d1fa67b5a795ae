"""The path every Slack request that costs credits takes: ``Imagebot.accept`` prices it and either asks first
(above the workspace's threshold) or reserves the job; then acknowledge, then run it here
(``bot.jobs``) or, with role ingress, leave it queued for the workers.

No request is acknowledged without its job row, so a process killed after the ack leaves a job any worker
resumes. A refusal (nothing charged, nothing stored) is the answer itself. How the answer is given depends on
where the request came from (``Answer``): in a slash command's ack, as a note after a button's empty ack, or
as an error on a modal's input.
"""

from __future__ import annotations

import dataclasses
import logging
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass, field
from typing import Any

from bot.errors import ImagebotError
from bot.jobs import Job, Progress
from bot.models import Context, DescribeResult, EnhanceResult, ImagineResult, Queued, Quote
from bot.replies import error_text, plural, restarting_text

from .app import SlackBot
from .blocks import EDIT_BLOCK, confirm_blocks
from .delivery import Destination, ImagesOutlet, NotesOutlet, Shown, ShownOutlet, notes_message
from .progress import ProgressNotes
from .respond import Tell
from .text import escape

log = logging.getLogger(__name__)
Ack = Any
#: Job kinds whose result is images (posted to the conversation); the others answer privately.
IMAGE_KINDS = frozenset({"imagine", "reroll", "variations", "upscale", "edit", "outpaint"})
INTERNAL = "Something went wrong on the bot's side; nothing was charged. (IMG-INTERNAL-001)"
#: Slack shows at most this much of an error under a modal's input.
MODAL_ERROR_MAX = 1500


@dataclass
class Answer:
    """The first reply to a request: in the ack itself (``in_ack``: a slash command's ephemeral answer), or an
    empty ack and then a note through the response_url (a button; ``replace`` updates the message the button
    is on, such as a Confirm prompt). ``usage`` follows a refusal (a slash command's usage line)."""

    ack: Ack
    tell: Tell
    in_ack: bool = False
    replace: bool = False
    usage: str = ""
    acked: bool = field(default=False, init=False)

    async def say(self, text: str, blocks: list[dict[str, Any]] | None = None) -> None:
        if self.in_ack and not self.acked:
            self.acked = True
            await self.ack(response_type="ephemeral", text=text, blocks=blocks)
            return
        await self.empty()
        await self.tell(text, blocks, replace=self.replace)

    async def empty(self) -> None:
        if not self.acked:
            self.acked = True
            await self.ack()

    async def refuse(self, exc: ImagebotError) -> None:
        text = error_text(exc)
        if self.usage and self.usage not in text:
            text += f"\n{self.usage}"
        await self.say(escape(text))


@dataclass
class ModalAnswer(Answer):
    """A modal's submission: a refusal stays in the modal, under its input (Slack's ``response_action:
    errors``), so the person can fix it; anything else closes it and goes on as a note."""

    block_id: str = EDIT_BLOCK

    async def refuse(self, exc: ImagebotError) -> None:
        await self.refuse_text(error_text(exc))

    async def refuse_text(self, text: str) -> None:
        if self.acked:
            await self.tell(escape(text))
            return
        self.acked = True
        await self.ack(response_action="errors", errors={self.block_id: text[:MODAL_ERROR_MAX]})


Args = Mapping[str, Any] | Callable[[], Awaitable[Mapping[str, Any]]]


@dataclass(frozen=True)
class Order:
    """A job to accept: its kind (``Imagebot.enqueue``), what it is in words (escaped, for "Generating …"),
    and its arguments (or a coroutine making them, when they need a look-up that may refuse)."""

    kind: str
    what: str
    args: Args


async def accept(bot: SlackBot, answer: Answer, tell: Tell, ctx: Context, order: Order, *,
                 where: Destination | None = None, replace: bool = False) -> None:
    """Price, ask or reserve, then acknowledge (see the module). ``where``: the images' conversation (None:
    the answer is a note). ``replace``: progress may update the message the response_url belongs to."""
    if not bot.queues and not bot.jobs.accepting:  # draining: reserve nothing this process will not run
        await answer.say(restarting_text())
        return
    try:
        args = dict(await order.args() if callable(order.args) else order.args)
        ctx = await addressed(bot, ctx)
        accepted = await bot.core.accept(ctx, order.kind, queued=bot.queues, **args)
        if isinstance(accepted, Quote):  # above the threshold, within the balance: ask first
            text = confirm_text(accepted, order.what)
            await answer.say(text, confirm_blocks(accepted, text))
            return
        queued = accepted
    except ImagebotError as exc:
        await answer.refuse(exc)
        return
    except Exception:
        log.exception("slack %s could not be accepted", order.kind)
        await answer.say(INTERNAL)
        return
    await begin(bot, answer, tell, ctx, queued, order.what, where=where, replace=replace)


async def addressed(bot: SlackBot, ctx: Context) -> Context:
    """A job of a workspace that posts results privately says so in its address (``"private": true``), so a
    worker in another process (``courier.SlackCourier``, which has no core to ask) posts it the same way."""
    if ctx.address is None or await bot.core.visibility(ctx) != "private":
        return ctx
    return dataclasses.replace(ctx, address={**ctx.address, "private": True})


async def begin(bot: SlackBot, answer: Answer, tell: Tell, ctx: Context, queued: Queued, what: str, *,
                where: Destination | None, replace: bool = False) -> None:
    """A reserved job: say so (the ack), then run it here, or leave it to the workers (role ingress)."""
    if bot.queues:
        await answer.say(queued_text(queued, what))
        return
    if where is not None and queued.kind in IMAGE_KINDS:
        await answer.say(f"Generating {what}…")
    elif answer.in_ack or answer.replace:
        await answer.say(f"{what[0].upper()}{what[1:]}…")
    else:
        await answer.empty()  # a button's private answer follows in a moment

    async def run(progress: Progress | None) -> Any:
        return await bot.core.run(queued.generation_id, progress)

    if where is None or queued.kind not in IMAGE_KINDS:
        await bot.start(Job(queued.kind, run, NotesOutlet(tell, queued.kind, notes_message)), tell)
    else:
        await bot.start(images_job(bot, ctx, queued.kind, where, tell, run, replace_progress=replace), tell)


def confirm_text(quote: Quote, what: str) -> str:
    """The ask before spending: what, its price, and the balance before and after."""
    return (f"{what[0].upper()}{what[1:]} costs {plural(quote.price, 'credit')}. You have {quote.balance}; "
            f"{quote.balance_after} after. Go ahead?")


def queued_text(queued: Queued, what: str) -> str:
    """Role ingress: the job is reserved and waits for a worker, which posts the result here."""
    ahead = f" ({plural(queued.ahead, 'job')} ahead of it)" if queued.ahead > 0 else ""
    cost = f", {plural(queued.price, 'credit')} held" if queued.price else ""
    return f"Queued: {what}{cost}{ahead}. It will be posted here when it is ready."


async def dress(bot: SlackBot, ctx: Context, outlet: ImagesOutlet, result: ImagineResult) -> None:
    """Whether this workspace posts results privately (read when the result exists, so a change made meanwhile
    counts). Unknown visibility posts privately: a result never leaks into a channel by mistake."""
    try:
        outlet.private = await bot.core.visibility(ctx) == "private"
    except Exception:  # noqa: BLE001 - the images still go out, to the asker alone
        log.warning("could not read the workspace's result visibility; posting privately", exc_info=True)
        outlet.private = True


def images_job(bot: SlackBot, ctx: Context, kind: str, where: Destination, tell: Tell,
               work: Callable[[Progress | None], Awaitable[Any]], *,
               replace_progress: bool = False) -> Job[ImagineResult]:
    """Images with progress notes, delivered to ``where`` (else the DM; only the DM and a note when the
    workspace posts privately). ``replace_progress``: the response_url is a slash command's (or a Confirm
    prompt's), whose message may be updated in place."""

    def previews_of(name: str) -> int:
        return int(getattr(bot.core.registry.get(name), "previews", 0) or 0)

    outlet = ImagesOutlet(bot.client, where, tell, kind)

    async def run(progress: Progress | None) -> ImagineResult | None:
        result = await work(progress)
        if isinstance(result, ImagineResult):
            await dress(bot, ctx, outlet, result)
        return result  # type: ignore[no-any-return]

    notes = ProgressNotes(tell, replace=replace_progress, previews_of=previews_of)
    return Job(kind, run, outlet, notes)


def shown_job(bot: SlackBot, ctx: Context, where: Destination, tell: Tell,
              fetch: Callable[[], Awaitable[ImagineResult]]) -> Job[Shown]:
    """A stored result posted again, free (/show, "Show"): where new images would go, with all their buttons."""
    outlet = ShownOutlet(ImagesOutlet(bot.client, where, tell, "show"), tell)

    async def run(progress: Progress | None) -> Shown:
        result = await fetch()
        await dress(bot, ctx, outlet.images, result)
        return Shown(result)

    return Job("show", run, outlet)


def note_job(kind: str, tell: Tell, work: Callable[[], Awaitable[Any]], *, replace: bool = False) -> Job[Any]:
    """A free, private answer (text, or text and blocks) through the response_url."""
    async def run(progress: Progress | None) -> Any:
        return await work()

    return Job(kind, run, NotesOutlet(tell, kind, _render, replace=replace))


def _render(result: object) -> tuple[str, list[dict[str, Any]] | None]:
    if isinstance(result, tuple):
        text, blocks = result
        return str(text), blocks
    if isinstance(result, EnhanceResult | DescribeResult):
        return notes_message(result)
    return str(result), None

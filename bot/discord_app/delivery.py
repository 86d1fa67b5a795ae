"""Getting replies and images to the person, whatever Discord says.

Nothing ever ends as "This interaction failed": the interaction is acknowledged first, and when a later
call is refused the reply falls back, in order, to the original response, a private (ephemeral) reply,
then a direct message. Uploads are fitted to the interaction's ``attachment_size_limit`` first; a 413
(code 40005) anyway retries once at half the size that was refused. These are the delivery targets and the
wording the shared job runner (``bot.jobs``) works with; it refunds images that reach nobody.
"""

from __future__ import annotations

import asyncio
import io
import logging
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass
from typing import TypeVar

import discord

from bot.errors import ImagebotError
from bot.jobs import NotDelivered, Outlet, Target
from bot.models import ImagineResult, StoredImage
from bot.replies import refund_note

from .fitting import ENVELOPE, MAX_FILES, CannotFit, Upload, fit_message
from .settings import DEFAULT_UPLOAD_LIMIT

log = logging.getLogger(__name__)
R = TypeVar("R")

NO_MENTIONS = discord.AllowedMentions.none()
#: Unknown interaction, unknown webhook, unknown message, invalid webhook token (older than 15 min).
GONE = {10062, 10015, 10008, 50027}
TOO_LARGE = 40005
HERE, PRIVATE, DM, NOWHERE = "here", "private", "dm", "nowhere"
REASONS = {
    "gone": "this interaction expired before the images were ready",
    "forbidden": "the bot may not post that here",
    "too_large": "Discord refused the upload size",
    "error": "Discord refused the message",
}


def is_gone(exc: discord.HTTPException) -> bool:
    return exc.code in GONE


def kind_of(exc: discord.HTTPException) -> str:
    if exc.code in GONE:
        return "gone"
    if exc.code == TOO_LARGE or exc.status == 413:
        return "too_large"
    if isinstance(exc, discord.Forbidden):
        return "forbidden"
    return "error"


async def defer(interaction: discord.Interaction, *, ephemeral: bool = False) -> bool:
    """Acknowledge at once (Discord's 3-second deadline). False if Discord no longer knows it."""
    try:
        await interaction.response.defer(ephemeral=ephemeral, thinking=True)
        return True
    except discord.InteractionResponded:
        return True
    except discord.HTTPException as exc:
        log.warning("could not acknowledge interaction %s: %s (%s)", interaction.id, exc.status, exc.code)
        return False


async def dm(user: discord.User | discord.Member, content: str | None = None, *, embed: discord.Embed | None = None,
             files: Sequence[Upload] = ()) -> bool:
    try:
        await user.send(content, embed=embed or discord.utils.MISSING, files=[to_file(u) for u in files],
                        allowed_mentions=NO_MENTIONS)
        return True
    except discord.HTTPException as exc:
        log.warning("could not DM user %s: %s (%s)", user.id, exc.status, exc.code)
        return False


async def say(interaction: discord.Interaction, text: str | None, *, ephemeral: bool = True,
              embed: discord.Embed | None = None, view: discord.ui.View | None = None,
              files: Sequence[Upload] = ()) -> bool:
    """Tell the person something in whatever state the interaction is; a DM when it is gone.

    Before any response this is the first (ephemeral) response; after a defer it replaces the
    original response's text (and attachments, with ``files``). Returns whether anyone could be told."""
    missing = discord.utils.MISSING
    try:
        if not interaction.response.is_done():
            await interaction.response.send_message(text, ephemeral=ephemeral, embed=embed or missing,
                                                    allowed_mentions=NO_MENTIONS, view=view or missing,
                                                    files=[to_file(u) for u in files] or missing)
        else:
            await interaction.edit_original_response(content=text, embed=embed, attachments=[to_file(u) for u in files],
                                                     allowed_mentions=NO_MENTIONS, view=view or missing)
        return True
    except discord.HTTPException as exc:
        log.warning("reply to interaction %s refused: %s (%s)", interaction.id, exc.status, exc.code)
        if not is_gone(exc) and interaction.response.is_done():
            try:
                await interaction.followup.send(text or missing, ephemeral=True, embed=embed or missing,
                                                allowed_mentions=NO_MENTIONS, view=view or missing,
                                                files=[to_file(u) for u in files] or missing)
                return True
            except discord.HTTPException:
                pass
    return await dm(interaction.user, text, embed=embed, files=files)


def to_file(upload: Upload) -> discord.File:
    return discord.File(io.BytesIO(upload.data), filename=upload.filename)


@dataclass
class Outgoing:
    """The result message: text, embed, buttons and the images to attach."""

    embed: discord.Embed
    images: Sequence[StoredImage]
    stem: str
    view: discord.ui.View | None = None
    content: str | None = None


def _read(images: Sequence[StoredImage]) -> list[tuple[bytes, str]]:
    return [(image.path.read_bytes(), image.mime) for image in images]


def _fit_all(raw: list[tuple[bytes, str]], limit: int, stem: str) -> list[list[Upload]]:
    return [
        fit_message(raw[i : i + MAX_FILES], limit, stem=stem, start=i + 1) for i in range(0, len(raw), MAX_FILES)
    ]


def _read_and_fit(images: Sequence[StoredImage], limit: int,
                  stem: str) -> tuple[list[tuple[bytes, str]], list[list[Upload]] | None]:
    """One trip to a worker thread for the usual case: the files, and the batches for the interaction's
    limit (None when they cannot fit: the target that tries says so)."""
    raw = _read(images)
    try:
        return raw, _fit_all(raw, limit, stem)
    except CannotFit:
        return raw, None


def _retrieved(task: asyncio.Task[object]) -> None:
    """A preparation nobody awaited (the job was cut short) must not log "exception never retrieved"."""
    if not task.cancelled():
        task.exception()


class ImageOutlet(Outlet[ImagineResult]):
    """A generation's images: the original response, else a private reply, else a direct message.

    Uploads are fitted to the interaction's limit first; a 413 retries once at half the refused size. Once
    Discord says the interaction is gone, only the DM is tried. A result that went privately or by DM
    leaves a note in the original response (so no preview stands in for it)."""

    refusals = (discord.HTTPException, CannotFit)

    def __init__(self, interaction: discord.Interaction, build: Callable[[ImagineResult], Outgoing]) -> None:
        self._interaction = interaction
        self.interaction = interaction
        self._build = build
        self._ready: asyncio.Task[tuple[Outgoing, list[tuple[bytes, str]], list[list[Upload]] | None]] | None = None
        self._limit = interaction.filesize_limit or DEFAULT_UPLOAD_LIMIT

    def prepare(self, result: ImagineResult) -> None:
        """Build the message and read and fit the files while the progress display stops, so the upload
        leaves as soon as it may (a failure here surfaces when the first target sends)."""
        if self._ready is None:
            self._ready = asyncio.create_task(self._load(result), name=f"prepare-{self._interaction.id}")
            self._ready.add_done_callback(_retrieved)

    async def _load(self, result: ImagineResult) -> tuple[Outgoing, list[tuple[bytes, str]], list[list[Upload]] | None]:
        out = self._build(result)
        raw, batches = await asyncio.to_thread(_read_and_fit, out.images, self._limit, out.stem)
        return out, raw, batches

    def targets(self, result: ImagineResult) -> Sequence[Target[ImagineResult]]:
        return [
            Target(HERE, lambda r, f: self._send_to(HERE, r, f)),
            Target(PRIVATE, lambda r, f: self._send_to(PRIVATE, r, f), after=_alive),
            Target(DM, lambda r, f: self._send_to(DM, r, f)),
        ]

    async def _send_to(self, target: str, result: ImagineResult, failures: Sequence[BaseException]) -> None:
        self.prepare(result)
        assert self._ready is not None
        out, raw, fitted = await self._ready
        budget = min(self._limit, DEFAULT_UPLOAD_LIMIT) if target == DM else self._limit
        for attempt in range(2):
            if attempt == 0 and budget == self._limit and fitted is not None:
                batches = fitted
            else:
                batches = await asyncio.to_thread(_fit_all, raw, budget, out.stem)
            try:
                await _send(self._interaction, target, out, batches)
                break
            except discord.HTTPException as exc:
                log.warning("delivery %s of %s refused: %s (%s)", target, out.stem, exc.status, exc.code)
                if kind_of(exc) == "too_large" and attempt == 0:  # Discord's real limit is below what it said
                    budget = min(budget, sum(len(u.data) for u in batches[0]) + ENVELOPE) // 2
                    continue
                raise
        if failures and _alive(failures):
            where = "in a private reply" if target == PRIVATE else "by direct message"
            await _quiet(self._interaction.edit_original_response(  # no preview left standing in for the result
                content=f"I couldn't post the images here ({REASONS[reason_of(failures[-1])]}), so I sent them "
                        f"to you {where}.", attachments=[], allowed_mentions=NO_MENTIONS))

    async def tell(self, text: str) -> None:
        await say(self._interaction, text)

    async def failed(self, exc: Exception) -> None:
        if not isinstance(exc, ImagebotError):
            log.error("generation for interaction %s failed", self._interaction.id, exc_info=exc)
        await super().failed(exc)

    async def undelivered(self, failures: Sequence[BaseException], refunded: int) -> None:
        reason = REASONS[reason_of(failures[-1]) if failures else "error"]
        await say(self._interaction, f"I couldn't deliver your images: {reason}.{refund_note(refunded)} (IMG-DELIVERY-001)")


class ReplyOutlet(Outlet[R]):
    """A text or embed answer in the interaction's own (deferred) response; ``say`` falls back to a private
    follow-up, then a DM. ``direct``: the interaction is gone, so the answer goes by DM only."""

    def __init__(self, interaction: discord.Interaction, render: Callable[[R], Reply], *,
                 direct: bool = False) -> None:
        self._interaction = interaction
        self._render = render
        self._direct = direct

    def targets(self, result: R) -> Sequence[Target[R]]:
        return [Target("reply", self._reply)]

    async def _reply(self, result: R, failures: Sequence[BaseException]) -> None:
        reply = self._render(result)
        if self._direct:
            ok = await dm(self._interaction.user, reply.text, embed=reply.embed, files=reply.files)
        else:
            ok = await say(self._interaction, reply.text, embed=reply.embed, view=reply.view, files=reply.files)
        if not ok:
            raise NotDelivered("no reply reached the person")

    async def tell(self, text: str) -> None:
        if self._direct:
            await dm(self._interaction.user, text)
        else:
            await say(self._interaction, text)

    async def undelivered(self, failures: Sequence[BaseException], refunded: int) -> None:
        """``say`` already tried the reply, a private follow-up and a DM: there is no one left to tell."""


@dataclass(frozen=True)
class Reply:
    text: str | None = None
    embed: discord.Embed | None = None
    view: discord.ui.View | None = None
    files: Sequence[Upload] = ()


@dataclass(frozen=True)
class Shown:
    """A stored result posted again (/show): it belongs to no job, so the runner renews no lease, marks
    nothing done and refunds nothing for it (``bot.jobs.generation_id_of`` does not know this type)."""

    result: ImagineResult


class ShownOutlet(Outlet[Shown]):
    """/show's delivery: the targets of an ``ImageOutlet``, for the stored result inside ``Shown``."""

    refusals = ImageOutlet.refusals

    def __init__(self, inner: ImageOutlet) -> None:
        self._inner = inner

    def prepare(self, result: Shown) -> None:
        self._inner.prepare(result.result)

    def targets(self, result: Shown) -> Sequence[Target[Shown]]:
        def adapt(target: Target[ImagineResult]) -> Target[Shown]:
            return Target(target.name, lambda r, f: target.send(r.result, f), target.after)

        return [adapt(t) for t in self._inner.targets(result.result)]

    async def tell(self, text: str) -> None:
        await self._inner.tell(text)

    async def undelivered(self, failures: Sequence[BaseException], refunded: int) -> None:
        reason = REASONS[reason_of(failures[-1]) if failures else "error"]
        await say(self._inner.interaction, f"I couldn't post that result: {reason}. (IMG-DELIVERY-001)")


def reason_of(exc: BaseException) -> str:
    if isinstance(exc, CannotFit):
        return "too_large"
    if isinstance(exc, discord.HTTPException):
        return kind_of(exc)
    return "error"


def _alive(failures: Sequence[BaseException]) -> bool:
    """False once Discord said the interaction is gone: then only a DM can reach the person."""
    return not any(isinstance(f, discord.HTTPException) and is_gone(f) for f in failures)


async def _send(interaction: discord.Interaction, target: str, out: Outgoing, batches: list[list[Upload]]) -> None:
    first, rest = batches[0], batches[1:]
    view = out.view or discord.utils.MISSING
    if target == HERE:
        await interaction.edit_original_response(content=out.content, embed=out.embed, view=out.view,
                                                 attachments=[to_file(u) for u in first],
                                                 allowed_mentions=NO_MENTIONS)
    elif target == PRIVATE:
        await interaction.followup.send(out.content or discord.utils.MISSING, embed=out.embed, view=view,
                                        files=[to_file(u) for u in first], ephemeral=True,
                                        allowed_mentions=NO_MENTIONS)
    else:
        # No buttons in a DM: they act on the server's account, which a DM does not know.
        await interaction.user.send(out.content, embed=out.embed, files=[to_file(u) for u in first],
                                    allowed_mentions=NO_MENTIONS)
    for batch in rest:  # more than 10 images: the rest follow in the same place, best effort
        files = [to_file(u) for u in batch]
        try:
            if target == DM:
                await interaction.user.send(files=files)
            else:
                await interaction.followup.send(files=files, ephemeral=target == PRIVATE)
        except discord.HTTPException as exc:
            log.warning("a further batch of %s was refused: %s (%s)", out.stem, exc.status, exc.code)


async def _quiet(call: Awaitable[object]) -> None:
    try:
        await call
    except discord.HTTPException:
        pass

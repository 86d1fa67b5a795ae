"""The shared tail of /imagine and its buttons: generate through the core with progress shown to the
user, then deliver (channel, thread or DM; refunded if nowhere).

Previews on Slack are text, not pictures: while the model draws, the slash command's own ephemeral answer
is updated to "Drawing… (preview 1 of 2)". Uploading each partial image would leave every preview behind as a
separate file in the workspace's files (Slack keeps every upload; a message cannot swap its file for another,
``chat.update`` cannot replace an uploaded file), uploads are rate-limited (``files.getUploadURLExternal`` and
``files.completeUploadExternal`` are Tier 4 methods, shared by every job of the workspace), and each preview
would cost two or three Web API calls in the middle of a burst of real results. A response_url takes five
messages in all, so at most ``PREVIEW_NOTES`` previews are told, one a second at most.

Progress never delays a result: ``close`` cancels whatever note is still waiting, and never waits for one.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable
from typing import TYPE_CHECKING, Any

from bot.core import Progress
from bot.models import ImagineResult

from .delivery import Destination, deliver
from .text import escape

if TYPE_CHECKING:
    from .app import SlackBot, Tell

Start = Callable[[Progress], Awaitable[ImagineResult]]
#: A job still waiting this long for a provider slot tells its user the queue position. Shorter waits stay
#: quiet (the ack already said "Generating"), which also keeps these posts out of a burst of acks.
QUEUE_NOTICE_DELAY = 1.0
#: Preview notes per job (a response_url takes 5 messages: room stays for the queue, failover and errors).
PREVIEW_NOTES = 2
#: Seconds between two preview notes of one job.
PREVIEW_INTERVAL = 1.0


def preview_text(details: dict[str, Any]) -> str:
    of = details.get("of")
    return f"Drawing… (preview {details.get('index', '?')}{f' of {of}' if of else ''})"


class ProgressNotes:
    """Core progress -> at most one "waiting in line" note and one note per failover (response_url allows 5)."""

    def __init__(self, tell: Tell, *, replace: bool = False, previews_of: Callable[[str], int] | None = None,
                 clock: Callable[[], float] = time.monotonic) -> None:
        """``replace``: previews update the message the response_url belongs to (a slash command's answer);
        otherwise (a button, whose original is the public result) only the first preview is told, as a
        new ephemeral note. ``previews_of(provider)``: how many previews that provider streams."""
        self._tell = tell
        self._replace = replace
        self._previews_of = previews_of
        self._clock = clock
        self._queued: asyncio.Task[None] | None = None
        self._told_queue = False
        self._preview: str | None = None
        self._preview_task: asyncio.Task[None] | None = None
        self._last_preview = -float("inf")
        self.previews_told = 0

    async def __call__(self, stage: str, details: dict[str, Any]) -> None:
        if stage == "queued" and self._queued is None and not self._told_queue:
            self._queued = asyncio.create_task(self._queue_notice(int(details.get("position", 1))))
        elif stage == "generating":
            self._cancel()
        elif stage == "failover":
            await self._tell(escape(f"{details.get('from')} failed; trying {details.get('to')} instead…"))
        elif stage == "preview":
            self._cancel()
            self._want_preview(details)

    def _want_preview(self, details: dict[str, Any]) -> None:
        if self.previews_told >= self._preview_limit:
            return
        if "of" not in details and self._previews_of is not None:
            details = {**details, "of": self._previews_of(str(details.get("provider", "")))}
        self._preview = escape(preview_text(details))
        if self._preview_task is None or self._preview_task.done():
            self._preview_task = asyncio.create_task(self._tell_previews())

    @property
    def _preview_limit(self) -> int:
        return PREVIEW_NOTES if self._replace else 1

    async def _tell_previews(self) -> None:
        """One note at a time, the newest preview's, at most one every ``PREVIEW_INTERVAL`` seconds."""
        while self._preview is not None and self.previews_told < self._preview_limit:
            await asyncio.sleep(max(0.0, self._last_preview + PREVIEW_INTERVAL - self._clock()))
            text, self._preview = self._preview, None
            self._last_preview = self._clock()
            self.previews_told += 1
            await self._tell(text, replace=self._replace)

    async def _queue_notice(self, position: int) -> None:
        await asyncio.sleep(QUEUE_NOTICE_DELAY)
        self._told_queue = True
        await self._tell(f"Waiting in line: position {position}. Your images will be posted here when they are ready.")

    def _cancel(self) -> None:
        if self._queued is not None and not self._queued.done():
            self._queued.cancel()
        self._queued = None

    def close(self) -> None:
        """Stop at once (the result must not wait): pending notes are dropped."""
        self._cancel()
        if self._preview_task is not None and not self._preview_task.done():
            self._preview_task.cancel()
        self._preview = None


async def generate_and_deliver(bot: SlackBot, where: Destination, tell: Tell, start: Start, *,
                               replace_progress: bool = False) -> None:
    """``replace_progress``: the response_url is a slash command's, whose answer may be updated in place."""

    def previews_of(name: str) -> int:
        return int(getattr(bot.core.registry.get(name), "previews", 0) or 0)

    notes = ProgressNotes(tell, replace=replace_progress, previews_of=previews_of)
    try:
        result = await start(notes)
    finally:
        notes.close()
    await deliver(bot.client, bot.core, result, where, tell)

"""Progress on Slack: core progress -> ephemeral notes through the response_url (``bot.jobs.ProgressSink``).

Previews on Slack are text, not pictures: while the model draws, the slash command's own ephemeral answer
is updated to "Drawing… (preview 1 of 2)". Uploading each partial image would leave every preview behind as a
separate file in the workspace's files (Slack keeps every upload; a message cannot swap its file for another,
``chat.update`` cannot replace an uploaded file), uploads are rate-limited (``files.getUploadURLExternal`` and
``files.completeUploadExternal`` are Tier 4 methods, shared by every job of the workspace), and each preview
would cost two or three Web API calls in the middle of a burst of real results. A response_url takes five
messages in all, so at most ``PREVIEW_NOTES`` previews are told, one a second at most.

Progress never delays a result: ``close`` cancels whatever note is still waiting, and never waits for one
(a note can never overwrite the result: it goes to a different message).
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable
from typing import Any

from bot.jobs_progress import LatestFrame

from .respond import Tell
from .text import escape

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
        self._previews: LatestFrame[str] = LatestFrame(self._tell_preview, self._preview_delay, name="slack-preview")
        self._last_preview = -float("inf")
        self.previews_told = 0

    async def update(self, stage: str, details: dict[str, Any]) -> None:
        """The core's progress callback (through the runner)."""
        await self(stage, details)

    async def finish(self, result: object | None) -> None:
        """Before delivery, or when the job failed: drop whatever is still waiting, at once."""
        self.close()

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
        self._previews.want(escape(preview_text(details)))

    @property
    def _preview_limit(self) -> int:
        return PREVIEW_NOTES if self._replace else 1

    def _preview_delay(self, text: str) -> float:
        """The newest preview's note, at most one every ``PREVIEW_INTERVAL`` seconds."""
        return max(0.0, self._last_preview + PREVIEW_INTERVAL - self._clock())

    async def _tell_preview(self, text: str) -> bool:
        self._last_preview = self._clock()
        self.previews_told += 1
        await self._tell(text, replace=self._replace)
        return self.previews_told < self._preview_limit  # False: that was the last note allowed

    async def _queue_notice(self, position: int) -> None:
        await asyncio.sleep(QUEUE_NOTICE_DELAY)
        self._told_queue = True
        await self._tell(f"Waiting in line: position {position}. Your images will be posted here when they are ready.")

    def _cancel(self) -> None:
        if self._queued is not None and not self._queued.done():
            self._queued.cancel()
        self._queued = None

    def close(self) -> None:
        """Stop at once (the result must not wait): pending notes are dropped, even one being sent."""
        self._cancel()
        self._previews.cancel()

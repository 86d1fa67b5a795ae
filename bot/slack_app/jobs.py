"""The shared tail of /imagine and its buttons: generate through the core with progress shown to the
user, then deliver (channel, thread or DM; refunded if nowhere)."""

from __future__ import annotations

import asyncio
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


class ProgressNotes:
    """Core progress -> at most one "waiting in line" note and one note per failover (response_url allows 5)."""

    def __init__(self, tell: Tell) -> None:
        self._tell = tell
        self._queued: asyncio.Task[None] | None = None
        self._told_queue = False

    async def __call__(self, stage: str, details: dict[str, Any]) -> None:
        if stage == "queued" and self._queued is None and not self._told_queue:
            self._queued = asyncio.create_task(self._queue_notice(int(details.get("position", 1))))
        elif stage == "generating":
            self._cancel()
        elif stage == "failover":
            await self._tell(escape(f"{details.get('from')} failed; trying {details.get('to')} instead…"))

    async def _queue_notice(self, position: int) -> None:
        await asyncio.sleep(QUEUE_NOTICE_DELAY)
        self._told_queue = True
        await self._tell(f"Waiting in line: position {position}. Your images will be posted here when they are ready.")

    def _cancel(self) -> None:
        if self._queued is not None and not self._queued.done():
            self._queued.cancel()
        self._queued = None

    def close(self) -> None:
        self._cancel()


async def generate_and_deliver(bot: SlackBot, where: Destination, tell: Tell, start: Start) -> None:
    notes = ProgressNotes(tell)
    try:
        result = await start(notes)
    finally:
        notes.close()
    await deliver(bot.client, bot.core, result, where, tell)

"""The shared tail of /imagine and its buttons: generate through the core with progress shown to the
user, then deliver (channel, thread or DM; refunded if nowhere)."""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import TYPE_CHECKING, Any

from bot.core import Progress
from bot.models import ImagineResult

from .delivery import Destination, deliver
from .text import escape

if TYPE_CHECKING:
    from .app import SlackBot, Tell

Start = Callable[[Progress], Awaitable[ImagineResult]]


def progress_reporter(tell: Tell) -> Progress:
    """Core progress -> at most one "waiting in line" note and one note per failover (response_url allows 5)."""
    told_queue = False

    async def progress(stage: str, details: dict[str, Any]) -> None:
        nonlocal told_queue
        if stage == "queued" and not told_queue:
            told_queue = True
            await tell(f"Waiting in line: position {int(details.get('position', 1))}. "
                       "Your images will be posted here when they are ready.")
        elif stage == "failover":
            await tell(escape(f"{details.get('from')} failed; trying {details.get('to')} instead…"))

    return progress


async def generate_and_deliver(bot: SlackBot, where: Destination, tell: Tell, start: Start) -> None:
    result = await start(progress_reporter(tell))
    await deliver(bot.client, bot.core, result, where, tell)

"""Progress shown by editing the original response: queued (with position), generating, uploading.

The core awaits the progress callback, so an edit must never hold a generation up: edits run in one
background task per interaction, and only the newest text is sent (Discord rate-limits edits). Each edit
waits ``settle`` seconds first, so quick stage changes collapse into one edit and, in a burst of commands,
the acknowledgements of later commands are not queued behind progress edits of earlier ones.
"""

from __future__ import annotations

import asyncio
import logging
from typing import Any

import discord

from .delivery import NO_MENTIONS, is_gone

log = logging.getLogger(__name__)


def stage_text(stage: str, details: dict[str, Any]) -> str:
    provider = details.get("provider", "")
    if stage == "queued":
        return f"\N{HOURGLASS} Queued: position {details.get('position', '?')} for {provider}…"
    if stage == "generating":
        model = details.get("model")
        return f"\N{ARTIST PALETTE} Generating with {provider}{f' ({model})' if model else ''}…"
    if stage == "failover":
        return f"\N{WARNING SIGN} {details.get('from', 'The provider')} failed; trying {details.get('to', 'another')}…"
    return f"{stage}…"


class ProgressMessage:
    def __init__(self, interaction: discord.Interaction, *, settle: float = 0.5) -> None:
        self._interaction = interaction
        self._settle = settle
        self._wanted: str | None = None
        self._shown: str | None = None
        self._task: asyncio.Task[None] | None = None
        self._alive = True
        self._sleeping = False

    async def update(self, stage: str, details: dict[str, Any]) -> None:
        """The core's progress callback."""
        self.show(stage_text(stage, details))

    def show(self, text: str) -> None:
        self._wanted = text
        if self._alive and (self._task is None or self._task.done()):
            self._task = asyncio.create_task(self._pump(), name=f"progress-{self._interaction.id}")

    async def _pump(self) -> None:
        while self._alive and self._wanted != self._shown:
            self._sleeping = True
            try:
                await asyncio.sleep(self._settle)
            finally:
                self._sleeping = False
            await self._edit()

    async def _edit(self) -> None:
        text = self._wanted
        try:
            await self._interaction.edit_original_response(content=text, allowed_mentions=NO_MENTIONS)
        except discord.HTTPException as exc:
            log.info("progress edit refused: %s (%s)", exc.status, exc.code)
            if is_gone(exc):
                self._alive = False
        self._shown = text

    async def close(self, *, flush: bool = True, timeout: float = 10.0) -> None:
        """Stop; with ``flush`` show the newest text first (so the result replaces it, never the reverse)."""
        task = self._task
        if task is not None and not task.done():
            if self._sleeping:
                task.cancel()
                await asyncio.gather(task, return_exceptions=True)
            else:
                try:
                    await asyncio.wait_for(task, timeout)
                except TimeoutError:
                    pass
        if flush and self._alive and self._wanted != self._shown:
            await self._edit()
        self._alive = False

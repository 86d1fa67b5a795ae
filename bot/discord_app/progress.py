"""Progress shown by editing the original response: queued (with position), generating, uploading.

The core awaits the progress callback, so an edit must never hold a generation up: edits run in one
background task per interaction, and only the newest text is sent (Discord rate-limits edits).
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
    def __init__(self, interaction: discord.Interaction) -> None:
        self._interaction = interaction
        self._wanted: str | None = None
        self._shown: str | None = None
        self._task: asyncio.Task[None] | None = None
        self._alive = True

    async def update(self, stage: str, details: dict[str, Any]) -> None:
        """The core's progress callback."""
        self.show(stage_text(stage, details))

    def show(self, text: str) -> None:
        self._wanted = text
        if self._alive and (self._task is None or self._task.done()):
            self._task = asyncio.create_task(self._pump(), name=f"progress-{self._interaction.id}")

    async def _pump(self) -> None:
        while self._alive and self._wanted != self._shown:
            text = self._wanted
            try:
                await self._interaction.edit_original_response(content=text, allowed_mentions=NO_MENTIONS)
            except discord.HTTPException as exc:
                log.info("progress edit refused: %s (%s)", exc.status, exc.code)
                if is_gone(exc):
                    self._alive = False
            self._shown = text

    async def close(self, timeout: float = 10.0) -> None:
        """Let the last edit land (so the result replaces it, never the other way round)."""
        if self._task is not None:
            try:
                await asyncio.wait_for(self._task, timeout)
            except TimeoutError:
                pass
        self._alive = False

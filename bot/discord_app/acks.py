"""Acknowledgements first: under a burst of commands, new work waits (briefly) for pending defers.

Discord drops an interaction that is not acknowledged within 3 seconds; the work after it has no such
deadline. When 200 commands arrive at once, the jobs of the first ones would otherwise share the event
loop with the defers of the last ones. Each job therefore waits until no interaction is still waiting for
its defer, for at most ``max_wait`` seconds, so a steady stream can never starve the work.
"""

from __future__ import annotations

import asyncio

import discord

from .delivery import defer


class AckGate:
    def __init__(self, max_wait: float = 0.25) -> None:
        self.max_wait = max_wait
        self._pending = 0
        self._idle = asyncio.Event()
        self._idle.set()

    async def acknowledge(self, interaction: discord.Interaction, *, ephemeral: bool = False) -> bool:
        """Defer the interaction; then let other pending defers go before this one's work starts."""
        self._pending += 1
        self._idle.clear()
        try:
            ok = await defer(interaction, ephemeral=ephemeral)
        finally:
            self._pending -= 1
            if self._pending == 0:
                self._idle.set()
        if self._pending:
            try:
                await asyncio.wait_for(self._idle.wait(), self.max_wait)
            except TimeoutError:
                pass
        return ok

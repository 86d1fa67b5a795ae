"""Persistent buttons under results. The custom id carries the action and the generation id, and the
button class is registered with ``Client.add_dynamic_items``, so buttons keep working after a restart
with nothing kept in memory: all state is in the database, looked up by that id.

    ib:rr:<id>        Re-roll          ib:va:<id>:<n>   Variations of image n
    ib:up:<id>:<n>    Upscale image n  ib:en:<id>       Enhance the prompt
    ib:im:<id>        Imagine this (under an /enhance result)
"""

from __future__ import annotations

from typing import Any

import discord

from bot.models import EnhanceResult, ImagineResult

from .context import runtime_of

LABELS = {"rr": "Re-roll", "va": "Variations", "up": "Upscale", "en": "Enhance", "im": "Imagine this"}
EMOJI = {"rr": "\N{ANTICLOCKWISE DOWNWARDS AND UPWARDS OPEN CIRCLE ARROWS}", "en": "\N{SPARKLES}",
         "im": "\N{FRAME WITH PICTURE}"}
INDEXED = ("va", "up")


def custom_id(action: str, generation_id: str, index: int = 0) -> str:
    return f"ib:{action}:{generation_id}" + (f":{index}" if action in INDEXED else "")


class GenerationButton(
    discord.ui.DynamicItem[discord.ui.Button[Any]],
    template=r"ib:(?P<action>rr|va|up|en|im):(?P<gen>[0-9a-f]{32})(?::(?P<index>\d{1,2}))?",
):
    def __init__(self, action: str, generation_id: str, index: int = 0, *, label: str | None = None,
                 row: int | None = None) -> None:
        style = discord.ButtonStyle.primary if action in ("im", "rr") else discord.ButtonStyle.secondary
        super().__init__(discord.ui.Button(
            label=label or LABELS[action], style=style, custom_id=custom_id(action, generation_id, index),
            emoji=EMOJI.get(action), row=row,
        ))
        self.action = action
        self.generation_id = generation_id
        self.index = index

    @classmethod
    async def from_custom_id(cls, interaction: discord.Interaction, item: discord.ui.Item[Any],
                             match: Any) -> GenerationButton:
        return cls(match["action"], match["gen"], int(match["index"] or 0))

    async def callback(self, interaction: discord.Interaction) -> None:
        """Handled by whatever ``flows.register`` put on the runtime (no import of the flows here)."""
        await runtime_of(interaction).press(interaction, self.action, self.generation_id, self.index)


def result_view(result: ImagineResult) -> discord.ui.View:
    """Re-roll and Enhance, then Variations and Upscale per image (V1..V10, U1..U10: five rows at most)."""
    view = discord.ui.View(timeout=None)
    gen = result.generation_id
    view.add_item(GenerationButton("rr", gen, row=0))
    view.add_item(GenerationButton("en", gen, row=0))
    n = len(result.images)
    if n == 1:
        view.add_item(GenerationButton("va", gen, 0, row=0))
        view.add_item(GenerationButton("up", gen, 0, row=0))
        return view
    for action, first_row in (("va", 1), ("up", 1 + (n + 4) // 5)):
        for i in range(n):
            label = f"{action[0].upper()}{i + 1}"
            view.add_item(GenerationButton(action, gen, i, label=label, row=first_row + i // 5))
    return view


def enhance_view(result: EnhanceResult) -> discord.ui.View:
    view = discord.ui.View(timeout=None)
    view.add_item(GenerationButton("im", result.generation_id))
    return view

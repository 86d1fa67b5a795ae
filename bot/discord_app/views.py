"""Persistent buttons, selects and the Edit modal. A custom id carries the action and what it acts on (a
generation id, a page, a proposal id), and each item class is registered with ``Client.add_dynamic_items``,
so everything keeps working after a restart with nothing kept in memory: all state is in the database,
looked up by that id. The HTTP-interactions adapter reads the same ids with ``parse_custom_id``.

    ib:rr:<id>          Re-roll                    ib:en:<id>         Enhance the prompt
    ib:va:<id>:<n>      Variations of image n      ib:up:<id>:<n>     Upscale image n
    ib:im:<id>          Imagine this (under an /enhance result)
    ib:im:<id>:<n>      Imagine prompt n (under a /describe result)
    ib:ed:<id>:<n>      Edit image n: opens the modal, whose custom id is the same
    ib:op:<id>:<n>      select: Zoom out / Pan / Make square image n (the value is the op, ``bot.canvas.OPS``)
    ib:tl:<id>          Edit or extend… (a result of several images): pick one, privately
    ib:pk:<id>          select: which image (the value is its index)
    ib:dl:<id>          Delete the result
    ib:hp:<page>        /history page                 ib:hs   select: show a listed generation (value: its id)
    ib:ok:<proposal>    Confirm a quoted command      ib:no:<proposal>   Cancel it

Discord allows 5 rows of 5 buttons (a select fills a row) and custom ids of 100 characters; the longest
id here is under 45.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from typing import Any

import discord

from bot.canvas import LABELS as OP_LABELS
from bot.models import DescribeResult, EnhanceResult, HistoryPage, ImagineResult

from .context import Press, runtime_of

LABELS = {"rr": "Re-roll", "va": "Variations", "up": "Upscale", "en": "Enhance", "im": "Imagine this",
          "ed": "Edit", "dl": "Delete", "tl": "Edit or extend…"}
EMOJI = {"rr": "\N{ANTICLOCKWISE DOWNWARDS AND UPWARDS OPEN CIRCLE ARROWS}", "en": "\N{SPARKLES}",
         "im": "\N{FRAME WITH PICTURE}", "ed": "\N{LOWER LEFT PAINTBRUSH}", "dl": "\N{WASTEBASKET}"}
INDEXED = ("va", "up", "ed", "op")
#: The Edit modal's one text input.
INSTRUCTION = "instruction"
MAX_INSTRUCTION = 4000

GEN = r"[0-9a-f]{32}"
PATTERNS: dict[str, re.Pattern[str]] = {
    "button": re.compile(rf"ib:(?P<action>rr|va|up|en|im|ed|dl|tl):(?P<key>{GEN})(?::(?P<index>\d{{1,2}}))?"),
    "select": re.compile(rf"ib:(?P<action>op|pk):(?P<key>{GEN})(?::(?P<index>\d{{1,2}}))?"),
    "page": re.compile(r"ib:(?P<action>hp):(?P<key>\d{1,6})"),
    "show": re.compile(r"ib:(?P<action>hs)(?P<key>)"),
    "proposal": re.compile(r"ib:(?P<action>ok|no):(?P<key>[0-9A-Za-z_-]{1,64})"),
}


def custom_id(action: str, key: str, index: int | None = None) -> str:
    """``ib:<action>:<key>[:<index>]``; indexed actions always carry their image number."""
    if index is None and action in INDEXED:
        index = 0
    return f"ib:{action}:{key}" + (f":{index}" if index is not None else "")


def parse_custom_id(value: str) -> Press | None:
    """Any custom id of this bot (buttons, selects, the Edit modal), else None."""
    for pattern in PATTERNS.values():
        match = pattern.fullmatch(value)
        if match is not None:
            return _press(match)
    return None


def _press(match: re.Match[str] | Any) -> Press:
    index = match["index"] if "index" in match.re.groupindex else None
    return Press(match["action"], match["key"], int(index) if index is not None else None)


class _Dynamic:
    """Shared by the item classes: the press goes to whatever ``flows.register`` put on the runtime."""

    press: Press

    async def callback(self, interaction: discord.Interaction) -> None:
        data: Any = interaction.data or {}
        values = data.get("values") or []
        press = Press(self.press.action, self.press.key, self.press.index, tuple(str(v) for v in values))
        await runtime_of(interaction).press(interaction, press)


class GenerationButton(_Dynamic, discord.ui.DynamicItem[discord.ui.Button[Any]], template=PATTERNS["button"].pattern):
    def __init__(self, action: str, generation_id: str, index: int | None = None, *, label: str | None = None,
                 row: int | None = None, style: discord.ButtonStyle | None = None) -> None:
        if style is None:
            style = discord.ButtonStyle.primary if action in ("im", "rr") else discord.ButtonStyle.secondary
        super().__init__(discord.ui.Button(
            label=label or LABELS[action], style=style, custom_id=custom_id(action, generation_id, index),
            emoji=EMOJI.get(action), row=row,
        ))
        self.press = Press(action, generation_id, index if index is not None or action not in INDEXED else 0)

    @classmethod
    async def from_custom_id(cls, interaction: discord.Interaction, item: discord.ui.Item[Any],
                             match: re.Match[str]) -> GenerationButton:
        press = _press(match)
        return cls(press.action, press.key, press.index)


class GenerationSelect(_Dynamic, discord.ui.DynamicItem[discord.ui.Select[Any]], template=PATTERNS["select"].pattern):
    def __init__(self, action: str, generation_id: str, index: int | None = None, *,
                 options: Sequence[discord.SelectOption] = (), placeholder: str = "", row: int | None = None) -> None:
        super().__init__(discord.ui.Select(custom_id=custom_id(action, generation_id, index), row=row,
                                           placeholder=placeholder or None,
                                           options=list(options) or [discord.SelectOption(label="-", value="-")]))
        self.press = Press(action, generation_id, index)

    @classmethod
    async def from_custom_id(cls, interaction: discord.Interaction, item: discord.ui.Item[Any],
                             match: re.Match[str]) -> GenerationSelect:
        press = _press(match)
        return cls(press.action, press.key, press.index)


class PageButton(_Dynamic, discord.ui.DynamicItem[discord.ui.Button[Any]], template=PATTERNS["page"].pattern):
    def __init__(self, page: int, label: str = "", *, disabled: bool = False, row: int | None = None) -> None:
        super().__init__(discord.ui.Button(label=label or f"Page {page}", custom_id=f"ib:hp:{page}",
                                           style=discord.ButtonStyle.secondary, disabled=disabled, row=row))
        self.press = Press("hp", str(page))

    @classmethod
    async def from_custom_id(cls, interaction: discord.Interaction, item: discord.ui.Item[Any],
                             match: re.Match[str]) -> PageButton:
        return cls(int(match["key"]))


class ShowSelect(_Dynamic, discord.ui.DynamicItem[discord.ui.Select[Any]], template=PATTERNS["show"].pattern):
    def __init__(self, options: Sequence[discord.SelectOption] = (), *, row: int | None = None) -> None:
        super().__init__(discord.ui.Select(custom_id="ib:hs", placeholder="Show one with its buttons…", row=row,
                                           options=list(options) or [discord.SelectOption(label="-", value="-")]))
        self.press = Press("hs", "")

    @classmethod
    async def from_custom_id(cls, interaction: discord.Interaction, item: discord.ui.Item[Any],
                             match: re.Match[str]) -> ShowSelect:
        return cls()


class ProposalButton(_Dynamic, discord.ui.DynamicItem[discord.ui.Button[Any]], template=PATTERNS["proposal"].pattern):
    def __init__(self, action: str, proposal_id: str) -> None:
        confirm = action == "ok"
        super().__init__(discord.ui.Button(
            label="Confirm" if confirm else "Cancel", custom_id=f"ib:{action}:{proposal_id}",
            style=discord.ButtonStyle.success if confirm else discord.ButtonStyle.secondary))
        self.press = Press(action, proposal_id)

    @classmethod
    async def from_custom_id(cls, interaction: discord.Interaction, item: discord.ui.Item[Any],
                             match: re.Match[str]) -> ProposalButton:
        return cls(match["action"], match["key"])


#: Registered on the client (``Client.add_dynamic_items``).
DYNAMIC_ITEMS: tuple[type[discord.ui.DynamicItem[Any]], ...] = (
    GenerationButton, GenerationSelect, PageButton, ShowSelect, ProposalButton)


# -- the views ---------------------------------------------------------------------------------------

def _ops_select(gen: str, index: int, ops: Sequence[str], row: int) -> GenerationSelect:
    options = [discord.SelectOption(label=OP_LABELS.get(op, op), value=op) for op in ops]
    return GenerationSelect("op", gen, index, options=options, placeholder="Zoom out, pan or make square…", row=row)


def result_view(result: ImagineResult, ops: Sequence[str] | None = None) -> discord.ui.View:
    """One image: Re-roll, Enhance, Variations, Upscale, Edit; the Zoom out / Pan / Make square select; Delete.
    Several: Re-roll, Enhance, Edit or extend… and Delete, then V1..V10 and U1..U10 (five rows at most).

    ``ops``: the outpaint ops this image can have (``Imagebot.outpaint_ops``; empty: no select). None when
    the builder cannot ask the core (a courier in another process): all are listed, and the core refuses
    one the model cannot do, clearly and free."""
    view = discord.ui.View(timeout=None)
    gen = result.generation_id
    n = len(result.images)
    view.add_item(GenerationButton("rr", gen, row=0))
    view.add_item(GenerationButton("en", gen, row=0))
    if n <= 1:
        view.add_item(GenerationButton("va", gen, 0, row=0))
        view.add_item(GenerationButton("up", gen, 0, row=0))
        view.add_item(GenerationButton("ed", gen, 0, row=0))
        chosen = OP_LABELS if ops is None else ops
        if chosen:
            view.add_item(_ops_select(gen, 0, list(chosen), row=1))
        view.add_item(GenerationButton("dl", gen, row=2, style=discord.ButtonStyle.danger))
        return view
    view.add_item(GenerationButton("tl", gen, row=0))
    view.add_item(GenerationButton("dl", gen, row=0, style=discord.ButtonStyle.danger))
    for action, first_row in (("va", 1), ("up", 1 + (n + 4) // 5)):
        for i in range(n):
            label = f"{action[0].upper()}{i + 1}"
            view.add_item(GenerationButton(action, gen, i, label=label, row=first_row + i // 5))
    return view


def pick_view(generation_id: str, count: int) -> discord.ui.View:
    """Edit or extend… on a result of several images: which one."""
    view = discord.ui.View(timeout=None)
    options = [discord.SelectOption(label=f"Image {i + 1}", value=str(i)) for i in range(min(count, 25))]
    view.add_item(GenerationSelect("pk", generation_id, options=options, placeholder="Which image?"))
    return view


def image_tools_view(generation_id: str, index: int, ops: Sequence[str]) -> discord.ui.View:
    """One image of several: Edit, Variations, Upscale, and the ops select where the model can."""
    view = discord.ui.View(timeout=None)
    view.add_item(GenerationButton("ed", generation_id, index, label=f"Edit image {index + 1}", row=0))
    view.add_item(GenerationButton("va", generation_id, index, label=f"V{index + 1}", row=0))
    view.add_item(GenerationButton("up", generation_id, index, label=f"U{index + 1}", row=0))
    if ops:
        view.add_item(_ops_select(generation_id, index, ops, row=1))
    return view


def enhance_view(result: EnhanceResult) -> discord.ui.View:
    view = discord.ui.View(timeout=None)
    view.add_item(GenerationButton("im", result.generation_id))
    return view


def describe_view(result: DescribeResult) -> discord.ui.View:
    """An Imagine button per suggested prompt (``ib:im:<id>:<n>``)."""
    view = discord.ui.View(timeout=None)
    for i in range(min(len(result.prompts), 5)):
        view.add_item(GenerationButton("im", result.generation_id, i, label=f"Imagine {i + 1}", row=0))
    return view


def confirm_view(proposal_id: str) -> discord.ui.View:
    view = discord.ui.View(timeout=None)
    view.add_item(ProposalButton("ok", proposal_id))
    view.add_item(ProposalButton("no", proposal_id))
    return view


def history_view(page: HistoryPage) -> discord.ui.View:
    """Prev / Next (greyed at the ends) and a select of the page's generations."""
    view = discord.ui.View(timeout=None)
    if page.items:
        options = [discord.SelectOption(label=f"{n}. {_short(item.prompt or item.command, 90)}",
                                        value=item.generation_id, description=f"{item.generation_id} · {item.age}"[:100])
                   for n, item in enumerate(page.items, 1)]
        view.add_item(ShowSelect(options, row=0))
    view.add_item(PageButton(max(1, page.page - 1), "Prev", disabled=page.page <= 1, row=1))
    view.add_item(PageButton(min(page.pages, page.page + 1), "Next", disabled=page.page >= page.pages, row=1))
    return view


def _short(text: str, limit: int) -> str:
    text = " ".join(text.split())
    return text if len(text) <= limit else text[: limit - 1] + "…"


class EditModal(discord.ui.Modal):
    """"What should change?": its custom id is the Edit button's, so any process reads the submit."""

    def __init__(self, generation_id: str, index: int) -> None:
        super().__init__(title=f"Edit image {index + 1}", custom_id=custom_id("ed", generation_id, index),
                         timeout=None)
        self.add_item(discord.ui.Label(text="What should change?", component=discord.ui.TextInput(
            custom_id=INSTRUCTION, style=discord.TextStyle.paragraph, min_length=1, max_length=MAX_INSTRUCTION,
            placeholder="e.g. make the sky stormy, add a red umbrella")))


def modal_value(components: Any, name: str = INSTRUCTION) -> str:
    """A text input's value in a modal submit's components (labels, or the older action rows)."""
    if not isinstance(components, list):
        return ""
    for component in components:
        if not isinstance(component, dict):
            continue
        inner: Any = component.get("components") if component.get("type") == 1 else [component.get("component")]
        for item in inner if isinstance(inner, list) else []:
            if isinstance(item, dict) and item.get("custom_id") == name and isinstance(item.get("value"), str):
                return str(item["value"])
    return ""


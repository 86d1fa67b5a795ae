"""Block Kit for results, modals and lists. Every button carries the generation id (or a proposal id, a page
number), so it works after a restart: what it does is read back from the database, never from this process's
memory. Action ids are unique per block (Slack's rule), so the per-image ones are numbered."""

from __future__ import annotations

import json
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from bot.canvas import LABELS, OPS
from bot.models import DescribeResult, EnhanceResult, HistoryPage, ImagineResult, Quote
from bot.replies import plural

from .text import escape

REROLL = "imagebot_reroll"
VARIATIONS = "imagebot_variations"
ENHANCE = "imagebot_enhance"
IMAGINE_THIS = "imagebot_imagine_this"
EDIT = "imagebot_edit"
MORE = "imagebot_more"
OUTPAINT = "imagebot_outpaint"
DELETE = "imagebot_delete"
SHOW = "imagebot_show"
HISTORY_PAGE = "imagebot_history"
CONFIRM = "imagebot_confirm"
CANCEL = "imagebot_cancel"
DESCRIBE_IMAGINE = "imagebot_describe_imagine"
#: The Edit modal's ``callback_id`` and its one input.
EDIT_VIEW = "imagebot_edit_view"
EDIT_BLOCK = "instruction"
EDIT_INPUT = "text"
#: Per-image and per-item buttons are numbered (``imagebot_variations_2``): action ids must be unique per block.
VARIATIONS_RE = re.compile(rf"^{VARIATIONS}(_\d+)?$")
EDIT_RE = re.compile(rf"^{EDIT}(_\d+)?$")
SHOW_RE = re.compile(rf"^{SHOW}(_\d+)?$")
OUTPAINT_RE = re.compile(rf"^{OUTPAINT}_\d+_[a-z0-9.-]+$")
HISTORY_RE = re.compile(rf"^{HISTORY_PAGE}_(prev|next)$")
DESCRIBE_IMAGINE_RE = re.compile(rf"^{DESCRIBE_IMAGINE}_\d$")
VALUE_RE = re.compile(r"^([0-9a-f]{32})(?::(\d{1,2}))?$")
OUTPAINT_VALUE_RE = re.compile(r"^([0-9a-f]{32}):(\d{1,2}):([a-z0-9.-]{1,16})$")
#: Delete carries the uploaded files' ids too, so it can remove the images themselves.
DELETE_RE = re.compile(r"^([0-9a-f]{32})(?:\|((?:F[A-Z0-9]{2,30},?){0,10}))?$")
PROPOSAL_RE = re.compile(r"^[A-Za-z0-9_.:-]{1,100}$")
PAGE_RE = re.compile(r"^\d{1,6}$")
MAX_VARIATION_BUTTONS = 10
#: Longest edit instruction the modal takes (the core cleans it again, with its own limit).
EDIT_MAX = 1000
#: Slack's limits: a section's text, a modal title, an option's text.
SECTION_MAX = 3000
TITLE_MAX = 24


def button(text: str, action_id: str, value: str, *, primary: bool = False, danger: bool = False,
           confirm: dict[str, Any] | None = None) -> dict[str, Any]:
    element: dict[str, Any] = {
        "type": "button", "text": {"type": "plain_text", "text": text, "emoji": True},
        "action_id": action_id, "value": value,
    }
    if primary:
        element["style"] = "primary"
    elif danger:
        element["style"] = "danger"
    if confirm is not None:
        element["confirm"] = confirm
    return element


def _plain(text: str) -> dict[str, Any]:
    return {"type": "plain_text", "text": text, "emoji": True}


def parse_value(value: str | None) -> tuple[str, int]:
    """A button's value -> (generation id, image index). Anything else is refused."""
    match = VALUE_RE.match(value or "")
    if not match:
        raise ValueError("not an imagebot button value")
    return match[1], int(match[2] or 0)


def parse_outpaint(value: str | None) -> tuple[str, int, str]:
    """A canvas button's value (``gid:index:op``) -> (generation id, image index, canvas op)."""
    match = OUTPAINT_VALUE_RE.match(value or "")
    if not match or match[3] not in OPS:
        raise ValueError("not an imagebot outpaint value")
    return match[1], int(match[2]), match[3]


def parse_delete(value: str | None) -> tuple[str, list[str]]:
    """Delete's value -> (generation id, the ids of the files uploaded with it)."""
    match = DELETE_RE.match(value or "")
    if not match:
        raise ValueError("not an imagebot delete value")
    return match[1], [f for f in (match[2] or "").split(",") if f]


def result_blocks(result: ImagineResult, *, files: Sequence[str] = ()) -> list[dict[str, Any]]:
    """The buttons posted under uploaded images: Re-roll, Variations (one per image), Enhance, Edit (one per
    image), More… (zoom out, pan, make square: offered on press, for what the model can do) and Delete.
    ``files``: the uploads' ids, so Delete removes the images too."""
    gid = result.generation_id
    count = min(len(result.images), MAX_VARIATION_BUTTONS)
    elements = [button("Re-roll", REROLL, gid)]
    if count == 1:
        elements.append(button("Variations", VARIATIONS, f"{gid}:0"))
    else:
        elements += [button(f"Variations #{i + 1}", f"{VARIATIONS}_{i}", f"{gid}:{i}") for i in range(count)]
    elements.append(button("Enhance", ENHANCE, gid))
    if count == 1:
        elements.append(button("Edit", EDIT, f"{gid}:0"))
    else:
        elements += [button(f"Edit #{i + 1}", f"{EDIT}_{i}", f"{gid}:{i}") for i in range(count)]
    elements.append(button("More…", MORE, gid))
    delete_value = gid + (f"|{','.join(files[:MAX_VARIATION_BUTTONS])}" if files else "")
    elements.append(button("Delete", DELETE, delete_value, danger=True, confirm={
        "title": _plain("Delete this result?"),
        "text": _plain("The images are removed from this conversation. The credits spent are not returned."),
        "confirm": _plain("Delete"), "deny": _plain("Keep it"), "style": "danger",
    }))
    footer = f"{escape(_short(result.prompt))} · id {gid}"
    return [
        {"type": "context", "elements": [{"type": "mrkdwn", "text": footer}]},
        {"type": "actions", "block_id": f"imagebot_{gid}", "elements": elements},
    ]


def outpaint_blocks(gid: str, ops: Mapping[int, Sequence[str]]) -> list[dict[str, Any]]:
    """More…'s answer (ephemeral): a button per canvas operation each image's model can do (``bot.canvas.LABELS``),
    grouped by image when there are several. Images with none are left out; the caller says so when all are."""
    listed = {i: [op for op in OPS if op in found] for i, found in ops.items()}
    listed = {i: found for i, found in listed.items() if found}
    several = len(ops) > 1
    blocks: list[dict[str, Any]] = [{"type": "section", "text": _plain(
        "Zoom out, pan or make square (a new image, charged like one):")}]
    for i, found in sorted(listed.items()):
        if several:
            blocks.append({"type": "context", "elements": [_plain(f"Image {i + 1}")]})
        blocks.append({"type": "actions", "block_id": f"imagebot_out_{gid}_{i}", "elements": [
            button(LABELS[op], f"{OUTPAINT}_{i}_{op}", f"{gid}:{i}:{op}") for op in found]})
    return blocks


def enhance_blocks(result: EnhanceResult, summary: str) -> list[dict[str, Any]]:
    """The enhanced prompt (ephemeral) with "Imagine this", which reads the text back from the database."""
    return [
        {"type": "section", "text": {"type": "plain_text", "text": summary[:SECTION_MAX], "emoji": False}},
        {"type": "actions", "block_id": f"imagebot_enh_{result.generation_id}",
         "elements": [button("Imagine this", IMAGINE_THIS, result.generation_id, primary=True)]},
    ]


def describe_blocks(result: DescribeResult) -> list[dict[str, Any]]:
    """/describe: each suggested prompt with an "Imagine" button (``gid:i``; the text is read back from the
    database when pressed)."""
    blocks: list[dict[str, Any]] = [{"type": "section", "text": _plain("Prompts for this image:")}]
    for i, prompt in enumerate(result.prompts[:10]):
        blocks.append({
            "type": "section", "block_id": f"imagebot_desc_{result.generation_id}_{i}",
            "text": {"type": "plain_text", "text": f"{i + 1}. {prompt}"[:SECTION_MAX], "emoji": False},
            "accessory": button("Imagine", f"{DESCRIBE_IMAGINE}_{i}", f"{result.generation_id}:{i}"),
        })
    blocks.append({"type": "context", "elements": [{"type": "mrkdwn", "text": escape(
        f"{plural(result.credits_spent, 'credit')} spent · {result.balance} left · id {result.generation_id}")}]})
    return blocks


def history_blocks(page: HistoryPage, header: str) -> list[dict[str, Any]]:
    """One page of /history: a line per generation (number, id, command, prompt, cost, age) with "Show",
    then Prev/Next. The numbers match the contact sheet's tiles."""
    blocks: list[dict[str, Any]] = [{"type": "section", "text": {"type": "mrkdwn", "text": header}}]
    first = (page.page - 1) * 10
    for n, item in enumerate(page.items):
        line = (f"*{n + 1}.* `{item.generation_id}` /{escape(item.command)} · {escape(_short(item.prompt, 200))}"
                f" · {plural(item.credits, 'credit')} · {escape(item.age)}")
        blocks.append({
            "type": "section", "block_id": f"imagebot_hist_{first + n}",
            "text": {"type": "mrkdwn", "text": line[:SECTION_MAX]},
            "accessory": button("Show", f"{SHOW}_{n}", item.generation_id),
        })
    nav = []
    if page.page > 1:
        nav.append(button("◀ Prev", f"{HISTORY_PAGE}_prev", str(page.page - 1)))
    if page.page < page.pages:
        nav.append(button("Next ▶", f"{HISTORY_PAGE}_next", str(page.page + 1)))
    if nav:
        blocks.append({"type": "actions", "block_id": f"imagebot_hist_nav_{page.page}", "elements": nav})
    return blocks


def confirm_blocks(quote: Quote, text: str) -> list[dict[str, Any]]:
    """The ask before spending: the price, the balance after, Confirm (the proposal id) and Cancel."""
    proposal = quote.proposal_id or ""
    return [
        {"type": "section", "text": {"type": "mrkdwn", "text": text[:SECTION_MAX]}},
        {"type": "actions", "block_id": "imagebot_confirm",
         "elements": [button("Confirm", CONFIRM, proposal, primary=True), button("Cancel", CANCEL, proposal)]},
    ]


@dataclass(frozen=True)
class EditTarget:
    """What the Edit modal carries through Slack (its ``private_metadata``): the image, and where to answer."""

    generation_id: str
    index: int
    channel_id: str
    thread_ts: str
    response_url: str

    def dump(self) -> str:
        return json.dumps({"g": self.generation_id, "i": self.index, "c": self.channel_id, "t": self.thread_ts,
                           "r": self.response_url}, separators=(",", ":"))

    @classmethod
    def load(cls, text: object) -> EditTarget:
        """ValueError unless it is what ``dump`` wrote (only this app can set a view's metadata; checked anyway)."""
        try:
            data = json.loads(text) if isinstance(text, str) else None
        except ValueError:
            data = None
        if not isinstance(data, dict):
            raise ValueError("not an imagebot edit view")
        gid, index = data.get("g"), data.get("i")
        fields = [data.get(k) for k in ("c", "t", "r")]
        if (not isinstance(gid, str) or not VALUE_RE.match(gid) or not isinstance(index, int) or not 0 <= index < 100
                or not all(isinstance(f, str) for f in fields)):
            raise ValueError("not an imagebot edit view")
        channel, thread, url = (str(f) for f in fields)
        return cls(gid, index, channel, thread, url)


def edit_view(target: EditTarget, prompt: str) -> dict[str, Any]:
    """The Edit modal: one text box for the instruction; the image and the address travel in its metadata."""
    return {
        "type": "modal", "callback_id": EDIT_VIEW, "private_metadata": target.dump(),
        "title": _plain(f"Edit image {target.index + 1}"[:TITLE_MAX]),
        "submit": _plain("Edit"), "close": _plain("Cancel"),
        "blocks": [
            {"type": "context", "elements": [{"type": "plain_text", "text": _short(prompt or "(no prompt)", 300)}]},
            {"type": "input", "block_id": EDIT_BLOCK, "label": _plain("What should change?"),
             "element": {"type": "plain_text_input", "action_id": EDIT_INPUT, "multiline": True,
                         "max_length": EDIT_MAX, "placeholder": _plain("make the sky stormy, add a red kite")}},
        ],
    }


def _short(text: str, limit: int = 150) -> str:
    return text if len(text) <= limit else text[: limit - 1] + "…"

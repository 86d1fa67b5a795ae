"""Block Kit for results. Every button carries the generation id, so it works after a restart: what it
does is read back from the database, never from this process's memory."""

from __future__ import annotations

import re
from typing import Any

from bot.models import EnhanceResult, ImagineResult

from .text import escape

REROLL = "imagebot_reroll"
VARIATIONS = "imagebot_variations"
ENHANCE = "imagebot_enhance"
IMAGINE_THIS = "imagebot_imagine_this"
#: Variations buttons are numbered per image (``imagebot_variations_2``): action ids must be unique per block.
VARIATIONS_RE = re.compile(rf"^{VARIATIONS}(_\d+)?$")
VALUE_RE = re.compile(r"^([0-9a-f]{32})(?::(\d{1,2}))?$")
MAX_VARIATION_BUTTONS = 10


def button(text: str, action_id: str, value: str, *, primary: bool = False) -> dict[str, Any]:
    element: dict[str, Any] = {
        "type": "button", "text": {"type": "plain_text", "text": text, "emoji": True},
        "action_id": action_id, "value": value,
    }
    if primary:
        element["style"] = "primary"
    return element


def parse_value(value: str | None) -> tuple[str, int]:
    """A button's value -> (generation id, image index). Anything else is refused."""
    match = VALUE_RE.match(value or "")
    if not match:
        raise ValueError("not an imagebot button value")
    return match[1], int(match[2] or 0)


def result_blocks(result: ImagineResult) -> list[dict[str, Any]]:
    """The buttons posted under uploaded images: Re-roll, Variations (one per image), Enhance."""
    gid = result.generation_id
    elements = [button("Re-roll", REROLL, gid)]
    count = min(len(result.images), MAX_VARIATION_BUTTONS)
    if count == 1:
        elements.append(button("Variations", VARIATIONS, f"{gid}:0"))
    else:
        elements += [button(f"Variations #{i + 1}", f"{VARIATIONS}_{i}", f"{gid}:{i}") for i in range(count)]
    elements.append(button("Enhance", ENHANCE, gid))
    return [
        {"type": "context", "elements": [{"type": "mrkdwn", "text": escape(_short(result.prompt))}]},
        {"type": "actions", "block_id": f"imagebot_{gid}", "elements": elements},
    ]


def enhance_blocks(result: EnhanceResult, summary: str) -> list[dict[str, Any]]:
    """The enhanced prompt (ephemeral) with "Imagine this", which reads the text back from the database."""
    return [
        {"type": "section", "text": {"type": "plain_text", "text": summary[:3000], "emoji": False}},
        {"type": "actions", "block_id": f"imagebot_enh_{result.generation_id}",
         "elements": [button("Imagine this", IMAGINE_THIS, result.generation_id, primary=True)]},
    ]


def _short(text: str, limit: int = 150) -> str:
    return text if len(text) <= limit else text[: limit - 1] + "…"

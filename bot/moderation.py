"""Screening before generating: a server's blocklist always, the moderation model when it is on.

Both run before any credit is reserved, so a refusal costs nothing. The blocklist holds words and phrases
(matched case-insensitively on word boundaries) or ``/patterns/`` (regular expressions, checked when an
admin sets them). A prompt the model flags is refused naming the category in plain words; "sexual" passes
only where the adapter says the channel is age-restricted and the server allows it (``adult_ok``), and
anything involving minors never does. Moderation that cannot be asked refuses (fail closed: the operator
or the server turned it on).
"""

from __future__ import annotations

import logging
import re
from collections.abc import Sequence

from providers.moderation import Moderator

from .errors import ProviderError, ValidationError

log = logging.getLogger(__name__)

MAX_ENTRIES = 100
MAX_ENTRY = 100
#: The vendor's category names, as people say them.
PLAIN = {
    "sexual": "sexual content", "sexual/minors": "sexual content involving minors", "harassment": "harassment",
    "harassment/threatening": "threats", "hate": "hate", "hate/threatening": "hateful threats",
    "illicit": "illicit acts", "illicit/violent": "violent illicit acts", "self-harm": "self-harm",
    "self-harm/intent": "self-harm", "self-harm/instructions": "self-harm instructions", "violence": "violence",
    "violence/graphic": "graphic violence",
}


def parse_blocklist(entries: Sequence[str]) -> tuple[str, ...]:
    """Checked entries, or a ValidationError naming the bad one (nothing is stored then)."""
    if len(entries) > MAX_ENTRIES:
        raise ValidationError(f"A blocklist holds at most {MAX_ENTRIES} entries; got {len(entries)}.",
                              code="IMG-VALID-BLOCKLIST")
    out: list[str] = []
    for entry in entries:
        text = entry.strip()
        if not text or len(text) > MAX_ENTRY:
            raise ValidationError(f"Blocklist entries are 1 to {MAX_ENTRY} characters; {text[:40]!r} is not.",
                                  code="IMG-VALID-BLOCKLIST")
        if _is_pattern(text):
            try:
                re.compile(text[1:-1], re.IGNORECASE)
            except re.error as exc:
                raise ValidationError(f"Blocklist pattern {text!r} is not a valid regular expression ({exc}).",
                                      code="IMG-VALID-BLOCKLIST") from None
        out.append(text)
    return tuple(dict.fromkeys(out))


def _is_pattern(entry: str) -> bool:
    return len(entry) > 2 and entry.startswith("/") and entry.endswith("/")


def blocked(prompt: str, blocklist: Sequence[str]) -> str | None:
    """The first entry that matches the prompt, or None."""
    for entry in blocklist:
        if _is_pattern(entry):
            try:
                if re.search(entry[1:-1], prompt, re.IGNORECASE):
                    return entry
            except re.error:
                continue
        elif re.search(rf"(?<!\w){re.escape(entry)}(?!\w)", prompt, re.IGNORECASE):
            return entry
    return None


class Moderation:
    def __init__(self, moderator: Moderator | None) -> None:
        self.moderator = moderator

    @property
    def available(self) -> bool:
        return self.moderator is not None

    async def screen(self, prompt: str, images: Sequence[bytes] = (), *, blocklist: Sequence[str] = (),
                     check: bool, adult_ok: bool = False) -> None:
        entry = blocked(prompt, blocklist)
        if entry is not None:
            raise ValidationError(f"This server blocks {entry!r} in prompts. Nothing was charged.",
                                  code="IMG-MOD-BLOCKED")
        if not check:
            return
        if self.moderator is None:
            raise ValidationError("Moderation is on but this bot has no moderation model; nothing was charged.",
                                  code="IMG-MOD-UNAVAILABLE")
        try:
            verdict = await self.moderator.check(prompt, images)
        except ProviderError:
            log.warning("moderation unavailable: a prompt was refused unchecked")
            raise ValidationError("Moderation is unavailable right now, so the prompt could not be checked; "
                                  "nothing was charged. Try again in a minute.", code="IMG-MOD-UNAVAILABLE") from None
        categories = [c for c in verdict.categories if not (adult_ok and c == "sexual")]
        if verdict.flagged and (categories or not verdict.categories):
            named = ", ".join(dict.fromkeys(PLAIN.get(c, c) for c in categories)) or "its content"
            raise ValidationError(f"This prompt was flagged for {named}. Nothing was charged.",
                                  code="IMG-MOD-FLAGGED")

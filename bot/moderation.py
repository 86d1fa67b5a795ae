"""Screening before generating: a server's blocklist always, the moderation model when it is on.

Both run before any credit is reserved, so a refusal costs nothing (``IMG-MOD-BLOCKED``,
``IMG-MOD-FLAGGED``, ``IMG-MOD-UNAVAILABLE``; a bad blocklist entry is ``IMG-VALID-BLOCKLIST``).

The blocklist (at most 100 entries of 1 to 100 characters) holds:

- words and phrases, matched case-insensitively where they stand as whole words: ``cat`` blocks "a Cat!"
  but not "concatenate". Prompt and entry are compared after Unicode NFKC (fullwidth letters count as
  letters) with runs of spaces made one.
- ``/patterns/``: Python regular expressions, case-insensitive, anywhere in the prompt (``\\b`` marks a
  word's edge). Admins write them and every prompt runs them, and Python's engine backtracks (``/a*a*b/``
  takes over a minute on a 4,000-character prompt), so only patterns with a small worst case are taken:
  ``*``, ``+`` and ``{m,}`` repeat at most 32 times (a larger ``{m,n}`` is refused); only single
  characters or classes repeat, a group only as optional (``(s|ed)?``); back-references, lookarounds and
  inline flags are refused, and so is a pattern that matches empty text (it would block everything). A
  pattern's worst case (the ways one attempt can go, times the characters it may look at) has a ceiling,
  and so has the list's; a whole list then checks a 4,000-character prompt built to be slow in about a
  quarter of a second, an ordinary one in microseconds.

A refusal names the words of the prompt that matched (a word, or the text a pattern matched), never the
pattern: the asker already sees those words in what they typed, and knowing them is how they fix it.

The moderation model's categories are named in plain words. "sexual" passes where the adapter says the
channel is age-restricted and the server allows it (``adult_ok``); "sexual/minors" never does. A model
that cannot be asked refuses (fail closed: the operator or the server turned it on).
"""

from __future__ import annotations

import functools
import importlib
import logging
import re
import unicodedata
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from providers.errors_map import redact
from providers.moderation import Moderator, Verdict

from .errors import ProviderAuthError, ProviderError, ValidationError

log = logging.getLogger(__name__)

MAX_ENTRIES = 100
MAX_ENTRY = 100
#: The most times ``*``, ``+`` or ``{m,n}`` repeat in a /pattern/.
MAX_REPEAT = 32
#: Ceilings of a pattern's worst-case work per prompt character, and of a whole list's. Measured here, one
#: unit costs at most about 5 ns per prompt character: a list at the ceiling checks a 4,000-character
#: prompt built to be slow in about 0.25 s (tests/test_moderation.py holds it under a second).
PATTERN_BUDGET = 4_000
LIST_BUDGET = 12_000

BAD_ENTRY = "IMG-VALID-BLOCKLIST"
BLOCKED = "IMG-MOD-BLOCKED"
FLAGGED = "IMG-MOD-FLAGGED"
UNAVAILABLE = "IMG-MOD-UNAVAILABLE"

#: The vendor's category names, as people say them.
PLAIN = {
    "sexual": "sexual content", "sexual/minors": "sexual content involving minors", "harassment": "harassment",
    "harassment/threatening": "threatening harassment", "hate": "hate", "hate/threatening": "hateful threats",
    "illicit": "help with illegal acts", "illicit/violent": "help with violence or weapons",
    "self-harm": "self-harm", "self-harm/intent": "intent to self-harm",
    "self-harm/instructions": "self-harm instructions", "violence": "violence", "violence/graphic": "graphic violence",
}
#: Categories ``adult_ok`` lets through (never "sexual/minors").
ADULT = frozenset({"sexual"})

# The standard library's own regex parser and compiler (``re._parser``, ``re._compiler``): the parsed
# pattern is checked, its open-ended repeats capped, and compiled as checked.
_parser: Any = importlib.import_module("re._parser")
_compiler: Any = importlib.import_module("re._compiler")
_c: Any = importlib.import_module("re._constants")
_REPEATS = (_c.MAX_REPEAT, _c.MIN_REPEAT, _c.POSSESSIVE_REPEAT)
_CHARS = (_c.LITERAL, _c.NOT_LITERAL, _c.ANY, _c.IN)
_FLAGS_OK = re.IGNORECASE | re.UNICODE


def _bad(message: str) -> ValidationError:
    return ValidationError(message, code=BAD_ENTRY)


def _quote(text: str, limit: int = 60) -> str:
    return repr(text if len(text) <= limit else text[: limit - 1] + "…")


def normal(text: str) -> str:
    """What the blocklist compares: NFKC, runs of whitespace made one space."""
    return " ".join(unicodedata.normalize("NFKC", text).split())


@dataclass(frozen=True)
class Entry:
    """One checked blocklist entry, compiled."""

    text: str
    pattern: re.Pattern[str]
    regex: bool
    #: Worst-case work per prompt character (0 for words).
    cost: int


def parse_blocklist(entries: Sequence[str]) -> tuple[str, ...]:
    """The entries as stored (words normalised, duplicates dropped), or a ValidationError naming the first
    bad one (nothing is stored then)."""
    return tuple(e.text for e in compile_blocklist(entries))


def compile_blocklist(entries: Sequence[str]) -> tuple[Entry, ...]:
    if isinstance(entries, str) or not isinstance(entries, Sequence):
        raise _bad("A blocklist is a list of words, phrases or /patterns/.")
    if len(entries) > MAX_ENTRIES:
        raise _bad(f"A blocklist holds at most {MAX_ENTRIES} entries; got {len(entries)}.")
    if not all(isinstance(e, str) for e in entries):
        raise _bad("Blocklist entries are text: words, phrases or /patterns/.")
    return _compiled(tuple(entries))


@functools.lru_cache(maxsize=512)
def _compiled(entries: tuple[str, ...]) -> tuple[Entry, ...]:
    out: dict[tuple[bool, str], Entry] = {}
    for number, raw in enumerate(entries, 1):
        entry = _entry(raw, number)
        out.setdefault((entry.regex, entry.text if entry.regex else entry.text.casefold()), entry)
    total = sum(e.cost for e in out.values())
    if total > LIST_BUDGET:
        costly = max(out.values(), key=lambda e: e.cost)
        raise _bad(f"The blocklist's patterns together could take too long to check a long prompt: simplify "
                   f"or remove some (the costliest is {_quote(costly.text)}); plain words cost almost nothing.")
    return tuple(out.values())


def _entry(raw: str, number: int) -> Entry:
    text = raw.strip()
    if not text:
        raise _bad(f"Blocklist entry {number} is empty: give a word, a phrase or a /pattern/.")
    if len(text) > MAX_ENTRY:
        raise _bad(f"Blocklist entry {_quote(text, 40)} is {len(text)} characters; the limit is {MAX_ENTRY}.")
    if any(unicodedata.category(ch) in ("Cc", "Cf") and not ch.isspace() for ch in text):
        raise _bad(f"Blocklist entry {_quote(text)} holds invisible characters (controls, zero-width or "
                   "formatting): prompts lose those, so it could never match.")
    if len(text) > 2 and text.startswith("/") and text.endswith("/"):
        pattern, cost = _pattern(text)
        return Entry(text, pattern, True, cost)
    if text == "//":
        raise _bad("Blocklist entry '//' is an empty pattern: put a regular expression between the slashes.")
    word = normal(text)
    return Entry(word, re.compile(rf"(?<!\w){re.escape(word)}(?!\w)", re.IGNORECASE), False, 0)


def _pattern(entry: str) -> tuple[re.Pattern[str], int]:
    """A /pattern/ checked, capped and compiled, with its worst-case cost; or a ValidationError saying why."""
    body = entry[1:-1]
    try:
        tree = _parser.parse(body, re.IGNORECASE)
    except re.error as exc:
        at = f" at character {exc.pos + 1}" if exc.pos is not None else ""
        raise _bad(f"Blocklist pattern {_quote(entry)} is not a valid regular expression: {exc.msg}{at}.") from None
    except (RecursionError, OverflowError):
        raise _bad(f"Blocklist pattern {_quote(entry)} is nested too deeply.") from None
    if tree.state.flags & ~_FLAGS_OK:
        raise _bad(f"Blocklist pattern {_quote(entry)} sets flags like (?s) or (?x): leave them out (matching "
                   "always ignores case).")
    _check(tree, entry)
    low, high = tree.getwidth()
    if low == 0:
        raise _bad(f"Blocklist pattern {_quote(entry)} matches empty text, so it would block every prompt.")
    cost = _paths(tree, tail_safe=True) * (high + len(body))
    if cost > PATTERN_BUDGET:
        raise _bad(f"Blocklist pattern {_quote(entry)} could take too long to check a long prompt: it can match "
                   "in too many ways (repeats and alternatives one after another). Use fewer *, +, ? or "
                   "{m,n}, put a fixed letter between repeats, or split it into several entries.")
    try:
        compiled: re.Pattern[str] = _compiler.compile(tree, re.IGNORECASE)
    except (re.error, RecursionError, OverflowError):
        raise _bad(f"Blocklist pattern {_quote(entry)} is not a valid regular expression.") from None
    return compiled, cost


def _check(seq: Any, entry: str) -> None:
    """Refuse what is not taken; cap open-ended repeats at ``MAX_REPEAT`` (in place)."""
    seq.width = None  # the width is measured again after the caps
    for i, (op, av) in enumerate(seq.data):
        if op in _REPEATS:
            low, high, item = av
            if high == _c.MAXREPEAT:
                high = max(low, MAX_REPEAT)
            if high > MAX_REPEAT:
                raise _bad(f"Blocklist pattern {_quote(entry)} repeats up to {high} times; the limit is "
                           f"{MAX_REPEAT} (* and + stop at {MAX_REPEAT} too).")
            if not _single(item) and high > 1:
                raise _bad(f"Blocklist pattern {_quote(entry)} repeats a group: repeat single characters or "
                           "classes ([a-z]+), or make a group optional with ?; list longer forms as entries.")
            seq.data[i] = (op, (low, high, item))
            _check(item, entry)
        elif op is _c.SUBPATTERN:
            if av[1] or av[2]:
                raise _bad(f"Blocklist pattern {_quote(entry)} sets flags inside a group: leave them out "
                           "(matching always ignores case).")
            _check(av[3], entry)
        elif op is _c.BRANCH:
            for branch in av[1]:
                _check(branch, entry)
        elif op is _c.ATOMIC_GROUP:
            _check(av, entry)
        elif op in (_c.GROUPREF, _c.GROUPREF_EXISTS):
            raise _bad(f"Blocklist pattern {_quote(entry)} uses a back-reference (\\1, (?P=name), (?(1)...)), "
                       "which is not supported.")
        elif op in (_c.ASSERT, _c.ASSERT_NOT):
            raise _bad(f"Blocklist pattern {_quote(entry)} uses a lookahead or lookbehind, which is not "
                       "supported: use \\b for the edge of a word.")
        elif op not in _CHARS and op is not _c.AT:
            raise _bad(f"Blocklist pattern {_quote(entry)} uses something not supported here ({op}).")


def _single(item: Any) -> bool:
    return len(item.data) == 1 and item.data[0][0] in _CHARS


def _paths(seq: Any, *, tail_safe: bool) -> int:
    """How many ways one matching attempt can go through ``seq`` at most (Python's engine tries each).

    A repeat whose next character cannot be one it repeats (``f+u+``) has one way; so has a repeat with
    nothing that can fail after it. ``tail_safe``: nothing after ``seq`` can fail."""
    total, safe, following = 1, tail_safe, None
    for op, av in reversed(seq.data):
        if op in _REPEATS:
            low, high, item = av
            if _single(item):
                ways = 1 if safe or _apart(item.data[0], following) else high - low + 1
            else:  # an optional group (checked): taken or skipped
                ways = _paths(item, tail_safe=False) + (1 if low == 0 else 0)
            safe = safe and low == 0
        elif op is _c.SUBPATTERN:
            ways, safe = _paths(av[3], tail_safe=safe), False
        elif op is _c.ATOMIC_GROUP:
            ways, safe = _paths(av, tail_safe=False), False
        elif op is _c.BRANCH:
            ways, safe = sum(_paths(b, tail_safe=safe) for b in av[1]), False
        else:  # a character or an assertion: either may fail
            ways, safe = 1, False
        total *= ways
        following = (op, av)
    return total


def _first_char(node: tuple[Any, Any] | None) -> tuple[Any, Any] | None:
    """The one-character node that must come first in ``node``, when there is exactly one."""
    if node is None:
        return None
    op, av = node
    if op in _CHARS:
        return node
    if op in _REPEATS and av[0] >= 1 and _single(av[2]):
        first: tuple[Any, Any] = av[2].data[0]
        return first
    return None


def _apart(atom: tuple[Any, Any], following: tuple[Any, Any] | None) -> bool:
    """Whether no character ``atom`` matches can start ``following`` (then a repeat of ``atom`` has one way)."""
    other = _first_char(following)
    if other is None:
        return False
    for chars, rest in ((_letters(atom), other), (_letters(other), atom)):
        cls = _as_class(rest)
        if chars is not None and cls is not None:
            return not any(re.fullmatch(cls, ch, re.IGNORECASE) for ch in chars)
    return False


def _letters(node: tuple[Any, Any]) -> list[str] | None:
    """The characters a literal or a class of literals is made of (None for ranges, categories, ``.``)."""
    op, av = node
    if op is _c.LITERAL:
        return [chr(av)]
    if op is _c.IN and all(o is _c.LITERAL for o, _ in av):
        return [chr(v) for _, v in av]
    return None


_CATEGORIES = {"CATEGORY_WORD": r"\w", "CATEGORY_NOT_WORD": r"\W", "CATEGORY_DIGIT": r"\d",
               "CATEGORY_NOT_DIGIT": r"\D", "CATEGORY_SPACE": r"\s", "CATEGORY_NOT_SPACE": r"\S"}


def _as_class(node: tuple[Any, Any]) -> str | None:
    """A regular expression for the characters ``node`` matches (None where it is not a simple class)."""
    op, av = node
    if op is _c.LITERAL:
        return re.escape(chr(av))
    if op is _c.NOT_LITERAL:
        return f"[^{re.escape(chr(av))}]"
    if op is not _c.IN:
        return None
    parts: list[str] = []
    for o, v in av:
        if o is _c.NEGATE:
            parts.insert(0, "^")
        elif o is _c.LITERAL:
            parts.append(re.escape(chr(v)))
        elif o is _c.RANGE:
            parts.append(f"{re.escape(chr(v[0]))}-{re.escape(chr(v[1]))}")
        elif o is _c.CATEGORY and getattr(v, "name", "") in _CATEGORIES:
            parts.append(_CATEGORIES[v.name])
        else:
            return None
    return f"[{''.join(parts)}]"


def blocked(prompt: str, blocklist: Sequence[str]) -> str | None:
    """The words of ``prompt`` the blocklist blocks (as the prompt has them), or None."""
    text = normal(prompt)
    for entry in compile_blocklist(blocklist):
        found = entry.pattern.search(text)
        if found is not None:
            return found.group(0)
    return None


def _plain(categories: Sequence[str]) -> str:
    names = list(dict.fromkeys(PLAIN.get(c, c.replace("/", " ").replace("-", " ")) for c in categories))
    return names[0] if len(names) == 1 else ", ".join(names[:-1]) + " and " + names[-1]


class Moderation:
    """The screen the core runs on every prompt (and its input images) before reserving credits."""

    def __init__(self, moderator: Moderator | None = None) -> None:
        self.moderator = moderator

    @property
    def available(self) -> bool:
        """Whether a server may turn moderation on (an OpenAI key is set)."""
        return self.moderator is not None

    async def screen(self, prompt: str, images: Sequence[bytes] = (), *, blocklist: Sequence[str] = (),
                     check: bool, adult_ok: bool = False) -> None:
        """Return when the prompt may be generated; raise a ``ValidationError`` (nothing charged) when not.

        ``blocklist``: the server's entries (as ``parse_blocklist`` stored them), always applied.
        ``check``: moderation is on for this server. ``adult_ok``: an age-restricted channel of a server
        that allows sexual content there."""
        try:
            found = blocked(prompt, blocklist)
        except ValidationError as exc:  # stored before today's rules: refused until an admin fixes it
            log.warning("blocklist: an entry cannot be used: %s", exc.message)
            raise ValidationError(f"This server's blocklist has an entry the bot cannot use, so prompts are "
                                  f"refused until a server admin fixes it with /settings: {exc.message} "
                                  "Nothing was charged.", code=BAD_ENTRY) from None
        if found is not None:
            log.info("blocklist: refused a prompt")
            raise ValidationError(f"This prompt contains {_quote(found)}, which this server blocks. "
                                  "Nothing was charged.", code=BLOCKED)
        if not check:
            return
        if self.moderator is None:
            raise ValidationError("Moderation is on for this server, but this bot has no moderation model (its "
                                  "operator has not set OPENAI_API_KEY); nothing was charged.", code=UNAVAILABLE)
        try:
            verdict = await self.moderator.check(prompt, images)
        except ProviderError as exc:
            level = logging.ERROR if isinstance(exc, ProviderAuthError) else logging.WARNING
            log.log(level, "moderation unavailable (%s: %s): a prompt was refused unchecked", exc.code,
                    redact(exc.message))
            raise ValidationError("Moderation is unavailable right now, so this prompt could not be checked; "
                                  "nothing was charged. Try again in a few minutes.", code=UNAVAILABLE) from None
        self._judge(verdict, adult_ok=adult_ok, images=bool(images))

    @staticmethod
    def _judge(verdict: Verdict, *, adult_ok: bool, images: bool) -> None:
        if not verdict.flagged:
            return
        refused = [c for c in verdict.categories if not (adult_ok and c in ADULT)]
        if verdict.categories and not refused:
            log.info("moderation: flagged %s, allowed in this channel", ", ".join(verdict.categories))
            return
        log.info("moderation: refused a prompt flagged %s", ", ".join(refused) or "(no category)")
        what = _plain(refused) if refused else "content the moderation model does not allow"
        if images and verdict.inputs == ("image",):
            where = "An input image"
        elif images and "image" in verdict.inputs:
            where = "This prompt or an input image"
        else:
            where = "This prompt"
        raise ValidationError(f"{where} was flagged for {what}. Nothing was charged.", code=FLAGGED)

    async def aclose(self) -> None:
        if self.moderator is not None:
            await self.moderator.aclose()

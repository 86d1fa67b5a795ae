"""Commands typed as text: ``/imagine a red fox --size 16:9 --quality high --format webp``.

Used by the local console and by Slack, whose slash commands arrive as one line of text. Flags may be
written ``--size 1024x1024`` or ``--size=1024x1024`` (or ``—size``, as a phone's keyboard turns ``--``
into a dash); the rest of the words are the prompt. An unknown flag or a flag with no value (``--size``,
``--size=``) is a ``ValidationError`` naming it, before anything is charged.

This module only translates: the values go to ``ImagineOptions`` as typed, and the core checks them
against the chosen model (a size, quality, format or background it cannot make is refused there, naming
what it can make).
"""

from __future__ import annotations

import re
from dataclasses import dataclass

from providers.base import FORMATS, QUALITIES, STYLES

from .canvas import OPS
from .errors import ValidationError
from .models import ImagineOptions
from .validation import shown

IMAGINE_FLAGS = ("size", "aspect", "style", "quality", "count", "provider", "model", "seed", "format",
                 "background")
#: Other spellings of a flag's name.
FLAG_ALIASES = {"ar": "aspect", "output_format": "format", "bg": "background"}
IMAGINE_USAGE = (
    "Usage: /imagine <prompt> [--size WxH|square|landscape|portrait|16:9|3:2|...]"
    f" [--style {'|'.join(STYLES)}] [--quality {'|'.join(QUALITIES)}] [--format {'|'.join(FORMATS)}]"
    " [--background transparent|opaque] [--count 1-10] [--provider NAME[/MODEL]]"
)
SHORT = {"-s": "size", "-n": "count", "-q": "quality", "-p": "provider", "-a": "aspect", "-f": "format"}
MENTION_RE = re.compile(r"^<@([A-Z0-9]+)(?:\|[^>]*)?>$|^<@!?(\d+)>$|^@?([A-Za-z0-9._-]+)$")


@dataclass(frozen=True)
class ParsedText:
    words: list[str]
    flags: dict[str, str]


def _long_flag(token: str, allowed: tuple[str, ...]) -> str | None:
    """``--name[=value]`` without its dashes. A phone or Mac turns a typed ``--`` into an en or em dash, so
    ``—size 16:9`` is read as the flag too, but only for a flag's own name: other dashed words stay prompt."""
    if token.startswith("--") and len(token) > 2:
        return token[2:]
    if token[:1] in ("\u2013", "\u2014") and len(token) > 1:
        name = token[1:].partition("=")[0].lower().replace("-", "_")
        if FLAG_ALIASES.get(name, name) in allowed:
            return token[1:]
    return None


def split_flags(text: str, allowed: tuple[str, ...]) -> ParsedText:
    tokens = text.split()
    words: list[str] = []
    flags: dict[str, str] = {}
    i = 0
    while i < len(tokens):
        token = tokens[i]
        name: str | None = None
        value: str | None = None
        flag = _long_flag(token, allowed)
        empty = False
        if flag is not None:
            name, eq, rest = flag.partition("=")
            value = rest if eq else None
            empty = bool(eq) and not rest
        elif token in SHORT:
            name = SHORT[token]
        if name is None:
            words.append(token)
            i += 1
            continue
        name = name.lower().replace("-", "_")
        name = FLAG_ALIASES.get(name, name)
        if name not in allowed:
            raise ValidationError(
                f"Unknown option --{shown(name, 40)}. {IMAGINE_USAGE}", code="IMG-VALID-FLAG"
            )
        if empty:
            raise ValidationError(f"--{name} needs a value. {IMAGINE_USAGE}", code="IMG-VALID-FLAG")
        if value is None:
            if i + 1 >= len(tokens) or _long_flag(tokens[i + 1], allowed) is not None:
                raise ValidationError(f"--{name} needs a value. {IMAGINE_USAGE}", code="IMG-VALID-FLAG")
            value = tokens[i + 1]
            i += 1
        if name in flags:
            raise ValidationError(f"--{name} is given twice.", code="IMG-VALID-FLAG")
        flags[name] = value
        i += 1
    return ParsedText(words, flags)


def parse_imagine(text: str) -> ImagineOptions:
    parsed = split_flags(text, IMAGINE_FLAGS)
    if "size" in parsed.flags and "aspect" in parsed.flags:
        raise ValidationError("Give --size or --aspect, not both.", code="IMG-VALID-FLAG")
    seed = parsed.flags.get("seed")
    if seed is not None and not re.fullmatch(r"\d{1,9}", seed):
        raise ValidationError(f"--seed must be a whole number, got {shown(seed)!r}.", code="IMG-VALID-FLAG")
    return ImagineOptions(
        prompt=" ".join(parsed.words),
        size=parsed.flags.get("size") or parsed.flags.get("aspect"),
        style=parsed.flags.get("style"),
        quality=parsed.flags.get("quality"),
        count=parsed.flags.get("count"),
        provider=parsed.flags.get("provider"),
        model=parsed.flags.get("model"),
        seed=int(seed) if seed is not None else None,
        output_format=parsed.flags.get("format"),
        background=parsed.flags.get("background"),
    )


@dataclass(frozen=True)
class CreditsCommand:
    """``/credits`` (show), ``grant|revoke|set <user> <amount>``, or ``usage [days]``."""

    action: str
    target: str | None = None
    amount: str | None = None


def parse_credits(text: str) -> CreditsCommand:
    words = text.split()
    if not words:
        return CreditsCommand("show")
    action = words[0].lower()
    if action in ("show", "balance"):
        return CreditsCommand("show")
    if action == "usage":
        return CreditsCommand("usage", amount=words[1] if len(words) > 1 else None)
    if action in ("grant", "revoke", "set"):
        if len(words) != 3:
            raise ValidationError(
                f"Usage: /credits {action} @user <amount>", code="IMG-VALID-FLAG"
            )
        return CreditsCommand(action, target=words[1], amount=words[2])
    raise ValidationError(
        "Usage: /credits, /credits grant|revoke|set @user <amount>, /credits usage", code="IMG-VALID-FLAG"
    )


def mention_user_id(text: str) -> str:
    """``<@U123|name>`` (Slack), ``<@123>`` (Discord) or a bare id -> the user id."""
    match = MENTION_RE.match(text.strip())
    if not match:
        raise ValidationError(f"{shown(text)!r} is not a user mention.", code="IMG-VALID-USER")
    return next(g for g in match.groups() if g)


# -- issue 13: edit, zoom, history, show, describe, delete, help, settings as text ---------------------

#: A generation id as the bot prints it in every result's footer (hex today; a little more is allowed).
ID_RE = re.compile(r"[A-Za-z0-9_-]{1,64}")
#: The most images one command makes, so ``image N`` beyond it is a typo, not an index.
MAX_IMAGE_NUMBER = 10
EDIT_USAGE = "Usage: /edit <id> [image N] <instruction>, e.g. /edit <id> image 2 make the sky purple"
#: Short spellings of the outpaint operations (``bot.canvas.OPS`` are accepted as they are).
ZOOM_ALIASES = {
    "1.5": "zoom-1.5", "1.5x": "zoom-1.5", "zoom-1.5x": "zoom-1.5", "2": "zoom-2", "2x": "zoom-2",
    "zoom-2x": "zoom-2", "zoom": "zoom-2", "left": "pan-left", "right": "pan-right", "up": "pan-up",
    "down": "pan-down", "make-square": "square",
}
ZOOM_USAGE = f"Usage: /zoom <id> [image N] <{'|'.join(OPS)}>, e.g. /zoom <id> zoom-2"
HISTORY_USAGE = "Usage: /history [page], e.g. /history 2"
SHOW_USAGE = "Usage: /show <id> (the id is in every result's footer)"
DELETE_USAGE = "Usage: /delete <id> (the id is in every result's footer)"
DESCRIBE_USAGE = "Usage: /describe <image file>, e.g. /describe ~/Pictures/fox.png"
SETTINGS_USAGE = ('Usage: /settings (shows them), or /settings <key> <value> [<key> <value> ...]; '
                  'quote a value with spaces ("a b"); the value default removes the server\'s own setting. '
                  "E.g. /settings size 1024x1024 providers openai,local")
#: Opening quote -> the closing quotes it takes: straight ones, or the curly ones a phone or Slack types.
_QUOTES = {'"': '"\u201d', "'": "'\u2019", "\u201c": '\u201d"', "\u2018": "\u2019'"}


@dataclass(frozen=True)
class ImageCommand:
    """``/edit`` or ``/zoom``: which generation, which of its images (0-based), and the instruction or op."""

    generation_id: str
    index: int
    text: str


def _generation_id(word: str, usage: str) -> str:
    if not ID_RE.fullmatch(word):
        raise ValidationError(f"{shown(word, 40)!r} is not a generation id. {usage}", code="IMG-VALID-ID")
    return word


def _id_and_image(text: str, usage: str) -> tuple[str, int, list[str]]:
    """``<id> [image N] rest...`` -> (id, 0-based index, the remaining words)."""
    words = text.split()
    if not words:
        raise ValidationError(f"Give the generation's id. {usage}", code="IMG-VALID-ID")
    generation_id = _generation_id(words[0], usage)
    rest = words[1:]
    number: int | None = None
    if len(rest) >= 2 and rest[0].lower() in ("image", "img") and re.fullmatch(r"#?\d{1,3}", rest[1]):
        number, rest = int(rest[1].lstrip("#")), rest[2:]
    elif rest and re.fullmatch(r"#\d{1,3}", rest[0]):
        number, rest = int(rest[0][1:]), rest[1:]
    elif rest == ["image"] or rest == ["img"]:
        raise ValidationError(f"image needs a number (image 1, image 2...). {usage}", code="IMG-VALID-IMAGE")
    if number is not None and not 1 <= number <= MAX_IMAGE_NUMBER:
        raise ValidationError(f"image must be a number from 1 to {MAX_IMAGE_NUMBER}, got {number}. {usage}",
                              code="IMG-VALID-IMAGE")
    index = 0 if number is None else number - 1
    return generation_id, index, rest


def parse_edit(text: str) -> ImageCommand:
    """``/edit <id> [image N] <instruction>``."""
    generation_id, index, rest = _id_and_image(text, EDIT_USAGE)
    instruction = " ".join(rest)
    if not instruction:
        raise ValidationError(f"Say what to change. {EDIT_USAGE}", code="IMG-VALID-PROMPT")
    return ImageCommand(generation_id, index, instruction)


def parse_zoom(text: str) -> ImageCommand:
    """``/zoom <id> [image N] <op>``, op one of ``bot.canvas.OPS`` (or a short spelling: 2x, left...)."""
    generation_id, index, rest = _id_and_image(text, ZOOM_USAGE)
    if len(rest) != 1:
        what = "Say which way" if not rest else f"Give one operation, not {shown(' '.join(rest), 40)!r}"
        raise ValidationError(f"{what}. {ZOOM_USAGE}", code="IMG-VALID-OUTPAINT")
    word = rest[0].lower().replace("_", "-")
    op = word if word in OPS else ZOOM_ALIASES.get(word)
    if op is None:
        raise ValidationError(f"{shown(rest[0], 40)!r} is not an operation: use one of {', '.join(OPS)}. "
                              f"{ZOOM_USAGE}", code="IMG-VALID-OUTPAINT")
    return ImageCommand(generation_id, index, op)


def parse_history(text: str) -> int:
    """``/history [page]`` -> the page number (1 when none is given)."""
    words = text.split()
    if words and words[0].lower() == "page":
        words = words[1:]
    if not words:
        return 1
    if len(words) != 1 or not re.fullmatch(r"\d{1,6}", words[0]) or int(words[0]) < 1:
        raise ValidationError(f"The page must be a whole number from 1, got {shown(text.strip(), 40)!r}. "
                              f"{HISTORY_USAGE}", code="IMG-VALID-PAGE")
    return int(words[0])


def parse_generation_id(text: str, usage: str) -> str:
    """``/show <id>``, ``/delete <id>``: exactly one id."""
    words = text.split()
    if len(words) != 1:
        what = "Give the generation's id" if not words else "Give one id"
        raise ValidationError(f"{what}. {usage}", code="IMG-VALID-ID")
    return _generation_id(words[0], usage)


def parse_describe(text: str) -> str:
    """``/describe <file>`` -> the file name as typed (surrounding quotes removed; spaces allowed)."""
    name = text.strip()
    if len(name) >= 2 and name[0] in _QUOTES and name[-1] in _QUOTES[name[0]]:
        name = name[1:-1].strip()
    if not name:
        raise ValidationError(f"Give the image to describe. {DESCRIBE_USAGE}", code="IMG-VALID-FILE")
    return name


def _setting_tokens(text: str) -> list[str]:
    """Words, where a quoted run (which may hold spaces, or be empty) is one word without its quotes."""
    tokens: list[str] = []
    i = 0
    while i < len(text):
        if text[i].isspace():
            i += 1
            continue
        closers = _QUOTES.get(text[i])
        if closers is not None:
            end = next((j for j in range(i + 1, len(text)) if text[j] in closers), -1)
            if end < 0:
                raise ValidationError(f"A quote is not closed in {shown(text[i:], 40)!r}. {SETTINGS_USAGE}",
                                      code="IMG-VALID-SETTING")
            tokens.append(text[i + 1:end])
            i = end + 1
            continue
        j = i
        while j < len(text) and not text[j].isspace():
            j += 1
        tokens.append(text[i:j])
        i = j
    return tokens


def parse_settings(text: str) -> dict[str, str]:
    """``size 1024x1024 providers openai,local`` -> ``{"size": "1024x1024", "providers": "openai,local"}``.

    Words pair up as key and value; a value with spaces is quoted (``blocklist "a b, c"``). Keys are
    lower-cased (``max-images`` is ``max_images``); the core checks the keys and values. Nothing given:
    an empty dict (show the settings)."""
    tokens = _setting_tokens(text)
    if len(tokens) % 2:
        raise ValidationError(f"{shown(tokens[-1], 40)!r} has no value. {SETTINGS_USAGE}",
                              code="IMG-VALID-SETTING")
    changes: dict[str, str] = {}
    for key, value in zip(tokens[::2], tokens[1::2], strict=True):
        name = key.lower().replace("-", "_")
        if not re.fullmatch(r"[a-z_]{1,40}", name):
            raise ValidationError(f"{shown(key, 40)!r} is not a setting's name. {SETTINGS_USAGE}",
                                  code="IMG-VALID-SETTING")
        if name in changes:
            raise ValidationError(f"{name} is given twice.", code="IMG-VALID-SETTING")
        changes[name] = value
    return changes

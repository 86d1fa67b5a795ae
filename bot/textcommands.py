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

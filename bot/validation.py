"""Validation and planning of an /imagine request, before any credit moves.

Each failure is a ``ValidationError`` with a stable code and a message that names the limit.
"""

from __future__ import annotations

import math
import re
import unicodedata
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from providers.base import (
    ASPECTS,
    BACKGROUNDS,
    DEFAULT_QUALITY,
    FORMATS,
    QUALITIES,
    QUALITY_ALIASES,
    RATIOS,
    STYLES,
    ImageProvider,
    ModelInfo,
)
from providers.registry import ProviderRegistry

from .config import MAX_AMOUNT, Config
from .errors import ValidationError
from .models import ImagineOptions
from .server_settings import Rules

PROMPT_LIMIT = 4000
COUNT_LIMIT = 10
ASPECT_ALIASES = {
    "square": "square", "landscape": "landscape", "wide": "landscape", "portrait": "portrait", "tall": "portrait",
}
SIZE_RE = re.compile(r"^\s*(\d{2,5})\s*[x×*]\s*(\d{2,5})\s*$", re.I)
RATIO_RE = re.compile(r"^\s*(\d{1,2})\s*:\s*(\d{1,2})\s*$")
FORMAT_ALIASES = {"jpg": "jpeg"}


@dataclass(frozen=True)
class Attempt:
    """One provider that can serve the plan, with the model it will use."""

    provider: ImageProvider
    model: ModelInfo

    @property
    def calls(self) -> int:
        return self.model.max_per_call


@dataclass(frozen=True)
class Plan:
    prompt: str
    size: str
    style: str
    quality: str
    count: int
    price_per_image: int
    attempts: tuple[Attempt, ...]
    reference: bytes | None = None
    #: More input images after ``reference`` (blend: up to 4 in all on Discord).
    references: tuple[bytes, ...] = ()
    #: Where the model may draw on ``reference`` (transparent pixels): outpainting (``bot.canvas``).
    mask: bytes | None = None
    seed: int = 0
    output_format: str | None = None
    background: str | None = None

    @property
    def total(self) -> int:
        return self.price_per_image * self.count


#: Characters nobody sees that a prompt loses: controls (NUL, escapes, DEL, C1), bidi embeddings,
#: overrides, isolates and marks (a reversed prompt shown in the channel), zero-width spaces and joiners
#: other than ZWJ/ZWNJ, BOMs, soft hyphens, lone surrogates (unencodable), and tag characters outside
#: a flag emoji (invisible text smuggled to a model). ZWJ and ZWNJ stay: emoji sequences and scripts
#: such as Persian and the Indic ones need them.
_KEEP_FORMAT = frozenset({"\u200c", "\u200d"})
_FLAG_TAGS = re.compile("\U0001F3F4[\U000E0020-\U000E007E]+\U000E007F")
#: Letters and symbols that draw nothing (Hangul fillers, braille blank...): kept, but not counted as text.
_BLANKS = frozenset("\u115f\u1160\u3164\uffa0\u2800\u034f\u17b4\u17b5\u180b\u180c\u180d\u180f")


def _visible_form(char: str) -> str:
    """What an invisible character becomes: a space for controls, lone surrogates and the zero-width
    space (they separated words), nothing for the other formatting characters."""
    category = unicodedata.category(char)
    if category in ("Cc", "Cs") or char == "\u200b":
        return " "
    if category == "Cf" and char not in _KEEP_FORMAT:
        return ""
    return char


def _strip_invisible(text: str) -> str:
    if text.isascii():
        return text if text.isprintable() else "".join(c if c.isprintable() else " " for c in text)
    out: list[str] = []
    start = 0
    for flag in _FLAG_TAGS.finditer(text):  # 🏴 + tags + cancel tag: a flag such as Scotland's, kept whole
        out.extend(_visible_form(c) for c in text[start:flag.start()])
        out.append(flag.group())
        start = flag.end()
    out.extend(_visible_form(c) for c in text[start:])
    return "".join(out)


def clean_prompt(prompt: str | None, limit: int = PROMPT_LIMIT) -> str:
    """The prompt a provider sees and a user pays for: invisible characters dropped, whitespace collapsed;
    refused when nothing visible is left or it is too long. Emoji, CJK, accents and RTL text are kept."""
    if prompt is not None and not isinstance(prompt, str):
        raise ValidationError("The prompt must be text: describe the image you want.", code="IMG-VALID-PROMPT")
    text = " ".join(_strip_invisible(prompt or "").split())
    if not text:
        invisible = bool(prompt) and not str(prompt).isspace()
        raise ValidationError(
            "The prompt has no visible text (only control, zero-width or formatting characters): describe the "
            "image you want." if invisible else "The prompt is empty: describe the image you want.",
            code="IMG-VALID-PROMPT",
        )
    if len(text) > limit:
        raise ValidationError(
            f"The prompt is {len(text)} characters; the limit is {limit}.", code="IMG-VALID-PROMPT"
        )
    if all(_invisible_or_blank(c) for c in text):
        raise ValidationError(
            "The prompt has no visible text (only blank characters): describe the image you want.",
            code="IMG-VALID-PROMPT",
        )
    return text


def _invisible_or_blank(char: str) -> bool:
    return char.isspace() or char in _BLANKS or char in _KEEP_FORMAT or unicodedata.category(char) in (
        "Mn", "Me", "Cf")


def parse_count(value: int | str | None, cap: int) -> int:
    if value is None or value == "":
        return 1
    text = str(value).strip()
    if isinstance(value, bool) or not re.fullmatch(r"\d{1,3}", text):
        raise ValidationError(f"count must be a whole number from 1 to {cap}, got {shown(text)!r}.", code="IMG-VALID-COUNT")
    number = int(text)
    if not 1 <= number <= cap:
        raise ValidationError(f"count must be from 1 to {cap}, got {number}.", code="IMG-VALID-COUNT")
    return number


def parse_choice(name: str, value: str | None, choices: tuple[str, ...], default: str) -> str:
    if value is None or not str(value).strip():
        return default
    text = str(value).strip().lower()
    if text not in choices:
        raise ValidationError(
            f"{name} must be one of {', '.join(choices)}; got {shown(value)!r}.", code=f"IMG-VALID-{name.upper()}"
        )
    return text


#: A credit amount as typed: plain ASCII digits, or thousands grouped by commas (or underscores) in
#: groups of exactly three. ``1,5`` and ``2,50`` are decimals in much of the world, so they are refused,
#: never read as 15 or 250; so are ``1.000`` (a thousand in German, one in English), ``1 000``, signs
#: other than a leading ``+``, exponents and fractions.
AMOUNT_RE = re.compile(r"\+?(?:[0-9]+|[1-9][0-9]{0,2}(?:,[0-9]{3})+|[1-9][0-9]{0,2}(?:_[0-9]{3})+)")
#: Longer text is not worth reading (and is not echoed back whole).
AMOUNT_TEXT_LIMIT = 32
#: A Japanese or Chinese keyboard's fullwidth digits, comma and plus, read as ASCII. Nothing broader
#: (NFKC would turn ``5²`` into 52).
FULLWIDTH = {0xFF10 + i: ord("0") + i for i in range(10)} | {0xFF0C: ord(","), 0xFF0B: ord("+")}


def shown(value: object, limit: int = 60) -> str:
    """``value`` as a message quotes it, cut short so a pasted essay is not echoed back."""
    text = value if isinstance(value, str) else repr(value)
    return text if len(text) <= limit else text[: limit - 1] + "…"


def parse_amount(value: object, *, allow_zero: bool = False) -> int:
    """A credit amount: a whole number from 1 (or 0 for set) to 1,000,000; anything else is refused.

    One parser for every adapter (Slack and console text, the operator CLI, the core's ``adjust``), so an
    amount means the same everywhere. Fullwidth digits and commas (an IME's) are read as their ASCII
    forms; digits of other scripts, superscripts and the like are refused."""
    lo = 0 if allow_zero else 1
    usage = f"The amount must be a whole number from {lo} to {MAX_AMOUNT:,}"
    if isinstance(value, bool) or not isinstance(value, int | str):
        raise ValidationError(f"{usage}; got {shown(value)!r}.", code="IMG-VALID-AMOUNT")
    if isinstance(value, int):
        number = value
    else:
        text = value[: AMOUNT_TEXT_LIMIT * 4].translate(FULLWIDTH).strip()
        if len(text) > AMOUNT_TEXT_LIMIT or not AMOUNT_RE.fullmatch(text):
            hint = ""
            if text.startswith("-") and AMOUNT_RE.fullmatch(text[1:]):
                hint = " (to take credits away, use revoke)"
            elif re.fullmatch(r"[0-9]+[,.][0-9]+", text):
                hint = " (commas group thousands in threes; credits have no fractions)"
            raise ValidationError(f"{usage}, like 100 or 1,000{hint}; got {shown(value)!r}.",
                                  code="IMG-VALID-AMOUNT")
        number = int(text.replace(",", "").replace("_", ""))
    if not lo <= number <= MAX_AMOUNT:
        raise ValidationError(f"{usage}; got {number:,}.", code="IMG-VALID-AMOUNT")
    return number


def resolve_size(value: str | None, model: ModelInfo, default: str) -> str:
    """``WxH``, a ratio (``16:9``) or an aspect name -> a size the model makes, or a ValidationError
    naming what it can make."""
    if value is None or not str(value).strip():
        return default if model.size_problem(default) is None else model.size_for_aspect("square")
    text = str(value).strip().lower()
    if text in ASPECT_ALIASES:
        return model.size_for_aspect(ASPECT_ALIASES[text])
    ratio = RATIO_RE.match(text)
    if ratio:
        label = f"{int(ratio[1])}:{int(ratio[2])}"
        size = model.size_for_ratio(label) if label in RATIOS else None
        if size is not None:
            return size
        raise ValidationError(
            f"aspect {label} is not available for {model.name}; it makes {', '.join(model.ratios()) or 'none'}"
            f" (or {', '.join(ASPECTS)}).",
            code="IMG-VALID-SIZE",
        )
    match = SIZE_RE.match(text)
    why = ""
    if match:
        size = f"{int(match[1])}x{int(match[2])}"
        problem = model.size_problem(size)
        if problem is None:
            return size
        why = f" ({problem})" if model.free_sizes is not None else ""
    raise ValidationError(
        f"size {shown(value)!r} is not available for {model.name}{why}; choose {model.describe_sizes()},"
        f" or an aspect ({', '.join(ASPECTS)}, {', '.join(model.ratios()[:6])}...).",
        code="IMG-VALID-SIZE",
    )


def parse_quality(value: str | None, model: ModelInfo) -> str:
    """A quality tier the model makes (``standard``/``hd`` are medium/high); default medium, or the
    model's own tier when it makes only one."""
    if value is None or not str(value).strip():
        return DEFAULT_QUALITY if DEFAULT_QUALITY in model.qualities else model.qualities[0]
    text = str(value).strip().lower()
    tier = QUALITY_ALIASES.get(text, text)
    if tier not in QUALITIES:
        raise ValidationError(
            f"quality must be one of {', '.join(QUALITIES)} (standard and hd mean medium and high); got {shown(value)!r}.",
            code="IMG-VALID-QUALITY",
        )
    if tier not in model.qualities:
        raise ValidationError(
            f"quality {tier} is not available for {model.name}; it makes {', '.join(model.qualities)}.",
            code="IMG-VALID-QUALITY",
        )
    return tier


def parse_format(value: str | None, model: ModelInfo) -> str | None:
    if value is None or not str(value).strip():
        return None
    text = str(value).strip().lower().lstrip(".")
    fmt = FORMAT_ALIASES.get(text, text)
    if fmt not in FORMATS:
        raise ValidationError(f"format must be one of {', '.join(FORMATS)}; got {shown(value)!r}.", code="IMG-VALID-FORMAT")
    if fmt not in model.formats:
        makes = f"it makes {', '.join(model.formats)}" if model.formats else "it does not let you choose a format"
        raise ValidationError(
            f"format {fmt} is not available for {model.name}; {makes}.",
            code="IMG-VALID-FORMAT",
        )
    return fmt


def parse_background(value: str | None, model: ModelInfo, fmt: str | None) -> str | None:
    if value is None or not str(value).strip():
        return None
    text = str(value).strip().lower()
    if text not in BACKGROUNDS:
        raise ValidationError(
            f"background must be one of {', '.join(BACKGROUNDS)}; got {shown(value)!r}.", code="IMG-VALID-BACKGROUND"
        )
    if text == "auto":
        return None
    if text not in model.backgrounds:
        can = ", ".join(model.backgrounds) or "only its automatic background"
        raise ValidationError(
            f"a {text} background is not available for {model.name}; it makes {can}.", code="IMG-VALID-BACKGROUND"
        )
    if text == "transparent" and (fmt or (model.formats or ("png",))[0]) == "jpeg":
        raise ValidationError(
            "A transparent background needs --format png or webp (JPEG has no transparency).",
            code="IMG-VALID-BACKGROUND",
        )
    return text


def split_provider(value: str | None) -> tuple[str | None, str | None]:
    if not value or not str(value).strip():
        return None, None
    name, _, model = str(value).strip().lower().partition("/")
    return name or None, model or None


#: Input images one command may carry (Blend: several attachments on Discord).
MAX_REFERENCES = 4


def plan_imagine(options: ImagineOptions, registry: ProviderRegistry, config: Config, server_key: str,
                 rules: Rules | None = None) -> Plan:
    """Check everything the user typed against config, the server's settings (``rules``: its defaults, the
    providers it allows, its most images and its price multiplier) and provider capabilities."""
    rules = rules or Rules()
    wanted, model_name = split_provider(options.provider)
    model_name = (options.model or "").strip().lower() or model_name
    if not wanted and rules.provider:
        wanted = rules.provider
        model_name = model_name or (rules.model or "")
    allowed = set(rules.providers)
    if wanted:
        provider = registry.get(wanted)
        if provider is None:
            raise ValidationError(
                f"provider {shown(wanted)!r} is not configured; choose one of {', '.join(registry.names())}.",
                code="IMG-VALID-PROVIDER",
            )
        if allowed and provider.name not in allowed:
            raise ValidationError(
                f"This server allows only {', '.join(rules.providers)}; {provider.name} is not one of them.",
                code="IMG-VALID-PROVIDER",
            )
        candidates = [provider] if provider.capabilities.models else []
    else:
        candidates = registry.ordered(config.providers_for(server_key))
        if allowed:
            candidates = [c for c in candidates if c.name in allowed] or [
                p for p in registry.ordered(list(rules.providers))]
    if not candidates:
        raise ValidationError(
            f"{wanted or 'No provider'} has no model available right now (its models were retired); "
            "an operator must check `imagebot providers`. Nothing was charged.",
            code="IMG-VALID-MODEL",
        )
    primary = candidates[0]
    model = primary.capabilities.model(model_name)
    if model is None:
        names = ", ".join(m.name for m in primary.capabilities.models)
        # The catalogue may know why a model is missing (shut down, retired): say so, not just "unknown".
        why = registry.model_hint(primary.name, model_name or "")
        raise ValidationError(
            f"model {shown(model_name)!r} is not offered by {primary.name}; choose one of {names}."
            + (f" {why}" if why else ""),
            code="IMG-VALID-MODEL",
        )
    prompt = clean_prompt(options.prompt, min(PROMPT_LIMIT, model.prompt_limit))
    size = resolve_size(options.size or rules.size, model, config.default_size)
    style = parse_choice("style", options.style, STYLES, "natural")
    quality = parse_quality(options.quality or rules.quality, model)
    output_format = parse_format(options.output_format, model)
    background = parse_background(options.background, model, output_format)
    count = parse_count(options.count, min(COUNT_LIMIT, config.limits.max_count, rules.max_images or COUNT_LIMIT))
    seed = options.seed if isinstance(options.seed, int) else 0
    inputs = (options.reference is not None) + len(options.references) + len(options.reference_urls)
    if inputs > MAX_REFERENCES:
        raise ValidationError(f"At most {MAX_REFERENCES} reference images at once; got {inputs}.",
                              code="IMG-VALID-REFERENCE")
    if options.references and options.reference is None:
        raise ValidationError("More reference images need a first one.", code="IMG-VALID-REFERENCE")

    attempts = [Attempt(primary, model)]
    for other in candidates[1:]:
        fit = fitting_model(other, size, len(prompt), options.reference is not None, quality=quality,
                            output_format=output_format, background=background)
        if fit is not None:
            attempts.append(Attempt(other, fit))
    return Plan(
        prompt=prompt,
        size=size,
        style=style,
        quality=quality,
        count=count,
        price_per_image=rules.price(config.pricing.per_image(size, quality, model.name)),
        attempts=tuple(attempts),
        reference=options.reference,
        references=tuple(options.references),
        seed=seed,
        output_format=output_format,
        background=background,
    )


def fitting_model(
    provider: ImageProvider, size: str, prompt_len: int, reference: bool, *, quality: str = DEFAULT_QUALITY,
    output_format: str | None = None, background: str | None = None, exclude: tuple[str, ...] = (),
) -> ModelInfo | None:
    """The provider's model that can serve the same request, for failover: the default model first,
    and with a reference image, one that takes references before one that would only read a description."""
    caps = provider.capabilities
    fits = [
        m for m in caps.models
        if m.name not in exclude and m.size_problem(size) is None and prompt_len <= m.prompt_limit
        and quality in m.qualities and (output_format is None or output_format in m.formats)
        and (background is None or background in m.backgrounds)
    ]
    fits.sort(key=lambda m: (reference and not m.supports_reference, m.name != caps.default_model))
    return fits[0] if fits else None


def calls_needed(count: int, per_call: int) -> list[int]:
    """Split ``count`` into per-call batches, e.g. 5 with 2 per call -> [2, 2, 1]."""
    per_call = max(1, per_call)
    n = math.ceil(count / per_call)
    return [min(per_call, count - i * per_call) for i in range(n)]


def recorded_options(plan: Plan, options: ImagineOptions) -> dict[str, Any]:
    """What a generation row keeps of the request, so a button can replay it after a restart
    (``repeat_options``). The provider and model are kept only when the user named them: a replay
    then follows the rotation as it is at that time."""
    return {
        "size": plan.size, "style": plan.style, "quality": plan.quality, "count": plan.count,
        "provider": options.provider or None, "model": options.model or None, "seed": plan.seed,
        "format": plan.output_format, "background": plan.background,
    }


def repeat_options(prompt: str, recorded: Mapping[str, Any], *, seed: int,
                   reference: bytes | None = None) -> ImagineOptions:
    """The request a generation row recorded, again (Re-roll: a new seed; Variations: a reference)."""
    o = recorded
    return ImagineOptions(
        prompt=prompt, size=o.get("size"), style=o.get("style"), quality=o.get("quality"),
        count=o.get("count"), provider=o.get("provider"), model=o.get("model"), reference=reference, seed=seed,
        output_format=o.get("format"), background=o.get("background"),
    )

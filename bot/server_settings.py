"""Per-server settings (/settings): what a server's admins may change on top of the operator's defaults.

The operator's ``imagebot.toml`` stays the default for every server; a server stores only what its admins
changed (``Ledger.server_settings``, every change recorded with who made it). Admins type text (``size
1024x1024``, ``providers openai,local``); ``parse_changes`` turns it into typed values or a ValidationError
naming the key, before anything is written. ``Rules`` is what the core applies: defaults where the user
named nothing, the providers a server allows, its most images per command, its price multiplier, its
moderation and blocklist, whether results are private, and the price above which a command asks first.
"""

from __future__ import annotations

import math
import re
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from providers.base import QUALITIES, QUALITY_ALIASES
from providers.registry import ProviderRegistry

from .config import Config
from .errors import ValidationError

#: The price (credits) above which a command asks for a Confirm click unless the server says otherwise.
DEFAULT_CONFIRM_ABOVE = 50
ON = ("on", "yes", "true", "1")
OFF = ("off", "no", "false", "0")
#: Typed by an admin to remove an override (back to the operator's default).
DEFAULT_WORD = "default"

#: key -> what it does (shown by /settings and /help).
KEYS: dict[str, str] = {
    "provider": "the default provider (when the user names none)",
    "model": "the default model of that provider",
    "size": "the default size (WxH, a ratio like 16:9, or square/landscape/portrait)",
    "quality": f"the default quality ({', '.join(QUALITIES)})",
    "providers": "the providers this server may use, comma-separated",
    "max_images": "the most images one command may ask for",
    "price_multiplier": "every price times this (0.1 to 10)",
    "moderation": "check prompts with the moderation model first (on/off)",
    "blocklist": "words or /patterns/ this server refuses, comma-separated",
    "adult": "let prompts flagged sexual through in age-restricted channels (on/off; Discord)",
    "visibility": "post results publicly or privately (public/private)",
    "confirm_above": "ask before a command costing more than this many credits (0: never ask)",
}


@dataclass(frozen=True)
class Rules:
    """A server's settings in effect, typed."""

    provider: str | None = None
    model: str | None = None
    size: str | None = None
    quality: str | None = None
    providers: tuple[str, ...] = ()
    max_images: int | None = None
    price_multiplier: float = 1.0
    moderation: bool = False
    blocklist: tuple[str, ...] = ()
    adult: bool = False
    visibility: str = "public"
    confirm_above: int = DEFAULT_CONFIRM_ABOVE

    def price(self, credits: int) -> int:
        """A price under this server's multiplier: rounded up, and a paid image never becomes free."""
        if credits <= 0 or self.price_multiplier == 1.0:
            return credits
        return max(1, math.ceil(credits * self.price_multiplier - 1e-9))


def rules_from(stored: Mapping[str, Any], config: Config, *, moderation_default: bool = False) -> Rules:
    """The stored overrides over the operator's defaults (values were validated when they were set)."""
    def text(key: str) -> str | None:
        value = stored.get(key)
        return str(value) if value not in (None, "") else None

    return Rules(
        provider=text("provider"), model=text("model"), size=text("size"), quality=text("quality"),
        providers=tuple(str(p) for p in stored.get("providers") or ()),
        max_images=int(stored["max_images"]) if stored.get("max_images") is not None else None,
        price_multiplier=float(stored.get("price_multiplier") or 1.0),
        moderation=bool(stored.get("moderation", moderation_default)),
        blocklist=tuple(str(b) for b in stored.get("blocklist") or ()),
        adult=bool(stored.get("adult", False)),
        visibility=str(stored.get("visibility") or "public"),
        confirm_above=int(stored["confirm_above"]) if stored.get("confirm_above") is not None
        else DEFAULT_CONFIRM_ABOVE,
    )


def _bad(key: str, why: str) -> ValidationError:
    return ValidationError(f"Setting {key!r}: {why}. Nothing was changed.", code="IMG-VALID-SETTING")


def _switch(key: str, value: str) -> bool:
    low = value.lower()
    if low in ON:
        return True
    if low in OFF:
        return False
    raise _bad(key, f"use on or off, not {value[:40]!r}")


def _provider(key: str, name: str, registry: ProviderRegistry) -> str:
    name = name.strip().lower()
    if registry.get(name) is None:
        raise _bad(key, f"{name[:40]!r} is not a configured provider; choose from {', '.join(registry.names())}")
    return name


def _number(key: str, value: str, lo: float, hi: float, *, whole: bool) -> float:
    if not re.fullmatch(r"\d{1,6}" if whole else r"\d{1,4}(\.\d{1,3})?", value):
        raise _bad(key, f"{value[:40]!r} is not {'a whole number' if whole else 'a number like 1.5'}")
    number = float(value)
    if not lo <= number <= hi:
        raise _bad(key, f"use {lo:g} to {hi:g}")
    return number


def parse_changes(changes: Mapping[str, str], registry: ProviderRegistry, config: Config,
                  current: Mapping[str, Any], *, moderation_available: bool = False) -> dict[str, Any]:
    """Admin text -> typed values (None: back to the default). Everything is checked before anything is
    written: one bad key or value refuses the whole change."""
    if not changes:
        raise ValidationError("Name a setting and a value, e.g. /settings size 1024x1024.", code="IMG-VALID-SETTING")
    out: dict[str, Any] = {}
    for raw_key, raw_value in changes.items():
        key = raw_key.strip().lower().replace("-", "_")
        value = str(raw_value).strip()
        if key not in KEYS:
            raise ValidationError(f"Unknown setting {raw_key[:40]!r}; the settings are {', '.join(KEYS)}. "
                                  "Nothing was changed.", code="IMG-VALID-SETTING")
        if not value:
            raise _bad(key, "give a value (or 'default')")
        if value.lower() == DEFAULT_WORD:
            out[key] = None
            continue
        out[key] = _parse_one(key, value, registry, config, {**current, **out}, moderation_available)
    return out


def _parse_one(key: str, value: str, registry: ProviderRegistry, config: Config, merged: Mapping[str, Any],
               moderation_available: bool) -> Any:
    if key == "provider":
        return _provider(key, value, registry)
    if key == "providers":
        names = [n for n in (p.strip() for p in value.split(",")) if n]
        if not names:
            raise _bad(key, "name at least one provider")
        return list(dict.fromkeys(_provider(key, n, registry) for n in names))
    if key == "model":
        provider = registry.get(str(merged.get("provider") or (config.provider_order or ("",))[0]))
        name = value.lower()
        if provider is not None and provider.capabilities.model(name) is None:
            offered = ", ".join(m.name for m in provider.capabilities.models)
            raise _bad(key, f"{name[:60]!r} is not a model of {provider.name} ({offered})")
        return name
    if key == "size":
        if not re.fullmatch(r"\d{2,5}x\d{2,5}|\d{1,2}:\d{1,2}|square|landscape|portrait|wide|tall", value.lower()):
            raise _bad(key, f"{value[:40]!r} is not WxH, a ratio like 16:9, or square/landscape/portrait")
        return value.lower()
    if key == "quality":
        low = value.lower()
        if low not in QUALITIES and low not in QUALITY_ALIASES:
            raise _bad(key, f"use one of {', '.join(QUALITIES)}")
        return QUALITY_ALIASES.get(low, low)
    if key == "max_images":
        return int(_number(key, value, 1, config.limits.max_count, whole=True))
    if key == "price_multiplier":
        return _number(key, value, 0.1, 10, whole=False)
    if key == "confirm_above":
        return int(_number(key, value, 0, 1_000_000, whole=True))
    if key in ("moderation", "adult"):
        on = _switch(key, value)
        if key == "moderation" and on and not moderation_available:
            raise _bad(key, "moderation needs an OpenAI key on the bot (OPENAI_API_KEY); ask its operator")
        return on
    if key == "visibility":
        low = value.lower()
        if low not in ("public", "private"):
            raise _bad(key, "use public or private")
        return low
    if key == "blocklist":
        return list(_blocklist(split_entries(value)))
    raise _bad(key, "cannot be set")  # pragma: no cover - KEYS and this function list the same keys


def split_entries(value: str) -> list[str]:
    """Comma-separated entries, where a ``/pattern/`` may hold commas of its own (``/x{1,3}/``)."""
    entries: list[str] = []
    rest = value.strip()
    while rest:
        if rest.startswith("/"):
            end = re.search(r"/\s*(,|$)", rest[1:])
            if end is not None:
                entries.append(rest[: end.start() + 2].strip())
                rest = rest[end.end() + 1:].strip()
                continue
        word, _, rest = rest.partition(",")
        if word.strip():
            entries.append(word.strip())
        rest = rest.strip()
    return entries


def _blocklist(entries: list[str]) -> tuple[str, ...]:
    from .moderation import parse_blocklist

    return parse_blocklist(entries)


def shown(stored: Mapping[str, Any], config: Config, *, moderation_default: bool = False) -> dict[str, str]:
    """Every setting as in effect, as text (the server's value, else the operator's default)."""
    rules = rules_from(stored, config, moderation_default=moderation_default)
    order = ", ".join(config.provider_order) or "local"
    return {
        "provider": rules.provider or f"(rotation: {order})",
        "model": rules.model or "(the provider's default)",
        "size": rules.size or config.default_size,
        "quality": rules.quality or "medium",
        "providers": ", ".join(rules.providers) or "(all configured)",
        "max_images": str(rules.max_images or config.limits.max_count),
        "price_multiplier": f"{rules.price_multiplier:g}",
        "moderation": "on" if rules.moderation else "off",
        "blocklist": ", ".join(rules.blocklist) or "(none)",
        "adult": "on" if rules.adult else "off",
        "visibility": rules.visibility,
        "confirm_above": str(rules.confirm_above) if rules.confirm_above else "0 (never ask)",
    }

"""Configuration: read once at start from the environment and an optional ``imagebot.toml``.

The environment wins over the file. Every value is validated here, so a bad setting stops the bot at
start with an error naming the key and what it accepts, instead of failing on the first command.
Secrets are kept out of ``repr`` so a logged config never leaks a key.
"""

from __future__ import annotations

import logging
import math
import os
import re
import tomllib
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from .errors import ConfigError

MAX_AMOUNT = 1_000_000
RATE_RE = re.compile(r"^\s*\d+\s*(/|per)\s*\d*\s*(second|minute|hour|day)s?\s*$", re.I)

DEFAULT_PRICES = {"256x256": 3, "512x512": 5, "1024x1024": 10}
#: Price factor per quality tier (``hd`` is ``high``, ``standard`` is ``medium``).
DEFAULT_QUALITY_FACTORS = {"low": 0.5, "medium": 1.0, "high": 2.0, "max": 4.0}
QUALITY_ALIASES = {"standard": "medium", "hd": "high"}
TWO_MEGAPIXELS = 2 * 1024 * 1024
SLACK = 1.05


@dataclass(frozen=True)
class Pricing:
    """Credits per image, by size (pixel count), quality tier and model.

    Sizes priced exactly in ``per_size`` cost that; otherwise up to 256x256, 512x512 and 1024x1024 pixels
    (with 5% to spare) cost like those, up to two megapixels cost ``large``, and beyond that ``large`` per two megapixels.
    The quality factor and a model's factor (``models``, matched by the longest id prefix) multiply it;
    the result is rounded up, and an image costs at least 1 unless its price is set to 0.
    """

    per_size: Mapping[str, int] = field(default_factory=lambda: dict(DEFAULT_PRICES))
    large: int = 15
    qualities: Mapping[str, float] = field(default_factory=lambda: dict(DEFAULT_QUALITY_FACTORS))
    models: Mapping[str, float] = field(default_factory=dict)
    enhance: int = 1

    def base(self, size: str) -> int:
        exact = self.per_size.get(size)
        if exact is not None:
            return exact
        w, h = (int(v) for v in size.split("x"))
        # A vendor's "1K" shapes run a few percent over 1024x1024 (Gemini's 16:9 is 1376x768): same tier.
        pixels = w * h
        tier = pixels / SLACK
        if tier <= 256 * 256:
            return self.per_size.get("256x256", 3)
        if tier <= 512 * 512:
            return self.per_size.get("512x512", 5)
        if tier <= 1024 * 1024:
            return self.per_size.get("1024x1024", 10)
        if tier <= TWO_MEGAPIXELS:
            return self.large
        return math.ceil(self.large * pixels / TWO_MEGAPIXELS)

    def model_factor(self, model: str) -> float:
        fits = [k for k in self.models if model == k or model.startswith(k)]
        return self.models[max(fits, key=len)] if fits else 1.0

    def per_image(self, size: str, quality: str, model: str = "") -> int:
        base = self.base(size)
        if base == 0:
            return 0
        tier = QUALITY_ALIASES.get(quality, quality)
        price = base * self.qualities.get(tier, 1.0) * self.model_factor(model)
        return max(1, math.ceil(price - 1e-9))


@dataclass(frozen=True)
class Limits:
    user_rate: str = "5/minute"
    server_rate: str = "200/hour"
    max_concurrent: int = 2
    max_count: int = 10
    storage_uri: str = "memory://"


@dataclass(frozen=True)
class Config:
    #: A SQLite path, ``sqlite:///path``, or ``memory://`` (see ``storage.ledger.open_ledger``).
    database: str = "./data/imagebot.sqlite3"
    data_dir: Path = Path("./data")
    starting_credits: int = 50
    default_size: str = "1024x1024"
    provider_order: tuple[str, ...] = ()
    server_provider_order: Mapping[str, tuple[str, ...]] = field(default_factory=dict)
    pricing: Pricing = field(default_factory=Pricing)
    limits: Limits = field(default_factory=Limits)
    #: Seconds a reservation's lease lasts; the job's process renews it every third of that.
    lease_seconds: float = 30.0
    enhancer: str = ""
    #: Seconds between asks of each vendor for its model list (lifecycle, new models).
    catalogue_refresh: float = 6 * 3600.0
    #: Per-provider tables from ``[providers.NAME]`` in the file (models, base_url, key_env...).
    provider_settings: Mapping[str, Mapping[str, Any]] = field(default_factory=dict)
    #: The environment as read at start; providers and adapters take their keys from here.
    env: Mapping[str, str] = field(default_factory=dict, repr=False)
    #: The rest of the file, for adapters (``[slack]``, ``[discord]``).
    extra: Mapping[str, Any] = field(default_factory=dict, repr=False)

    def providers_for(self, server_key: str) -> tuple[str, ...]:
        return self.server_provider_order.get(server_key, self.provider_order)


#: Settings that were removed: (env key, file key, why). Set, they are ignored with a warning.
RETIRED = (
    ("IMAGEBOT_INSTANCE", "instance",
     "each process now holds its reservations under its own random lease holder id"),
    ("IMAGEBOT_RESERVATION_TTL", "reservation_ttl",
     "reservations are held under leases their process renews; IMAGEBOT_LEASE_SECONDS sets the lease (default 30)"),
)


def _int(key: str, value: Any, lo: int, hi: int) -> int:
    if isinstance(value, bool):
        raise ConfigError(f"{key} must be a whole number from {lo} to {hi}, got {value!r}")
    try:
        number = int(str(value).strip()) if not isinstance(value, int) else value
    except ValueError:
        raise ConfigError(f"{key} must be a whole number from {lo} to {hi}, got {value!r}") from None
    if not lo <= number <= hi:
        raise ConfigError(f"{key} must be a whole number from {lo} to {hi}, got {number}")
    return number


def parse_number(key: str, value: Any, lo: float, hi: float) -> float:
    """A number in [lo, hi], or a ConfigError naming ``key`` (shared with the provider settings)."""
    if isinstance(value, bool):
        raise ConfigError(f"{key} must be a number from {lo:g} to {hi:g}, got {value!r}")
    try:
        number = float(value)
    except (TypeError, ValueError):
        raise ConfigError(f"{key} must be a number from {lo:g} to {hi:g}, got {value!r}") from None
    if not lo <= number <= hi:
        raise ConfigError(f"{key} must be a number from {lo:g} to {hi:g}, got {number:g}")
    return number


def _rate(key: str, value: Any) -> str:
    text = str(value).strip()
    if not RATE_RE.match(text):
        raise ConfigError(f"{key} must look like '5/minute' or '200 per hour', got {value!r}")
    return text


def _size(key: str, value: Any) -> str:
    text = str(value).strip().lower()
    if not re.fullmatch(r"\d{2,5}x\d{2,5}", text):
        raise ConfigError(f"{key} must be a size like 1024x1024, got {value!r}")
    return text


def _names(key: str, value: Any) -> tuple[str, ...]:
    items = value.split(",") if isinstance(value, str) else value
    if not isinstance(items, list | tuple):
        raise ConfigError(f"{key} must be a list of provider names, got {value!r}")
    names = tuple(str(v).strip().lower() for v in items if str(v).strip())
    for name in names:
        if not re.fullmatch(r"[a-z0-9_-]+", name):
            raise ConfigError(f"{key}: provider names use a-z, 0-9, '-' and '_', got {name!r}")
    return names


def load_config(env: Mapping[str, str] | None = None, path: str | Path | None = None) -> Config:
    """Build the config from ``env`` (default: the process environment) and the toml file."""
    env = dict(os.environ if env is None else env)
    file_path = Path(path or env.get("IMAGEBOT_CONFIG") or "imagebot.toml")
    data: dict[str, Any] = {}
    if file_path.exists():
        try:
            data = tomllib.loads(file_path.read_text(encoding="utf-8"))
        except (tomllib.TOMLDecodeError, UnicodeDecodeError) as exc:
            raise ConfigError(f"{file_path.name} is not valid TOML: {exc}") from None
    elif path is not None or env.get("IMAGEBOT_CONFIG"):
        raise ConfigError(f"IMAGEBOT_CONFIG: no such file {file_path.name!r}")

    def pick(env_key: str, file_key: str, default: Any, table: Mapping[str, Any] | None = None) -> Any:
        if env.get(env_key, "").strip():
            return env[env_key]
        return (data if table is None else table).get(file_key, default)

    for env_key, file_key, why in RETIRED:
        if env.get(env_key, "").strip() or file_key in data:
            logging.getLogger(__name__).warning("%s (%s in the file) is no longer used and is ignored: %s",
                                                env_key, file_key, why)

    limits_t = data.get("limits", {})
    pricing_t = data.get("pricing", {})
    providers_t = data.get("providers", {})
    for name, table in (("limits", limits_t), ("pricing", pricing_t), ("providers", providers_t)):
        if not isinstance(table, dict):
            raise ConfigError(f"[{name}] in imagebot.toml must be a table")

    sizes = pricing_t.get("sizes", {})
    if not isinstance(sizes, dict):
        raise ConfigError("pricing.sizes must be a table like {\"1024x1024\" = 10}")
    per_size = dict(DEFAULT_PRICES)
    for size, price in sizes.items():
        per_size[_size("pricing.sizes", size)] = _int(f"pricing.sizes.{size}", price, 0, MAX_AMOUNT)
    qualities = dict(DEFAULT_QUALITY_FACTORS)
    if "hd_multiplier" in pricing_t:  # the older name of the high tier's factor
        qualities["high"] = parse_number("pricing.hd_multiplier", pricing_t["hd_multiplier"], 1, 100)
    quality_t = pricing_t.get("qualities", {})
    if not isinstance(quality_t, dict):
        raise ConfigError("pricing.qualities must be a table like {low = 0.5, medium = 1, high = 2, max = 4}")
    for tier, factor in quality_t.items():
        if tier not in DEFAULT_QUALITY_FACTORS:
            raise ConfigError(f"pricing.qualities.{tier}: unknown quality tier; use "
                              f"{', '.join(DEFAULT_QUALITY_FACTORS)}")
        qualities[tier] = parse_number(f"pricing.qualities.{tier}", factor, 0, 100)
    models_t = pricing_t.get("models", {})
    if not isinstance(models_t, dict):
        raise ConfigError("pricing.models must be a table like {\"gpt-image-2\" = 1.5}")
    model_factors = {str(k).strip().lower(): parse_number(f"pricing.models.{k}", v, 0, 100)
                     for k, v in models_t.items()}
    pricing = Pricing(
        per_size=per_size,
        large=_int("pricing.large", pricing_t.get("large", 15), 0, MAX_AMOUNT),
        qualities=qualities,
        models=model_factors,
        enhance=_int("pricing.enhance", pricing_t.get("enhance", 1), 0, MAX_AMOUNT),
    )
    limits = Limits(
        user_rate=_rate("IMAGEBOT_USER_RATE", pick("IMAGEBOT_USER_RATE", "user_rate", "5/minute", limits_t)),
        server_rate=_rate(
            "IMAGEBOT_SERVER_RATE", pick("IMAGEBOT_SERVER_RATE", "server_rate", "200/hour", limits_t)
        ),
        max_concurrent=_int(
            "IMAGEBOT_MAX_CONCURRENT", pick("IMAGEBOT_MAX_CONCURRENT", "max_concurrent", 2, limits_t), 1, 100
        ),
        max_count=_int("IMAGEBOT_MAX_COUNT", pick("IMAGEBOT_MAX_COUNT", "max_count", 10, limits_t), 1, 10),
        storage_uri=str(pick("IMAGEBOT_RATELIMIT_STORAGE", "storage", "memory://", limits_t)).strip(),
    )
    if not re.match(r"^(memory|redis|rediss|redis\+cluster|redis\+sentinel)://", limits.storage_uri):
        raise ConfigError("IMAGEBOT_RATELIMIT_STORAGE must be a limits storage URI such as memory:// or redis://host:6379")

    server_orders: dict[str, tuple[str, ...]] = {}
    for key, table in data.get("servers", {}).items():
        if not isinstance(table, dict):
            raise ConfigError(f"[servers.{key!r}] must be a table")
        if "providers" in table:
            server_orders[str(key)] = _names(f"servers.{key}.providers", table["providers"])

    provider_settings = {k: v for k, v in providers_t.items() if isinstance(v, dict)}
    order = pick("IMAGEBOT_PROVIDERS", "order", (), providers_t)
    extra = {k: v for k, v in data.items() if k not in ("limits", "pricing", "providers", "servers")}
    return Config(
        database=str(pick("IMAGEBOT_DATABASE", "database", "./data/imagebot.sqlite3")).strip(),
        data_dir=Path(str(pick("IMAGEBOT_DATA_DIR", "data_dir", "./data"))),
        starting_credits=_int(
            "IMAGEBOT_STARTING_CREDITS", pick("IMAGEBOT_STARTING_CREDITS", "starting_credits", 50), 0, MAX_AMOUNT
        ),
        default_size=_size("IMAGEBOT_DEFAULT_SIZE", pick("IMAGEBOT_DEFAULT_SIZE", "default_size", "1024x1024")),
        provider_order=_names("IMAGEBOT_PROVIDERS", order),
        server_provider_order=server_orders,
        pricing=pricing,
        limits=limits,
        lease_seconds=parse_number(
            "IMAGEBOT_LEASE_SECONDS", pick("IMAGEBOT_LEASE_SECONDS", "lease_seconds", 30), 1, 3600
        ),
        enhancer=str(pick("IMAGEBOT_ENHANCER", "enhancer", "")).strip().lower(),
        catalogue_refresh=parse_number(
            "IMAGEBOT_CATALOGUE_REFRESH", pick("IMAGEBOT_CATALOGUE_REFRESH", "catalogue_refresh", 6 * 3600), 60, 7 * 86400
        ),
        provider_settings=provider_settings,
        env=env,
        extra=extra,
    )

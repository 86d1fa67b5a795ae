"""Configuration: read once at start from the environment and an optional ``imagebot.toml``.

The environment wins over the file. The file's whole shape is a pydantic schema (``Settings``, a
pydantic-settings class whose two sources are the environment as handed in and the parsed file), so an
unknown or misplaced key, a value of the wrong type or out of range stops the bot at start with one
error naming each key and what it accepts, instead of being ignored or failing on the first command.
The keys of ``[providers.NAME]`` tables are declared by the providers in ``providers/settings.py``.
Secrets are kept out of ``repr`` so a logged config never leaks a key.
"""

from __future__ import annotations

import difflib
import logging
import math
import os
import re
import tomllib
from collections.abc import Mapping, Sequence
from contextvars import ContextVar
from dataclasses import dataclass, field
from pathlib import Path
from types import ModuleType
from typing import Annotated, Any, get_args, get_origin

from pydantic import BaseModel, ConfigDict, PlainValidator, ValidationError
from pydantic.fields import FieldInfo
from pydantic_settings import BaseSettings, PydanticBaseSettingsSource, SettingsConfigDict

from .errors import ConfigError

MAX_AMOUNT = 1_000_000
RATE_RE = re.compile(r"^\s*(?P<amount>\d+)\s*(/|per)\s*(?P<multiple>\d*)\s*(second|minute|hour|day)s?\s*$", re.I)

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
    #: While the limits storage (Redis) is unreachable: "closed" refuses commands, "open" lets them through.
    on_outage: str = "closed"


@dataclass(frozen=True)
class ModerationSettings:
    #: Every server's prompts (and input images) go to OpenAI's moderation model first, unless a server's
    #: /settings turns it off; needs OPENAI_API_KEY (checked at start).
    enabled: bool = False


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
    #: "all" takes commands and works jobs; "ingress" only takes commands; "worker" only works jobs.
    role: str = "all"
    enhancer: str = ""
    #: Seconds between asks of each vendor for its model list (lifecycle, new models).
    catalogue_refresh: float = 6 * 3600.0
    moderation: ModerationSettings = field(default_factory=ModerationSettings)
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

#: The adapters take their settings from the environment only; a key in ``[slack]``/``[discord]`` points there.
ADAPTER_ENV: dict[str, tuple[str, ...]] = {
    "slack": ("SLACK_BOT_TOKEN", "SLACK_APP_TOKEN", "SLACK_SIGNING_SECRET", "IMAGEBOT_SLACK_ADMINS",
              "IMAGEBOT_HTTP_HOST", "IMAGEBOT_HTTP_PORT", "SLACK_API_URL"),
    "discord": ("DISCORD_TOKEN", "IMAGEBOT_DISCORD_GUILDS", "IMAGEBOT_DISCORD_SHARDS", "IMAGEBOT_DISCORD_ADMIN_ROLES",
                "IMAGEBOT_DISCORD_DMS", "DISCORD_API_BASE_URL", "DISCORD_GATEWAY_URL", "DISCORD_PUBLIC_KEY",
                "DISCORD_APPLICATION_ID"),
}

#: How the free-keyed tables look, for an error that found something else there.
TABLE_EXAMPLES: dict[tuple[str, ...], str] = {
    ("pricing", "sizes"): '{ "1024x1024" = 10 }',
    ("pricing", "models"): '{ "gpt-image-2" = 1.5 }',
    ("servers",): '[servers."discord:123456789012345678"] with providers = [...]',
}

PROVIDER_NAME_RE = re.compile(r"[a-z0-9_-]+")
STORAGE_RE = re.compile(r"^(memory|redis|rediss|redis\+cluster|redis\+sentinel)://")


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


# --- The schema -------------------------------------------------------------------------------------------
# Each validator raises ValueError with what the key accepts; ``_explain`` puts the key's name in front.
# Values from the file must already have their type (a string is not a number); values from the
# environment are text and are turned into numbers first (``_EnvironmentSource``).


@dataclass(frozen=True)
class Env:
    """Marks a field that an environment variable sets (and that then wins over the file)."""

    name: str


def _whole(lo: int, hi: int) -> PlainValidator:
    def check(value: Any) -> int:
        if isinstance(value, bool) or not isinstance(value, int) or not lo <= value <= hi:
            raise ValueError(f"a whole number from {lo} to {hi}")
        return value

    return PlainValidator(check)


def _number(lo: float, hi: float) -> PlainValidator:
    def check(value: Any) -> float:
        if isinstance(value, bool) or not isinstance(value, int | float) or not lo <= value <= hi:
            raise ValueError(f"a number from {lo:g} to {hi:g}")
        return float(value)

    return PlainValidator(check)


def _text(value: Any) -> str:
    if not isinstance(value, str):
        raise ValueError("a string")
    return value.strip()


def _rate(value: Any) -> str:
    match = RATE_RE.match(value) if isinstance(value, str) else None
    if not match or int(match["amount"]) == 0 or (match["multiple"] and int(match["multiple"]) == 0):
        raise ValueError("a rate above zero like '5/minute' or '200 per hour' (N/second|minute|hour|day)")
    return str(value).strip()


def _size(value: Any) -> str:
    text = value.strip().lower() if isinstance(value, str) else ""
    if not re.fullmatch(r"\d{2,5}x\d{2,5}", text):
        raise ValueError("a size like 1024x1024")
    return text


def _names(value: Any) -> tuple[str, ...]:
    items = value.split(",") if isinstance(value, str) else value
    accepts = 'a list of provider names like ["openai", "local"] (a-z, 0-9, "-" and "_")'
    if not isinstance(items, list | tuple) or not all(isinstance(v, str) for v in items):
        raise ValueError(accepts)
    names = tuple(v.strip().lower() for v in items if v.strip())
    if not all(PROVIDER_NAME_RE.fullmatch(n) for n in names):
        raise ValueError(accepts)
    return names


def _storage(value: Any) -> str:
    if not isinstance(value, str) or not STORAGE_RE.match(value.strip()):
        raise ValueError("a limits storage URI such as memory:// or redis://host:6379")
    return value.strip()


def _outage(value: Any) -> str:
    text = value.strip().lower() if isinstance(value, str) else ""
    if text not in ("closed", "open"):
        raise ValueError("'closed' (refuse commands while the limits storage is unreachable) or 'open' (let them through)")
    return text


def _switch(value: Any) -> bool:
    if isinstance(value, bool):
        return value
    text = value.strip().lower() if isinstance(value, str) else ""
    if text not in ("on", "off"):
        raise ValueError("on or off (true or false in the file)")
    return text == "on"


ROLES = ("all", "ingress", "worker")


def _role(value: Any) -> str:
    text = value.strip().lower() if isinstance(value, str) else ""
    if text not in ROLES:
        raise ValueError("'all' (take commands and work jobs), 'ingress' (take commands only) or 'worker' (work jobs only)")
    return text


def _server_key(value: Any) -> str:
    if not isinstance(value, str) or not re.fullmatch(r"[a-z0-9_-]+:\S+", value):
        raise ValueError('a server key like "discord:123456789012345678" or "slack:T012ABCDEF"')
    return value


def _model_id(value: Any) -> str:
    if not isinstance(value, str) or not value.strip():
        raise ValueError('a model id (or prefix) like "gpt-image-2"')
    return value.strip().lower()


Text = Annotated[str, PlainValidator(_text)]
Credits = Annotated[int, _whole(0, MAX_AMOUNT)]
Factor = Annotated[float, _number(0, 100)]


class _Table(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class LimitsTable(_Table):
    user_rate: Annotated[str, PlainValidator(_rate), Env("IMAGEBOT_USER_RATE")] = "5/minute"
    server_rate: Annotated[str, PlainValidator(_rate), Env("IMAGEBOT_SERVER_RATE")] = "200/hour"
    max_concurrent: Annotated[int, _whole(1, 100), Env("IMAGEBOT_MAX_CONCURRENT")] = 2
    max_count: Annotated[int, _whole(1, 10), Env("IMAGEBOT_MAX_COUNT")] = 10
    storage: Annotated[str, PlainValidator(_storage), Env("IMAGEBOT_RATELIMIT_STORAGE")] = "memory://"
    on_outage: Annotated[str, PlainValidator(_outage), Env("IMAGEBOT_RATELIMIT_ON_OUTAGE")] = "closed"


class QualitiesTable(_Table):
    low: Factor | None = None
    medium: Factor | None = None
    high: Factor | None = None
    max: Factor | None = None


class PricingTable(_Table):
    sizes: dict[Annotated[str, PlainValidator(_size)], Credits] = {}
    large: Credits = 15
    #: The older name of the high tier's factor.
    hd_multiplier: Annotated[float | None, _number(1, 100)] = None
    qualities: QualitiesTable = QualitiesTable()
    models: dict[Annotated[str, PlainValidator(_model_id)], Factor] = {}
    enhance: Credits = 1


class ProvidersTable(BaseModel):
    """``order`` and one ``[providers.NAME]`` table per provider (their keys are checked against
    ``providers.settings``)."""

    model_config = ConfigDict(extra="allow", frozen=True)
    __pydantic_extra__: dict[str, dict[str, Any]]
    order: Annotated[tuple[str, ...], PlainValidator(_names), Env("IMAGEBOT_PROVIDERS")] = ()


class ModerationTable(_Table):
    enabled: Annotated[bool, PlainValidator(_switch), Env("IMAGEBOT_MODERATION")] = False


class ServerTable(_Table):
    providers: Annotated[tuple[str, ...], PlainValidator(_names)] = ()


class AdapterTable(_Table):
    """``[slack]`` and ``[discord]``: their settings come from the environment, so none are accepted here."""


_SOURCES: ContextVar[tuple[Mapping[str, str], Mapping[str, Any]]] = ContextVar("imagebot_config_sources")


class Settings(BaseSettings):
    """The whole of ``imagebot.toml``; pydantic-settings merges the environment over it."""

    model_config = SettingsConfigDict(extra="forbid", frozen=True)

    database: Annotated[str, PlainValidator(_text), Env("IMAGEBOT_DATABASE")] = "./data/imagebot.sqlite3"
    data_dir: Annotated[str, PlainValidator(_text), Env("IMAGEBOT_DATA_DIR")] = "./data"
    starting_credits: Annotated[int, _whole(0, MAX_AMOUNT), Env("IMAGEBOT_STARTING_CREDITS")] = 50
    default_size: Annotated[str, PlainValidator(_size), Env("IMAGEBOT_DEFAULT_SIZE")] = "1024x1024"
    lease_seconds: Annotated[float, _number(1, 3600), Env("IMAGEBOT_LEASE_SECONDS")] = 30.0
    role: Annotated[str, PlainValidator(_role), Env("IMAGEBOT_ROLE")] = "all"
    enhancer: Annotated[str, PlainValidator(_text), Env("IMAGEBOT_ENHANCER")] = ""
    catalogue_refresh: Annotated[float, _number(60, 7 * 86400), Env("IMAGEBOT_CATALOGUE_REFRESH")] = 6 * 3600.0
    limits: LimitsTable = LimitsTable()
    pricing: PricingTable = PricingTable()
    moderation: ModerationTable = ModerationTable()
    providers: ProvidersTable = ProvidersTable()  # type: ignore[call-arg]  # its extras default to none
    servers: dict[Annotated[str, PlainValidator(_server_key)], ServerTable] = {}
    slack: AdapterTable = AdapterTable()
    discord: AdapterTable = AdapterTable()
    #: Retired (see ``RETIRED``): accepted and ignored with a warning.
    instance: Any = None
    reservation_ttl: Any = None

    @classmethod
    def settings_customise_sources(
        cls,
        settings_cls: type[BaseSettings],
        init_settings: PydanticBaseSettingsSource,
        env_settings: PydanticBaseSettingsSource,
        dotenv_settings: PydanticBaseSettingsSource,
        file_secret_settings: PydanticBaseSettingsSource,
    ) -> tuple[PydanticBaseSettingsSource, ...]:
        """The environment first (it wins), then the file; both as handed to ``load_config``, so a test's
        environment is never mixed with the process's."""
        env, data = _SOURCES.get()
        return _EnvironmentSource(settings_cls, env), _FileSource(settings_cls, data)


def _env_fields(model: type[BaseModel] = Settings, prefix: tuple[str, ...] = ()) -> dict[str, tuple[tuple[str, ...], Any]]:
    """Environment variable -> (its place in the file's shape, its type), read from the ``Env`` marks."""
    found: dict[str, tuple[tuple[str, ...], Any]] = {}
    for name, info in model.model_fields.items():
        marks = [m for m in info.metadata if isinstance(m, Env)]
        if marks:
            found[marks[0].name] = ((*prefix, name), info.annotation or str)
        elif isinstance(info.annotation, type) and issubclass(info.annotation, BaseModel):
            found.update(_env_fields(info.annotation, (*prefix, name)))
    return found


class _EnvironmentSource(PydanticBaseSettingsSource):
    """``IMAGEBOT_*`` variables, each onto its place (``IMAGEBOT_USER_RATE`` -> ``limits.user_rate``).

    Environment values are text: numbers are read as numbers here; what does not read stays text and is
    refused by the schema, naming the variable."""

    def __init__(self, settings_cls: type[BaseSettings], env: Mapping[str, str]) -> None:
        super().__init__(settings_cls)
        self.env = env

    def get_field_value(self, field: FieldInfo, field_name: str) -> tuple[Any, str, bool]:
        return None, field_name, False  # unused: __call__ builds the nested values at once

    def __call__(self) -> dict[str, Any]:
        values: dict[str, Any] = {}
        for name, (path, kind) in _env_fields().items():
            text = (self.env.get(name) or "").strip()
            if not text:
                continue
            node = values
            for part in path[:-1]:
                node = node.setdefault(part, {})
            node[path[-1]] = _from_text(text, kind)
        return values


def _from_text(text: str, kind: Any) -> Any:
    try:
        if kind is int:
            return int(text)
        if kind is float:
            return float(text)
    except ValueError:
        return text
    return text


class _FileSource(PydanticBaseSettingsSource):
    """The parsed ``imagebot.toml`` (read by ``load_config``, which words a broken file itself)."""

    def __init__(self, settings_cls: type[BaseSettings], data: Mapping[str, Any]) -> None:
        super().__init__(settings_cls)
        self.data = data

    def get_field_value(self, field: FieldInfo, field_name: str) -> tuple[Any, str, bool]:
        return self.data.get(field_name), field_name, False

    def __call__(self) -> dict[str, Any]:
        return dict(self.data)


# --- Words for what went wrong ----------------------------------------------------------------------------


def _dotted(path: Sequence[str | int]) -> str:
    out = ""
    for part in path:
        if isinstance(part, int):
            out += f"[{part}]"
        else:
            text = part if re.fullmatch(r"[A-Za-z0-9_-]+", part) else f'"{part}"'
            out += f".{text}" if out else text
    return out


def _where(path: Sequence[str | int]) -> str:
    return f"[{_dotted(path)}]" if path else "the top level"


def _table_keys(model: type[BaseModel]) -> tuple[str, ...]:
    return tuple(model.model_fields)


def _model_at(path: Sequence[str | int]) -> type[BaseModel] | None:
    """The schema table at ``path`` (None where the schema holds free keys)."""
    node: Any = Settings
    for part in path:
        if isinstance(node, type) and issubclass(node, BaseModel):
            info = node.model_fields.get(str(part))
            if info is None:
                return None
            node = info.annotation
        elif get_origin(node) is dict:
            node = get_args(node)[1]
        else:
            return None
    return node if isinstance(node, type) and issubclass(node, BaseModel) else None


def _providers_schema() -> ModuleType:
    """``providers.settings``, where each provider's keys are declared (imported late: it imports this module)."""
    from providers import settings

    return settings


def _homes() -> dict[str, list[str]]:
    """Every key the file accepts -> the tables it belongs in (for a key put in the wrong one)."""
    homes: dict[str, list[str]] = {}

    def add(key: str, where: str) -> None:
        homes.setdefault(key, []).append(where)

    for key in _table_keys(Settings):
        add(key, "the top level")
    for key in _table_keys(LimitsTable):
        add(key, "[limits]")
    for key in _table_keys(PricingTable):
        add(key, "[pricing]")
    for key in _table_keys(ModerationTable):
        add(key, "[moderation]")
    add("order", "[providers]")
    add("providers", '[servers."platform:id"]')
    schema = _providers_schema()
    readers: dict[str, list[str]] = {}
    for name, keys in schema.PROVIDER_KEYS.items():
        for key in keys:
            readers.setdefault(key, []).append(name)
    for key in schema.COMPAT_KEYS:
        readers.setdefault(key, []).append("NAME")
    for key, names in readers.items():
        add(key, " or ".join(f"[providers.{n}]" for n in (names if "NAME" not in names else ["NAME"])))
    return homes


def _unknown(where: Sequence[str | int], key: str, accepted: Sequence[str], note: str = "") -> str:
    """An unknown key: where it belongs, or the nearest accepted one, and what is accepted here."""
    here = _where(where)
    full = _dotted([*where, key])
    homes = [h for h in _homes().get(key, []) if h != here]
    if where[:1] == ("providers",) and any(h.startswith("[providers.") for h in homes):
        homes = []  # another provider reads it: not misplaced, just not this provider's
    if homes and key not in accepted:
        places = " or ".join(h if h == "the top level" else f"in {h}" for h in homes)
        if not where:
            return f"{key} belongs {places}, not at the top level: move it below the {homes[0]} header"
        return (f"{full}: {key} belongs {places.replace('the top level', 'at the top level, above the first [table]')}, not in {here} "
                f"(every key after a [table] header belongs to that table)")
    close = difflib.get_close_matches(key, accepted, n=1, cutoff=0.7)
    hint = f"; did you mean {close[0]}?" if close else ""
    if not close:
        elsewhere = difflib.get_close_matches(key, list(_homes()), n=1, cutoff=0.8)
        if elsewhere:
            hint = f"; did you mean {elsewhere[0]} in {_homes()[elsewhere[0]][0]}?"
    accepts = f"{here} accepts {', '.join(accepted)}" if accepted else f"{here} takes no keys"
    return f"{full} is not a setting{hint} ({accepts}{note})"


def _adapter_unknown(name: str, key: str) -> str:
    variables = ADAPTER_ENV[name]
    short = {v.lower().removeprefix("imagebot_").removeprefix(f"{name}_"): v for v in variables}
    close = difflib.get_close_matches(key.lower().removeprefix(f"{name}_"), list(short), n=1, cutoff=0.7)
    hint = f"; set {short[close[0]]} in the environment instead" if close else ""
    return (f"{name}.{key} is not a setting{hint} ([{name}] takes no keys: {name.capitalize()} is set up by the "
            f"environment variables {', '.join(variables)})")


class _Namer:
    """Names a key as the operator set it: the environment variable when that is where it came from."""

    def __init__(self, env: Mapping[str, str], file_name: str) -> None:
        self.by_path = {path: name for name, (path, _) in _env_fields().items()}
        self.from_env = {path for path, name in self.by_path.items() if (env.get(name) or "").strip()}
        self.file_name = file_name

    def __call__(self, path: Sequence[str | int]) -> str:
        key = tuple(str(p) for p in path)
        variable = self.by_path.get(key)
        if key in self.from_env:
            return str(variable)
        return f"{self.file_name}: {_dotted(path)}" + (f" ({variable})" if variable else "")


def _explain(error: Mapping[str, Any], name: _Namer) -> str:
    loc: tuple[str | int, ...] = tuple(error["loc"])
    kind = error["type"]
    if loc and loc[-1] == "[key]":  # a dict key that is not of the kind the table takes
        loc = loc[:-1]
        kind = "key_error"
    path, key = loc[:-1], loc[-1] if loc else ""
    if kind == "extra_forbidden":
        if path in (("slack",), ("discord",)):
            return f"{name.file_name}: {_adapter_unknown(str(path[0]), str(key))}"
        model = _model_at(path)
        accepted = _table_keys(model) if model is not None else ()
        if model is QualitiesTable:
            close = difflib.get_close_matches(str(key), accepted, n=1, cutoff=0.6)
            hint = f" (did you mean {close[0]}?)" if close else ""
            return (f"{name.file_name}: {_dotted(loc)}: unknown quality tier{hint}; "
                    f"[pricing.qualities] accepts {', '.join(accepted)}")
        if model is Settings:
            accepted = tuple(k for k in accepted if k not in ("instance", "reservation_ttl"))
        return f"{name.file_name}: {_unknown(path, str(key), accepted)}"
    got = error.get("input")
    if kind == "value_error":
        accepts = str(error.get("ctx", {}).get("error", error["msg"]))
        return f"{name(loc)} must be {accepts}, got {got!r}"
    if kind == "key_error":
        accepts = str(error.get("ctx", {}).get("error", error["msg"]))
        return f"{name.file_name}: {_dotted(loc)}: the key must be {accepts}"
    if kind == "dict_type" and path == ("providers",):  # a plain value where a [providers.NAME] table goes
        homes = [h for h in _homes().get(str(key), []) if h != "[providers]"]
        if homes:
            return (f"{name.file_name}: providers.{key}: {key} belongs in {' or '.join(homes)}, not in "
                    f"[providers] ([providers] accepts order and one [providers.NAME] table per provider)")
        close = difflib.get_close_matches(str(key), ["order"], n=1, cutoff=0.6)
        hint = "; did you mean order?" if close else ""
        return (f"{name.file_name}: providers.{key} is not a setting{hint} ([providers] accepts order and one "
                f"[providers.NAME] table per provider), got {got!r}")
    if kind in ("model_type", "model_attributes_type", "dict_type"):
        model = _model_at(loc)
        if model is not None:
            keys = f" with {', '.join(_table_keys(model))}" if _table_keys(model) else ""
            return f"{name(loc)} must be a table ([{_dotted(loc)}]{keys}), got {got!r}"
        like = TABLE_EXAMPLES.get(tuple(str(p) for p in loc), "")
        return f"{name(loc)} must be a table{f' like {like}' if like else ''}, got {got!r}"
    return f"{name(loc)}: {error['msg']}, got {got!r}"


def _provider_problems(tables: Mapping[str, Any], file_name: str) -> list[str]:
    """Unknown keys and values of the wrong kind in the ``[providers.NAME]`` tables."""
    schema = _providers_schema()
    builtin, model_keys, kinds = schema.PROVIDER_KEYS, schema.COMPAT_MODEL_KEYS, schema.KINDS
    problems: list[str] = []
    for name, table in tables.items():
        if not isinstance(table, dict):
            continue  # the schema words it
        where = ("providers", name)
        if name not in builtin:
            if not PROVIDER_NAME_RE.fullmatch(name):
                problems.append(f"{file_name}: [providers.{name}]: provider names use a-z, 0-9, '-' and '_'")
                continue
            close = difflib.get_close_matches(name, list(builtin), n=1, cutoff=0.7)
            if close and "base_url" not in table:
                problems.append(
                    f"{file_name}: [providers.{name}] is not a built-in provider; did you mean "
                    f"[providers.{close[0]}]? (Any other table declares an OpenAI-compatible service, and "
                    f"providers.{name}.base_url is missing.) Built in: {', '.join(builtin)}")
                continue
        keys = schema.keys_for(name)
        note = "" if name in builtin else "; a table not named after a built-in provider declares an " \
            "OpenAI-compatible service"
        for key, value in table.items():
            if key not in keys:
                problems.append(f"{file_name}: {_unknown(where, key, list(keys), note)}")
            elif not schema.kind_fits(keys[key], value):
                problems.append(f"{file_name}: {_dotted([*where, key])} must be {kinds[keys[key]]}, got {value!r}")
        models = table.get("models") if name not in builtin else None
        if isinstance(models, list):
            for i, spec in enumerate(models):
                if not isinstance(spec, dict):
                    continue
                for key, value in spec.items():
                    at = (*where, "models", i)
                    if key not in model_keys:
                        problems.append(f"{file_name}: {_unknown(at, key, list(model_keys))}")
                    elif not schema.kind_fits(model_keys[key], value):
                        problems.append(f"{file_name}: {_dotted([*at, key])} must be "
                                        f"{kinds[model_keys[key]]}, got {value!r}")
    return problems


def _validate(env: Mapping[str, str], data: Mapping[str, Any], name: _Namer) -> tuple[Settings | None, list[str]]:
    token = _SOURCES.set((env, data))
    try:
        return Settings(), []
    except ValidationError as exc:
        return None, [_explain(e, name) for e in exc.errors()]
    finally:
        _SOURCES.reset(token)


def _fail(problems: list[str]) -> ConfigError:
    if len(problems) == 1:
        return ConfigError(problems[0])
    return ConfigError(f"{len(problems)} problems in the configuration:\n  - " + "\n  - ".join(problems))


# --- Loading ----------------------------------------------------------------------------------------------


def _read_file(env: Mapping[str, str], path: str | Path | None) -> tuple[str, dict[str, Any]]:
    """The file's name (for messages) and its contents; {} when the default file is absent."""
    named = path is not None or bool((env.get("IMAGEBOT_CONFIG") or "").strip())
    key = "IMAGEBOT_CONFIG" if path is None and named else "config file"
    file_path = Path(path if path is not None else (env.get("IMAGEBOT_CONFIG") or "").strip() or "imagebot.toml")
    if file_path.is_dir():
        raise ConfigError(f"{key} names the folder {str(file_path)!r}: give the path of a TOML file such as "
                          f"{str(file_path / 'imagebot.toml')!r}")
    if not file_path.exists():
        if named:
            raise ConfigError(f"{key}: no such file {str(file_path)!r}")
        return file_path.name, {}
    try:
        return file_path.name, tomllib.loads(file_path.read_text(encoding="utf-8"))
    except (tomllib.TOMLDecodeError, UnicodeDecodeError) as exc:
        raise ConfigError(f"{file_path.name} is not valid TOML: {exc}") from None
    except OSError as exc:
        raise ConfigError(f"{key}: cannot read {str(file_path)!r} ({exc.strerror or exc})") from None


def sqlite_path(database: str) -> Path | None:
    """The file a SQLite database URL names (as ``storage.ledger.open_ledger`` reads it), else None
    (PostgreSQL, ``memory://``)."""
    scheme, sep, rest = database.strip().partition("://")
    if not sep:
        return Path(database.strip()) if database.strip() else None
    if scheme.lower() == "sqlite" and rest:
        return Path(rest[1:] if rest.startswith("/") else rest)
    return None


SQLITE_HEADER = b"SQLite format 3\x00"


def _file_above(path: Path) -> Path | None:
    """The first existing parent of ``path`` that is a file, not a folder (the path can never be made)."""
    for parent in path.parents:
        if parent.exists():
            return None if parent.is_dir() else parent
    return None


def _not_sqlite(path: Path) -> bool:
    """A file that exists, is not empty and does not start like a SQLite database (an empty one SQLite
    takes as new)."""
    try:
        with path.open("rb") as fh:
            head = fh.read(len(SQLITE_HEADER))
    except OSError:
        return False  # unreadable: the open says why, with the path
    return bool(head) and head != SQLITE_HEADER


def _paths_problems(settings: Settings, name: _Namer) -> list[str]:
    """Paths that can never work, found at start instead of at the first command."""
    problems = []
    db = sqlite_path(settings.database)
    if db is not None:
        blocked = _file_above(db)
        if db.is_dir():
            problems.append(f"{name(('database',))} names the folder {str(db)!r}: give the SQLite file's path, "
                            f"such as {str(db / 'imagebot.sqlite3')!r}")
        elif blocked is not None:
            problems.append(f"{name(('database',))}: {str(blocked)!r} is a file, so {str(db)!r} cannot be made "
                            "inside it: give a path in a folder")
        elif db.is_file() and _not_sqlite(db):
            problems.append(f"{name(('database',))} names {str(db)!r}, which is not a SQLite database: give the "
                            "path of imagebot's database (a new path starts an empty one)")
    data_dir = Path(settings.data_dir)
    if data_dir.exists() and not data_dir.is_dir():
        problems.append(f"{name(('data_dir',))} names the file {str(data_dir)!r}: give a folder for the images "
                        "(it is made if missing)")
    elif not data_dir.exists() and (blocked := _file_above(data_dir)) is not None:
        problems.append(f"{name(('data_dir',))}: {str(blocked)!r} is a file, so the folder {str(data_dir)!r} "
                        "cannot be made inside it: give a folder for the images")
    return problems


def _moderation_problems(settings: Settings, env: Mapping[str, str], name: _Namer) -> list[str]:
    """Moderation turned on with no OpenAI key could only refuse every prompt: stopped at start instead."""
    if settings.moderation.enabled and not (env.get("OPENAI_API_KEY") or "").strip():
        return [f"{name(('moderation', 'enabled'))} turns moderation on, but OPENAI_API_KEY is not set: the "
                "moderation model is OpenAI's (free with any OpenAI API key). Set OPENAI_API_KEY or turn "
                "moderation off."]
    return []


def load_config(env: Mapping[str, str] | None = None, path: str | Path | None = None) -> Config:
    """Build the config from ``env`` (default: the process environment) and the toml file.

    Every problem found (unknown or misplaced keys, wrong types, values out of range) is reported at
    once in one ``ConfigError``, each naming its key and what it accepts."""
    env = dict(os.environ if env is None else env)
    file_name, data = _read_file(env, path)
    name = _Namer(env, file_name)
    for env_key, file_key, why in RETIRED:
        if env.get(env_key, "").strip() or file_key in data:
            logging.getLogger(__name__).warning("%s (%s in the file) is no longer used and is ignored: %s",
                                                env_key, file_key, why)

    # The file on its own first, so a broken value in it is found even where the environment overrides it.
    _, problems = _validate({}, data, _Namer({}, file_name))
    providers_t = data.get("providers")
    if isinstance(providers_t, dict):
        problems += _provider_problems({k: v for k, v in providers_t.items() if k != "order"}, file_name)
    if problems:
        raise _fail(problems)
    settings, problems = _validate(env, data, name)
    if settings is None:
        raise _fail(problems)
    problems = _paths_problems(settings, name) + _moderation_problems(settings, env, name)
    if problems:
        raise _fail(problems)
    return _build(settings, env, data)


def _build(s: Settings, env: dict[str, str], data: Mapping[str, Any]) -> Config:
    qualities = dict(DEFAULT_QUALITY_FACTORS)
    if s.pricing.hd_multiplier is not None:
        qualities["high"] = s.pricing.hd_multiplier
    qualities.update({tier: factor for tier, factor in s.pricing.qualities.model_dump().items() if factor is not None})
    pricing = Pricing(
        per_size={**DEFAULT_PRICES, **s.pricing.sizes},
        large=s.pricing.large,
        qualities=qualities,
        models=dict(s.pricing.models),
        enhance=s.pricing.enhance,
    )
    limits = Limits(user_rate=s.limits.user_rate, server_rate=s.limits.server_rate,
                    max_concurrent=s.limits.max_concurrent, max_count=s.limits.max_count,
                    storage_uri=s.limits.storage, on_outage=s.limits.on_outage)
    servers = {key: table.providers for key, table in s.servers.items() if "providers" in table.model_fields_set}
    return Config(
        database=s.database,
        data_dir=Path(s.data_dir),
        starting_credits=s.starting_credits,
        default_size=s.default_size,
        provider_order=s.providers.order,
        server_provider_order=servers,
        pricing=pricing,
        limits=limits,
        lease_seconds=s.lease_seconds,
        role=s.role,
        enhancer=s.enhancer.lower(),
        catalogue_refresh=s.catalogue_refresh,
        moderation=ModerationSettings(enabled=s.moderation.enabled),
        provider_settings=dict(s.providers.__pydantic_extra__ or {}),
        env=env,
        extra={k: data[k] for k in ADAPTER_ENV if k in data},
    )

"""Reading a provider's settings: its ``[providers.NAME]`` table, then environment defaults.

Every vendor client gets an explicit timeout and retry count (the SDK defaults are a 600 s timeout with
retries, which would hold a user's credits for ten minutes). Keys come from ``config.env``, never from
``os.environ`` directly, so tests and the process see the same settings.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from bot.config import parse_number
from bot.errors import ConfigError

from .base import ModelInfo

if TYPE_CHECKING:
    from bot.config import Config

IMAGE_TIMEOUT = 120.0
TEXT_TIMEOUT = 30.0
RETRIES = 1

# The keys each ``[providers.NAME]`` table may set, in one place: ``bot.config`` refuses any other key at
# start (naming the ones accepted) and checks each value's kind; the builders check ranges and models.
# tests/test_config_keys.py runs every builder and fails when one reads a key that is not declared here.

#: What a value of each kind must be, worded for an operator.
KINDS: dict[str, str] = {
    "number": "a number",
    "whole": "a whole number",
    "text": "a string",
    "names": 'a model name or a list of model names like ["name-1", "name-2"]',
    "sizes": 'a list of sizes like ["1024x1024"]',
    "flag": "true or false",
    "models": 'a list of model names or tables like { name = "sd15", sizes = ["512x512"] }',
}

#: Read by ``client_settings`` for every provider.
CLIENT_KEYS: dict[str, str] = {
    "timeout": "number", "text_timeout": "number", "max_retries": "whole", "concurrency": "whole",
    "download_timeout": "number", "download_max_mb": "number",
}
_PINNED = {"model": "names", "models": "names"}
#: Image-only providers have no /enhance calls, so no ``text_timeout``.
_IMAGE_CLIENT_KEYS = {k: v for k, v in CLIENT_KEYS.items() if k != "text_timeout"}

#: The built-in providers' tables (``local`` takes no settings).
PROVIDER_KEYS: dict[str, dict[str, str]] = {
    "openai": {**CLIENT_KEYS, **_PINNED, "base_url": "text", "previews": "whole", "output_compression": "whole",
               "moderation": "text", "text_model": "text", "vision_model": "text"},
    "google": {**CLIENT_KEYS, **_PINNED, "base_url": "text", "previews": "whole", "text_model": "text"},
    "xai": {**_IMAGE_CLIENT_KEYS, **_PINNED, "base_url": "text", "key_env": "text"},
    "local": {},
}

#: One model of an OpenAI-compatible service (``models = [{ name = ..., ... }]``).
COMPAT_MODEL_KEYS: dict[str, str] = {
    "name": "text", "sizes": "sizes", "max_per_call": "whole", "prompt_limit": "whole",
    "response_format": "text", "send_size": "flag", "edits": "flag", "max_references": "whole", "mask": "flag",
}

#: Any other ``[providers.NAME]`` table declares an OpenAI-compatible service; its model keys are defaults.
COMPAT_KEYS: dict[str, str] = {
    **_IMAGE_CLIENT_KEYS, "base_url": "text", "key_env": "text", "models": "models",
    **{k: v for k, v in COMPAT_MODEL_KEYS.items() if k != "name"},
}


def keys_for(name: str) -> dict[str, str]:
    """The keys (and their kinds) ``[providers.NAME]`` accepts."""
    return PROVIDER_KEYS.get(name, COMPAT_KEYS)


def kind_fits(kind: str, value: Any) -> bool:
    """Whether ``value`` from the file is of ``kind`` (ranges are the builders' to check)."""
    if kind == "number":
        return isinstance(value, int | float) and not isinstance(value, bool)
    if kind == "whole":
        return isinstance(value, int) and not isinstance(value, bool)
    if kind == "text":
        return isinstance(value, str)
    if kind == "flag":
        return isinstance(value, bool)
    if kind == "names":
        return isinstance(value, str) or (isinstance(value, list) and all(isinstance(v, str) for v in value))
    if kind == "sizes":
        return isinstance(value, list) and all(isinstance(v, str) for v in value)
    if kind == "models":
        return isinstance(value, list) and all(isinstance(v, str | dict) for v in value)
    raise ValueError(f"unknown kind {kind!r}")


@dataclass(frozen=True)
class ClientSettings:
    timeout: float
    max_retries: int
    concurrency: int
    download_timeout: float
    download_max_bytes: int


def table(config: Config, name: str) -> Mapping[str, Any]:
    return config.provider_settings.get(name, {})


def env(config: Config, *names: str) -> str:
    """The first non-empty environment value among ``names`` (stripped), or ''."""
    for n in names:
        value = (config.env.get(n) or "").strip()
        if value:
            return value
    return ""


def client_settings(config: Config, name: str, *, text: bool = False) -> ClientSettings:
    """Timeout, retries, concurrency and download bounds for provider ``name``.

    ``[providers.NAME] timeout / max_retries / concurrency`` win over ``IMAGEBOT_PROVIDER_TIMEOUT`` and
    ``IMAGEBOT_PROVIDER_RETRIES``; text calls (/enhance) use ``text_timeout``.
    """
    t = table(config, name)
    where = f"providers.{name}"
    base_timeout = env(config, "IMAGEBOT_PROVIDER_TIMEOUT") or (TEXT_TIMEOUT if text else IMAGE_TIMEOUT)
    key = "text_timeout" if text else "timeout"
    timeout = parse_number(f"{where}.{key}", t.get(key, base_timeout), 0.05, 600)
    retries = int(parse_number(f"{where}.max_retries",
                         t.get("max_retries", env(config, "IMAGEBOT_PROVIDER_RETRIES") or RETRIES), 0, 5))
    concurrency = int(parse_number(f"{where}.concurrency", t.get("concurrency", 4), 1, 64))
    dl_timeout = parse_number(f"{where}.download_timeout", t.get("download_timeout", 30), 0.05, 300)
    dl_max = int(parse_number(f"{where}.download_max_mb", t.get("download_max_mb", 20), 0.001, 100) * 1024 * 1024)
    return ClientSettings(timeout, retries, concurrency, dl_timeout, dl_max)


def pick_models(config: Config, name: str, known: Sequence[ModelInfo]) -> tuple[ModelInfo, ...]:
    """``[providers.NAME] models = [...]`` picks and orders the built-in models (the first is the default)."""
    wanted = table(config, name).get("models")
    if wanted is None:
        return tuple(known)
    if isinstance(wanted, str):
        wanted = [w for w in wanted.split(",")]
    if not isinstance(wanted, list) or not wanted:
        raise ConfigError(f"providers.{name}.models must be a non-empty list of model names")
    by_name = {m.name: m for m in known}
    picked = []
    for raw in wanted:
        model = by_name.get(str(raw).strip().lower())
        if model is None:
            raise ConfigError(f"providers.{name}.models: unknown model {raw!r}; "
                              f"{name} offers {', '.join(by_name)}")
        picked.append(model)
    return tuple(picked)

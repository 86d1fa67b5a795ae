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

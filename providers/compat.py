"""OpenAI-compatible image services, by configuration: xAI built in, anything else by one table.

    [providers.mysd]                       # a local or hosted OpenAI-compatible server
    base_url = "http://127.0.0.1:8080/v1"
    key_env = "MYSD_API_KEY"               # optional; without it no key is sent
    models = ["sdxl"]                      # or [{name = "sdxl", sizes = [...], max_per_call = 4}]
    sizes = ["1024x1024", "512x512"]
    max_per_call = 4

xAI (``XAI_API_KEY``, model grok-2-image) is such an entry with known defaults; a ``[providers.xai]``
table overrides any of them. Every entry reuses ``OpenAIImages`` and its error mapping.
"""

from __future__ import annotations

import logging
import re
from collections.abc import Mapping
from typing import TYPE_CHECKING, Any

from bot.config import parse_number
from bot.errors import ConfigError

from .base import ModelInfo
from .openai_images import CallStyle, OpenAIImages, make_client
from .settings import client_settings, env

if TYPE_CHECKING:
    from bot.config import Config

log = logging.getLogger(__name__)

#: Names whose tables configure a built-in provider rather than declare a compatible service.
BUILT_IN = {"openai", "google", "local"}

XAI_DEFAULTS: dict[str, Any] = {
    "base_url": "https://api.x.ai/v1",
    "key_env": "XAI_API_KEY",
    "models": ["grok-2-image"],
    # grok-2-image makes 1024x768 JPEGs and refuses a size parameter.
    "sizes": ["1024x768"],
    "send_size": False,
    "max_per_call": 10,
    "response_format": "b64_json",
    "prompt_limit": 1024,
}
SIZE_RE = re.compile(r"^\d{2,5}x\d{2,5}$")


def _sizes(where: str, value: Any) -> tuple[str, ...]:
    if not isinstance(value, list) or not value:
        raise ConfigError(f"{where} must be a non-empty list of sizes like [\"1024x1024\"]")
    out = tuple(str(v).strip().lower() for v in value)
    bad = [s for s in out if not SIZE_RE.match(s)]
    if bad:
        raise ConfigError(f"{where}: {', '.join(bad)} is not a size like 1024x1024")
    return out


def _bool(where: str, value: Any) -> bool:
    if not isinstance(value, bool):
        raise ConfigError(f"{where} must be true or false, got {value!r}")
    return value


def _model(where: str, raw: Any, entry: Mapping[str, Any]) -> tuple[ModelInfo, CallStyle]:
    spec: Mapping[str, Any] = raw if isinstance(raw, dict) else {"name": raw}
    name = str(spec.get("name", "")).strip().lower()
    if not name:
        raise ConfigError(f"{where}: every model needs a name")

    def get(key: str, default: Any) -> Any:
        return spec.get(key, entry.get(key, default))

    fmt = get("response_format", "b64_json")
    if fmt not in ("b64_json", "url", ""):
        raise ConfigError(f"{where}.response_format must be \"b64_json\" or \"url\", got {fmt!r}")
    edits = _bool(f"{where}.edits", get("edits", False))
    info = ModelInfo(
        name=name,
        sizes=_sizes(f"{where}.sizes", get("sizes", ["1024x1024"])),
        max_per_call=int(parse_number(f"{where}.max_per_call", get("max_per_call", 1), 1, 10)),
        supports_reference=edits,
        prompt_limit=int(parse_number(f"{where}.prompt_limit", get("prompt_limit", 4000), 1, 32000)),
    )
    call = CallStyle(response_format=fmt or None, send_size=_bool(f"{where}.send_size", get("send_size", True)),
                     edits=edits)
    return info, call


def _entry(config: Config, name: str, entry: Mapping[str, Any]) -> OpenAIImages | None:
    where = f"providers.{name}"
    base_url = str(entry.get("base_url") or "").strip()
    if not re.match(r"^https?://", base_url):
        raise ConfigError(f"{where}.base_url must be the service's http(s) URL (e.g. http://127.0.0.1:8080/v1); "
                          "a [providers.NAME] table other than openai/google/local declares an "
                          "OpenAI-compatible service")
    key_env = str(entry.get("key_env") or "").strip()
    if key_env:
        key = env(config, key_env)
        if not key:
            # Only worth saying when the operator asked for this service in imagebot.toml.
            level = logging.INFO if name in config.provider_settings else logging.DEBUG
            log.log(level, "provider %s: %s is not set; skipped", name, key_env)
            return None
    else:
        key = "unused"  # a keyless local server; the SDK insists on a value
    raw_models = entry.get("models")
    if not isinstance(raw_models, list) or not raw_models:
        raise ConfigError(f"{where}.models must be a non-empty list of model names or tables")
    pairs = [_model(f"{where}.models[{i}]", raw, entry) for i, raw in enumerate(raw_models)]
    settings = client_settings(config, name)
    return OpenAIImages(
        name, make_client(key, base_url, settings), tuple(m for m, _ in pairs), {m.name: c for m, c in pairs},
        key_env=key_env or "no key", settings=settings, secrets=(key,) if key_env else (),
    )


def build_compat(config: Config) -> list[OpenAIImages]:
    """xAI when ``XAI_API_KEY`` is set, then every configured compatible service whose key is present."""
    built: list[OpenAIImages] = []
    entries: dict[str, Mapping[str, Any]] = {"xai": {**XAI_DEFAULTS, **config.provider_settings.get("xai", {})}}
    if base := env(config, "XAI_BASE_URL"):
        entries["xai"] = {**entries["xai"], "base_url": base}
    for name, table in config.provider_settings.items():
        if name in BUILT_IN or name == "xai":
            continue
        if not re.fullmatch(r"[a-z0-9_-]+", name):
            raise ConfigError(f"[providers.{name}]: provider names use a-z, 0-9, '-' and '_'")
        entries[name] = table
    for name, entry in entries.items():
        provider = _entry(config, name, entry)
        if provider is not None:
            built.append(provider)
    return built

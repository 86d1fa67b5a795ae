"""Discord settings, read once from the environment (``Config.env``) and validated at start.

A bad value stops the bot with an error naming the variable, instead of failing on the first command.
The token is kept out of ``repr`` so a logged settings object never leaks it.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass, field

from bot.errors import ConfigError

#: Discord's documented default upload limit; DMs never get more.
DEFAULT_UPLOAD_LIMIT = 10 * 1024 * 1024


@dataclass(frozen=True)
class ShardPlan:
    """``count=None`` asks Discord how many shards to run; ``ids`` runs only some (one process each)."""

    count: int | None
    ids: tuple[int, ...] | None = None


@dataclass(frozen=True)
class DiscordSettings:
    token: str = field(repr=False)
    guilds: tuple[int, ...] = ()
    shards: ShardPlan | None = None
    admin_roles: frozenset[str] = frozenset()
    api_base: str | None = None
    gateway_url: str | None = None
    dms: bool = True

    @classmethod
    def from_env(cls, env: Mapping[str, str]) -> DiscordSettings:
        token = env.get("DISCORD_TOKEN", "").strip()
        if not token:
            raise ConfigError("DISCORD_TOKEN is empty: paste the bot token from the Developer Portal")
        return cls(
            token=token,
            guilds=_ids("IMAGEBOT_DISCORD_GUILDS", env.get("IMAGEBOT_DISCORD_GUILDS", "")),
            shards=_shards(env.get("IMAGEBOT_DISCORD_SHARDS", "")),
            admin_roles=frozenset(
                r.strip().lower() for r in env.get("IMAGEBOT_DISCORD_ADMIN_ROLES", "").split(",") if r.strip()
            ),
            api_base=_api_base(env.get("DISCORD_API_BASE_URL", "")),
            gateway_url=_url("DISCORD_GATEWAY_URL", env.get("DISCORD_GATEWAY_URL", ""), ("ws://", "wss://")),
            dms=_flag("IMAGEBOT_DISCORD_DMS", env.get("IMAGEBOT_DISCORD_DMS", "on")),
        )


def _ids(key: str, value: str) -> tuple[int, ...]:
    ids = []
    for part in value.split(","):
        part = part.strip()
        if not part:
            continue
        if not re.fullmatch(r"\d{1,20}", part):
            raise ConfigError(f"{key} must be a comma-separated list of numeric guild ids, got {part!r}")
        ids.append(int(part))
    return tuple(ids)


def _shards(value: str) -> ShardPlan | None:
    """``auto``, a count (``4``) or a count and this process's shard ids (``4:0,1``)."""
    text = value.strip().lower()
    if not text:
        return None
    if text == "auto":
        return ShardPlan(None)
    match = re.fullmatch(r"(\d{1,5})(?::([\d,\s]+))?", text)
    if not match or int(match[1]) < 1:
        raise ConfigError(f"IMAGEBOT_DISCORD_SHARDS must be auto, a shard count like 4, or 4:0,1; got {value!r}")
    count = int(match[1])
    ids = tuple(int(i) for i in match[2].split(",") if i.strip()) if match[2] else None
    if ids is not None and (not ids or any(i >= count for i in ids)):
        raise ConfigError(f"IMAGEBOT_DISCORD_SHARDS: shard ids must be below the count {count}; got {value!r}")
    return ShardPlan(count, ids)


def _url(key: str, value: str, schemes: tuple[str, ...]) -> str | None:
    text = value.strip().rstrip("/")
    if not text:
        return None
    if not text.startswith(schemes):
        raise ConfigError(f"{key} must start with {' or '.join(schemes)}, got {value!r}")
    return text


def _api_base(value: str) -> str | None:
    """A REST base such as ``http://proxy:8080``; ``/api/v10`` is added unless a version is given."""
    url = _url("DISCORD_API_BASE_URL", value, ("http://", "https://"))
    if url is None or re.search(r"/api/v\d+$", url):
        return url
    return url + "/api/v10"


def _flag(key: str, value: str) -> bool:
    text = value.strip().lower()
    if text in ("1", "on", "true", "yes"):
        return True
    if text in ("0", "off", "false", "no"):
        return False
    raise ConfigError(f"{key} must be on or off, got {value!r}")

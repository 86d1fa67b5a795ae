"""Which chat platforms to start, from the tokens in the environment.

Each adapter lives in its own package and is imported only when its token is set, so the console
mode needs neither discord.py nor slack-bolt at run time.
"""

from __future__ import annotations

from collections.abc import Coroutine
from typing import Any

from .config import Config
from .core import Imagebot


def platform_runners(core: Imagebot, config: Config) -> list[Coroutine[Any, Any, None]]:
    runners: list[Coroutine[Any, Any, None]] = []
    env = config.env
    if env.get("SLACK_BOT_TOKEN", "").strip():
        from .slack_app import run_slack

        runners.append(run_slack(core, config))
    if env.get("DISCORD_TOKEN", "").strip():
        from .discord_app import run_discord

        runners.append(run_discord(core, config))
    return runners

"""The Discord adapter: slash commands and buttons translated into calls on the shared core.

``run_discord`` is what ``imagebot run`` starts when DISCORD_TOKEN is set. Modules:
settings (env), context (identity, admin check, the ``Runtime`` handlers register on), commands and admin
(the slash commands), flows (each command as a job for the shared runner ``bot.jobs``), progress,
delivery and fitting (the delivery targets: getting replies and images to the person), embeds and views
(result messages and their persistent buttons), client (discord.py setup).
"""

from __future__ import annotations

from typing import Any

import aiohttp
import discord

from bot.config import Config
from bot.core import Imagebot
from bot.errors import ConfigError, ImagebotError
from bot.jobs import DEFAULT_GRACE, FINISH_TIMEOUT, JobRunner

from . import flows
from .client import apply_endpoints, build_client
from .context import Runtime
from .settings import DiscordSettings


async def run_discord(core: Imagebot, config: Config, *, grace: float = DEFAULT_GRACE,
                      finish_timeout: float = FINISH_TIMEOUT, **client_options: Any) -> None:
    """Connect and serve until cancelled. On the way out, jobs in flight get ``grace`` seconds to deliver
    (the REST session is still open then; no new interactions arrive), a delivery under way
    ``finish_timeout`` more, then the client closes."""
    settings = DiscordSettings.from_env(config.env)
    apply_endpoints(settings)
    runtime = Runtime(core, settings, JobRunner(core, grace=grace, finish_timeout=finish_timeout))
    flows.register(runtime)
    client = build_client(runtime, **client_options)
    async with client:
        try:
            await client.start(settings.token)
        except discord.LoginFailure:
            raise ConfigError("Discord refused DISCORD_TOKEN: copy the bot token again from the Developer "
                              "Portal (Bot -> Reset Token)") from None
        except (aiohttp.ClientConnectionError, OSError) as exc:
            # Only logging in can fail like this: once connected, discord.py reconnects by itself.
            raise ImagebotError(f"Cannot reach Discord to log in ({type(exc).__name__}); check the network "
                                "or DISCORD_API_BASE_URL", code="IMG-DISCORD-NET") from None
        finally:
            await runtime.jobs.close()


__all__ = ["run_discord"]

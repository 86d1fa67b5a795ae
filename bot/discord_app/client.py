"""The discord.py client: one class for a single connection, one for sharding, the same setup in both.

``setup_hook`` registers the commands and the persistent buttons, then syncs the commands globally, or
at once to the guilds in IMAGEBOT_DISCORD_GUILDS for development. The tree's ``on_error`` answers every
interaction that an unexpected error would otherwise leave as "This interaction failed".
"""

from __future__ import annotations

import asyncio
import logging
from typing import Any

import discord
import yarl
from discord import app_commands

from .commands import build_commands
from .context import Runtime
from .delivery import say
from .flows import INTERNAL, modal_submitted
from .settings import DiscordSettings
from .views import DYNAMIC_ITEMS

log = logging.getLogger(__name__)

#: View Channels, Send Messages, Send Messages in Threads, Embed Links, Attach Files.
INVITE_PERMISSIONS = discord.Permissions(
    view_channel=True, send_messages=True, send_messages_in_threads=True, embed_links=True, attach_files=True
)
INVITE_SCOPES = ("bot", "applications.commands")


def apply_endpoints(settings: DiscordSettings) -> None:
    """DISCORD_API_BASE_URL / DISCORD_GATEWAY_URL: a REST proxy, or a local fake in tests."""
    if settings.api_base:
        discord.http.Route.BASE = settings.api_base
    if settings.gateway_url:
        discord.gateway.DiscordWebSocket.DEFAULT_GATEWAY = yarl.URL(settings.gateway_url)


def invite_url(application_id: int) -> str:
    return discord.utils.oauth_url(application_id, permissions=INVITE_PERMISSIONS, scopes=INVITE_SCOPES)


class ImagebotTree(app_commands.CommandTree):
    async def on_error(self, interaction: discord.Interaction, error: app_commands.AppCommandError) -> None:
        if isinstance(error, app_commands.CommandNotFound | app_commands.CommandSignatureMismatch):
            text = ("Discord sent an old version of this command; it refreshes within a minute. "
                    "Please try again shortly. (IMG-DISCORD-SYNC)")
        elif isinstance(error, app_commands.TransformerError):
            text = f"That value was not understood: {error.value!r}. (IMG-VALID-001)"
        elif isinstance(error, app_commands.CheckFailure):
            text = "You can't use that command here. (IMG-PERM-001)"
        else:
            log.error("command failed", exc_info=error)
            text = INTERNAL
        await say(interaction, text)


class _Setup:
    """Shared by both client classes: the runtime, the tree and the startup hook."""

    imagebot: Runtime
    tree: ImagebotTree

    def _init_imagebot(self, runtime: Runtime) -> None:
        self.imagebot = runtime
        self.tree = ImagebotTree(self)  # type: ignore[arg-type]

    async def setup_hook(self) -> None:
        for command in build_commands(dms=self.imagebot.settings.dms):
            self.tree.add_command(command)
        self.add_dynamic_items(*DYNAMIC_ITEMS)  # type: ignore[attr-defined]
        await sync_commands(self.tree, self.imagebot.settings.guilds)
        app_id = self.application_id  # type: ignore[attr-defined]
        log.info("logged in to Discord as %s; invite URL: %s", self.user, invite_url(app_id))  # type: ignore[attr-defined]


    async def on_interaction(self, interaction: discord.Interaction) -> None:
        """Modal submits (the Edit box) are read by their custom id, not from a modal kept in memory, so one
        submitted after a restart (or to another shard's process) still runs."""
        if interaction.type == discord.InteractionType.modal_submit:
            await modal_submitted(interaction)


async def sync_commands(tree: app_commands.CommandTree, guilds: tuple[int, ...]) -> None:
    try:
        if not guilds:
            await tree.sync()
            log.info("slash commands synced globally (Discord may take up to an hour to show changes)")
            return
        for guild_id in guilds:
            guild = discord.Object(guild_id)
            tree.copy_global_to(guild=guild)
            await tree.sync(guild=guild)
        log.info("slash commands synced to %d guild(s)", len(guilds))
    except discord.HTTPException as exc:
        log.error("could not sync slash commands (%s, code %s); the last synced set stays", exc.status, exc.code)


def _options() -> dict[str, Any]:
    intents = discord.Intents.none()
    intents.guilds = True  # channels and role names; no privileged intents
    return {
        "intents": intents,
        "allowed_mentions": discord.AllowedMentions.none(),
        "member_cache_flags": discord.MemberCacheFlags.none(),
    }


class ImagebotClient(_Setup, discord.Client):
    def __init__(self, runtime: Runtime, *, identify_delay: float = 5.0, **options: Any) -> None:
        super().__init__(**{**_options(), **options})
        self._init_imagebot(runtime)


class ShardedImagebotClient(_Setup, discord.AutoShardedClient):
    def __init__(self, runtime: Runtime, *, identify_delay: float = 5.0, **options: Any) -> None:
        super().__init__(**{**_options(), **options})
        self._init_imagebot(runtime)
        self.identify_delay = identify_delay

    async def setup_hook(self) -> None:
        await super().setup_hook()
        if self.shard_count is None and self.imagebot.settings.gateway_url:
            # discord.py would connect to the gateway URL Discord names; DISCORD_GATEWAY_URL must win.
            self.shard_count, _, _ = await self.http.get_bot_gateway()

    async def before_identify_hook(self, shard_id: int | None, *, initial: bool = False) -> None:
        """Discord allows one IDENTIFY per 5 s per bucket; a fake gateway in tests allows any."""
        if not initial:
            await asyncio.sleep(self.identify_delay)


def build_client(runtime: Runtime, **options: Any) -> discord.Client:
    """A sharded client when IMAGEBOT_DISCORD_SHARDS is set, else a single connection."""
    plan = runtime.settings.shards
    if plan is None:
        return ImagebotClient(runtime, **options)
    return ShardedImagebotClient(runtime, shard_count=plan.count,
                                 shard_ids=list(plan.ids) if plan.ids else None, **options)

"""Who is asking: a Discord interaction -> the core's ``Identity`` and ``Context``.

In a server the account is ``(discord, guild id, user id)``. In a direct message with the bot each user
has an account of their own, ``(discord, dm-<user id>, user id)``: it never shares credits with a server,
and no one is admin there (operators grant DM credits with the ``imagebot credits`` command).
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Iterable
from dataclasses import dataclass, field
from typing import Any

import discord

from bot.core import Imagebot
from bot.jobs import JobRunner
from bot.models import Context, Identity

from .settings import DiscordSettings


@dataclass(frozen=True)
class Press:
    """A pressed button, a chosen select option or a submitted modal, read from its custom id
    (``views.parse_custom_id``): the action, what it acts on (a generation id, a page, a proposal id),
    the image number where the id carries one, and a select's chosen values."""

    action: str
    key: str
    index: int | None = None
    values: tuple[str, ...] = ()


#: ``await handler(interaction, press)`` for a pressed button, a select or a modal submit.
ButtonHandler = Callable[[discord.Interaction, Press], Awaitable[None]]

PLATFORM = "discord"
#: An interaction token lives 15 minutes; a delivery starts early enough to finish inside it.
TOKEN_LIFETIME = 15 * 60.0
TOKEN_MARGIN = 30.0


def identity_for(interaction: discord.Interaction) -> Identity:
    user_id = str(interaction.user.id)
    if interaction.guild_id is None:
        return Identity(PLATFORM, f"dm-{user_id}", user_id)
    return Identity(PLATFORM, str(interaction.guild_id), user_id)


def identity_of(interaction: discord.Interaction, user: discord.abc.Snowflake) -> Identity:
    """Another member of the same server (the target of /credits-admin)."""
    return Identity(PLATFORM, identity_for(interaction).server_id, str(user.id))


def is_admin(interaction: discord.Interaction, admin_roles: Iterable[str]) -> bool:
    """Manage Server (or Administrator), or a role named or numbered in IMAGEBOT_DISCORD_ADMIN_ROLES.

    Discord sends the member's permissions and role ids with every interaction, so this needs no
    cache and no request. Role names are matched when the guild's roles are cached."""
    if interaction.guild_id is None:
        return False
    perms = interaction.permissions
    if perms.manage_guild or perms.administrator:
        return True
    wanted = {r.lower() for r in admin_roles}
    member = interaction.user
    if not wanted or not isinstance(member, discord.Member):
        return False
    role_ids = {str(r) for r in getattr(member, "_roles", ())}
    role_names = {r.name.lower() for r in member.roles}
    return bool(wanted & (role_ids | role_names))


def context_for(interaction: discord.Interaction, settings: DiscordSettings, *, ephemeral: bool = False) -> Context:
    """With the job's address, so another worker can deliver if this process dies (``bot.couriers``)."""
    return Context(
        identity_for(interaction),
        channel_id=str(interaction.channel_id or ""),
        is_admin=is_admin(interaction, settings.admin_roles),
        display_name=interaction.user.display_name,
        address=address_for(interaction, ephemeral=ephemeral),
        deliver_by=interaction.created_at.timestamp() + TOKEN_LIFETIME - TOKEN_MARGIN,
        adult_channel=is_adult_channel(interaction.channel),
    )


def is_adult_channel(channel: object) -> bool:
    """An age-restricted channel (or a thread of one): Discord sends the channel's ``nsfw`` flag with
    every interaction, so this needs no cache."""
    check = getattr(channel, "is_nsfw", None)
    try:
        return bool(check()) if callable(check) else False
    except (AttributeError, TypeError):  # a thread whose parent is not cached
        return False


def address_for(interaction: discord.Interaction, *, ephemeral: bool = False) -> dict[str, Any]:
    """The discord address of ``bot.couriers``, plus the asker's name, avatar and upload limit so a
    courier in another process builds the same embed and fits the same files without a lookup."""
    user = interaction.user
    return {
        "platform": PLATFORM, "application_id": str(interaction.application_id), "token": interaction.token,
        "channel_id": str(interaction.channel_id or ""), "user_id": str(user.id),
        "guild_id": str(interaction.guild_id or ""), "ephemeral": ephemeral, "message": "@original",
        "display_name": user.display_name, "avatar": user.avatar.key if user.avatar else "",
        "upload_limit": interaction.filesize_limit or 0,
    }


def dm_refusal(interaction: discord.Interaction, settings: DiscordSettings) -> str | None:
    """The reply for a command in a DM when the operator turned DMs off, else ``None``."""
    if interaction.guild_id is None and not settings.dms:
        return ("This bot works inside servers only: run the command in a server channel where the bot is. "
                "(IMG-DISCORD-DM)")
    return None


@dataclass
class Runtime:
    """What every handler needs, hung on the client (``client.imagebot``): no module globals.

    The service object the handlers register on (``flows.register``), as bolt-python's listeners register
    on the app: the buttons (``views``) look their handler up here, so they never import the flows."""

    core: Imagebot
    settings: DiscordSettings
    jobs: JobRunner
    buttons: dict[str, ButtonHandler] = field(default_factory=dict)

    async def press(self, interaction: discord.Interaction, press: Press) -> None:
        handler = self.buttons.get(press.action)
        if handler is None:
            raise LookupError(f"no handler registered for button {press.action!r}")
        await handler(interaction, press)


def runtime_of(interaction: discord.Interaction) -> Runtime:
    return interaction.client.imagebot  # type: ignore[attr-defined, no-any-return]

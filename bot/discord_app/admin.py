"""``/credits-admin grant|revoke|set member amount`` and ``/credits-admin usage [days]``.

A separate top-level command because Discord hides commands per top-level name only:
``default_member_permissions`` (Manage Server) keeps it out of other members' command list, and server
owners can open it to more roles in Server Settings -> Integrations. The bot checks again on every use
(Manage Server, or a role listed in IMAGEBOT_DISCORD_ADMIN_ROLES), and the core checks once more.
"""

from __future__ import annotations

import discord
from discord import app_commands

from bot.config import MAX_AMOUNT

from . import flows


def build_admin_group() -> app_commands.Group:
    group = app_commands.Group(
        name="credits-admin",
        description="Server admins: grant, revoke or set members' credits, and see usage",
        default_permissions=discord.Permissions(manage_guild=True),
        guild_only=True,
    )

    def adjust(kind: str, description: str) -> app_commands.Command:  # type: ignore[type-arg]
        @app_commands.describe(member="The member", amount="Whole number of credits")
        async def callback(interaction: discord.Interaction, member: discord.User,
                           amount: app_commands.Range[int, 0, MAX_AMOUNT]) -> None:
            await flows.adjust_command(interaction, kind, member, amount)

        return app_commands.Command(name=kind, description=description, callback=callback)

    for kind, description in (("grant", "Add credits to a member"), ("revoke", "Take credits from a member"),
                              ("set", "Set a member's balance")):
        group.add_command(adjust(kind, description))

    @group.command(name="usage", description="Usage per member, provider and status")
    @app_commands.describe(days="How many days back (default 7)")
    async def usage(interaction: discord.Interaction, days: app_commands.Range[int, 1, 365] = 7) -> None:
        await flows.usage_command(interaction, days)

    return group

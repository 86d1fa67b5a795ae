"""Embeds for results, built from the shared reply text so every platform says the same thing.

Everything a person typed (prompts) is escaped: it is shown, never read as markdown or mentions.
"""

from __future__ import annotations

import dataclasses

import discord

from bot.models import EnhanceResult, ImagineResult
from bot.replies import enhance_summary, imagine_summary

COLOUR = discord.Colour.blurple()


def escape(text: str) -> str:
    return discord.utils.escape_mentions(discord.utils.escape_markdown(text))


def _author(embed: discord.Embed, user: discord.abc.User) -> discord.Embed:
    return embed.set_author(name=user.display_name[:256], icon_url=user.display_avatar.url)


def result_embed(result: ImagineResult, user: discord.abc.User) -> discord.Embed:
    shown = dataclasses.replace(
        result, prompt=escape(result.prompt),
        revised_prompt=escape(result.revised_prompt) if result.revised_prompt else None,
    )
    embed = discord.Embed(description=imagine_summary(shown, who=user.mention)[:4096], colour=COLOUR)
    embed.set_footer(text=f"generation {result.generation_id}")
    return _author(embed, user)


def enhance_embed(result: EnhanceResult, user: discord.abc.User) -> discord.Embed:
    shown = dataclasses.replace(result, enhanced=escape(result.enhanced))
    embed = discord.Embed(description=enhance_summary(shown)[:4096], colour=COLOUR)
    embed.add_field(name="Your prompt", value=escape(result.original)[:1024], inline=False)
    embed.set_footer(text=f"enhance {result.generation_id}")
    return _author(embed, user)

"""Embeds for results, built from the shared reply text so every platform says the same thing.

Everything a person typed (prompts) is escaped: it is shown, never read as markdown or mentions.
"""

from __future__ import annotations

import dataclasses

import discord

from bot.models import DescribeResult, EnhanceResult, HistoryPage, ImagineResult, Quote
from bot.replies import describe_summary, enhance_summary, imagine_summary, plural

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


def describe_embed(result: DescribeResult, user: discord.abc.User) -> discord.Embed:
    """The suggested prompts, numbered like their Imagine buttons."""
    shown = dataclasses.replace(result, prompts=[escape(p) for p in result.prompts])
    embed = discord.Embed(description=describe_summary(shown)[:4096], colour=COLOUR)
    embed.set_footer(text=f"describe {result.generation_id}")
    return _author(embed, user)


def history_embed(page: HistoryPage, sheet_name: str | None = None) -> discord.Embed:
    """One line per generation (number as on the contact sheet, id, command, prompt, cost, age)."""
    lines = []
    for n, item in enumerate(page.items, 1):
        prompt = " ".join(item.prompt.split())
        prompt = prompt if len(prompt) <= 80 else prompt[:79] + "…"
        lines.append(f"**{n}.** `{item.generation_id}` /{item.command} · {escape(prompt) or '-'} · "
                     f"{plural(item.credits, 'credit')} · {item.age}")
    if not lines:
        lines.append("No results in this server yet: try /imagine.")
    embed = discord.Embed(title=f"Your results: page {page.page} of {page.pages} ({page.total} in all)",
                          description="\n".join(lines)[:4096], colour=COLOUR)
    if sheet_name:
        embed.set_image(url=f"attachment://{sheet_name}")
    embed.set_footer(text="/show <id> brings one back with its buttons")
    return embed


def confirm_text(quote: Quote) -> str:
    """The confirm step: the price and what would be left, before anything is charged."""
    return (f"This costs {plural(quote.price, 'credit')}: your balance would go from {quote.balance} to "
            f"{quote.balance_after}. Nothing is charged until you confirm.")

"""The slash commands: /imagine, /enhance, /describe, /history, /show, /help, /settings, /credits and the
admin group /credits-admin. The HTTP-interactions adapter reads the same names and options
(``http_interactions``).

Built per client by ``build_commands`` (no module-level command objects). Handlers only translate
options into core calls through ``flows``. This module does not use postponed annotations: discord.py
reads the parameter annotations to build the options Discord shows.
"""

import logging

import discord
from discord import app_commands

from bot.models import ImagineOptions
from bot.server_settings import KEYS as SETTING_KEYS
from bot.validation import split_provider
from providers.base import ASPECTS, BACKGROUNDS, FORMATS, QUALITIES, STYLES, ModelInfo

from . import flows
from .admin import build_admin_group
from .context import identity_for, runtime_of

log = logging.getLogger(__name__)
MAX_CHOICES = 25


def _choices(values: tuple[str, ...]) -> list[app_commands.Choice[str]]:
    return [app_commands.Choice(name=v, value=v) for v in values]


async def provider_autocomplete(interaction: discord.Interaction, current: str) -> list[app_commands.Choice[str]]:
    """Configured providers, and provider/model pairs, matching what was typed so far."""
    try:
        return _provider_choices(interaction, current)
    except Exception:  # suggestions are a courtesy: never fail the interaction over them
        log.exception("provider autocomplete failed")
        return []


def _provider_choices(interaction: discord.Interaction, current: str) -> list[app_commands.Choice[str]]:
    registry = runtime_of(interaction).core.registry
    items: list[str] = []
    for name in registry.names():
        provider = registry.providers[name]
        items.append(name)
        if len(provider.capabilities.models) > 1:
            items.extend(f"{name}/{m.name}" for m in provider.capabilities.models)
    wanted = current.strip().lower()
    return [app_commands.Choice(name=i, value=i) for i in items if wanted in i][:MAX_CHOICES]


async def size_autocomplete(interaction: discord.Interaction, current: str) -> list[app_commands.Choice[str]]:
    """The sizes the chosen provider's model offers (the server's first provider when none is chosen)."""
    try:
        return _size_choices(interaction, current)
    except Exception:  # suggestions are a courtesy: never fail the interaction over them
        log.exception("size autocomplete failed")
        return []


def size_suggestions(model: ModelInfo | None) -> list[str]:
    """The model's own sizes, then the aspects, then the ratios it can make (``16:9``...)."""
    if model is None:
        return list(ASPECTS)
    return list(dict.fromkeys((*model.sizes, *ASPECTS, *model.ratios())))


def _size_choices(interaction: discord.Interaction, current: str) -> list[app_commands.Choice[str]]:
    rt = runtime_of(interaction)
    registry = rt.core.registry
    name, model_name = split_provider(getattr(interaction.namespace, "provider", None))
    provider = registry.get(name) if name else None
    if provider is None:
        ordered = registry.ordered(rt.core.config.providers_for(identity_for(interaction).server_key))
        provider = ordered[0] if ordered else None
    model = provider.capabilities.model(model_name) if provider else None
    if model is None and provider is not None:
        model = provider.capabilities.model(None)
    wanted = current.strip().lower()
    return [app_commands.Choice(name=s, value=s) for s in size_suggestions(model) if wanted in s][:MAX_CHOICES]


def build_commands(*, dms: bool = True) -> list[app_commands.Command | app_commands.Group]:  # type: ignore[type-arg]
    """The commands; with ``dms=False`` the three user commands are not offered in direct messages."""
    @app_commands.command(name="imagine", description="Generate images from a prompt")
    @app_commands.describe(
        prompt="What to draw",
        size="WxH, square, landscape, portrait or a ratio like 16:9 (suggestions follow the chosen model)",
        style="Look of the image",
        quality="Higher tiers cost more where the model offers them",
        count="How many images (1-10)",
        provider="Which provider (and model) to use; default: the server's first",
        reference="An image to start from",
        reference2="A second image to blend in",
        reference3="A third image to blend in",
        reference4="A fourth image to blend in",
        output_format="File format, where the model offers a choice",
        background="Transparent needs png or webp, where the model offers it",
    )
    @app_commands.rename(output_format="format")
    @app_commands.choices(style=_choices(STYLES), quality=_choices(QUALITIES), output_format=_choices(FORMATS),
                          background=_choices(BACKGROUNDS))
    @app_commands.autocomplete(size=size_autocomplete, provider=provider_autocomplete)
    async def imagine(
        interaction: discord.Interaction,
        prompt: app_commands.Range[str, 1, 4000],
        size: str | None = None,
        style: str | None = None,
        quality: str | None = None,
        count: app_commands.Range[int, 1, 10] | None = None,
        provider: str | None = None,
        reference: discord.Attachment | None = None,
        output_format: str | None = None,
        background: str | None = None,
        reference2: discord.Attachment | None = None,
        reference3: discord.Attachment | None = None,
        reference4: discord.Attachment | None = None,
    ) -> None:
        options = ImagineOptions(prompt=prompt, size=size, style=style, quality=quality, count=count,
                                 provider=provider, output_format=output_format, background=background)
        await flows.imagine_command(interaction, options, (reference, reference2, reference3, reference4))

    @app_commands.command(name="enhance", description="Rewrite a short prompt into a rich one")
    @app_commands.describe(prompt="The idea to enhance")
    async def enhance(interaction: discord.Interaction, prompt: app_commands.Range[str, 1, 4000]) -> None:
        await flows.enhance_command(interaction, prompt)

    @app_commands.command(name="credits", description="Your credit balance and recent usage (only you see it)")
    async def credits(interaction: discord.Interaction) -> None:
        await flows.credits_command(interaction)

    @app_commands.command(name="describe", description="Four prompts suggested for an image, each with an Imagine button")
    @app_commands.describe(image="The image to describe")
    async def describe(interaction: discord.Interaction, image: discord.Attachment) -> None:
        await flows.describe_command(interaction, image)

    @app_commands.command(name="history", description="Your results in this server, ten at a time (only you see it)")
    @app_commands.describe(page="Which page (1 is the newest)")
    async def history(interaction: discord.Interaction, page: app_commands.Range[int, 1, 100000] = 1) -> None:
        await flows.history_command(interaction, page)

    @app_commands.command(name="show", description="Bring back one result with its buttons (free)")
    @app_commands.describe(generation_id="The generation id from a result's footer or /history")
    @app_commands.rename(generation_id="id")
    async def show(interaction: discord.Interaction, generation_id: app_commands.Range[str, 1, 64]) -> None:
        await flows.show_command(interaction, generation_id)

    @app_commands.command(name="help", description="Commands, options, prices here, your balance and limits")
    async def help_(interaction: discord.Interaction) -> None:
        await flows.help_command(interaction)

    @app_commands.command(name="settings", description="This server's settings; admins change them")
    @app_commands.describe(key="The setting to change (leave out to see them all)",
                           value="Its new value; 'default' goes back to the bot's default")
    @app_commands.choices(key=[app_commands.Choice(name=k, value=k) for k in list(SETTING_KEYS)[:MAX_CHOICES]])
    async def settings(interaction: discord.Interaction, key: str | None = None,
                       value: app_commands.Range[str, 1, 1000] | None = None) -> None:
        await flows.settings_command(interaction, key, value)

    chat_commands: list[app_commands.Command] = [  # type: ignore[type-arg]
        imagine, enhance, describe, history, show, help_, settings, credits]
    for command in chat_commands:
        command.guild_only = not dms
    settings.guild_only = True  # a server's settings: no meaning in a DM
    return [*chat_commands, build_admin_group()]

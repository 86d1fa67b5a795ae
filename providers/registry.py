"""The provider registry: which providers are configured, in which order, and the text enhancer.

Adding a provider is one file and one line in ``IMAGE_BUILDERS`` (or ``TEXT_BUILDERS``). A builder
takes the config and returns the provider, or ``None`` when its settings (a key) are absent.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Sequence
from typing import TYPE_CHECKING

from bot.errors import ConfigError

from .base import ImageProvider, TextProvider
from .catalogue import Catalogue
from .compat import build_compat
from .google_images import build_google
from .google_text import build_google_text
from .local import LocalRenderer
from .local_text import LocalEnhancer
from .openai_images import build_openai
from .openai_text import build_openai_text

if TYPE_CHECKING:
    from bot.config import Config

log = logging.getLogger(__name__)

ImageBuilder = Callable[["Config"], "Sequence[ImageProvider]"]
TextBuilder = Callable[["Config"], "TextProvider | None"]


def _local(config: Config) -> Sequence[ImageProvider]:
    return [LocalRenderer()]


#: name -> builder. Order here is the default failover order; ``local`` always comes last.
IMAGE_BUILDERS: dict[str, ImageBuilder] = {
    "openai": build_openai,
    "google": build_google,
    "compat": build_compat,  # xAI and every [providers.NAME] OpenAI-compatible service
    "local": _local,
}

TEXT_BUILDERS: dict[str, TextBuilder] = {
    "openai": build_openai_text,
    "google": build_google_text,
    "local": lambda config: LocalEnhancer(),  # always available: the offline enhancer
}


class ProviderRegistry:
    def __init__(self, providers: list[ImageProvider], order: list[str], enhancer: TextProvider) -> None:
        self.providers = {p.name: p for p in providers}
        self.order = [name for name in order if name in self.providers]
        self.enhancer = enhancer
        self.catalogue = Catalogue()

    async def refresh(self, *, strict: bool = True) -> None:
        """Ask every vendor which models this account may use (at start strictly, then every few hours)."""
        await self.catalogue.refresh([*self.providers.values(), self.enhancer], strict=strict)

    def retire(self, provider: str, model: str, reason: str = "the vendor no longer serves it") -> bool:
        """A model vanished while running: it leaves the rotation now (True the first time)."""
        target = self.providers.get(provider)
        # The text provider may share its vendor's name ("openai"): its own models are retired on it.
        text_models = {getattr(self.enhancer, "model", None), getattr(self.enhancer, "vision_model", None)}
        if self.enhancer.name == provider and (target is None or model in text_models):
            return self.catalogue.retire(self.enhancer, model, reason)
        return self.catalogue.retire(target, model, reason) if target is not None else False

    def model_hint(self, provider: str, model: str) -> str | None:
        """Why ``model`` is not offered by ``provider``, when the catalogue knows (retired, shut down)."""
        listing = self.catalogue.listings.get(provider)
        if listing is None or not model:
            return None
        if model in listing.dropped:
            return f"{model} was retired by the vendor ({listing.dropped[model]})."
        known = next((m for m in listing.models if m.name == model), None)
        if known is not None and known.shutdown_date:
            return f"{model} was shut down on {known.shutdown_date}."
        return None

    def get(self, name: str) -> ImageProvider | None:
        return self.providers.get(name)

    def names(self) -> list[str]:
        """Every configured provider, failover order first (``local`` is always available)."""
        return self.order + [n for n in self.providers if n not in self.order]

    def ordered(self, order: tuple[str, ...] | list[str] | None = None) -> list[ImageProvider]:
        names = [n for n in (order or self.order) if n in self.providers] or self.order
        # A provider whose every model has been retired has nothing to offer until the next refresh.
        return [self.providers[n] for n in names if self.providers[n].capabilities.models]

    async def aclose(self) -> None:
        for provider in reversed(list(self.providers.values())):
            try:
                await provider.aclose()
            except Exception:  # noqa: BLE001 - closing must go on
                log.warning("closing provider %s failed", provider.name)
        await self.enhancer.aclose()


def build_registry(config: Config) -> ProviderRegistry:
    """Build every provider whose settings are present, in the configured order."""
    built: list[ImageProvider] = []
    for name, builder in IMAGE_BUILDERS.items():
        if name == "local":
            continue
        built.extend(builder(config))
    built.extend(_local(config))
    names = [p.name for p in built]
    order = list(config.provider_order)
    unknown = [n for n in order if n not in names]
    if unknown:
        raise ConfigError(
            f"IMAGEBOT_PROVIDERS names {', '.join(unknown)}, which is not configured; "
            f"configured providers: {', '.join(names)}"
        )
    for key, server_order in config.server_provider_order.items():
        missing = [n for n in server_order if n not in names]
        if missing:
            raise ConfigError(f"servers.{key}.providers names unknown provider(s): {', '.join(missing)}")
    if not order:
        # The offline sketch is the default only when nothing real is configured: a failed real
        # provider should fail over to another real one, not quietly to a sketch.
        order = [n for n in names if n != "local"] or ["local"]
    enhancer: TextProvider | None = None
    wanted = config.enhancer
    if wanted:
        if wanted not in TEXT_BUILDERS:
            raise ConfigError(
                f"IMAGEBOT_ENHANCER must be one of {', '.join(TEXT_BUILDERS)}, got {wanted!r}"
            )
        enhancer = TEXT_BUILDERS[wanted](config)
        if enhancer is None:
            raise ConfigError(f"IMAGEBOT_ENHANCER={wanted} but its API key is not set")
    else:
        for name, text_builder in TEXT_BUILDERS.items():
            if name != "local" and (enhancer := text_builder(config)) is not None:
                break
    fallback: TextProvider = LocalEnhancer()
    return ProviderRegistry(built, order, enhancer or fallback)

"""The live model catalogue: which models each provider offers, asked of the vendor at run time.

Image models are retired every few months, so no model list is frozen in code. Each provider declares
what its model *families* can do (``ModelFamily``); the vendor's own list (``ListsModels.list_models``)
says which models exist for this account and when each shuts down. This module joins the two:

- every listed id that belongs to a known family becomes a ``ModelInfo`` with the family's abilities
  and the vendor's lifecycle (``shutdown_date``); ids of no known family are not image models to us;
- models past their shutdown date leave the rotation; the default is the pinned model (the operator's
  ``[providers.NAME] model``), else the newest active model of the preferred family;
- a pinned model that the vendor no longer lists (or that the SDK says is shut down) is a
  configuration error at start, naming what replaced it;
- with no answer from the vendor (no network at start) the built-in family defaults are used, said
  once in the log;
- a model that disappears while running (``ModelRetired``) is dropped from the rotation at once and the
  operator is told once (``retire``).
"""

from __future__ import annotations

import asyncio
import dataclasses
import datetime as dt
import logging
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field

from bot.errors import ConfigError, ProviderError

from .base import (
    ACTIVE,
    DEPRECATED,
    RETIRED,
    Capabilities,
    ImageProvider,
    ListedModel,
    ListsModels,
    ModelFamily,
    ModelInfo,
    TextProvider,
)

log = logging.getLogger(__name__)

#: How long the vendor may take to list its models before the bot starts on what it has.
LIST_TIMEOUT = 10.0
#: Shutdowns this close are warned about in ``imagebot providers`` and in the log at start.
WARN_DAYS = 30


def today() -> str:
    return dt.datetime.now(dt.UTC).date().isoformat()


def days_left(shutdown_date: str, now: str) -> int:
    return (dt.date.fromisoformat(shutdown_date) - dt.date.fromisoformat(now)).days


@dataclass
class Listing:
    """What the catalogue knows of one provider (or text provider): every model with its lifecycle."""

    provider: str
    models: list[ModelInfo] = field(default_factory=list)
    default_model: str = ""
    #: ``vendor`` when the vendor's list was read, ``built-in`` when it could not be asked.
    source: str = "built-in"
    #: Models retired while running, with the reason (``ModelRetired``).
    dropped: dict[str, str] = field(default_factory=dict)

    def status_of(self, model: ModelInfo, now: str) -> str:
        return RETIRED if model.name in self.dropped else model.status(now)

    def active(self, now: str) -> list[ModelInfo]:
        return [m for m in self.models if self.status_of(m, now) != RETIRED]

    def warnings(self, now: str) -> list[str]:
        out = []
        for m in self.models:
            if self.status_of(m, now) == DEPRECATED and m.shutdown_date:
                left = days_left(m.shutdown_date, now)
                if left <= WARN_DAYS:
                    out.append(f"{self.provider}/{m.name} shuts down on {m.shutdown_date} ({_days(left)} left)")
        return out


def _days(n: int) -> str:
    return "1 day" if n == 1 else f"{n} days"


def family_of(families: Iterable[ModelFamily], model_id: str) -> ModelFamily | None:
    """The family a model id belongs to: the longest matching prefix."""
    fits = [f for f in families if f.matches(model_id)]
    return max(fits, key=lambda f: len(f.prefix)) if fits else None


def _model(family: ModelFamily, entry: ListedModel) -> ModelInfo:
    # A shutdown the SDK announces for the template model itself holds until the vendor lists another date.
    known = family.template.shutdown_date if entry.id == family.template.name else None
    return dataclasses.replace(family.template, name=entry.id, family=family.prefix, created=entry.created,
                               shutdown_date=entry.shutdown_date or known)


def resolve(
    provider: str,
    families: Sequence[ModelFamily],
    listed: Sequence[ListedModel] | None,
    *,
    pinned: Sequence[str] = (),
    retired_models: Mapping[str, str] | None = None,
    now: str | None = None,
) -> Listing:
    """Join the families with the vendor's list (None: it could not be asked). Raises ``ConfigError``
    for a pinned model that is shut down or unknown."""
    now = now or today()
    retired_models = retired_models or {}
    for name in pinned:
        if name in retired_models:
            raise ConfigError(f"providers.{provider}.model: {name} has been shut down by the vendor; "
                              f"use {retired_models[name]} instead")
    if listed is None:
        models = [dataclasses.replace(f.template, family=f.prefix) for f in families]
        for name in pinned:
            if all(m.name != name for m in models):
                family = family_of(families, name)
                if family is None:
                    raise ConfigError(f"providers.{provider}.model: unknown model {name!r}; {provider} knows the "
                                      f"families {', '.join(f.prefix for f in families)}")
                models.append(_model(family, ListedModel(name)))
        listing = Listing(provider, models, source="built-in")
    else:
        models = []
        for entry in listed:
            family = family_of(families, entry.id)
            if family is not None and entry.id not in retired_models:
                models.append(_model(family, entry))
        listing = Listing(provider, models, source="vendor")
        active = {m.name for m in listing.active(now)}
        for name in pinned:
            if name not in active:
                replacement = _preferred(families, listing, now)
                instead = f"; use {replacement}" if replacement else ""
                raise ConfigError(f"providers.{provider}.model: {name} is no longer offered by {provider} "
                                  f"(not in its model list, or past its shutdown date){instead}")
    listing.default_model = pinned[0] if pinned else (_preferred(families, listing, now) or "")
    return listing


def _preferred(families: Sequence[ModelFamily], listing: Listing, now: str) -> str | None:
    """The newest active model of the first family (in preference order) that has one; a model with
    no announced shutdown beats a deprecated one of the same family."""
    active = listing.active(now)
    for family in families:
        members = [m for m in active if m.family == family.prefix]
        if members:
            best = max(members, key=lambda m: (m.status(now) == ACTIVE, m.created, -len(m.name)))
            return best.name
    return active[0].name if active else None


def ordered_models(listing: Listing, families: Sequence[ModelFamily], pinned: Sequence[str],
                   now: str) -> tuple[ModelInfo, ...]:
    """The rotation: pinned models only when pinned, else every active model; the default first, then
    by family preference and newest first."""
    active = listing.active(now)
    if pinned:
        by_name = {m.name: m for m in active}
        return tuple(by_name[n] for n in pinned if n in by_name)
    rank = {f.prefix: i for i, f in enumerate(families)}
    return tuple(sorted(active, key=lambda m: (m.name != listing.default_model, rank.get(m.family, 99),
                                               -m.created, m.name)))


def key_of(provider: object) -> str:
    """Listings are kept per provider; a text provider may share its vendor's name, so it gets its own key."""
    name = str(getattr(provider, "name", ""))
    return name if isinstance(getattr(provider, "capabilities", None), Capabilities) else f"{name}:text"


class Catalogue:
    """Keeps every ``ListsModels`` provider's ``capabilities`` in step with its vendor's list."""

    def __init__(self) -> None:
        self.listings: dict[str, Listing] = {}
        self._families: dict[str, tuple[ModelFamily, ...]] = {}
        self._pinned: dict[str, tuple[str, ...]] = {}

    async def refresh(self, providers: Sequence[object], *, strict: bool = True, now: str | None = None) -> None:
        """Ask every vendor at once. ``strict``: a pinned model the vendor no longer offers raises
        ``ConfigError`` (at start); later refreshes only log it and keep the rotation running."""
        now = now or today()
        listable = [p for p in providers if isinstance(p, ListsModels)]
        answers = await asyncio.gather(*(self._ask(p) for p in listable))
        offline = []
        for provider, listed in zip(listable, answers, strict=True):
            try:
                listing = resolve(provider.name, provider.families, listed, pinned=provider.pinned,
                                  retired_models=provider.retired_models, now=now)
            except ConfigError:
                if strict:
                    raise
                log.error("provider %s: a pinned model is no longer offered; keeping the current rotation",
                          provider.name)
                continue
            key = key_of(provider)
            old = self.listings.get(key)
            if old is not None:
                listing.dropped = {k: v for k, v in old.dropped.items() if any(m.name == k for m in listing.models)}
            self.listings[key] = listing
            self._families[key] = tuple(provider.families)
            self._pinned[key] = tuple(provider.pinned)
            if listed is None and key not in offline:
                offline.append(key)
            self._apply(provider, now)
            for warning in listing.warnings(now):
                log.warning("model lifecycle: %s", warning)
        if offline:
            log.warning("could not ask %s for its models; using the built-in defaults until the next refresh",
                        ", ".join(offline))

    @staticmethod
    async def _ask(provider: ListsModels) -> list[ListedModel] | None:
        try:
            return list(await asyncio.wait_for(provider.list_models(), LIST_TIMEOUT))
        except (ProviderError, TimeoutError, OSError) as exc:
            log.info("provider %s: model list unavailable (%s)", provider.name, type(exc).__name__)
            return None

    def _apply(self, provider: object, now: str) -> None:
        name = key_of(provider)
        listing = self.listings[name]
        models = ordered_models(listing, self._families[name], self._pinned[name], now)
        if not models:
            return
        names = {m.name for m in models}
        default = listing.default_model if listing.default_model in names else models[0].name
        if isinstance(provider, ImageProvider):
            provider.capabilities = dataclasses.replace(provider.capabilities, models=models, default_model=default)
        elif isinstance(provider, TextProvider):  # a text provider: one model at a time
            provider.model = default

    def retire(self, provider: object, model: str, reason: str = "the vendor no longer serves it") -> bool:
        """Drop ``model`` from the provider's rotation now; True the first time (log once)."""
        name = key_of(provider)
        listing = self.listings.get(name)
        if listing is None:
            listing = self.listings[name] = Listing(str(getattr(provider, "name", "")), source="built-in")
            caps = getattr(provider, "capabilities", None)
            listing.models = list(caps.models) if isinstance(caps, Capabilities) else []
            listing.default_model = caps.default_model if isinstance(caps, Capabilities) else getattr(
                provider, "model", "")
            self._families[name] = tuple(getattr(provider, "families", ()))
            self._pinned[name] = ()
        if model in listing.dropped:
            return False
        listing.dropped[model] = reason
        if listing.default_model == model:
            remaining = listing.active(today())
            listing.default_model = _preferred(self._families[name], listing, today()) or (
                remaining[0].name if remaining else "")
        self._pinned[name] = tuple(p for p in self._pinned[name] if p != model)
        if isinstance(provider, ImageProvider):
            caps = provider.capabilities
            left = tuple(m for m in caps.models if m.name != model)
            default = listing.default_model if any(m.name == listing.default_model for m in left) else (
                left[0].name if left else caps.default_model)
            # With nothing left the provider offers no model, and the registry skips it until a refresh.
            provider.capabilities = dataclasses.replace(caps, models=left, default_model=default)
        elif isinstance(provider, TextProvider) and listing.default_model:
            provider.model = listing.default_model
        log.warning("provider %s: model %s is retired (%s); it has left the rotation%s", name, model, reason,
                    f", now using {listing.default_model}" if listing.default_model else "")
        return True

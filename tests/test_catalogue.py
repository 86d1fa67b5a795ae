"""The live catalogue: listed models join their family's abilities; lifecycle decides the rotation."""

from __future__ import annotations

import logging
from collections.abc import Mapping

import pytest

from bot.errors import ConfigError, ProviderUnavailable
from providers.base import (
    DEPRECATED,
    RETIRED,
    Capabilities,
    FreeSizes,
    GeneratedImage,
    GenerationRequest,
    ListedModel,
    ModelFamily,
    ModelInfo,
)
from providers.catalogue import Catalogue, resolve

NOW = "2026-12-01"
BIG = ModelFamily("vendor-img-2.5", ModelInfo("vendor-img-2.5", sizes=("1024x1024",), free_sizes=FreeSizes(),
                                              qualities=("low", "medium", "high", "max")))
MID = ModelFamily("vendor-img-2", ModelInfo("vendor-img-2", sizes=("1024x1024",), free_sizes=FreeSizes()))
FAMILIES = (BIG, MID)
RETIRED_IDS = {"vendor-img-1": "vendor-img-2.5"}


class ListingProvider:
    """A vendor whose model list the test sets; it generates nothing."""

    def __init__(self, listed: list[ListedModel] | None, pinned: tuple[str, ...] = ()) -> None:
        self.name = "vendor"
        self.families = FAMILIES
        self.pinned = pinned
        self.retired_models: Mapping[str, str] = RETIRED_IDS
        self.listed = listed
        self.capabilities = Capabilities(models=(BIG.template,), default_model=BIG.template.name)

    async def list_models(self) -> list[ListedModel]:
        if self.listed is None:
            raise ProviderUnavailable("vendor could not be reached.", provider=self.name)
        return self.listed

    async def generate(self, request: GenerationRequest) -> list[GeneratedImage]:
        raise AssertionError("not called")

    async def aclose(self) -> None:
        return None


LISTED = [
    ListedModel("vendor-img-2", created=100),
    ListedModel("vendor-img-2-2026-04-21", created=200),
    ListedModel("vendor-img-2.5", created=300, shutdown_date="2026-12-20"),
    ListedModel("vendor-img-2.5-2026-09-08", created=400),
    ListedModel("vendor-img-1", created=50),          # shut down: never offered
    ListedModel("vendor-chat-9", created=999),        # not an image family
    ListedModel("vendor-img-2-old", created=10, shutdown_date="2026-11-01"),  # past its date
]


def test_listed_models_join_their_family_and_the_newest_active_of_the_preferred_family_is_default() -> None:
    listing = resolve("vendor", FAMILIES, LISTED, retired_models=RETIRED_IDS, now=NOW)
    names = {m.name for m in listing.models}
    assert "vendor-chat-9" not in names and "vendor-img-1" not in names
    assert listing.default_model == "vendor-img-2.5-2026-09-08"
    snap = next(m for m in listing.models if m.name == "vendor-img-2.5-2026-09-08")
    assert snap.family == "vendor-img-2.5" and snap.qualities == BIG.template.qualities
    assert {m.name for m in listing.active(NOW)} == {"vendor-img-2", "vendor-img-2-2026-04-21", "vendor-img-2.5",
                                                     "vendor-img-2.5-2026-09-08"}
    old = next(m for m in listing.models if m.name == "vendor-img-2-old")
    assert listing.status_of(old, NOW) == RETIRED
    soon = next(m for m in listing.models if m.name == "vendor-img-2.5")
    assert listing.status_of(soon, NOW) == DEPRECATED
    assert listing.warnings(NOW) == ["vendor/vendor-img-2.5 shuts down on 2026-12-20 (19 days left)"]


def test_a_pinned_model_the_vendor_no_longer_lists_stops_the_start_naming_the_replacement() -> None:
    with pytest.raises(ConfigError) as err:
        resolve("vendor", FAMILIES, LISTED, pinned=("vendor-img-2-old",), now=NOW)
    assert "vendor-img-2-old is no longer offered by vendor" in err.value.message
    assert "use vendor-img-2.5-2026-09-08" in err.value.message
    with pytest.raises(ConfigError, match="vendor-img-1 has been shut down.*use vendor-img-2.5"):
        resolve("vendor", FAMILIES, None, pinned=("vendor-img-1",), retired_models=RETIRED_IDS, now=NOW)


def test_a_pinned_listed_model_is_the_default_and_the_only_one_in_rotation() -> None:
    listing = resolve("vendor", FAMILIES, LISTED, pinned=("vendor-img-2",), now=NOW)
    assert listing.default_model == "vendor-img-2"


async def test_offline_start_uses_built_in_defaults_and_says_so_once(caplog: pytest.LogCaptureFixture) -> None:
    provider = ListingProvider(None)
    catalogue = Catalogue()
    with caplog.at_level(logging.WARNING):
        await catalogue.refresh([provider])
    assert provider.capabilities.default_model == "vendor-img-2.5"
    assert [m.name for m in provider.capabilities.models] == ["vendor-img-2.5", "vendor-img-2"]
    said = [r.getMessage() for r in caplog.records if "built-in defaults" in r.getMessage()]
    assert len(said) == 1 and "vendor" in said[0]


async def test_refresh_replaces_the_rotation_and_retire_drops_a_model_once(caplog: pytest.LogCaptureFixture) -> None:
    provider = ListingProvider(list(LISTED))
    catalogue = Catalogue()
    await catalogue.refresh([provider], now=NOW)
    assert provider.capabilities.default_model == "vendor-img-2.5-2026-09-08"
    assert provider.capabilities.models[0].name == "vendor-img-2.5-2026-09-08"
    with caplog.at_level(logging.WARNING):
        assert catalogue.retire(provider, "vendor-img-2.5-2026-09-08") is True
        assert catalogue.retire(provider, "vendor-img-2.5-2026-09-08") is False
    assert "vendor-img-2.5-2026-09-08" not in {m.name for m in provider.capabilities.models}
    assert provider.capabilities.default_model == "vendor-img-2.5"
    assert sum("is retired" in r.getMessage() for r in caplog.records) == 1
    # The next refresh still lists it: it stays out until the vendor stops listing it.
    await catalogue.refresh([provider], now=NOW)
    assert "vendor-img-2.5-2026-09-08" not in {m.name for m in provider.capabilities.models}


async def test_a_later_refresh_does_not_stop_the_bot_for_a_pinned_model_that_vanished() -> None:
    provider = ListingProvider(list(LISTED), pinned=("vendor-img-2",))
    catalogue = Catalogue()
    await catalogue.refresh([provider], now=NOW)
    provider.listed = [m for m in LISTED if m.id != "vendor-img-2"]
    await catalogue.refresh([provider], strict=False, now=NOW)  # logs, keeps going
    with pytest.raises(ConfigError):
        await catalogue.refresh([provider], strict=True, now=NOW)

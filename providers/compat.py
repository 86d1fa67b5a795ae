"""OpenAI-compatible image services, by configuration: xAI built in, anything else by one table.

    [providers.mysd]                       # a local or hosted OpenAI-compatible server
    base_url = "http://127.0.0.1:8080/v1"
    key_env = "MYSD_API_KEY"               # optional; without it no key is sent
    models = ["sdxl"]                      # or [{name = "sdxl", sizes = [...], max_per_call = 4}]
    sizes = ["1024x1024", "512x512"]
    max_per_call = 4
    edits = true                           # input images go to images.edit (multipart)
    max_references = 4                     # with edits: input images per call (1..16, default 1)
    mask = true                            # with edits: it takes a mask (zoom out, pan, make square)

A configured service offers exactly the models and sizes its table declares (it is not asked for a
model list). Every entry reuses ``OpenAIImages`` and its error mapping.

xAI (``XAI_API_KEY``) is built in, with its grok-imagine image models as xAI documents them; a
``[providers.xai]`` table may set ``base_url``, ``key_env``, ``model``/``models`` (pinned) and the
client settings. Sources (today 2026-12-01):

- xAI's image generation guide (docs.x.ai, model capabilities / images / generation): grok-imagine-image-pro
  is deprecated as of 2026-05-15, use grok-imagine-image-quality for new requests; ``n`` up to 10;
  ``aspect_ratio`` 1:1, 16:9/9:16, 4:3/3:4, 3:2/2:3, 2:1/1:2, 19.5:9/9:19.5, 20:9/9:20 or auto;
  ``resolution`` 1k or 2k; URLs by default, ``response_format`` ``b64_json`` for base64.
- xAI's REST reference for ``POST /v1/images/generations`` (as mirrored by API catalogues): ``size`` and
  ``style`` are "not supported"; ``quality`` low|medium|high selects a price tier on grok-imagine-image-2.0
  and is ignored by the other models (so it is sent only there); ``user`` identifies the end user for abuse
  monitoring (we send the hashed ``safety_id``).
- Editing: xAI's image guides (docs.x.ai, model capabilities / images: the overview, "Image Editing" in
  the generation guide, "Multi-Image Editing") and its REST reference for ``POST /v1/images/edits`` (as
  mirrored by API catalogues): an edit is JSON, not multipart ("The OpenAI SDK's images.edit() method is
  not supported ... the xAI API requires application/json"), with ``image: {"url": ...}`` or ``images:
  [{"url": ...}, ...]`` (mutually exclusive), each a public URL or a base64 data URI; "up to 3 source
  images"; the output follows the first image's aspect unless ``aspect_ratio`` is set; ``size`` and
  ``style`` are not supported. So the grok-imagine models take references (``max_references=3``),
  sent as data URLs (``CallStyle.json_edits``). The REST schema has a ``mask`` object, but no xAI guide
  says what its pixels mean or that the rest of the image is kept, so no xAI model declares
  ``supports_mask``: zoom out, pan and make square go to a model that documents it.
- ``GET /v1/image-generation-models`` lists the image models the key may use: ``{"models": [{"id",
  "created", "aliases", "max_prompt_length", ...}]}`` (xAI's OpenAPI document); it carries no shutdown date.
- Pixel sizes per aspect and tier (1K 1024x1024, 1408x768 ...; 2K 2048x2048, 2816x1536 ...) as published
  for grok-imagine-image (1K only) and -pro (1K and 2K, which -quality replaced). Each size is sent as
  (``aspect_ratio``, ``resolution``); xAI picks the exact pixels. grok-2-image is no longer listed by xAI.
"""

from __future__ import annotations

import asyncio
import logging
import re
from collections.abc import Mapping
from typing import TYPE_CHECKING, Any

from bot.config import parse_number
from bot.errors import ConfigError

from .base import ListedModel, ModelFamily, ModelInfo
from .openai_images import (
    CallStyle,
    OpenAIImages,
    OpenAIModels,
    family_defaults,
    make_client,
    pinned_ids,
    pinned_models,
)
from .settings import client_settings, env, table

if TYPE_CHECKING:
    from bot.config import Config

log = logging.getLogger(__name__)

#: Names whose tables configure a built-in provider rather than declare a compatible service.
BUILT_IN = {"openai", "google", "local", "xai"}

XAI_BASE_URL = "https://api.x.ai/v1"
#: (size, aspect label, resolution tier); the first of each ratio is what a bare ratio asks for.
XAI_1K = (
    ("1024x1024", "1:1"), ("1296x864", "3:2"), ("864x1296", "2:3"), ("1280x896", "4:3"), ("896x1280", "3:4"),
    ("1408x768", "16:9"), ("768x1408", "9:16"), ("1408x704", "2:1"), ("704x1408", "1:2"),
)
XAI_2K = (
    ("2048x2048", "1:1"), ("2592x1728", "3:2"), ("1728x2592", "2:3"), ("2560x1792", "4:3"), ("1792x2560", "3:4"),
    ("2816x1536", "16:9"), ("1536x2816", "9:16"),
)
XAI_RESOLUTIONS = {**{s: "1k" for s, _ in XAI_1K}, **{s: "2k" for s, _ in XAI_2K}}
#: Source images per edit ("Multi-Image Editing": up to three).
XAI_MAX_INPUTS = 3


def grok_imagine(name: str, *, two_k: bool, qualities: tuple[str, ...] = ("medium",), family: str = "") -> ModelInfo:
    sizes = XAI_1K + (XAI_2K if two_k else ())
    return ModelInfo(name=name, sizes=tuple(s for s, _ in sizes), max_per_call=10, prompt_limit=1024,
                     family=family or name, supports_reference=True, max_references=XAI_MAX_INPUTS,
                     supports_mask=False,
                     aspect_of={s: label for s, label in sizes}, qualities=qualities, formats=())


#: Preferred first: xAI recommends -quality for all new requests; 2.0 (quality tiers) next; the base model.
XAI_FAMILIES: tuple[ModelFamily, ...] = (
    ModelFamily("grok-imagine-image-quality", grok_imagine("grok-imagine-image-quality", two_k=True)),
    ModelFamily("grok-imagine-image-2", grok_imagine("grok-imagine-image-2.0", two_k=True,
                                                     qualities=("low", "medium"), family="grok-imagine-image-2")),
    ModelFamily("grok-imagine-image", grok_imagine("grok-imagine-image", two_k=False)),
)
XAI_RETIRED: dict[str, str] = {
    "grok-imagine-image-pro": "grok-imagine-image-quality",
    "grok-2-image": "grok-imagine-image-quality",
    "grok-2-image-1212": "grok-imagine-image-quality",
    "grok-2-image-latest": "grok-imagine-image-quality",
}
_XAI_CALL: dict[str, Any] = {"response_format": "b64_json", "send_size": False, "aspect": True,
                             "resolutions": XAI_RESOLUTIONS, "user_field": True, "json_edits": True}
XAI_CALLS: dict[str, CallStyle] = {
    "grok-imagine-image-quality": CallStyle(**_XAI_CALL),
    "grok-imagine-image-2": CallStyle(**_XAI_CALL, quality={"low": "low", "medium": "medium"}),
    "grok-imagine-image": CallStyle(**_XAI_CALL),
}


class XAIImages(OpenAIModels):
    """xAI's image service: its models come from ``GET /v1/image-generation-models``."""

    async def list_models(self) -> list[ListedModel]:
        try:
            answer = await self.client.get("/image-generation-models", cast_to=object)
        except asyncio.CancelledError:
            raise
        except Exception as exc:  # noqa: BLE001 - mapped at this edge
            raise self._error(exc) from None
        entries = answer.get("models") if isinstance(answer, dict) else None
        if not isinstance(entries, list):
            from bot.errors import ProviderBadResponse

            raise ProviderBadResponse(f"{self.name} sent a model list the bot could not read.", provider=self.name)
        listed: list[ListedModel] = []
        for entry in entries:
            if not isinstance(entry, dict) or not isinstance(entry.get("id"), str):
                continue
            created = entry.get("created")
            created = int(created) if isinstance(created, int | float) and not isinstance(created, bool) else 0
            listed.append(ListedModel(entry["id"], created))
            # An alias is a name a request may use for the same model.
            for alias in entry.get("aliases") or ():
                if isinstance(alias, str) and alias:
                    listed.append(ListedModel(alias, created))
        return listed


SIZE_RE = re.compile(r"^\d{2,5}x\d{2,5}$")


def _sizes(where: str, value: Any) -> tuple[str, ...]:
    if not isinstance(value, list) or not value:
        raise ConfigError(f"{where} must be a non-empty list of sizes like [\"1024x1024\"]")
    out = tuple(str(v).strip().lower() for v in value)
    bad = [s for s in out if not SIZE_RE.match(s)]
    if bad:
        raise ConfigError(f"{where}: {', '.join(bad)} is not a size like 1024x1024")
    return out


def _bool(where: str, value: Any) -> bool:
    if not isinstance(value, bool):
        raise ConfigError(f"{where} must be true or false, got {value!r}")
    return value


def _model(where: str, raw: Any, entry: Mapping[str, Any]) -> tuple[ModelInfo, CallStyle]:
    spec: Mapping[str, Any] = raw if isinstance(raw, dict) else {"name": raw}
    name = str(spec.get("name", "")).strip().lower()
    if not name:
        raise ConfigError(f"{where}: every model needs a name")

    def get(key: str, default: Any) -> Any:
        return spec.get(key, entry.get(key, default))

    fmt = get("response_format", "b64_json")
    if fmt not in ("b64_json", "url", ""):
        raise ConfigError(f"{where}.response_format must be \"b64_json\" or \"url\", got {fmt!r}")
    edits = _bool(f"{where}.edits", get("edits", False))
    references = int(parse_number(f"{where}.max_references", get("max_references", 1), 1, 16))
    mask = _bool(f"{where}.mask", get("mask", False))
    if mask and not edits:
        raise ConfigError(f"{where}: mask = true needs edits = true (masks go to the service's images.edit)")
    info = ModelInfo(
        name=name,
        sizes=_sizes(f"{where}.sizes", get("sizes", ["1024x1024"])),
        max_per_call=int(parse_number(f"{where}.max_per_call", get("max_per_call", 1), 1, 10)),
        supports_reference=edits,
        prompt_limit=int(parse_number(f"{where}.prompt_limit", get("prompt_limit", 4000), 1, 32000)),
        max_references=references if edits else 0,
        supports_mask=edits and mask,
    )
    call = CallStyle(response_format=fmt or None, send_size=_bool(f"{where}.send_size", get("send_size", True)),
                     edits=edits)
    return info, call


def _key(config: Config, name: str, key_env: str) -> str | None:
    """The key from ``key_env``; None (and the entry skipped) when it is not set."""
    key = env(config, key_env)
    if not key:
        # Only worth saying when the operator asked for this service in imagebot.toml.
        level = logging.INFO if name in config.provider_settings else logging.DEBUG
        log.log(level, "provider %s: %s is not set; skipped", name, key_env)
        return None
    return key


def _entry(config: Config, name: str, entry: Mapping[str, Any]) -> OpenAIImages | None:
    where = f"providers.{name}"
    base_url = str(entry.get("base_url") or "").strip()
    if not re.match(r"^https?://", base_url):
        raise ConfigError(f"{where}.base_url must be the service's http(s) URL (e.g. http://127.0.0.1:8080/v1); "
                          "a [providers.NAME] table other than openai/google/local/xai declares an "
                          "OpenAI-compatible service")
    key_env = str(entry.get("key_env") or "").strip()
    if key_env:
        key = _key(config, name, key_env)
        if key is None:
            return None
    else:
        key = "unused"  # a keyless local server; the SDK insists on a value
    raw_models = entry.get("models")
    if not isinstance(raw_models, list) or not raw_models:
        raise ConfigError(f"{where}.models must be a non-empty list of model names or tables")
    pairs = [_model(f"{where}.models[{i}]", raw, entry) for i, raw in enumerate(raw_models)]
    settings = client_settings(config, name)
    return OpenAIImages(
        name, make_client(key, base_url, settings), tuple(m for m, _ in pairs), {m.name: c for m, c in pairs},
        key_env=key_env or "no key", settings=settings, secrets=(key,) if key_env else (),
    )


def build_xai(config: Config) -> XAIImages | None:
    """xAI when its key (``XAI_API_KEY`` unless ``[providers.xai] key_env`` names another) is set."""
    t = table(config, "xai")
    key_env = str(t.get("key_env") or "XAI_API_KEY").strip()
    key = _key(config, "xai", key_env)
    if key is None:
        return None
    base_url = env(config, "XAI_BASE_URL") or str(t.get("base_url") or XAI_BASE_URL).strip()
    if not re.match(r"^https?://", base_url):
        raise ConfigError("providers.xai.base_url must be an http(s) URL")
    pinned = pinned_ids(config, "xai")
    models = pinned_models("xai", pinned, XAI_FAMILIES, XAI_RETIRED) if pinned else family_defaults(XAI_FAMILIES)
    settings = client_settings(config, "xai")
    return XAIImages("xai", make_client(key, base_url, settings), models, XAI_CALLS, key_env=key_env,
                     settings=settings, secrets=(key,), families=XAI_FAMILIES, pinned=pinned,
                     retired_models=XAI_RETIRED)


def build_compat(config: Config) -> list[OpenAIImages]:
    """xAI when its key is set, then every configured compatible service whose key is present."""
    built: list[OpenAIImages] = []
    xai = build_xai(config)
    if xai is not None:
        built.append(xai)
    for name, entry in config.provider_settings.items():
        if name in BUILT_IN:
            continue
        if not re.fullmatch(r"[a-z0-9_-]+", name):
            raise ConfigError(f"[providers.{name}]: provider names use a-z, 0-9, '-' and '_'")
        provider = _entry(config, name, entry)
        if provider is not None:
            built.append(provider)
    return built

"""The moderation model: OpenAI's omni-moderation checks a prompt (and its input images) before generating.

Source: the installed openai SDK, ``types/moderation_model.py`` (``omni-moderation-latest``, the
multi-modal model), ``types/moderation_create_params.py`` (``input``: text and ``image_url`` parts) and
``types/moderation.py`` (``results[].flagged``, ``categories`` named like ``sexual/minors``). The endpoint is
free; it uses the OpenAI key and base URL of the ``openai`` image provider.
"""

from __future__ import annotations

import base64
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, Protocol

from bot.config import Config
from bot.errors import ProviderUnavailable
from bot.imaging import inspect_image

from .openai_images import DEFAULT_BASE_URL, make_client
from .settings import client_settings, env, table

MODEL = "omni-moderation-latest"


@dataclass(frozen=True)
class Verdict:
    flagged: bool
    #: The categories flagged, as the vendor names them ("violence/graphic", "sexual").
    categories: tuple[str, ...] = ()


class Moderator(Protocol):
    async def check(self, text: str, images: Sequence[bytes] = ()) -> Verdict: ...

    async def aclose(self) -> None: ...


class OpenAIModerator:
    def __init__(self, client: Any, model: str = MODEL) -> None:
        self.client = client
        self.model = model

    def __repr__(self) -> str:  # never the client (it holds the key)
        return f"OpenAIModerator({self.model})"

    async def check(self, text: str, images: Sequence[bytes] = ()) -> Verdict:
        parts: list[dict[str, Any]] = [{"type": "text", "text": text}]
        for data in images:
            mime = inspect_image(data)[0]
            url = f"data:{mime};base64,{base64.b64encode(data).decode()}"
            parts.append({"type": "image_url", "image_url": {"url": url}})
        try:
            answer = await self.client.moderations.create(model=self.model, input=parts)
        except Exception as exc:  # noqa: BLE001 - any SDK or network failure: unavailable, without its text
            raise ProviderUnavailable(f"The moderation model could not be asked ({type(exc).__name__}).",
                                      code="IMG-MOD-UNAVAILABLE") from None
        flagged: list[str] = []
        for result in answer.results or ():
            if not result.flagged:
                continue
            categories = result.categories.model_dump(by_alias=True)
            flagged += [name for name, on in categories.items() if on and name not in flagged]
        return Verdict(bool(flagged) or any(r.flagged for r in answer.results or ()), tuple(flagged))

    async def aclose(self) -> None:
        await self.client.close()


def build_moderator(config: Config) -> Moderator | None:
    """The moderator when an OpenAI key is set (moderation is then available to servers); None otherwise."""
    key = env(config, "OPENAI_API_KEY")
    if not key:
        return None
    base_url = env(config, "OPENAI_BASE_URL") or str(table(config, "openai").get("base_url") or DEFAULT_BASE_URL)
    return OpenAIModerator(make_client(key, base_url, client_settings(config, "openai")))

"""Bounded image downloads: provider result URLs (dall-e-3, xAI) and reference images from chat.

A download is capped in bytes and in seconds, and what arrives must decode as an image
(``bot.imaging.inspect_image``: Pillow, decompression-bomb safe) before anyone keeps it. A vendor URL
expires within the hour, so images are fetched at once and stored by content hash by the core.
"""

from __future__ import annotations

import asyncio
import logging
from dataclasses import dataclass

import aiohttp
from yarl import URL

from bot.errors import (
    ProviderBadResponse,
    ProviderError,
    ProviderTimeout,
    ProviderUnavailable,
    ValidationError,
)
from bot.imaging import inspect_image

log = logging.getLogger(__name__)

#: Defaults: generous for a 4 MP PNG, small enough that a hostile URL cannot fill memory or stall a job.
MAX_BYTES = 20 * 1024 * 1024
TIMEOUT = 30.0
CHUNK = 64 * 1024


@dataclass(frozen=True)
class Downloaded:
    data: bytes
    mime: str
    width: int
    height: int


class TooLarge(ProviderBadResponse):
    """The body is above the byte cap (by Content-Length or by what arrived)."""


def _host(url: str) -> str:
    """Only the host goes into logs and messages: a signed URL's query string is a credential."""
    try:
        return URL(url).host or "?"
    except ValueError:
        return "?"


async def download_image(
    url: str,
    *,
    session: aiohttp.ClientSession | None = None,
    max_bytes: int = MAX_BYTES,
    timeout: float = TIMEOUT,
    provider: str = "",
    headers: dict[str, str] | None = None,
) -> Downloaded:
    """Fetch ``url`` and return the image, or raise a ``ProviderError`` subclass.

    ``ProviderTimeout`` past ``timeout`` seconds in total, ``ProviderUnavailable`` for connection
    failures and non-2xx answers, ``ProviderBadResponse`` (``TooLarge``) above ``max_bytes`` or when the
    bytes are not an image.
    """
    parsed = URL(url) if url else URL()
    if parsed.scheme not in ("http", "https") or not parsed.host:
        raise ProviderBadResponse("The image link is not an http(s) URL.", provider=provider)
    owned = session is None
    client = session or aiohttp.ClientSession()
    try:
        async with asyncio.timeout(timeout):
            data = await _read_capped(client, url, max_bytes, provider, headers)
    except TimeoutError:
        log.warning("download from %s took longer than %.1fs", _host(url), timeout)
        raise ProviderTimeout(f"Downloading the image took longer than {timeout:g} s.", provider=provider) from None
    except aiohttp.ClientError as exc:
        log.warning("download from %s failed: %s", _host(url), type(exc).__name__)
        raise ProviderUnavailable("The image could not be downloaded.", provider=provider) from None
    finally:
        if owned:
            await client.close()
    try:
        mime, width, height = await asyncio.to_thread(inspect_image, data)
    except ProviderBadResponse as exc:
        raise ProviderBadResponse(f"The downloaded file is not a usable image: {exc.message}",
                                  provider=provider) from None
    return Downloaded(data, mime, width, height)


async def _read_capped(
    client: aiohttp.ClientSession, url: str, max_bytes: int, provider: str, headers: dict[str, str] | None
) -> bytes:
    async with client.get(url, allow_redirects=True, max_redirects=3, headers=headers) as resp:
        if resp.status >= 400:
            log.warning("download from %s answered HTTP %d", _host(url), resp.status)
            raise ProviderUnavailable(f"The image link answered HTTP {resp.status}.", provider=provider)
        if resp.content_length is not None and resp.content_length > max_bytes:
            raise TooLarge(_too_large(max_bytes), provider=provider)
        buf = bytearray()
        async for chunk in resp.content.iter_chunked(CHUNK):
            buf += chunk
            if len(buf) > max_bytes:
                raise TooLarge(_too_large(max_bytes), provider=provider)
        return bytes(buf)


def _too_large(max_bytes: int) -> str:
    return f"The image is larger than the {max_bytes / (1024 * 1024):g} MB limit."


async def fetch_reference(
    url: str,
    *,
    session: aiohttp.ClientSession | None = None,
    max_bytes: int = MAX_BYTES,
    timeout: float = TIMEOUT,
    headers: dict[str, str] | None = None,
) -> bytes:
    """A reference image a user attached in chat: failures are the user's to fix, so ``ValidationError``.

    ``headers`` (e.g. Slack's bearer token for private file URLs) are sent only on this request and never
    logged.
    """
    try:
        got = await download_image(url, session=session, max_bytes=max_bytes, timeout=timeout, headers=headers)
    except ProviderError as exc:
        raise ValidationError(f"The reference image could not be used: {exc.message}",
                              code="IMG-VALID-REFERENCE") from None
    return got.data

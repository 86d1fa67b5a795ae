"""Input images named by URL (chat attachments), fetched when their job runs, by whichever worker runs it.

The adapter acknowledges the command after its job row exists and before any download, so a slow CDN can
never cost the platform's 3-second acknowledgement, and a process killed mid-download leaves a job another
worker fetches again. Bounded in size and in time; decoded (checked to be an image) by the core's plan.
"""

from __future__ import annotations

import asyncio
from collections.abc import Sequence

import aiohttp

from .errors import ValidationError

#: Larger inputs are refused (providers take far less).
REFERENCE_LIMIT = 20 * 1024 * 1024
#: Seconds one download may take.
REFERENCE_TIMEOUT = 30.0


def _unreadable() -> ValidationError:
    return ValidationError("A reference image could not be downloaded; attach it again. Nothing was charged.",
                           code="IMG-VALID-REFERENCE")


async def fetch_reference(session: aiohttp.ClientSession, url: str) -> bytes:
    if not url.startswith(("https://", "http://")):
        raise _unreadable()
    try:
        async with asyncio.timeout(REFERENCE_TIMEOUT), session.get(url) as response:
            if response.status != 200:
                raise _unreadable()
            if (response.content_length or 0) > REFERENCE_LIMIT:
                raise _too_big()
            data = await response.content.read(REFERENCE_LIMIT + 1)
    except (aiohttp.ClientError, TimeoutError):
        raise _unreadable() from None
    if len(data) > REFERENCE_LIMIT:
        raise _too_big()
    return data


def _too_big() -> ValidationError:
    return ValidationError(f"A reference image is over {REFERENCE_LIMIT // (1024 * 1024)} MiB; attach a smaller one.",
                           code="IMG-VALID-REFERENCE")


async def fetch_references(session: aiohttp.ClientSession, urls: Sequence[str]) -> list[bytes]:
    """All of them, in order (concurrently): one that fails refuses the job, which is then refunded."""
    return list(await asyncio.gather(*(fetch_reference(session, u) for u in urls)))

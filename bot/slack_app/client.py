"""The Slack Web API client, built the same way for the adapter and for the courier (a worker that only
delivers has the bot token and no signing secret or app token)."""

from __future__ import annotations

import logging

import aiohttp
from slack_sdk.http_retry.builtin_async_handlers import (
    AsyncConnectionErrorRetryHandler,
    AsyncRateLimitErrorRetryHandler,
)
from slack_sdk.web.async_client import AsyncWebClient


def web_client(token: str, api_url: str, session: aiohttp.ClientSession | None = None, *,
               logger: logging.Logger | None = None) -> AsyncWebClient:
    """One Web API client for every call; ``ratelimited`` answers wait for Retry-After, then retry.
    ``logger``: where the SDK logs its retries (Socket Mode's own client logs through ``OutageLog``)."""
    return AsyncWebClient(
        token=token, base_url=api_url, session=session, timeout=30, logger=logger,
        retry_handlers=[AsyncConnectionErrorRetryHandler(max_retry_count=1),
                        AsyncRateLimitErrorRetryHandler(max_retry_count=3)],
    )

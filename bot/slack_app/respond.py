"""Ephemeral replies to one user through a Slack payload's ``response_url``."""

from __future__ import annotations

import logging
from typing import Any

import aiohttp
from slack_sdk.http_retry.builtin_async_handlers import (
    AsyncConnectionErrorRetryHandler,
    AsyncRateLimitErrorRetryHandler,
)
from slack_sdk.webhook.async_client import AsyncWebhookClient

log = logging.getLogger(__name__)


class Tell:
    """Ephemeral replies to one user through the payload's ``response_url``; never raises.

    Uses the bot's shared HTTP session (Bolt's ``respond`` opens a new one per message)."""

    def __init__(self, session: aiohttp.ClientSession, response_url: str | None) -> None:
        self._session = session
        self._url = response_url
        self._hook: AsyncWebhookClient | None = None

    async def __call__(self, text: str, blocks: list[dict[str, Any]] | None = None, *, replace: bool = False,
                       delete: bool = False) -> bool:
        """Post an ephemeral reply; with ``replace``, update the message this response_url belongs to
        instead (a slash command's own ephemeral answer: its progress message); with ``delete``, remove that
        message (an ephemeral one, which ``chat.delete`` cannot reach). False when Slack did not take it
        (expired, used up, unreachable): a courier then tries the next way."""
        if not self._url:
            log.warning("a Slack payload had no response_url; an ephemeral reply was dropped")
            return False
        if self._hook is None:  # built on first use: most acks never need it
            self._hook = AsyncWebhookClient(
                self._url, session=self._session, timeout=10,
                retry_handlers=[AsyncConnectionErrorRetryHandler(max_retry_count=1),
                                AsyncRateLimitErrorRetryHandler(max_retry_count=2)],
            )
        try:
            if delete:
                response = await self._hook.send(delete_original=True)
            else:
                response = await self._hook.send(text=text, blocks=blocks, response_type="ephemeral",
                                                 replace_original=replace)
            if response.status_code >= 300:
                log.warning("Slack refused an ephemeral reply (HTTP %s)", response.status_code)
                return False
        except Exception as exc:  # noqa: BLE001 - an expired response_url must not break the job
            log.warning("could not send an ephemeral reply: %s", type(exc).__name__)
            return False
        return True

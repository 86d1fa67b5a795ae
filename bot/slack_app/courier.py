"""Slack delivery from any process (``bot.couriers.Courier``): a worker that did not take the command posts
its outcome with the bot token alone, from the job's address (``team_id``, ``channel_id``, ``user_id``,
``response_url``, ``thread_ts``).

Images go where the in-process path puts them, with the same blocks and action ids (``delivery.post_result``),
so any process handles their buttons: the channel (or thread), else the asker's DM when the channel refused
the bot. Private notes (and /enhance answers) go through the response_url while it lives, else
``chat.postEphemeral`` in the channel, else a DM.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Mapping
from typing import Any

import aiohttp
from slack_sdk.web.async_client import AsyncWebClient

from bot.config import Config
from bot.couriers import Posted, Undeliverable
from bot.models import DescribeResult, EnhanceResult, ImagineResult

from .apierrors import CHANNEL_ERRORS, error_code, report
from .client import web_client
from .delivery import SLACK_FAILURES, describe_message, dm_note, enhance_message, post_result
from .respond import Tell
from .settings import api_url_of, bot_token_of

log = logging.getLogger(__name__)

Blocks = list[dict[str, Any]] | None


class SlackCourier:
    """Delivers by address with the bot token; one HTTP session for the Web API and response_urls."""

    platform = "slack"

    def __init__(self, token: str, api_url: str, *, client: AsyncWebClient | None = None) -> None:
        self._token = token
        self._api_url = api_url
        self._client = client
        self._session: aiohttp.ClientSession | None = None

    @classmethod
    def from_config(cls, config: Config) -> SlackCourier:
        """SLACK_BOT_TOKEN (and SLACK_API_URL): a worker needs neither a signing secret nor an app token."""
        return cls(bot_token_of(config.env), api_url_of(config.env))

    def _http(self) -> aiohttp.ClientSession:
        if self._session is None or self._session.closed:  # made on first use, inside the running loop
            self._session = aiohttp.ClientSession()
        return self._session

    @property
    def client(self) -> AsyncWebClient:
        if self._client is None:
            self._client = web_client(self._token, self._api_url, self._http())
        return self._client

    # -- Courier -----------------------------------------------------------------------------------------

    async def deliver(self, address: Mapping[str, Any], deliver_by: float,
                      result: ImagineResult | EnhanceResult | DescribeResult, *, posted: Posted | None = None,
                      ) -> None:
        """Images: the channel, else the DM. /enhance: privately, like ``tell``. Undeliverable when all refused."""
        if isinstance(result, EnhanceResult | DescribeResult):
            text, blocks = enhance_message(result) if isinstance(result, EnhanceResult) else describe_message(result)
            if not await self._note(address, deliver_by, text, blocks):
                raise Undeliverable("no way to reach the asker on Slack took the enhanced prompt")
            return
        await self._images(address, deliver_by, result, posted)

    async def tell(self, address: Mapping[str, Any], deliver_by: float, text: str) -> bool:
        try:
            return await self._note(address, deliver_by, text, None)
        except Exception:  # noqa: BLE001 - a note must never fail the worker
            log.exception("telling a Slack user failed")
            return False

    async def aclose(self) -> None:
        if self._session is not None:
            await self._session.close()
            self._session = None

    # -- images ------------------------------------------------------------------------------------------

    async def _images(self, address: Mapping[str, Any], deliver_by: float, result: ImagineResult,
                      posted: Posted | None) -> None:
        user = str(address.get("user_id") or "")
        # A server whose results are private (``/settings visibility private``): the asker's DM only.
        channel = "" if address.get("private") else str(address.get("channel_id") or "")
        thread = str(address.get("thread_ts") or "") or None
        failure: BaseException | None = None
        if channel:
            try:
                await post_result(self.client, result, user, channel, thread, posted)
                return
            except SLACK_FAILURES as exc:
                failure = exc
                if error_code(exc) not in CHANNEL_ERRORS:  # a revoked token fails the DM the same way
                    raise Undeliverable(f"Slack refused the images ({error_code(exc)})") from None
        if not user:
            raise Undeliverable("the job's Slack address names no channel the bot may post in and no user")
        code = error_code(failure) if failure is not None else "no_channel"
        log.info("cannot post in %s (%s); delivering generation %s by DM", channel or "(none)", code,
                 result.generation_id)
        if failure is not None:
            await self.tell(address, deliver_by, dm_note(code))
        try:
            await post_result(self.client, result, user, await self._dm(user), None, posted)
        except SLACK_FAILURES as exc:
            report(exc, "files.upload")
            raise Undeliverable(f"Slack refused the images in the channel and by DM ({error_code(exc)})") from None

    async def _dm(self, user: str) -> str:
        opened = await self.client.conversations_open(users=user)
        return str(opened["channel"]["id"])

    # -- private notes -----------------------------------------------------------------------------------

    async def _note(self, address: Mapping[str, Any], deliver_by: float, text: str, blocks: Blocks) -> bool:
        """The response_url while it lives (ephemeral), else chat.postEphemeral, else a DM; False if none took it."""
        url = str(address.get("response_url") or "")
        if url and time.time() < deliver_by and await Tell(self._http(), url)(text, blocks):
            return True
        user = str(address.get("user_id") or "")
        channel = str(address.get("channel_id") or "")
        thread = str(address.get("thread_ts") or "") or None
        if not user:
            return False
        if channel:
            try:
                await self.client.chat_postEphemeral(channel=channel, user=user, text=text, blocks=blocks,
                                                     thread_ts=thread)
                return True
            except SLACK_FAILURES as exc:
                log.info("Slack refused an ephemeral note in %s: %s", channel, error_code(exc))
        try:
            await self.client.chat_postMessage(channel=await self._dm(user), text=text, blocks=blocks)
            return True
        except SLACK_FAILURES as exc:
            report(exc, "chat.postMessage")
            return False

"""The Bolt ``AsyncApp``: listeners that acknowledge at once and hand the slow work to tracked tasks.

Each listener is a translation: Slack payload -> ``Context`` and a core call; core result -> Slack calls.
The work runs after ``ack()`` in a task this object owns, so shutdown can wait for it to finish.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Coroutine
from typing import Any

import aiohttp
from slack_bolt.async_app import AsyncApp
from slack_sdk.http_retry.builtin_async_handlers import (
    AsyncConnectionErrorRetryHandler,
    AsyncRateLimitErrorRetryHandler,
)
from slack_sdk.web.async_client import AsyncWebClient
from slack_sdk.webhook.async_client import AsyncWebhookClient

from bot.core import Imagebot
from bot.errors import ImagebotError
from bot.models import Context, Identity
from bot.replies import error_text

from . import actions, commands
from .apierrors import report
from .blocks import ENHANCE, IMAGINE_THIS, REROLL, VARIATIONS_RE
from .delivery import SLACK_FAILURES
from .pacing import AckFirst
from .settings import SlackSettings
from .text import escape

log = logging.getLogger(__name__)

AUTHORIZE_ERROR = ("The imagebot app's Slack token was refused. The operator needs to update SLACK_BOT_TOKEN "
                   "or reinstall the app.")


def make_client(settings: SlackSettings, session: aiohttp.ClientSession | None = None) -> AsyncWebClient:
    """One Web API client for every call; ``ratelimited`` answers wait for Retry-After, then retry."""
    return AsyncWebClient(
        token=settings.bot_token, base_url=settings.api_url, session=session, timeout=30,
        retry_handlers=[AsyncConnectionErrorRetryHandler(max_retry_count=1),
                        AsyncRateLimitErrorRetryHandler(max_retry_count=3)],
    )


class Tell:
    """Ephemeral replies to one user through the payload's ``response_url``; never raises.

    Uses the bot's shared HTTP session (Bolt's ``respond`` opens a new one per message)."""

    def __init__(self, session: aiohttp.ClientSession, response_url: str | None) -> None:
        self._session = session
        self._url = response_url
        self._hook: AsyncWebhookClient | None = None

    async def __call__(self, text: str, blocks: list[dict[str, Any]] | None = None, *, replace: bool = False) -> None:
        """Post an ephemeral reply; with ``replace``, update the message this response_url belongs to
        instead (a slash command's own ephemeral answer: its progress message)."""
        if not self._url:
            log.warning("a Slack payload had no response_url; an ephemeral reply was dropped")
            return
        if self._hook is None:  # built on first use: most acks never need it
            self._hook = AsyncWebhookClient(
                self._url, session=self._session, timeout=10,
                retry_handlers=[AsyncConnectionErrorRetryHandler(max_retry_count=1),
                                AsyncRateLimitErrorRetryHandler(max_retry_count=2)],
            )
        try:
            response = await self._hook.send(text=text, blocks=blocks, response_type="ephemeral",
                                             replace_original=replace)
            if response.status_code >= 300:
                log.warning("Slack refused an ephemeral reply (HTTP %s)", response.status_code)
        except Exception as exc:  # noqa: BLE001 - an expired response_url must not break the job
            log.warning("could not send an ephemeral reply: %s", type(exc).__name__)


class SlackBot:
    """Owns the Bolt app, the Web API client and the background jobs of one Slack connection."""

    def __init__(self, core: Imagebot, settings: SlackSettings, *, client: AsyncWebClient | None = None) -> None:
        self.core = core
        self.settings = settings
        self._session = aiohttp.ClientSession()
        self.client = client or make_client(settings, self._session)
        self.app = AsyncApp(
            name="imagebot", client=self.client, signing_secret=settings.signing_secret,
            # Listeners only validate, ack and spawn a job, so Bolt may answer as soon as they return
            # (no polling for the ack); the slow work is in our own tasks.
            process_before_response=True,
            user_facing_authorize_error_message=AUTHORIZE_ERROR, logger=logging.getLogger("imagebot.slack.bolt"),
        )
        self._tasks: set[asyncio.Task[None]] = set()
        #: HTTP mode counts requests in flight here, so jobs let pending acks go first.
        self.pacing = AckFirst()
        self._register()

    # -- identities ------------------------------------------------------------------------------

    def context(self, team_id: str, user_id: str, channel_id: str, name: str = "") -> Context:
        return Context(Identity("slack", team_id, user_id), channel_id=channel_id, display_name=name)

    # -- background jobs -------------------------------------------------------------------------

    def spawn(self, work: Coroutine[Any, Any, None], tell: Tell, what: str) -> None:
        """Run ``work`` after the ack; any failure is told to the user, never raised into Bolt."""
        task = asyncio.create_task(self._guard(self._after_acks(work), tell, what), name=f"slack-{what}")
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def _after_acks(self, work: Awaitable[None]) -> None:
        await self.pacing.wait()
        await work

    @staticmethod
    async def _guard(work: Awaitable[None], tell: Tell, what: str) -> None:
        try:
            await work
        except ImagebotError as exc:
            await tell(escape(error_text(exc)))
        except SLACK_FAILURES as exc:
            await tell(report(exc, what))
        except Exception:  # noqa: BLE001 - the user must hear something; the log gets the trace
            log.exception("Slack %s failed", what)
            await tell("Something went wrong (IMG-INTERNAL-001).")

    @property
    def busy(self) -> int:
        return len(self._tasks)

    async def drain(self, timeout: float = 30.0) -> None:
        """Wait for running jobs (so credits settle and images arrive); cancel what is left after ``timeout``."""
        if not self._tasks:
            return
        done, pending = await asyncio.wait(set(self._tasks), timeout=timeout)
        for task in pending:
            task.cancel()
        if pending:
            log.warning("cancelled %d Slack job(s) still running at shutdown", len(pending))
            await asyncio.gather(*pending, return_exceptions=True)

    async def close(self, timeout: float = 30.0) -> None:
        await self.drain(timeout)
        await self._session.close()

    def tell(self, body: dict[str, Any]) -> Tell:
        return Tell(self._session, body.get("response_url"))

    # -- listeners -------------------------------------------------------------------------------

    def _register(self) -> None:
        app = self.app

        @app.command("/imagine")
        async def on_imagine(ack: Any, body: dict[str, Any]) -> None:
            await commands.imagine(self, ack, body, self.tell(body))

        @app.command("/enhance")
        async def on_enhance(ack: Any, body: dict[str, Any]) -> None:
            await commands.enhance(self, ack, body, self.tell(body))

        @app.command("/credits")
        async def on_credits(ack: Any, body: dict[str, Any]) -> None:
            await commands.credits(self, ack, body, self.tell(body))

        @app.action(REROLL)
        async def on_reroll(ack: Any, body: dict[str, Any], action: dict[str, Any]) -> None:
            await actions.reroll(self, ack, body, action, self.tell(body))

        @app.action(VARIATIONS_RE)
        async def on_variations(ack: Any, body: dict[str, Any], action: dict[str, Any]) -> None:
            await actions.variations(self, ack, body, action, self.tell(body))

        @app.action(ENHANCE)
        async def on_enhance_button(ack: Any, body: dict[str, Any], action: dict[str, Any]) -> None:
            await actions.enhance(self, ack, body, action, self.tell(body))

        @app.action(IMAGINE_THIS)
        async def on_imagine_this(ack: Any, body: dict[str, Any], action: dict[str, Any]) -> None:
            await actions.imagine_this(self, ack, body, action, self.tell(body))

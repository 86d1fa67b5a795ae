"""The Slack service object: the Bolt ``AsyncApp``, the Web API client, the HTTP session and the job runner.

It knows no listener: ``commands.register`` and ``actions.register`` attach theirs to ``bot.app`` (as
bolt-python's listeners register on the app), so nothing here imports them and no module imports back.
Each listener is a translation: Slack payload -> ``Context`` and a ``Job`` for the shared runner
(``bot.jobs``), which runs it after the ack in a task it tracks, so shutdown can drain it.
"""

from __future__ import annotations

import logging
import re
import time
from typing import Any

import aiohttp
from slack_bolt.async_app import AsyncApp
from slack_sdk.web.async_client import AsyncWebClient

from bot.core import Imagebot
from bot.jobs import DEFAULT_GRACE, Job, JobRunner
from bot.models import Context, Identity
from bot.replies import restarting_text

from .client import web_client
from .respond import Tell
from .settings import SlackSettings

log = logging.getLogger(__name__)

#: Seconds a Slack response_url takes messages (and at most 5 of them).
RESPONSE_URL_LIFE = 30 * 60.0
#: Seconds before that a worker stops counting on it (the clock of another machine, a slow call).
DELIVER_MARGIN = 60.0

#: Slack's workspace (T...) or Enterprise Grid org (E...) ids, and user ids (U... or W...).
TEAM_ID_RE = re.compile(r"[TE][A-Z0-9]{2,40}")
SLACK_USER_RE = re.compile(r"[UW][A-Z0-9]{2,40}")
NO_IDENTITY = ("Slack sent this without a valid user or workspace id, so nothing was run and nothing was "
               "charged. Try again; if it keeps happening, tell the bot's operator. (IMG-SLACK-IDENTITY)")

AUTHORIZE_ERROR = ("The imagebot app's Slack token was refused. The operator needs to update SLACK_BOT_TOKEN "
                   "or reinstall the app.")


def field(obj: object, key: str) -> Any:
    """``obj[key]`` when ``obj`` is a JSON object, else None: a payload's parts may be missing or mistyped."""
    return obj.get(key) if isinstance(obj, dict) else None


def text_field(obj: object, key: str) -> str:
    """A payload's string field, or "" when it is missing or not a string."""
    value = field(obj, key)
    return value if isinstance(value, str) else ""


def identified(team_id: object, user_id: object) -> bool:
    """Both ids present and shaped as Slack's: without them the request would run (and be charged) on an
    account nobody owns, so the listener refuses it (``NO_IDENTITY``)."""
    return (isinstance(team_id, str) and TEAM_ID_RE.fullmatch(team_id) is not None
            and isinstance(user_id, str) and SLACK_USER_RE.fullmatch(user_id) is not None)


def make_client(settings: SlackSettings, session: aiohttp.ClientSession | None = None) -> AsyncWebClient:
    """One Web API client for every call; ``ratelimited`` answers wait for Retry-After, then retry."""
    return web_client(settings.bot_token, settings.api_url, session)


class SlackBot:
    """Owns the Bolt app, the Web API client and the job runner of one Slack connection."""

    def __init__(self, core: Imagebot, settings: SlackSettings, *, client: AsyncWebClient | None = None,
                 grace: float = DEFAULT_GRACE) -> None:
        self.core = core
        self.settings = settings
        self._session = aiohttp.ClientSession()
        self.client = client or make_client(settings, self._session)
        bolt_log = logging.getLogger("imagebot.slack.bolt")
        if not any(isinstance(f, _TokenFromEnvironment) for f in bolt_log.filters):
            bolt_log.addFilter(_TokenFromEnvironment())
        self.app = AsyncApp(
            name="imagebot", client=self.client, signing_secret=settings.signing_secret,
            # Listeners only validate, ack and start a job, so Bolt may answer as soon as they return
            # (no polling for the ack); the slow work is in the runner's tasks.
            process_before_response=True,
            user_facing_authorize_error_message=AUTHORIZE_ERROR, logger=bolt_log,
        )
        #: HTTP mode counts requests in flight in ``jobs.acks``, so jobs let pending acks go first.
        self.jobs = JobRunner(core, grace=grace)

    def context(self, team_id: str, user_id: str, channel_id: str, name: str = "", *,
                response_url: str = "", thread_ts: str = "") -> Context:
        """The asker, with the address any worker delivers to (``bot.couriers``) if this process dies, and
        until when the response_url lives (Slack: 30 minutes; a minute's margin)."""
        address = {"platform": "slack", "team_id": team_id, "channel_id": channel_id, "user_id": user_id,
                   "response_url": response_url, "thread_ts": thread_ts}
        return Context(Identity("slack", team_id, user_id), channel_id=channel_id, display_name=name,
                       address=address, deliver_by=time.time() + RESPONSE_URL_LIFE - DELIVER_MARGIN)

    @property
    def queues(self) -> bool:
        """Role ingress: commands become jobs for the workers (``core.enqueue``), none run here."""
        return self.core.config.role == "ingress"

    def tell(self, body: dict[str, Any]) -> Tell:
        return Tell(self._session, text_field(body, "response_url") or None)

    def tell_url(self, response_url: str) -> Tell:
        """Replies through a response_url carried some other way (a modal's metadata: a submission has none)."""
        return Tell(self._session, response_url or None)

    async def start(self, job: Job[Any], tell: Tell) -> None:
        """Hand a job to the runner after the ack; while shutting down, say so instead."""
        if self.jobs.start(job) is None:
            await tell(restarting_text())

    @property
    def busy(self) -> int:
        return self.jobs.busy

    async def close(self, timeout: float | None = None) -> None:
        """Drain: jobs in flight finish (credits settle, images arrive), the rest are cancelled after
        ``timeout`` (and refunded); then the HTTP session closes."""
        try:
            await self.jobs.close(timeout)
        finally:
            await self._session.close()


class _TokenFromEnvironment(logging.Filter):
    """Bolt reads SLACK_BOT_TOKEN itself and warns, at every start, that the client we hand it wins over
    it: the client carries that very token, so the warning only alarms operators."""

    def filter(self, record: logging.LogRecord) -> bool:
        return "`token` will be unused" not in record.getMessage()

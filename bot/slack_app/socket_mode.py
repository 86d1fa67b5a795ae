"""Socket Mode: the bot dials out to Slack over a websocket, so it needs no public URL.

Slack sends each command and button press as an envelope; Bolt acknowledges it on the same socket.

While Slack cannot be reached, the SDK's client retries every ``ping_interval`` seconds and logs each
failure with its full traceback (about 70 lines every 11 s). ``OutageLog`` turns that into one warning
line when the outage starts and one when the bot is connected again; the retries in between are silent.
"""

from __future__ import annotations

import logging
import re
import time

import aiohttp
from slack_bolt.adapter.socket_mode.async_handler import AsyncSocketModeHandler
from slack_bolt.async_app import AsyncApp
from slack_sdk.errors import SlackApiError

from .client import web_client

log = logging.getLogger(__name__)

#: The SDK's socket client and its own Web API client (``apps.connections.open``) log here.
SOCKET_LOGGER = "imagebot.slack.socket"
#: Seconds between two connection attempts while Slack is unreachable (and between pings).
PING_INTERVAL = 10.0

#: What the SDK logs when the connection is lost or cannot be made (logged, as is, only outside an outage).
_FAILURE = re.compile(
    r"Failed to connect|Failed to retrieve WSS URL|Failed to send a ping|seems to be stale|seems to be already "
    r"closed|Failed to check the current session|Failed to receive or enqueue"
)
#: The Web API client's note before its one retry of ``apps.connections.open``: the failure after it is told.
_RETRYING = re.compile(r"A retry handler found")
_RECOVERED = re.compile(r"A new session .* has been established")
_URL = re.compile(r"\w+://\S+")


def _reason(record: logging.LogRecord) -> str:
    """Why, in a few words, without URLs (a websocket URL carries a connection ticket)."""
    exc = record.exc_info[1] if record.exc_info else None
    if isinstance(exc, aiohttp.ClientConnectorError):
        return f"cannot connect to {exc.host}:{exc.port}"
    if isinstance(exc, SlackApiError):
        return f"Slack answered {exc.response.get('error') or exc.response.status_code}"
    if isinstance(exc, TimeoutError | aiohttp.ServerTimeoutError):
        return "timed out"
    if exc is not None:
        return type(exc).__name__
    return "the connection was lost"


class OutageLog(logging.Filter):
    """One warning when Slack stops answering, one when a session is established again; nothing between.

    A filter on the socket client's logger: records are reworded in place (no traceback) or dropped."""

    def __init__(self, interval: float = PING_INTERVAL) -> None:
        super().__init__()
        self.interval = interval
        self.down_since: float | None = None
        self.connected_once = False

    def filter(self, record: logging.LogRecord) -> bool:
        message = record.getMessage()
        if _RECOVERED.search(message):
            return self._recovered(record)
        if _RETRYING.search(message):
            return record.levelno < logging.INFO
        if not _FAILURE.search(message):
            return self.down_since is None or record.levelno < logging.INFO  # quiet while down
        if self.down_since is not None:
            return False
        self.down_since = time.monotonic()
        self._reword(record, logging.WARNING,
                     f"Slack Socket Mode: {'lost the connection' if self.connected_once else 'cannot connect'} "
                     f"({_URL.sub('<url>', _reason(record))}); retrying every {self.interval:g} s until Slack "
                     "answers. Commands sent meanwhile are not received.")
        return True

    def _recovered(self, record: logging.LogRecord) -> bool:
        again = "again " if self.connected_once else ""
        self.connected_once = True
        if self.down_since is None:
            return True
        down = time.monotonic() - self.down_since
        self.down_since = None
        self._reword(record, logging.WARNING, f"Slack Socket Mode: connected {again}after {down:.0f} s without Slack.")
        return True

    @staticmethod
    def _reword(record: logging.LogRecord, level: int, text: str) -> None:
        record.msg, record.args = text, None
        record.exc_info, record.exc_text, record.stack_info = None, None, None
        record.levelno, record.levelname = level, logging.getLevelName(level)


def outage_logger(interval: float = PING_INTERVAL) -> logging.Logger:
    """The socket client's logger with a fresh ``OutageLog`` (one handler per process; a new one replaces
    the filter of the one before)."""
    logger = logging.getLogger(SOCKET_LOGGER)
    for old in [f for f in logger.filters if isinstance(f, OutageLog)]:
        logger.removeFilter(old)
    logger.addFilter(OutageLog(interval))
    return logger


def socket_handler(app: AsyncApp, app_token: str, *, ping_interval: float = PING_INTERVAL) -> AsyncSocketModeHandler:
    """``await handler.connect_async()`` to connect (it reconnects by itself); ``close_async()`` to stop.

    The socket asks for its websocket URL through a Web API client of its own, logging to the same
    filtered logger, so the connection retries of an outage stay out of the log too."""
    logger = outage_logger(ping_interval)
    client = app.client
    opener = web_client(client.token or "", client.base_url, logger=logger)
    return AsyncSocketModeHandler(app, app_token=app_token, web_client=opener, logger=logger,
                                  ping_interval=ping_interval)

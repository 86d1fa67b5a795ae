"""The Slack adapter: /imagine, /enhance and /credits for a workspace, through the shared core.

``run_slack`` reads the tokens from the config, checks them with ``auth.test``, then serves in Socket
Mode (``SLACK_APP_TOKEN`` set) or HTTP mode (``SLACK_SIGNING_SECRET``, port ``IMAGEBOT_HTTP_PORT``, or
``/slack/events`` on the process's shared ``bot.web`` server).

Role "all": commands and buttons run here (``bot.jobs``), stored as jobs with their address, so another
worker resumes them if this process dies. Role "ingress": they are acked and queued (``core.enqueue``); a
worker delivers them through ``courier.SlackCourier``.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Coroutine
from typing import Any

from bot.config import Config
from bot.core import Imagebot
from bot.errors import ConfigError
from bot.jobs import DEFAULT_GRACE
from bot.web import WebServer

from . import actions, commands
from .apierrors import AUTH_ERRORS, AUTH_FIX, error_code, report
from .app import SlackBot
from .http_mode import EVENTS_PATH, LateEvents, serve_http
from .settings import SlackSettings
from .socket_mode import socket_handler

log = logging.getLogger(__name__)

__all__ = ["SlackBot", "SlackSettings", "build_bot", "run_slack"]

APP_TOKEN_FIX = ("SLACK_APP_TOKEN was refused by Slack ({code}). Under the app's Basic Information > App-Level "
                 "Tokens, generate a token with the connections:write scope, set SLACK_APP_TOKEN (xapp-...) and "
                 "restart; or unset it to use HTTP mode.")


def build_bot(core: Imagebot, settings: SlackSettings, *, grace: float = DEFAULT_GRACE) -> SlackBot:
    """The service object with every listener registered on it (commands, then buttons)."""
    bot = SlackBot(core, settings, grace=grace)
    commands.register(bot)
    actions.register(bot)
    return bot


async def check_token(bot: SlackBot) -> None:
    """Fail at start, with the fix, when Slack refuses the bot token; warn and go on if Slack is unreachable."""
    try:
        who = await bot.client.auth_test()
    except Exception as exc:  # noqa: BLE001 - classified below
        if error_code(exc) in AUTH_ERRORS:
            raise ConfigError(AUTH_FIX.format(code=error_code(exc))) from None
        if error_code(exc) == "connection_error":
            log.warning("could not check the Slack token at start: Slack is unreachable (%s); going on",
                        type(exc).__name__)
            return
        log.warning("could not check the Slack token at start: %s", report(exc, "auth.test"))
        return
    log.info("Slack: signed in as %s in workspace %s", who.get("user"), who.get("team"))


async def check_app_token(bot: SlackBot) -> None:
    """The Socket Mode client retries a refused app token forever; ask once first and stop with the fix."""
    try:
        await bot.client.apps_connections_open(app_token=bot.settings.app_token)
    except Exception as exc:  # noqa: BLE001 - classified below
        code = error_code(exc)
        if code in AUTH_ERRORS or code == "missing_scope":
            raise ConfigError(APP_TOKEN_FIX.format(code=code)) from None
        if code == "connection_error":  # the socket's own line (``OutageLog``) says it, once
            log.debug("could not check the Slack app token at start: Slack is unreachable")
            return
        log.warning("could not check the Slack app token at start: %s", report(exc, "apps.connections.open"))


def run_slack(core: Imagebot, config: Config, *, grace: float = DEFAULT_GRACE,
              web: WebServer | None = None) -> Coroutine[Any, Any, None]:
    """Serve until cancelled; then stop listening and give jobs in flight ``grace`` seconds (``bot.close``).

    ``web``: the process's shared HTTP server. In HTTP mode ``POST /slack/events`` is added to it at once
    (this call, before the server starts: its routes are fixed then) and no server of Slack's own is
    opened; the caller starts and stops ``web``. Without it, HTTP mode listens on ``IMAGEBOT_HTTP_PORT``."""
    late: LateEvents | None = None
    if web is not None and not config.env.get("SLACK_APP_TOKEN", "").strip():
        late = LateEvents()
        web.add("POST", EVENTS_PATH, late)
    return _run_slack(core, config, grace, late)


async def _run_slack(core: Imagebot, config: Config, grace: float, late: LateEvents | None) -> None:
    settings = SlackSettings.from_config(config)
    bot = build_bot(core, settings, grace=grace)
    try:
        await check_token(bot)
        if settings.socket_mode:
            await check_app_token(bot)
            handler = socket_handler(bot.app, settings.app_token)
            try:
                await handler.connect_async()  # type: ignore[no-untyped-call]  # retries while Slack is unreachable
                log.info("Slack: connected in Socket Mode")
                await asyncio.Event().wait()
            finally:
                await handler.close_async()  # type: ignore[no-untyped-call]
        elif late is not None:
            late.serve(bot.app, bot.jobs.acks)
            log.info("Slack: HTTP mode, on the shared HTTP server at %s", EVENTS_PATH)
            try:
                await asyncio.Event().wait()
            finally:
                late.stop()
        else:
            try:
                runner, port = await serve_http(bot.app, settings.http_host, settings.http_port, bot.jobs.acks)
            except OSError as exc:
                raise ConfigError(f"IMAGEBOT_HTTP_PORT: cannot listen on {settings.http_host}:{settings.http_port}"
                                  f" ({exc.strerror or exc}); pick a free port") from None
            log.info("Slack: HTTP mode, listening on %s:%d%s", settings.http_host, port, EVENTS_PATH)
            try:
                await asyncio.Event().wait()
            finally:
                await runner.cleanup()
    finally:
        await bot.close()

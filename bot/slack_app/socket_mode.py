"""Socket Mode: the bot dials out to Slack over a websocket, so it needs no public URL.

Slack sends each command and button press as an envelope; Bolt acknowledges it on the same socket.
"""

from __future__ import annotations

from slack_bolt.adapter.socket_mode.async_handler import AsyncSocketModeHandler
from slack_bolt.async_app import AsyncApp


def socket_handler(app: AsyncApp, app_token: str) -> AsyncSocketModeHandler:
    """``await handler.connect_async()`` to connect (it reconnects by itself); ``close_async()`` to stop."""
    return AsyncSocketModeHandler(app, app_token=app_token, web_client=app.client)

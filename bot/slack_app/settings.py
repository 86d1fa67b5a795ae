"""The Slack adapter's settings, read once from ``config.env`` and checked before anything connects.

Tokens are kept out of ``repr`` so a logged settings object never leaks them.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass, field

from bot.config import Config
from bot.errors import ConfigError

DEFAULT_API_URL = "https://slack.com/api/"
USER_ID_RE = re.compile(r"^[UW][A-Z0-9]{2,}$")


def bot_token_of(env: Mapping[str, str]) -> str:
    """SLACK_BOT_TOKEN, checked: all a worker needs (with the API URL) to deliver to Slack."""
    bot_token = env.get("SLACK_BOT_TOKEN", "").strip()
    if not bot_token:
        raise ConfigError("SLACK_BOT_TOKEN is not set: copy the Bot User OAuth Token (xoxb-...) from the "
                          "app's OAuth & Permissions page")
    if not bot_token.startswith("xoxb-"):
        raise ConfigError("SLACK_BOT_TOKEN must be the Bot User OAuth Token, which starts with xoxb-")
    return bot_token


def api_url_of(env: Mapping[str, str]) -> str:
    api_url = env.get("SLACK_API_URL", "").strip() or DEFAULT_API_URL
    if not re.match(r"^https?://", api_url):
        raise ConfigError(f"SLACK_API_URL must be an http(s) URL such as {DEFAULT_API_URL}")
    if not api_url.endswith("/"):
        api_url += "/"  # the SDK joins method names onto it
    return api_url


@dataclass(frozen=True)
class SlackSettings:
    bot_token: str = field(repr=False)
    app_token: str = field(default="", repr=False)
    signing_secret: str = field(default="", repr=False)
    http_host: str = "0.0.0.0"
    http_port: int = 3000
    api_url: str = DEFAULT_API_URL
    #: Slack user ids that may use the admin forms of /credits even if Slack does not call them admins.
    admins: frozenset[str] = frozenset()

    @property
    def socket_mode(self) -> bool:
        """Socket Mode when an app-level token is set: no public URL needed (the self-hosting default)."""
        return bool(self.app_token)

    @classmethod
    def from_config(cls, config: Config) -> SlackSettings:
        env = config.env
        bot_token = bot_token_of(env)
        app_token = env.get("SLACK_APP_TOKEN", "").strip()
        secret = env.get("SLACK_SIGNING_SECRET", "").strip()
        if app_token and not app_token.startswith("xapp-"):
            raise ConfigError("SLACK_APP_TOKEN must be an app-level token (xapp-...) with the connections:write "
                              "scope, from the app's Basic Information page")
        if not app_token and not secret:
            raise ConfigError("Set SLACK_APP_TOKEN (Socket Mode) or SLACK_SIGNING_SECRET (HTTP mode): "
                              "see the Slack section of the README")
        port_text = env.get("IMAGEBOT_HTTP_PORT", "").strip() or "3000"
        if not port_text.isdigit() or not 0 <= int(port_text) <= 65535:
            raise ConfigError(f"IMAGEBOT_HTTP_PORT must be a port number from 0 to 65535, got {port_text!r}")
        api_url = api_url_of(env)
        admins = frozenset(a.strip() for a in env.get("IMAGEBOT_SLACK_ADMINS", "").split(",") if a.strip())
        bad = sorted(a for a in admins if not USER_ID_RE.match(a))
        if bad:
            raise ConfigError(f"IMAGEBOT_SLACK_ADMINS holds Slack user ids such as U012ABCDEF, comma-separated; "
                              f"got {', '.join(bad)}")
        return cls(
            bot_token=bot_token, app_token=app_token, signing_secret=secret,
            http_host=env.get("IMAGEBOT_HTTP_HOST", "").strip() or "0.0.0.0",
            http_port=int(port_text), api_url=api_url, admins=admins,
        )

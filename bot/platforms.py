"""What ``imagebot run`` starts in this process, from the tokens in the environment and ``IMAGEBOT_ROLE``.

    role "all" (default)  the chat platforms whose tokens are set, and a worker for jobs from the table
    role "ingress"        the chat platforms only: every command becomes a queued job (``core.enqueue``)
    role "worker"         a worker only: claims jobs any ingress queued and delivers them by address

Discord runs on the gateway (``DISCORD_TOKEN``) or, with ``DISCORD_PUBLIC_KEY`` set, as an HTTP
interactions endpoint (``POST /discord/interactions``) on the process's one HTTP server
(``IMAGEBOT_HTTP_PORT``), next to Slack's ``/slack/events``.

That server runs in every mode but the local console, so ``/healthz``, ``/readyz`` and ``/metrics``
are always there for an operator: ``IMAGEBOT_HTTP_PORT`` (default 3000), ``off`` for none. A process
that needs the port for a platform (Slack HTTP mode, Discord interactions), or whose port was set
explicitly, stops when it cannot listen; one that only serves the operator's endpoints on the default
port (a worker, the Discord gateway, Slack Socket Mode: several of them on one host) logs a warning and
runs without them. The console starts the server only when ``IMAGEBOT_HTTP_PORT`` is set.

Each adapter lives in its own package and is imported only when its token is set, so the console
mode needs neither discord.py nor slack-bolt at run time.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable, Coroutine
from dataclasses import dataclass, field
from typing import Any

from .config import Config
from .core import Imagebot
from .couriers import Courier
from .errors import ConfigError
from .web import WebServer


@dataclass
class Process:
    """The coroutines to run until shutdown, and the couriers and HTTP server they share."""

    runners: list[Coroutine[Any, Any, None]] = field(default_factory=list)
    couriers: dict[str, Courier] = field(default_factory=dict)
    web: WebServer | None = None


def _set(env: Any, key: str) -> bool:
    return bool(str(env.get(key, "") or "").strip())


#: ``IMAGEBOT_HTTP_PORT`` values that turn the HTTP server off.
OFF = ("off", "none", "disabled")


def http_port(config: Config) -> tuple[str, int] | None:
    """(host, port) of the process's HTTP server, or None when ``IMAGEBOT_HTTP_PORT=off``."""
    env = config.env
    text = str(env.get("IMAGEBOT_HTTP_PORT", "") or "").strip() or "3000"
    if text.lower() in OFF:
        return None
    if not text.isdigit() or not 0 <= int(text) <= 65535:
        raise ConfigError(f"IMAGEBOT_HTTP_PORT must be a port number (0-65535) or 'off', not {text!r}")
    return str(env.get("IMAGEBOT_HTTP_HOST", "") or "").strip() or "0.0.0.0", int(text)


def build_couriers(config: Config) -> dict[str, Courier]:
    """A courier for each platform whose bot token is set: any worker can deliver to it."""
    couriers: dict[str, Courier] = {}
    if _set(config.env, "SLACK_BOT_TOKEN"):
        from .slack_app.courier import SlackCourier

        couriers["slack"] = SlackCourier.from_config(config)
    if _set(config.env, "DISCORD_TOKEN"):
        from .discord_app.courier import DiscordCourier

        couriers["discord"] = DiscordCourier.from_config(config)
    return couriers


def build_process(core: Imagebot, config: Config) -> Process:
    process = Process()
    try:
        return _build(core, config, process)
    except BaseException:
        for runner in process.runners:  # built but never started
            runner.close()
        raise


def _build(core: Imagebot, config: Config, process: Process) -> Process:
    env = config.env
    role = config.role
    slack = _set(env, "SLACK_BOT_TOKEN")
    discord_token = _set(env, "DISCORD_TOKEN")
    discord_http = _set(env, "DISCORD_PUBLIC_KEY")
    if discord_http and not discord_token:
        raise ConfigError("DISCORD_PUBLIC_KEY is set but DISCORD_TOKEN is not: the HTTP interactions endpoint "
                          "needs the bot token too (to post results and fall back to the channel)")
    slack_http = slack and not _set(env, "SLACK_APP_TOKEN")
    needs_http = role != "worker" and (slack_http or discord_http)
    explicit = _set(env, "IMAGEBOT_HTTP_PORT")
    address = http_port(config)
    if address is None and needs_http:
        raise ConfigError("IMAGEBOT_HTTP_PORT=off, but " + ("Slack HTTP mode (no SLACK_APP_TOKEN)" if slack_http
                          else "Discord HTTP interactions (DISCORD_PUBLIC_KEY)") + " needs the HTTP server")
    if address is not None:
        process.web = WebServer(*address, core=core, required=needs_http or explicit)
    if role != "ingress":
        process.couriers = build_couriers(config)
    if role != "worker":
        if slack:
            from .slack_app import run_slack

            process.runners.append(run_slack(core, config, web=process.web))
        if discord_http:
            from .discord_app.http_interactions import mount

            assert process.web is not None
            handler = mount(process.web, core, config, courier=process.couriers.get("discord"))
            if handler is not None:
                process.runners.append(_serve_until_cancelled(handler.aclose))
        elif discord_token:
            from .discord_app import run_discord

            process.runners.append(run_discord(core, config))
    if not process.runners and not process.couriers and not explicit:
        process.web = None  # the local console (or a role that is about to be refused): nothing to serve
    return process


async def _serve_until_cancelled(close: Callable[[], Awaitable[None]]) -> None:
    """An HTTP ingress has nothing to run of its own: it answers requests until shutdown, then drains."""
    try:
        await asyncio.Event().wait()
    finally:
        await close()

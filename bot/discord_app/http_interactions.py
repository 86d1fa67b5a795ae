"""Discord without a gateway: ``POST /discord/interactions`` on the shared HTTP server (``bot.web``).

On when DISCORD_PUBLIC_KEY (the application's public key, hex) is set. Every request's Ed25519 signature
is checked first (bad, missing or malformed -> 401, never a 5xx). The process is stateless: a command is
answered at once, in the HTTP response, and its work goes to the jobs table for any worker
(``bot.worker``), which delivers through the ``DiscordCourier``. So N of these processes can sit
behind any load balancer.

    PING                       -> PONG
    /imagine, /enhance, a button -> ``core.enqueue`` (reserve and queue, one transaction), then a deferred
                                  response (type 5); a refusal (nothing charged) is a private reply
                                  (type 4, flags 64) instead
    /credits                   -> the balance, read and answered in the response (type 4)
    /credits-admin ...         -> deferred privately, then done and told in a tracked task

A command's job row is written before its response leaves: no interaction is acknowledged without a job, so
a process killed right after answering leaves work a worker finishes. Reference attachments are fetched by
that worker (``bot.references``), never before the answer.
discord.py does not receive HTTP interactions: this module reads Discord's JSON itself, with the same
commands, options and button custom ids as the gateway adapter (``commands``, ``admin``, ``views``).
"""

from __future__ import annotations

import asyncio
import collections
import dataclasses
import json
import logging
import re
import time
from collections.abc import Awaitable, Callable, Mapping
from typing import Any

import aiohttp
from aiohttp import web
from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PublicKey

from bot.config import MAX_AMOUNT, Config
from bot.core import Imagebot
from bot.couriers import Courier
from bot.errors import ConfigError, ImagebotError, PermissionDenied, ValidationError
from bot.jobs import AckGate, prompt_of
from bot.models import Context, Identity, ImagineOptions
from bot.references import REFERENCE_LIMIT
from bot.replies import adjust_summary, credits_summary, error_text, plural, restarting_text, usage_summary
from bot.validation import clean_prompt
from bot.web import WebServer

from .context import PLATFORM, TOKEN_LIFETIME, TOKEN_MARGIN
from .flows import INTERNAL, _fit_text
from .settings import DiscordSettings

log = logging.getLogger(__name__)

PATH = "/discord/interactions"
PING, COMMAND, COMPONENT, AUTOCOMPLETE = 1, 2, 3, 4
PONG, MESSAGE, DEFERRED, CHOICES = 1, 4, 5, 8
EPHEMERAL = 1 << 6
ADMINISTRATOR, MANAGE_GUILD = 1 << 3, 1 << 5
DISCORD_EPOCH_MS = 1_420_070_400_000
#: Signed requests older (or newer) than this are refused: a captured request cannot be replayed later.
MAX_SKEW = 300.0
#: Seconds tasks still running at shutdown get to finish (they only enqueue or tell).
DRAIN = 10.0
BUTTON = re.compile(r"ib:(?P<action>rr|va|up|en|im):(?P<gen>[0-9a-f]{32})(?::(?P<index>\d{1,2}))?")
OPTION_KEYS = {"prompt": "prompt", "size": "size", "style": "style", "quality": "quality", "count": "count",
               "provider": "provider", "format": "output_format", "background": "background"}
NO_MENTIONS: dict[str, Any] = {"parse": []}
KINDS = {"rr": "reroll", "va": "variations", "up": "upscale"}


class Unauthorized(Exception):
    """Not signed by Discord with the application's key (or not readable): 401."""


def public_key(value: str) -> Ed25519PublicKey:
    """DISCORD_PUBLIC_KEY: 64 hex digits, from the Developer Portal's General Information page."""
    text = value.strip()
    if not re.fullmatch(r"[0-9a-fA-F]{64}", text):
        raise ConfigError("DISCORD_PUBLIC_KEY must be the application's public key: 64 hex digits from the "
                          "Developer Portal (General Information -> Public Key)")
    return Ed25519PublicKey.from_public_bytes(bytes.fromhex(text))


def verify(key: Ed25519PublicKey, headers: Mapping[str, str], body: bytes, *, now: float | None = None) -> Any:
    """The parsed body of a request Discord signed, else ``Unauthorized``."""
    signature = headers.get("X-Signature-Ed25519", "")
    stamp = headers.get("X-Signature-Timestamp", "")
    if not re.fullmatch(r"[0-9a-fA-F]{128}", signature) or not re.fullmatch(r"\d{1,12}", stamp):
        raise Unauthorized("missing or malformed signature headers")
    if abs((time.time() if now is None else now) - int(stamp)) > MAX_SKEW:
        raise Unauthorized("stale signature timestamp")
    try:
        key.verify(bytes.fromhex(signature), stamp.encode() + body)
    except InvalidSignature:
        raise Unauthorized("bad signature") from None
    try:
        payload = json.loads(body)
    except (ValueError, UnicodeDecodeError):
        raise Unauthorized("body is not JSON") from None
    if not isinstance(payload, dict):
        raise Unauthorized("body is not a JSON object")
    return payload


# -- reading an interaction ------------------------------------------------------------------------

def _user_of(payload: Mapping[str, Any]) -> dict[str, Any]:
    member = payload.get("member") or {}
    user = member.get("user") or payload.get("user") or {}
    return user if isinstance(user, dict) else {}


def identity_of(payload: Mapping[str, Any]) -> Identity:
    user_id = str(_user_of(payload).get("id") or "")
    guild_id = str(payload.get("guild_id") or "")
    if not user_id:
        raise Unauthorized("interaction without a user")
    return Identity(PLATFORM, guild_id or f"dm-{user_id}", user_id)


def is_admin(payload: Mapping[str, Any], admin_roles: frozenset[str]) -> bool:
    """Manage Server or Administrator in the member's permissions for the channel, or a role id listed in
    IMAGEBOT_DISCORD_ADMIN_ROLES (role names need a cache this stateless process does not keep)."""
    if not payload.get("guild_id"):
        return False
    member = payload.get("member") or {}
    try:
        perms = int(member.get("permissions") or 0)
    except (TypeError, ValueError):
        perms = 0
    if perms & (ADMINISTRATOR | MANAGE_GUILD):
        return True
    return bool(admin_roles & {str(r) for r in member.get("roles") or ()})


def deliver_by(payload: Mapping[str, Any]) -> float:
    """The interaction's creation (from its snowflake id) + 15 minutes - a margin."""
    try:
        created = ((int(payload["id"]) >> 22) + DISCORD_EPOCH_MS) / 1000
    except (KeyError, TypeError, ValueError):
        created = time.time()
    return created + TOKEN_LIFETIME - TOKEN_MARGIN


def context_of(payload: Mapping[str, Any], settings: DiscordSettings, *, ephemeral: bool = False) -> Context:
    identity = identity_of(payload)
    user = _user_of(payload)
    member = payload.get("member") or {}
    name = str(member.get("nick") or user.get("global_name") or user.get("username") or "")
    channel_id = str(payload.get("channel_id") or (payload.get("channel") or {}).get("id") or "")
    address = {
        "platform": PLATFORM, "application_id": str(payload.get("application_id") or ""),
        "token": str(payload.get("token") or ""), "channel_id": channel_id, "user_id": identity.user_id,
        "guild_id": str(payload.get("guild_id") or ""), "ephemeral": ephemeral, "message": "@original",
        "display_name": name, "avatar": str(user.get("avatar") or ""),
        "upload_limit": payload.get("attachment_size_limit") or 0,
    }
    return Context(identity, channel_id=channel_id, is_admin=is_admin(payload, settings.admin_roles),
                   display_name=name, address=address, deliver_by=deliver_by(payload))


def options_of(data: Mapping[str, Any]) -> tuple[str | None, dict[str, Any]]:
    """The subcommand (if any) and its options by name."""
    options = data.get("options") or []
    if len(options) == 1 and options[0].get("type") in (1, 2):
        sub = options[0]
        if sub.get("type") == 2:  # a subcommand group: its one subcommand
            sub = (sub.get("options") or [{}])[0]
        return str(sub.get("name") or ""), {o["name"]: o.get("value") for o in sub.get("options") or [] if "name" in o}
    return None, {o["name"]: o.get("value") for o in options if "name" in o}


# -- responses -------------------------------------------------------------------------------------

def _json(body: Mapping[str, Any]) -> web.Response:
    return web.Response(body=json.dumps(body).encode(), content_type="application/json")


def reply(text: str, *, private: bool = True) -> web.Response:
    data: dict[str, Any] = {"content": text[:2000], "allowed_mentions": NO_MENTIONS}
    if private:
        data["flags"] = EPHEMERAL
    return _json({"type": MESSAGE, "data": data})


def deferred(*, private: bool = False) -> web.Response:
    return _json({"type": DEFERRED, "data": {"flags": EPHEMERAL} if private else {}})


DM_OFF = ("This bot works inside servers only: run the command in a server channel where the bot is. "
          "(IMG-DISCORD-DM)")
UNKNOWN = ("Discord sent a command this bot does not know; the command list refreshes within a minute. "
           "(IMG-DISCORD-SYNC)")
NOT_HERE = "You can't use that command here. (IMG-PERM-001)"


class DiscordInteractions:
    """The route's handler and the tasks it started (``aclose`` drains them)."""

    def __init__(self, core: Imagebot, settings: DiscordSettings, key: Ed25519PublicKey, courier: Courier, *,
                 own_courier: bool = False) -> None:
        self.core = core
        self.settings = settings
        self.key = key
        self.courier = courier
        self._own_courier = own_courier
        self._tasks: set[asyncio.Task[None]] = set()
        #: Answers in flight: the work they start (reserve, queue) waits for them first, so a burst of
        #: 200 interactions is acknowledged before any of their database writes run.
        self.acks = AckGate()
        self.accepting = True
        self._closed = False
        #: Signatures answered in the last 2 x MAX_SKEW seconds (oldest first): the same signed request
        #: again is a replay, refused (it would run, and be charged, twice). This process's only.
        self._seen: collections.OrderedDict[str, float] = collections.OrderedDict()

    async def aclose(self, grace: float = DRAIN) -> None:
        """Take no new commands; let the started ones reach the table (or tell their refusal)."""
        self.accepting = False
        if self._closed:
            return
        self._closed = True
        if self._tasks:
            _, pending = await asyncio.wait(set(self._tasks), timeout=grace)
            for task in pending:
                task.cancel()
            await asyncio.gather(*pending, return_exceptions=True)
        if self._own_courier:
            await self.courier.aclose()

    async def idle(self) -> None:
        """Until every task started so far (enqueues, notes) is done: for tests and benchmarks."""
        while self._tasks:
            await asyncio.gather(*self._tasks, return_exceptions=True)

    async def _on_shutdown(self, app: web.Application) -> None:
        await self.aclose()

    # -- the route ---------------------------------------------------------------------------------

    async def handle(self, request: web.Request) -> web.StreamResponse:
        with self.acks:
            return await self._handle(request)

    async def _handle(self, request: web.Request) -> web.StreamResponse:
        try:
            body = await request.read()
            payload = verify(self.key, request.headers, body)
            self._first_time(request.headers["X-Signature-Ed25519"].lower())
        except Unauthorized as exc:
            log.debug("discord interaction refused: %s", exc)
            return web.Response(status=401, text="invalid request signature")
        except (aiohttp.ClientError, ValueError, web.HTTPException):
            return web.Response(status=401, text="invalid request")
        try:
            return await self._dispatch(payload)
        except Unauthorized:
            return web.Response(status=401, text="invalid request")
        except (AttributeError, KeyError, IndexError, TypeError, ValueError, OverflowError) as exc:
            # A part of the wrong type (signed, but not what Discord sends): met while reading the payload,
            # before any work started, so nothing to undo; a 400, not the internal-error reply.
            log.warning("discord interaction refused: malformed payload (%s)", type(exc).__name__)
            return web.Response(status=400, text="malformed interaction")
        except Exception:  # noqa: BLE001 - Discord shows "This interaction failed" for a 5xx: answer instead
            log.exception("discord interaction failed")
            return reply(INTERNAL)

    def _first_time(self, signature: str, limit: int = 100_000) -> None:
        """``Unauthorized`` for a signature already answered: Discord never sends one request twice."""
        now = time.monotonic()
        while self._seen and (len(self._seen) >= limit or next(iter(self._seen.values())) < now):
            self._seen.popitem(last=False)
        if signature in self._seen:
            raise Unauthorized("replayed request")
        self._seen[signature] = now + 2 * MAX_SKEW

    async def _dispatch(self, payload: dict[str, Any]) -> web.Response:
        kind = payload.get("type")
        if kind == PING:
            return _json({"type": PONG})
        if kind == AUTOCOMPLETE:
            return _json({"type": CHOICES, "data": {"choices": []}})
        if kind not in (COMMAND, COMPONENT):
            return web.Response(status=400, text="unknown interaction type")
        if not self.accepting:
            return reply(restarting_text())
        if not payload.get("guild_id") and not self.settings.dms:
            return reply(DM_OFF)
        data = payload.get("data") or {}
        if kind == COMPONENT:
            return await self._button(payload, str(data.get("custom_id") or ""))
        name = str(data.get("name") or "")
        if name == "imagine":
            return await self._imagine(payload, data)
        if name == "enhance":
            return await self._enhance(payload, data)
        if name in ("credits", "credits-admin"):
            return await self._credits(payload, data)
        return reply(UNKNOWN)

    def _later(self, work: Callable[[], Awaitable[None]], name: str) -> None:
        """After the response: tracked, so shutdown waits for it; an unexpected error is logged and told."""
        async def run() -> None:
            try:
                await self.acks.wait()
                await work()
            except Exception:  # noqa: BLE001
                log.exception("discord interaction work %s failed", name)

        task = asyncio.create_task(run(), name=f"discord-{name}")
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def _enqueue(self, ctx: Context, kind: str, **job: Any) -> web.Response:
        """Reserve and queue the job, then answer with the deferred response: no interaction is acknowledged
        without its job row, so a process killed after the answer leaves a job a worker delivers. A refusal
        (nothing charged) is the answer itself, privately."""
        try:
            args = await _resolve(ctx, kind, job)
            await self.core.enqueue(ctx, kind, **args)
        except ImagebotError as exc:
            return reply(error_text(exc))
        except Exception:
            log.exception("discord %s could not be queued", kind)
            return reply(INTERNAL)
        return deferred()

    async def _tell(self, ctx: Context, text: str) -> None:
        assert ctx.address is not None
        await self.courier.tell(ctx.address, ctx.deliver_by, text)

    # -- commands ------------------------------------------------------------------------------------

    async def _imagine(self, payload: dict[str, Any], data: Mapping[str, Any]) -> web.Response:
        ctx = context_of(payload, self.settings)
        _, values = options_of(data)
        fields = {field: values[key] for key, field in OPTION_KEYS.items() if key in values}
        options = ImagineOptions(**{"prompt": "", **fields})
        try:
            self.core.plan(ctx, options)  # sync, no I/O: bad input is refused in the response, privately
            reference = _reference(data, values.get("reference"))
        except ImagebotError as exc:
            return reply(error_text(exc))
        if reference is not None:  # fetched by the worker that runs the job: the answer never waits for it
            options = dataclasses.replace(options, reference_urls=(str(reference["url"]),))
        return await self._enqueue(ctx, "imagine", options=options)

    async def _enhance(self, payload: dict[str, Any], data: Mapping[str, Any]) -> web.Response:
        ctx = context_of(payload, self.settings)
        _, values = options_of(data)
        try:
            text = clean_prompt(str(values.get("prompt") or ""))
        except ImagebotError as exc:
            return reply(error_text(exc))
        return await self._enqueue(ctx, "enhance", prompt=text)

    async def _button(self, payload: dict[str, Any], custom_id: str) -> web.Response:
        match = BUTTON.fullmatch(custom_id)
        if match is None:
            return reply(UNKNOWN)
        action, gen, index = match["action"], match["gen"], int(match["index"] or 0)
        ctx = context_of(payload, self.settings)
        if action in KINDS:
            return await self._enqueue(ctx, KINDS[action], generation_id=gen, index=index)
        if action == "en":
            return await self._enqueue(ctx, "enhance", prompt_from=(self.core, gen, False))
        return await self._enqueue(ctx, "imagine", prompt_from=(self.core, gen, True))

    async def _credits(self, payload: dict[str, Any], data: Mapping[str, Any]) -> web.Response:
        sub, values = options_of(data)
        if data.get("name") == "credits" and sub in (None, "show"):
            ctx = context_of(payload, self.settings, ephemeral=True)
            text = credits_summary(await self.core.credits(ctx.identity))
            if ctx.identity.server_id.startswith("dm-"):
                text += "\n(This is your direct-message account; each server has its own.)"
            return reply(text)
        if not payload.get("guild_id"):
            return reply(NOT_HERE)
        ctx = context_of(payload, self.settings, ephemeral=True)
        if not ctx.is_admin:
            return reply(error_text(PermissionDenied("Only server admins can do that.")))
        if sub in ("grant", "revoke", "set"):
            member, amount = str(values.get("member") or ""), values.get("amount")
            if not member.isdigit() or not isinstance(amount, int) or not 0 <= amount <= MAX_AMOUNT:
                return reply(error_text(ValidationError(
                    f"Give a member and a whole number of credits from 0 to {MAX_AMOUNT}.", code="IMG-VALID-001")))
            target = Identity(PLATFORM, ctx.identity.server_id, member)
            kind = sub

            async def adjust() -> None:
                try:
                    result = await self.core.admin_adjust(ctx, target, kind, amount)
                    text = adjust_summary(result, f"<@{member}>")
                except ImagebotError as exc:
                    text = error_text(exc)
                await self._tell(ctx, text)

            self._later(adjust, f"admin-{kind}")
            return deferred(private=True)
        if sub == "usage":
            days = values.get("days", 7)
            days = days if isinstance(days, int) and 1 <= days <= 365 else 7

            async def usage() -> None:
                try:
                    rows = await self.core.usage_report(ctx, since_seconds=days * 86400)
                    text = _fit_text(f"Usage in the last {plural(days, 'day')}:\n" + usage_summary(
                        [{**r, "user_id": f"<@{r['user_id']}>"} for r in rows]))
                except ImagebotError as exc:
                    text = error_text(exc)
                await self._tell(ctx, text)

            self._later(usage, "admin-usage")
            return deferred(private=True)
        return reply(UNKNOWN)


def _reference(data: Mapping[str, Any], attachment_id: Any) -> dict[str, Any] | None:
    """The reference attachment's metadata from ``data.resolved``, checked before any download."""
    if attachment_id is None:
        return None
    item = ((data.get("resolved") or {}).get("attachments") or {}).get(str(attachment_id))
    if not isinstance(item, dict) or not str(item.get("url") or "").startswith(("https://", "http://")):
        raise ValidationError("The reference image did not arrive with the command; attach it again.",
                              code="IMG-VALID-REFERENCE")
    mime = str(item.get("content_type") or "")
    if mime and not mime.startswith("image/"):
        raise ValidationError("The reference must be an image (PNG, JPEG, WebP or GIF).", code="IMG-VALID-REFERENCE")
    size = int(item.get("size") or 0)
    if size > REFERENCE_LIMIT:
        raise ValidationError(f"The reference image is {size // (1024 * 1024)} MiB; the limit is "
                              f"{REFERENCE_LIMIT // (1024 * 1024)} MiB.", code="IMG-VALID-REFERENCE")
    return item


async def _resolve(ctx: Context, kind: str, job: dict[str, Any]) -> dict[str, Any]:
    """The enqueue arguments, after the work the response did not wait for (a download, a prompt read:
    Enhance and Imagine this work on a stored prompt)."""
    args = dict(job)
    if "prompt_from" in args:
        core, gen, enhanced = args.pop("prompt_from")
        prompt = await prompt_of(core, ctx, gen, enhanced=enhanced)
        if kind == "imagine":
            args["options"] = ImagineOptions(prompt=prompt)
        else:
            args["prompt"] = prompt
    return args


def mount(web_server: WebServer, core: Imagebot, config: Config, *, courier: Courier | None = None,
          ) -> DiscordInteractions | None:
    """Add ``POST /discord/interactions`` when DISCORD_PUBLIC_KEY is set (``None`` otherwise). Without
    ``courier`` one is built from the environment. ``aclose()`` the result on the way out (done by the
    server's shutdown too when mounted before it started)."""
    raw = config.env.get("DISCORD_PUBLIC_KEY", "").strip()
    if not raw:
        return None
    key = public_key(raw)
    settings = DiscordSettings.from_env(config.env)
    own = courier is None
    if courier is None:
        from .courier import DiscordCourier

        courier = DiscordCourier.from_config(config)
    handler = DiscordInteractions(core, settings, key, courier, own_courier=own)
    web_server.add("POST", PATH, handler.handle)
    if not web_server.app.frozen:  # mounted before the server listens: drained when it stops
        web_server.app.on_shutdown.append(handler._on_shutdown)
    return handler

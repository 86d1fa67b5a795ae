"""Discord without a gateway: ``POST /discord/interactions`` on the shared HTTP server (``bot.web``).

On when DISCORD_PUBLIC_KEY (the application's public key, hex) is set. Every request's Ed25519 signature
is checked first (bad, missing or malformed -> 401, never a 5xx). The process is stateless: a command is
answered at once, in the HTTP response, and its work goes to the jobs table for any worker
(``bot.worker``), which delivers through the ``DiscordCourier``. So N of these processes can sit
behind any load balancer.

    PING                       -> PONG
    /imagine, /enhance, /describe, a button that costs credits, the Edit modal's submit
                               -> ``core.accept``: above the server's threshold a private Confirm / Cancel
                                  (type 4, flags 64), nothing charged; else the job reserved and queued
                                  (one transaction), then a deferred response (type 5, private where
                                  the server posts results privately); a refusal (nothing charged) is a
                                  private reply (type 4, flags 64) instead
    Confirm                    -> ``core.enqueue_proposal``, then deferred like the command it confirms
    Edit                       -> the modal (type 9); Cancel, Prev / Next, Delete, picking an image -> the
                                  message updated (type 7)
    /credits, /help, /settings, /history
                               -> read (or changed) and answered in the response (type 4, private;
                                  /history's contact sheet as a multipart attachment)
    /show                      -> deferred, then posted by the courier in a tracked task (free)
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
from bot.couriers import Courier, Undeliverable
from bot.errors import ConfigError, ImagebotError, PermissionDenied, ValidationError
from bot.jobs import AckGate, owned_generation, prompt_of
from bot.models import Context, HistoryPage, Identity, ImagineOptions, Quote
from bot.references import REFERENCE_LIMIT
from bot.replies import (
    adjust_summary,
    credits_summary,
    error_text,
    help_text,
    plural,
    restarting_text,
    settings_text,
    usage_summary,
)
from bot.validation import clean_prompt
from bot.web import WebServer

from .context import PLATFORM, TOKEN_LIFETIME, TOKEN_MARGIN, Press
from .embeds import confirm_text, history_embed
from .fitting import Upload
from .flows import CANCELLED, DELETED, INTERNAL, _fit_text, fit_text
from .settings import DiscordSettings
from .views import (
    EditModal,
    confirm_view,
    history_view,
    image_tools_view,
    modal_value,
    parse_custom_id,
    pick_view,
)

log = logging.getLogger(__name__)

PATH = "/discord/interactions"
PING, COMMAND, COMPONENT, AUTOCOMPLETE, MODAL_SUBMIT = 1, 2, 3, 4, 5
PONG, MESSAGE, DEFERRED, UPDATE, CHOICES, MODAL = 1, 4, 5, 7, 8, 9
EPHEMERAL = 1 << 6
ADMINISTRATOR, MANAGE_GUILD = 1 << 3, 1 << 5
DISCORD_EPOCH_MS = 1_420_070_400_000
#: Signed requests older (or newer) than this are refused: a captured request cannot be replayed later.
MAX_SKEW = 300.0
#: Seconds tasks still running at shutdown get to finish (they only enqueue or tell).
DRAIN = 10.0
OPTION_KEYS = {"prompt": "prompt", "size": "size", "style": "style", "quality": "quality", "count": "count",
               "provider": "provider", "format": "output_format", "background": "background"}
NO_MENTIONS: dict[str, Any] = {"parse": []}
KINDS = {"rr": "reroll", "va": "variations", "up": "upscale"}
#: /imagine's attachment options (a blend of up to four).
REFERENCES = ("reference", "reference2", "reference3", "reference4")


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
                   display_name=name, address=address, deliver_by=deliver_by(payload),
                   adult_channel=is_adult_channel(payload.get("channel")))


def is_adult_channel(channel: Any) -> bool:
    """An age-restricted channel: the interaction's channel object carries ``nsfw``."""
    return isinstance(channel, dict) and channel.get("nsfw") is True


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


def reply(text: str, *, private: bool = True, components: list[dict[str, Any]] | None = None,
          kind: int = MESSAGE) -> web.Response:
    """A message in the response (``kind`` UPDATE: the component's own message, changed)."""
    data: dict[str, Any] = {"content": text[:2000], "allowed_mentions": NO_MENTIONS}
    if private and kind == MESSAGE:
        data["flags"] = EPHEMERAL
    if components is not None:
        data["components"] = components
    return _json({"type": kind, "data": data})


def with_files(body: Mapping[str, Any], files: list[Upload]) -> web.Response:
    """A response carrying attachments: multipart, the JSON as ``payload_json`` and ``files[n]``, as
    Discord takes them on interaction callbacks."""
    writer = aiohttp.MultipartWriter("form-data")
    part = writer.append(json.dumps(body), {"Content-Type": "application/json"})
    part.set_content_disposition("form-data", name="payload_json")
    for n, upload in enumerate(files):
        part = writer.append(upload.data, {"Content-Type": "image/png"})
        part.set_content_disposition("form-data", name=f"files[{n}]", filename=upload.filename)
    return web.Response(body=writer, headers={"Content-Type": f"multipart/form-data; boundary={writer.boundary}"})


def history_response(page: HistoryPage, kind: int = MESSAGE) -> web.Response:
    """A /history page (a new private message, or the same one updated by Prev / Next)."""
    name = f"history-{page.page}.png"
    files = [Upload(page.sheet, name)] if page.sheet else []
    data: dict[str, Any] = {"embeds": [history_embed(page, name if files else None).to_dict()],
                            "components": history_view(page).to_components(), "allowed_mentions": NO_MENTIONS,
                            "attachments": [{"id": n, "filename": f.filename} for n, f in enumerate(files)]}
    if kind == MESSAGE:
        data["flags"] = EPHEMERAL
    body = {"type": kind, "data": data}
    return with_files(body, files) if files else _json(body)


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
        if kind not in (COMMAND, COMPONENT, MODAL_SUBMIT):
            return web.Response(status=400, text="unknown interaction type")
        if not self.accepting:
            return reply(restarting_text())
        if not payload.get("guild_id") and not self.settings.dms:
            return reply(DM_OFF)
        data = payload.get("data") or {}
        if kind == COMPONENT:
            return await self._button(payload, str(data.get("custom_id") or ""), data)
        if kind == MODAL_SUBMIT:
            return await self._modal(payload, data)
        name = str(data.get("name") or "")
        if name == "imagine":
            return await self._imagine(payload, data)
        if name == "enhance":
            return await self._enhance(payload, data)
        if name == "describe":
            return await self._describe(payload, data)
        if name in ("history", "show", "help", "settings"):
            return await self._lookup(name, payload, data)
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

    async def _asker(self, payload: Mapping[str, Any], ctx: Context) -> tuple[Context, bool]:
        """The asker's context and whether this server posts results privately (the address says so, so
        the courier never posts a private result in the channel)."""
        if await self.core.visibility(ctx) != "private":
            return ctx, False
        return context_of(payload, self.settings, ephemeral=True), True

    async def _enqueue(self, payload: Mapping[str, Any], kind: str, *, proposal: str | None = None,
                       **job: Any) -> web.Response:
        """Price it (above the server's threshold: a private Confirm / Cancel, nothing charged), else reserve
        and queue the job, then answer with the deferred response: no interaction is acknowledged without its
        job row, so a process killed after the answer leaves a job a worker delivers. A refusal (nothing
        charged) is the answer itself, privately. ``proposal``: the Confirm click, which runs what was quoted."""
        # Read first: a payload without a user or of the wrong shape is the HTTP edge's 401/400 (``_handle``).
        asker = context_of(payload, self.settings)
        try:
            ctx, private = await self._asker(payload, asker)
            if proposal is not None:
                await self.core.enqueue_proposal(ctx, proposal)
                return deferred(private=private)
            args = await _resolve(ctx, kind, job)
            # Discord's answer shows no queue position: not counted.
            accepted = await self.core.accept(ctx, kind, queued=True, position=False, **args)
            if isinstance(accepted, Quote) and accepted.proposal_id:
                return reply(confirm_text(accepted),
                             components=confirm_view(accepted.proposal_id).to_components())
        except ImagebotError as exc:
            return reply(error_text(exc))
        except Exception:
            log.exception("discord %s could not be queued", kind)
            return reply(INTERNAL)
        return deferred(private=private)

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
            references = [r for r in (_reference(data, values.get(name)) for name in REFERENCES) if r is not None]
        except ImagebotError as exc:
            return reply(error_text(exc))
        if references:  # fetched by the worker that runs the job: the answer never waits for them
            options = dataclasses.replace(options, reference_urls=tuple(str(r["url"]) for r in references))
        return await self._enqueue(payload, "imagine", options=options)

    async def _enhance(self, payload: dict[str, Any], data: Mapping[str, Any]) -> web.Response:
        context_of(payload, self.settings)  # who is asking, before anything else
        _, values = options_of(data)
        try:
            text = clean_prompt(str(values.get("prompt") or ""))
        except ImagebotError as exc:
            return reply(error_text(exc))
        return await self._enqueue(payload, "enhance", prompt=text)

    async def _describe(self, payload: dict[str, Any], data: Mapping[str, Any]) -> web.Response:
        context_of(payload, self.settings)
        _, values = options_of(data)
        try:
            image = _reference(data, values.get("image"), what="The image to describe")
            if image is None:
                raise ValidationError("Attach the image to describe.", code="IMG-VALID-REFERENCE")
        except ImagebotError as exc:
            return reply(error_text(exc))
        return await self._enqueue(payload, "describe",
                                   options=ImagineOptions(prompt="", reference_urls=(str(image["url"]),)))

    async def _button(self, payload: dict[str, Any], custom_id: str, data: Mapping[str, Any]) -> web.Response:
        press = parse_custom_id(custom_id)
        if press is None:
            return reply(UNKNOWN)
        raw = data.get("values")
        values = tuple(v for v in raw if isinstance(v, str)) if isinstance(raw, list) else ()
        press = dataclasses.replace(press, values=values)
        action, gen, index = press.action, press.key, press.index or 0
        if action in KINDS:
            return await self._enqueue(payload, KINDS[action], generation_id=gen, index=index)
        if action == "en":
            return await self._enqueue(payload, "enhance", prompt_from=(self.core, gen, False, 0))
        if action == "im":
            return await self._enqueue(payload, "imagine", prompt_from=(self.core, gen, True, index))
        if action == "op":
            return await self._enqueue(payload, "outpaint", generation_id=gen, index=index,
                                       op=values[0] if values else "")
        if action == "ok":
            return await self._enqueue(payload, "", proposal=press.key)
        if action == "no":  # nothing was held against the balance: the proposal just expires
            return reply(CANCELLED, kind=UPDATE, components=[])
        try:
            return await self._free_button(payload, press)
        except ImagebotError as exc:
            return reply(error_text(exc))

    async def _free_button(self, payload: dict[str, Any], press: Press) -> web.Response:
        """The buttons that cost nothing: Edit (the modal), Edit or extend…, picking an image, Delete,
        Prev / Next, Show."""
        ctx = context_of(payload, self.settings)
        gen = press.key
        if press.action == "ed":
            await owned_generation(self.core, ctx, gen)
            return _json({"type": MODAL, "data": EditModal(gen, press.index or 0).to_dict()})
        if press.action == "tl":
            row = await owned_generation(self.core, ctx, gen)
            return reply("Which image do you want to edit or extend?",
                         components=pick_view(gen, len(row.images)).to_components())
        if press.action == "pk":
            value = press.values[0] if press.values else ""
            if not value.isdigit() or int(value) > 24:
                raise ValidationError("Choose one of the images listed.", code="IMG-VALID-001")
            index = int(value)
            ops = await self.core.outpaint_ops(ctx, gen, index)
            return reply(f"Image {index + 1}:", kind=UPDATE,
                         components=image_tools_view(gen, index, ops).to_components())
        if press.action == "dl":
            await self.core.delete(ctx, gen)
            # The message stays as a line saying so: its images and buttons go (the images stay in the
            # store for the ledger's record until the operator prunes them).
            return _json({"type": UPDATE, "data": {"content": DELETED, "embeds": [], "attachments": [],
                                                   "components": [], "allowed_mentions": NO_MENTIONS}})
        if press.action == "hp":
            return history_response(await self.core.history(ctx, int(press.key)), kind=UPDATE)
        if press.action == "hs":
            return await self._show(payload, press.values[0] if press.values else "")
        return reply(UNKNOWN)

    async def _modal(self, payload: dict[str, Any], data: Mapping[str, Any]) -> web.Response:
        """The Edit modal's submit: priced, then queued like any job."""
        press = parse_custom_id(str(data.get("custom_id") or ""))
        if press is None or press.action != "ed":
            return reply(UNKNOWN)
        context_of(payload, self.settings)
        text = modal_value(data.get("components"))
        return await self._enqueue(payload, "edit", generation_id=press.key, index=press.index or 0, prompt=text)

    async def _show(self, payload: dict[str, Any], generation_id: str) -> web.Response:
        """A stored result again, free: deferred, then posted by the courier (no job: nothing to charge)."""
        ctx, private = await self._asker(payload, context_of(payload, self.settings))
        result = await self.core.show(ctx, generation_id)
        address, by = dict(ctx.address or {}), ctx.deliver_by

        async def post() -> None:
            try:
                await self.courier.deliver(address, by, result)
            except Undeliverable as exc:
                log.warning("/show of %s reached nobody: %s", result.generation_id, exc)
                await self.courier.tell(address, by, "I couldn't post that result here. (IMG-DELIVERY-001)")

        self._later(post, "show")
        return deferred(private=private)

    async def _lookup(self, name: str, payload: dict[str, Any], data: Mapping[str, Any]) -> web.Response:
        """/history, /show, /help and /settings: free, answered in the response (privately) where they can."""
        _, values = options_of(data)
        ctx = context_of(payload, self.settings, ephemeral=True)
        try:
            if name == "show":
                return await self._show(payload, str(values.get("id") or ""))
            if name == "history":
                page = values.get("page", 1)
                if type(page) is not int:
                    raise ValidationError("The page must be a whole number from 1.", code="IMG-VALID-PAGE")
                return history_response(await self.core.history(ctx, page))
            if name == "help":
                return reply(fit_text(help_text(await self.core.help(ctx))))
            key, value = values.get("key"), values.get("value")
            if not payload.get("guild_id"):
                return reply(NOT_HERE)
            if key is None and value is None:
                return reply(fit_text(settings_text(await self.core.server_settings(ctx))))
            if not isinstance(key, str) or not isinstance(value, str) or not key.strip():
                raise ValidationError("Give both a setting and a value to change it, or neither to see the "
                                      "settings.", code="IMG-VALID-SETTING")
            view = await self.core.change_settings(ctx, {key.strip(): value.strip()})
            return reply(fit_text(f"Saved: {key.strip()} = {value.strip()[:200]}.\n" + settings_text(view)))
        except ImagebotError as exc:
            return reply(error_text(exc))

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


def _reference(data: Mapping[str, Any], attachment_id: Any, *, what: str = "The reference") -> dict[str, Any] | None:
    """An attachment's metadata from ``data.resolved``, checked before any download."""
    if attachment_id is None:
        return None
    item = ((data.get("resolved") or {}).get("attachments") or {}).get(str(attachment_id))
    if not isinstance(item, dict) or not str(item.get("url") or "").startswith(("https://", "http://")):
        raise ValidationError(f"{what} did not arrive with the command; attach it again.",
                              code="IMG-VALID-REFERENCE")
    mime = str(item.get("content_type") or "")
    if mime and not mime.startswith("image/"):
        raise ValidationError(f"{what} must be an image (PNG, JPEG, WebP or GIF).", code="IMG-VALID-REFERENCE")
    size = int(item.get("size") or 0)
    if size > REFERENCE_LIMIT:
        raise ValidationError(f"{what} is {size // (1024 * 1024)} MiB; the limit is "
                              f"{REFERENCE_LIMIT // (1024 * 1024)} MiB.", code="IMG-VALID-REFERENCE")
    return item


async def _resolve(ctx: Context, kind: str, job: dict[str, Any]) -> dict[str, Any]:
    """The enqueue arguments, after the work the response did not wait for (a download, a prompt read:
    Enhance and Imagine this work on a stored prompt)."""
    args = dict(job)
    if "prompt_from" in args:
        core, gen, enhanced, index = args.pop("prompt_from")
        prompt = await prompt_of(core, ctx, gen, enhanced=enhanced, index=index)
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

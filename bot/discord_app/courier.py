"""Discord delivery by address: any worker posts a job's result with only the address and the bot token.

No gateway connection: discord.py's REST pieces only (a ``discord.Client`` that ``login()``\\s and never
connects, and ``discord.Webhook.partial`` for the interaction webhook, which needs no bot token). The
message is the one the in-process delivery posts (``embeds`` + ``views``: the same custom ids), so a
button on a result any process posted is handled by any process.

Fallbacks (``bot.couriers``): the interaction webhook while ``deliver_by`` has not passed (edit
``@original``, or a follow-up when the address names no message), then the channel with the bot token
(skipped for a private command: its result must not turn public), then a DM. Uploads are fitted as the
in-process delivery fits them; a 413 retries once at half the refused size.
"""

from __future__ import annotations

import asyncio
import io
import logging
import time
from collections.abc import Awaitable, Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any, cast

import aiohttp
import discord

from bot.config import Config
from bot.couriers import Posted, Undeliverable
from bot.models import DescribeResult, EnhanceResult, ImagineResult, StoredImage

from .client import apply_endpoints
from .embeds import describe_embed, enhance_embed, result_embed
from .fitting import ENVELOPE, MAX_FILES, CannotFit, Upload, fit_message
from .settings import DEFAULT_UPLOAD_LIMIT, DiscordSettings
from .views import describe_view, enhance_view, result_view

log = logging.getLogger(__name__)

NO_MENTIONS = discord.AllowedMentions.none()
#: Unknown interaction, unknown webhook, unknown message, invalid webhook token (older than 15 min).
GONE = {10062, 10015, 10008, 50027}
TOO_LARGE = 40005
#: Seconds one target may take (an upload of ten images included) before the next is tried.
TARGET_TIMEOUT = 60.0
#: What counts as "this target refused": Discord's answers, the network, a file that cannot fit.
REFUSALS: tuple[type[BaseException], ...] = (discord.DiscordException, aiohttp.ClientError, OSError,
                                             TimeoutError, CannotFit, ValueError)
WEBHOOK, CHANNEL, DM = "webhook", "channel", "dm"


@dataclass(frozen=True)
class Address:
    """The discord address shape of ``bot.couriers``, read leniently (a missing key is empty)."""

    application_id: str
    token: str
    channel_id: str
    user_id: str
    guild_id: str
    ephemeral: bool
    message: str
    #: Optional extras the adapters add, so the embed names the asker without a lookup.
    display_name: str
    avatar: str
    upload_limit: int

    @classmethod
    def parse(cls, address: Mapping[str, Any]) -> Address:
        def text(key: str) -> str:
            value = address.get(key)
            return str(value) if value is not None else ""

        try:
            limit = int(address.get("upload_limit") or 0)
        except (TypeError, ValueError):
            limit = 0
        return cls(text("application_id"), text("token"), text("channel_id"), text("user_id"), text("guild_id"),
                   bool(address.get("ephemeral")), text("message"), text("display_name"), text("avatar"),
                   limit if limit > 0 else DEFAULT_UPLOAD_LIMIT)


@dataclass
class _Message:
    embed: discord.Embed
    view: Callable[[], discord.ui.View] | None
    raw: list[tuple[bytes, str]]
    stem: str


def _is_gone(exc: BaseException) -> bool:
    return isinstance(exc, discord.HTTPException) and exc.code in GONE


def _too_large(exc: BaseException) -> bool:
    return isinstance(exc, discord.HTTPException) and (exc.code == TOO_LARGE or exc.status == 413)


def _reason(exc: BaseException) -> str:
    if isinstance(exc, CannotFit) or _too_large(exc):
        return "Discord refused the upload size"
    if _is_gone(exc):
        return "the interaction expired"
    if isinstance(exc, discord.Forbidden):
        return "the bot may not post there"
    if isinstance(exc, discord.HTTPException):
        return f"Discord refused the message ({exc.status}, code {exc.code})"
    if isinstance(exc, aiohttp.ClientError | OSError | TimeoutError):
        return f"Discord could not be reached ({type(exc).__name__})"
    return f"the message could not be sent ({type(exc).__name__})"


def _read(images: Sequence[StoredImage]) -> list[tuple[bytes, str]]:
    return [(image.path.read_bytes(), image.mime) for image in images]


def _fit_all(raw: list[tuple[bytes, str]], limit: int, stem: str) -> list[list[Upload]]:
    if not raw:
        return [[]]
    return [fit_message(raw[i : i + MAX_FILES], limit, stem=stem, start=i + 1) for i in range(0, len(raw), MAX_FILES)]


def _files(batch: Sequence[Upload]) -> list[discord.File]:
    return [discord.File(io.BytesIO(u.data), filename=u.filename) for u in batch]


def _finish(view: discord.ui.View | None) -> None:
    """A sent view is kept in the client's view store for dispatch; this process never dispatches (no
    gateway), so drop it at once rather than let a long-running worker collect them."""
    if view is not None:
        view.stop()


class DiscordCourier:
    """``bot.couriers.Courier`` for Discord. One per process; ``aclose`` on the way out."""

    platform = "discord"

    def __init__(self, settings: DiscordSettings, *, application_id: str = "",
                 target_timeout: float = TARGET_TIMEOUT) -> None:
        self._settings = settings
        self._application_id = application_id
        self._timeout = target_timeout
        # No voice here: discord.py's warnings about PyNaCl and davey are noise.
        discord.VoiceClient.warn_nacl = discord.VoiceClient.warn_dave = False
        # Never connects: the intents only keep discord.py from warning about a missing guilds intent.
        self._client = discord.Client(intents=discord.Intents(guilds=True), allowed_mentions=NO_MENTIONS)
        self._session: aiohttp.ClientSession | None = None
        self._login = asyncio.Lock()
        self._logged_in = False

    @classmethod
    def from_config(cls, config: Config) -> DiscordCourier:
        settings = DiscordSettings.from_env(config.env)
        apply_endpoints(settings)
        return cls(settings, application_id=config.env.get("DISCORD_APPLICATION_ID", "").strip())

    async def aclose(self) -> None:
        if self._session is not None:
            await self._session.close()
            self._session = None
        await self._client.close()

    # -- the two REST clients ----------------------------------------------------------------------

    async def _bot(self) -> discord.Client:
        """The bot-token REST client, logged in on first use (no gateway). A refused token raises
        ``discord.LoginFailure``: the channel and the DM count as refused, the webhook still works."""
        if not self._logged_in:
            async with self._login:
                if not self._logged_in:
                    await self._client.login(self._settings.token)
                    self._logged_in = True
        return self._client

    def _webhook(self, where: Address) -> discord.Webhook:
        """The interaction's webhook (an application webhook, so follow-ups may be ephemeral). It carries
        the client's state, which discord.py needs to send buttons; the token is the interaction's."""
        if self._session is None or self._session.closed:
            self._session = aiohttp.ClientSession()
        app_id = where.application_id or self._application_id
        if not app_id and self._client.application_id:
            app_id = str(self._client.application_id)
        if not app_id.isdigit():
            raise ValueError("no application id for the interaction webhook")
        hook = discord.Webhook.partial(int(app_id), where.token, session=self._session, client=self._client)
        hook.type = discord.WebhookType.application
        return hook

    def _user(self, where: Address) -> discord.User:
        """The asker, for the embed's author line and mention, from the address alone."""
        name = where.display_name or "someone"
        data = {"id": where.user_id or "0", "username": name, "global_name": name, "discriminator": "0",
                "avatar": where.avatar or None}
        return discord.User(state=self._client._connection, data=data)  # type: ignore[arg-type]

    # -- deliver -----------------------------------------------------------------------------------

    async def deliver(self, address: Mapping[str, Any], deliver_by: float,
                      result: ImagineResult | EnhanceResult | DescribeResult, *, posted: Posted | None = None,
                      ) -> None:
        where = Address.parse(address)
        try:
            message = await self._compose(where, result)
        except (OSError, ValueError) as exc:
            log.error("result %s cannot be read for delivery: %s", result.generation_id, type(exc).__name__)
            raise Undeliverable("the result's images could not be read") from None
        failures: list[BaseException] = []
        live = bool(where.token) and time.time() < deliver_by
        if live:
            if await self._attempt(WEBHOOK, where, message, failures):
                if posted is not None:
                    await posted()
                return
            live = not any(_is_gone(f) for f in failures)
        targets = ([CHANNEL] if where.channel_id and not where.ephemeral else []) + ([DM] if where.user_id else [])
        for target in targets:
            if await self._attempt(target, where, message, failures):
                if posted is not None:
                    await posted()
                if live:
                    await self._note(where, target, failures)
                return
        reasons = "; ".join(dict.fromkeys(_reason(f) for f in failures)) or "no target in the address"
        raise Undeliverable(f"Discord delivery of {result.generation_id} failed: {reasons}")

    async def _compose(self, where: Address, result: ImagineResult | EnhanceResult | DescribeResult) -> _Message:
        user = self._user(where)
        if isinstance(result, DescribeResult):
            described = result
            return _Message(describe_embed(result, user), lambda: describe_view(described), [], "")
        if isinstance(result, EnhanceResult):
            enhanced = result
            return _Message(enhance_embed(result, user), lambda: enhance_view(enhanced), [], "")
        imagined = result
        raw = await asyncio.to_thread(_read, result.images)
        return _Message(result_embed(result, user), lambda: result_view(imagined), raw,
                        f"imagebot-{result.generation_id[-8:]}")

    async def _attempt(self, target: str, where: Address, message: _Message, failures: list[BaseException]) -> bool:
        """One target: fitted to its limit, retried once at half the size on a 413. True when posted."""
        limit = where.upload_limit if target == WEBHOOK else DEFAULT_UPLOAD_LIMIT
        for attempt in range(2):
            try:
                batches = await asyncio.to_thread(_fit_all, message.raw, limit, message.stem)
                async with asyncio.timeout(self._timeout):
                    await self._post(target, where, message, batches)
                return True
            except REFUSALS as exc:
                log.warning("discord %s delivery of %s refused: %s", target, message.stem or "a reply", _reason(exc))
                if attempt == 0 and _too_large(exc):
                    limit = min(limit, sum(len(u.data) for u in batches[0]) + ENVELOPE) // 2
                    continue
                failures.append(exc)
                return False
        return False

    async def _post(self, target: str, where: Address, message: _Message, batches: list[list[Upload]]) -> None:
        first, rest = batches[0], batches[1:]
        view = message.view() if message.view is not None and target != DM else None
        send: Callable[[list[discord.File]], Awaitable[object]]
        try:
            if target == WEBHOOK:
                hook = self._webhook(where)
                if where.message == "@original":
                    await hook.edit_message(cast(int, "@original"), content=None, embed=message.embed,
                                            attachments=_files(first), view=view, allowed_mentions=NO_MENTIONS)
                else:
                    await hook.send(embed=message.embed, files=_files(first), view=view or discord.utils.MISSING,
                                    ephemeral=where.ephemeral, allowed_mentions=NO_MENTIONS, wait=True)
                send = lambda files: hook.send(files=files, ephemeral=where.ephemeral, wait=True)  # noqa: E731
            else:
                channel = await self._channel(target, where)
                mention = None if target == DM else f"<@{where.user_id}>" if where.user_id else None
                allowed = (discord.AllowedMentions(users=[discord.Object(int(where.user_id))], everyone=False,
                                                   roles=False) if mention else NO_MENTIONS)
                await channel.send(mention, embed=message.embed, files=_files(first),
                                   view=view or discord.utils.MISSING, allowed_mentions=allowed)
                send = lambda files: channel.send(files=files)  # noqa: E731
        finally:
            _finish(view)
        for batch in rest:  # more than 10 images: the rest follow in the same place, best effort
            try:
                await send(_files(batch))
            except REFUSALS as exc:
                log.warning("a further batch of %s was refused: %s", message.stem, _reason(exc))

    async def _channel(self, target: str, where: Address) -> discord.PartialMessageable:
        client = await self._bot()
        if target == CHANNEL:
            return client.get_partial_messageable(int(where.channel_id))
        data = await client.http.start_private_message(int(where.user_id))
        return client.get_partial_messageable(int(data["id"]), type=discord.ChannelType.private)

    async def _note(self, where: Address, target: str, failures: Sequence[BaseException]) -> None:
        """The deferred response would otherwise keep "thinking" over a result posted elsewhere."""
        place = "in this channel" if target == CHANNEL else "to you by direct message"
        reason = _reason(failures[-1]) if failures else "Discord refused the message"
        text = f"I couldn't post the images here ({reason}), so I posted them {place}."
        try:
            hook = self._webhook(where)
            if where.message == "@original":
                await hook.edit_message(cast(int, "@original"), content=text, allowed_mentions=NO_MENTIONS)
        except REFUSALS:
            pass

    # -- tell --------------------------------------------------------------------------------------

    async def tell(self, address: Mapping[str, Any], deliver_by: float, text: str) -> bool:
        """While the interaction is valid: the deferred response's text (so it stops "thinking"; its result,
        if any, stays), else an ephemeral follow-up; past that, a DM."""
        try:
            where = Address.parse(address)
            text = text[:2000]
            if where.token and time.time() < deliver_by:
                try:
                    async with asyncio.timeout(self._timeout):
                        hook = self._webhook(where)
                        if where.message == "@original":
                            await hook.edit_message(cast(int, "@original"), content=text,
                                                    allowed_mentions=NO_MENTIONS)
                        else:
                            await hook.send(text, ephemeral=True, allowed_mentions=NO_MENTIONS, wait=True)
                    return True
                except REFUSALS as exc:
                    log.warning("discord note through the webhook refused: %s", _reason(exc))
                    if not _is_gone(exc) and where.message == "@original":
                        try:
                            async with asyncio.timeout(self._timeout):
                                await self._webhook(where).send(text, ephemeral=True, allowed_mentions=NO_MENTIONS,
                                                                wait=True)
                            return True
                        except REFUSALS as again:
                            log.warning("discord private follow-up refused: %s", _reason(again))
            if not where.user_id:
                return False
            async with asyncio.timeout(self._timeout):
                channel = await self._channel(DM, where)
                await channel.send(text, allowed_mentions=NO_MENTIONS)
            return True
        except Exception as exc:  # noqa: BLE001 - a note never raises
            log.warning("discord note reached nobody: %s", _reason(exc))
            return False

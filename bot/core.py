"""The platform-neutral core: every command runs here, once, for every adapter.

This module is the table of contents; the work lives in its seams:

- ``bot.validation``: what the user typed -> a ``Plan`` (sizes, options, price, which providers), before
  any credit moves;
- ``bot.billing``: the charge around a job, written once (reserve under a lease, heartbeat, settle what
  was produced, or refund everything and say "you were not charged");
- ``bot.generation``: the plan -> stored images (failover across providers and models, retired models,
  fan-out, per-provider slots and queue positions, previews), and the /enhance text model.

``/imagine``: plan -> rate limit -> charge( generate -> store -> produced ) -> reply values. Adapters
acknowledge the platform first, then call in here.
"""

from __future__ import annotations

import asyncio
import hashlib
import itertools
import logging
import secrets
import time
import uuid
from contextlib import AbstractAsyncContextManager
from dataclasses import dataclass
from typing import Any

from providers.registry import ProviderRegistry
from storage.images import ImageStore
from storage.ledger import GenerationRow, Ledger, LedgerRefused

from .billing import Bill, charge, image_rows, not_charged
from .config import Config
from .errors import NotFound, PermissionDenied, ProviderBadResponse, ValidationError
from .generation import Generator, Progress
from .imaging import inspect_image
from .models import (
    Context,
    CreditsSummary,
    EnhanceResult,
    Identity,
    ImagineOptions,
    ImagineResult,
    UsageLine,
)
from .ratelimit import RateLimiter
from .replies import refusal
from .validation import Plan, clean_prompt, parse_amount, plan_imagine, recorded_options, repeat_options

log = logging.getLogger(__name__)

#: ``await progress(stage, details)``; stages and their detail keys:
#:   queued     (position, provider): waiting for a slot of a busy provider;
#:   generating (provider, model): a provider call started;
#:   failover   (from, to): an attempt failed, the next provider (or model) is tried;
#:   made       (count, provider): the provider's images exist; storing them and the settle follow
#:              (an adapter may say "Uploading…" now, so that edit overlaps this work);
#:   preview    (index, of, path, data, mime, provider, model): partial image ``index`` of the ``of``
#:              previews requested per call, while the model draws; free, saved under
#:              ``data/previews/``, never a result.
__all__ = ["AdjustResult", "GenerationRow", "Imagebot", "Progress", "RequestIds", "safety_id"]


@dataclass(frozen=True)
class AdjustResult:
    target: Identity
    kind: str
    amount: int
    old_balance: int
    new_balance: int


class RequestIds:
    """Request ids unique across processes (a random prefix per core) without asking the OS for
    entropy on every command."""

    def __init__(self) -> None:
        self._prefix = uuid.uuid4().hex[:16]
        self._counter = itertools.count()

    def new(self) -> str:
        return f"{self._prefix}{next(self._counter):016x}"


def safety_id(identity: Identity) -> str:
    """A stable, non-reversible id of a user for the vendors' abuse monitoring (never the raw id)."""
    return hashlib.sha256(f"imagebot-user:{identity}".encode()).hexdigest()[:32]


class Imagebot:
    """The core service. Built once in ``bot.app`` and handed to every adapter."""

    def __init__(
        self,
        config: Config,
        store: Ledger,
        images: ImageStore,
        registry: ProviderRegistry,
        limiter: RateLimiter,
    ) -> None:
        self.config = config
        self.store = store
        self.images = images
        self.registry = registry
        self.limiter = limiter
        self.generator = Generator(registry, images)
        self._sweeper: asyncio.Task[None] | None = None
        self._refresher: asyncio.Task[None] | None = None
        self._ids = RequestIds()

    # -- lifecycle -------------------------------------------------------------------------------

    async def start(self, *, sweep: bool = False, catalogue: bool = True) -> None:
        """Open storage and the catalogue. ``sweep`` (``imagebot run``): release reservations whose
        lease expired, now and every third of a lease; operator commands never release anything, and
        ask no vendor for its models (``catalogue=False``)."""
        await self.store.open()
        if catalogue:
            try:
                # A pinned model the vendors dropped stops the start; then refreshed every few hours.
                await self.registry.refresh(strict=True)
            except BaseException:
                await self.store.close()
                raise
            self._refresher = asyncio.create_task(self._refresh_catalogue(), name="catalogue-refresh")
        if sweep:
            released = await self.store.release_expired()
            if released:
                log.warning("released %d reservation(s) whose lease expired (their process stopped)", released)
            self._sweeper = asyncio.create_task(self._sweep(), name="reservation-sweeper")

    async def close(self) -> None:
        for task in (self._refresher, self._sweeper):
            if task is not None:
                task.cancel()
                await asyncio.gather(task, return_exceptions=True)
        self._refresher = self._sweeper = None
        await self.registry.aclose()
        await self.store.close()
        self.images.close()

    async def __aenter__(self) -> Imagebot:
        await self.start()
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.close()

    async def _refresh_catalogue(self) -> None:
        while True:
            await asyncio.sleep(self.config.catalogue_refresh)
            try:
                await self.registry.refresh(strict=False)
            except Exception:  # noqa: BLE001 - keep the rotation we have
                log.exception("model catalogue refresh failed")

    async def _sweep(self) -> None:
        while True:
            await asyncio.sleep(self.config.lease_seconds / 3)
            try:
                released = await self.store.release_expired()
                if released:
                    log.warning("released %d reservation(s) whose lease expired", released)
            except Exception:  # noqa: BLE001 - keep sweeping
                log.exception("reservation sweep failed")

    # -- /imagine --------------------------------------------------------------------------------

    def plan(self, ctx: Context, options: ImagineOptions) -> Plan:
        """Validate without side effects (adapters use it to reject bad flags before acking work)."""
        plan = plan_imagine(options, self.registry, self.config, ctx.identity.server_key)
        if plan.reference is not None:
            try:
                inspect_image(plan.reference)
            except ProviderBadResponse:
                raise ValidationError(
                    "The reference is not a readable image (PNG, JPEG, WebP or GIF).", code="IMG-VALID-REFERENCE"
                ) from None
        return plan

    async def imagine(
        self, ctx: Context, options: ImagineOptions, *, progress: Progress | None = None, command: str = "imagine"
    ) -> ImagineResult:
        plan = self.plan(ctx, options)
        await self.limiter.check(ctx.identity)
        request_id = self._ids.new()
        recorded = recorded_options(plan, options)
        if plan.reference is not None:
            recorded["reference_sha256"] = (await self.images.save(plan.reference)).sha256
        primary = plan.attempts[0]
        async with self._charge(ctx, request_id, plan.total, {
            "command": command, "channel_id": ctx.channel_id, "prompt": plan.prompt,
            "provider": primary.provider.name, "model": primary.model.name, "options": recorded,
        }) as bill:
            made = await self.generator.imagine(plan, progress, request_id=request_id, user=safety_id(ctx.identity))
            bill.produced(plan.price_per_image * len(made.images), provider=made.provider, model=made.model,
                          revised_prompt=made.revised_prompt, images=image_rows(made.images),
                          input_tokens=made.input_tokens, output_tokens=made.output_tokens)
        settled = bill.settlement
        assert settled is not None
        notes = list(made.notes)
        if len(made.images) < plan.count:
            notes.append(f"{len(made.images)} of {plan.count} images were made; you paid only for those.")
        return ImagineResult(
            generation_id=request_id, prompt=plan.prompt, images=made.images, provider=made.provider,
            model=made.model, size=plan.size, style=plan.style, quality=plan.quality,
            requested=plan.count, credits_spent=settled.consumed, credits_refunded=settled.released,
            balance=settled.balance, revised_prompt=made.revised_prompt, partial_note=" ".join(notes) or None,
            failed_over=made.failed_over,
        )

    # -- buttons: re-roll, variations, upscale -----------------------------------------------------

    async def reroll(self, ctx: Context, generation_id: str, *, progress: Progress | None = None) -> ImagineResult:
        """The same request again, with a new seed."""
        gen = await self._own_generation(ctx, generation_id)
        options = repeat_options(gen.prompt, gen.options, seed=secrets.randbelow(2**31))
        return await self.imagine(ctx, options, progress=progress, command="reroll")

    async def variations(
        self, ctx: Context, generation_id: str, index: int = 0, *, progress: Progress | None = None
    ) -> ImagineResult:
        """The same prompt with the chosen image as the reference."""
        gen = await self._own_generation(ctx, generation_id)
        options = repeat_options(gen.prompt, gen.options, seed=secrets.randbelow(2**31),
                                 reference=self._image_bytes(gen, index))
        return await self.imagine(ctx, options, progress=progress, command="variations")

    async def upscale(
        self, ctx: Context, generation_id: str, index: int = 0, *, progress: Progress | None = None
    ) -> ImagineResult:
        """The chosen image at twice its size, by the provider that made it (when its model can)."""
        gen = await self._own_generation(ctx, generation_id)
        provider = self.generator.upscaler(gen.provider or "", gen.model)
        source = self._image_bytes(gen, index)
        _, w, h = inspect_image(source)
        size = f"{w * 2}x{h * 2}"
        price = self.config.pricing.per_image(size, "standard")
        await self.limiter.check(ctx.identity)
        request_id = self._ids.new()
        async with self._charge(ctx, request_id, price, {
            "command": "upscale", "channel_id": ctx.channel_id, "prompt": gen.prompt, "provider": provider.name,
            "model": gen.model, "options": {"source": generation_id, "index": index, "size": size},
        }) as bill:
            stored = await self.generator.upscale(provider, gen.model or "", source, progress)
            bill.produced(price, provider=provider.name, model=gen.model, images=image_rows([stored]))
        settled = bill.settlement
        assert settled is not None
        return ImagineResult(
            generation_id=request_id, prompt=gen.prompt, images=[stored], provider=provider.name,
            model=gen.model or "", size=f"{stored.width}x{stored.height}", style=gen.options.get("style", ""),
            quality="standard", requested=1, credits_spent=settled.consumed, credits_refunded=settled.released,
            balance=settled.balance,
        )

    async def generation(self, generation_id: str) -> GenerationRow | None:
        return await self.store.generation(generation_id)

    async def delivery_failed(self, generation_id: str, *, code: str = "IMG-DELIVERY-001") -> int:
        """The adapter could deliver the images nowhere (channel nor DM): give the credits back.

        Returns the credits refunded (0 if they were already refunded)."""
        refunded = await self.store.refund_completed(generation_id, code=code)
        if refunded:
            log.warning("generation %s was not delivered (%s): refunded %d credits", generation_id, code, refunded)
        return refunded

    async def _own_generation(self, ctx: Context, generation_id: str) -> GenerationRow:
        """A generation of the caller's own server; any other is unknown to them."""
        gen = await self.store.generation(generation_id)
        if gen is None or (gen.platform, gen.server_id) != (ctx.identity.platform, ctx.identity.server_id):
            raise NotFound("That image is no longer known to the bot.", code="IMG-NOTFOUND-GEN")
        return gen

    def _image_bytes(self, gen: GenerationRow, index: int) -> bytes:
        if not gen.images:
            raise NotFound("That generation has no images.", code="IMG-NOTFOUND-IMAGE")
        image = gen.images[min(max(0, index), len(gen.images) - 1)]
        return self.generator.load(image.sha256, image.mime)

    # -- /enhance --------------------------------------------------------------------------------

    async def enhance(self, ctx: Context, prompt: str) -> EnhanceResult:
        """A richer prompt from the text model; a retired text model is replaced within the same charge."""
        text = clean_prompt(prompt)
        await self.limiter.check(ctx.identity)
        price = self.config.pricing.enhance
        request_id = self._ids.new()
        enhancer = self.generator.enhancer
        async with self._charge(ctx, request_id, price, {
            "command": "enhance", "channel_id": ctx.channel_id, "prompt": text, "provider": enhancer.name,
            "options": {},
        }) as bill:
            enhanced = await self.generator.enhance(text)
            bill.produced(price, provider=enhancer.name, model=getattr(enhancer, "model", None) or None,
                          result_text=enhanced)
        settled = bill.settlement
        assert settled is not None
        return EnhanceResult(generation_id=request_id, original=text, enhanced=enhanced, credits_spent=settled.consumed,
                             balance=settled.balance, enhancer=enhancer.name)

    # -- /credits --------------------------------------------------------------------------------

    async def credits(self, identity: Identity, *, recent: int = 5) -> CreditsSummary:
        balance = await self.store.balance(identity)
        held = await self.store.held(identity)
        spent, images = await self.store.spent(identity)
        rows = await self.store.recent_generations(identity, recent)
        return CreditsSummary(
            identity=identity, balance=balance, held=held, spent=spent, images=images,
            recent=[
                UsageLine(r.created_at, r.command, r.status, r.prompt, r.credits_consumed, r.image_count,
                          r.provider or "")
                for r in rows
            ],
        )

    async def adjust(self, actor: str, target: Identity, kind: str, amount: object,
                     *, note: str | None = None) -> AdjustResult:
        """Grant, revoke or set credits, recorded with the acting admin. Operators (CLI) call this."""
        if kind not in ("grant", "revoke", "set"):
            raise ValidationError(f"Unknown credits operation {kind!r}: use grant, revoke or set.",
                                  code="IMG-VALID-OP")
        value = parse_amount(amount, allow_zero=kind == "set")
        try:
            old, new = await self.store.adjust(target, kind, value, actor=actor,
                                               request_id=f"{kind}:{self._ids.new()}", note=note)
        except LedgerRefused as exc:
            raise refusal(exc) from None
        log.info("credits %s %d for %s by %s: %d -> %d", kind, value, target, actor, old, new)
        return AdjustResult(target, kind, value, old, new)

    async def admin_adjust(self, ctx: Context, target: Identity, kind: str, amount: object) -> AdjustResult:
        """An admin in a chat: only inside their own server, only when the adapter says they are admin."""
        self._require_admin(ctx)
        if (target.platform, target.server_id) != (ctx.identity.platform, ctx.identity.server_id):
            raise PermissionDenied("You can only change credits in your own server.")
        return await self.adjust(ctx.actor, target, kind, amount)

    async def usage_report(self, ctx: Context, *, since_seconds: float = 7 * 86400) -> list[dict[str, Any]]:
        self._require_admin(ctx)
        return await self.store.usage(time.time() - since_seconds, ctx.identity.server_key)

    @staticmethod
    def _require_admin(ctx: Context) -> None:
        if not ctx.is_admin:
            raise PermissionDenied("Only server admins can do that. Nothing was changed.")

    # -- the charge ------------------------------------------------------------------------------

    def _charge(
        self, ctx: Context, request_id: str, amount: int, generation: dict[str, Any]
    ) -> AbstractAsyncContextManager[Bill]:
        """``bot.billing.charge`` with this bot's ledger, limits and lease, worded for the user."""
        return charge(self.store, ctx.identity, request_id, amount, max_concurrent=self.config.limits.max_concurrent,
                      lease=self.config.lease_seconds, generation=generation, failure=not_charged)


"""The platform-neutral core: every command runs here, once, for every adapter.

``/imagine``: validate -> rate limit -> price -> reserve -> generate (fan-out, failover) -> store
images -> consume what was produced and release the rest -> record -> reply values. Any failure after
the reservation refunds it in full. Adapters acknowledge the platform first, then call in here.
"""

from __future__ import annotations

import asyncio
import hashlib
import itertools
import logging
import secrets
import time
import uuid
from collections.abc import Awaitable, Callable, Coroutine
from contextlib import AbstractAsyncContextManager
from dataclasses import dataclass
from typing import Any, TypeVar

from providers.base import GeneratedImage, GenerationRequest, ImageProvider, PreviewSink
from providers.registry import ProviderRegistry
from storage.images import ImageStore, inspect_image
from storage.ledger import GenerationRow, ImageRow, Ledger, LedgerRefused

from .billing import Bill, charge
from .config import Config
from .errors import (
    ContentRejected,
    GenerationFailed,
    ImagebotError,
    ModelRetired,
    NotFound,
    PermissionDenied,
    ProviderBadResponse,
    ProviderError,
    ProviderUnsupported,
    ValidationError,
)
from .models import (
    Context,
    CreditsSummary,
    EnhanceResult,
    Identity,
    ImagineOptions,
    ImagineResult,
    StoredImage,
    UsageLine,
)
from .ratelimit import RateLimiter
from .replies import refusal
from .validation import (
    PROMPT_LIMIT,
    Attempt,
    Plan,
    calls_needed,
    clean_prompt,
    fitting_model,
    parse_amount,
    plan_imagine,
)

log = logging.getLogger(__name__)
T = TypeVar("T")

#: ``await progress(stage, details)``; stages: queued (position), generating (provider, model), failover
#: (from, to), preview (index, path, data, mime, provider, model: a partial image while the model draws;
#: free, saved under ``data/previews/``, never a result).
Progress = Callable[[str, dict[str, Any]], Awaitable[None]]


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
        self._slots = {
            name: asyncio.Semaphore(p.capabilities.concurrency) for name, p in registry.providers.items()
        }
        self._waiting: dict[str, int] = dict.fromkeys(registry.providers, 0)
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
                await self._start_catalogue()
            except BaseException:
                await self.store.close()
                raise
        if sweep:
            released = await self.store.release_expired()
            if released:
                log.warning("released %d reservation(s) whose lease expired (their process stopped)", released)
            self._sweeper = asyncio.create_task(self._sweep(), name="reservation-sweeper")

    async def _start_catalogue(self) -> None:
        """Ask the vendors for their models now (a pinned model they dropped stops the start), then
        every ``catalogue_refresh`` seconds."""
        await self.registry.refresh(strict=True)
        self._refresher = asyncio.create_task(self._refresh_catalogue(), name="catalogue-refresh")

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

    async def close(self) -> None:
        if self._refresher is not None:
            self._refresher.cancel()
            await asyncio.gather(self._refresher, return_exceptions=True)
            self._refresher = None
        if self._sweeper is not None:
            self._sweeper.cancel()
            await asyncio.gather(self._sweeper, return_exceptions=True)
            self._sweeper = None
        await self.registry.aclose()
        await self.store.close()
        self.images.close()

    async def __aenter__(self) -> Imagebot:
        await self.start()
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.close()

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
        self,
        ctx: Context,
        options: ImagineOptions,
        *,
        progress: Progress | None = None,
        command: str = "imagine",
    ) -> ImagineResult:
        plan = self.plan(ctx, options)
        await self.limiter.check(ctx.identity)
        request_id = self._ids.new()
        primary = plan.attempts[0]
        recorded = {
            "size": plan.size, "style": plan.style, "quality": plan.quality, "count": plan.count,
            "provider": options.provider or None, "model": options.model or None, "seed": plan.seed,
            "format": plan.output_format, "background": plan.background,
        }
        if plan.reference is not None:
            recorded["reference_sha256"] = (await self.images.save(plan.reference)).sha256
        async with self._charge(ctx, request_id, plan.total, {
            "command": command, "channel_id": ctx.channel_id, "prompt": plan.prompt,
            "provider": primary.provider.name, "model": primary.model.name, "options": recorded,
        }) as bill:
            attempt, produced, failed_over, notes = await self._generate(
                plan, progress, request_id=request_id, user=safety_id(ctx.identity))
            stored = await self._store_images(produced[: plan.count])
            if not stored:
                raise ProviderBadResponse("The provider returned no usable image.", provider=attempt.provider.name)
            revised = next((g.revised_prompt for g in produced if g.revised_prompt), None)
            bill.produced(
                plan.price_per_image * len(stored), provider=attempt.provider.name, model=attempt.model.name,
                revised_prompt=revised,
                images=[ImageRow(s.sha256, s.mime, s.size_bytes, s.width, s.height) for s in stored],
                input_tokens=sum(g.input_tokens for g in produced), output_tokens=sum(g.output_tokens for g in produced),
            )
        settled = bill.settlement
        assert settled is not None
        if len(stored) < plan.count:
            notes.append(f"{len(stored)} of {plan.count} images were made; you paid only for those.")
        return ImagineResult(
            generation_id=request_id, prompt=plan.prompt, images=stored, provider=attempt.provider.name,
            model=attempt.model.name, size=plan.size, style=plan.style, quality=plan.quality,
            requested=plan.count, credits_spent=settled.consumed, credits_refunded=settled.released,
            balance=settled.balance, revised_prompt=revised, partial_note=" ".join(notes) or None,
            failed_over=failed_over,
        )

    def _charge(
        self, ctx: Context, request_id: str, amount: int, generation: dict[str, Any]
    ) -> AbstractAsyncContextManager[Bill]:
        """The two-phase charge around a job (``bot.billing.charge``): reserve under a lease, heartbeat,
        settle what the body reports, or refund everything and raise the user's failure."""
        return charge(self.store, ctx.identity, request_id, amount, max_concurrent=self.config.limits.max_concurrent,
                      lease=self.config.lease_seconds, generation=generation, failure=self._failure)

    @staticmethod
    def _failure(exc: BaseException, refunded: int) -> BaseException:
        if isinstance(exc, asyncio.CancelledError):
            return exc
        back = f" You were not charged ({refunded} credits returned)." if refunded else " You were not charged."
        if isinstance(exc, ContentRejected):
            return GenerationFailed(
                f"{exc.message} Try rewording the prompt, or run /enhance on it.{back}",
                code=exc.code, refunded=refunded, cause=exc,
            )
        if isinstance(exc, ImagebotError):
            return GenerationFailed(exc.message + back, code=exc.code, refunded=refunded, cause=exc)
        return GenerationFailed(f"Something went wrong while generating.{back}", code="IMG-INTERNAL-001",
                                refunded=refunded)

    async def _generate(
        self, plan: Plan, progress: Progress | None, *, request_id: str = "", user: str = ""
    ) -> tuple[Attempt, list[GeneratedImage], list[str], list[str]]:
        """Try each provider that can serve the plan, in order, until one delivers. A model the vendor
        has retired leaves the rotation at once, and the same provider's next fitting model is tried
        before the next provider."""
        failed: list[str] = []
        last: ProviderError | None = None
        attempts = list(plan.attempts)
        i = 0
        while i < len(attempts):
            attempt = attempts[i]
            i += 1
            if failed:
                await _notify(progress, "failover", {"from": failed[-1], "to": attempt.provider.name})
            try:
                produced, notes = await self._run_attempt(attempt, plan, progress, request_id, user)
                return attempt, produced, failed, notes
            except ContentRejected:
                raise
            except ModelRetired as exc:
                self.registry.retire(attempt.provider.name, exc.model or attempt.model.name)
                tried = tuple(a.model.name for a in attempts[:i] if a.provider is attempt.provider)
                other = fitting_model(attempt.provider, plan.size, len(plan.prompt), plan.reference is not None,
                                      quality=plan.quality, output_format=plan.output_format,
                                      background=plan.background, exclude=tried)
                if other is not None:
                    attempts.insert(i, Attempt(attempt.provider, other))
                last = exc
                failed.append(f"{attempt.provider.name}/{attempt.model.name}")
            except ProviderError as exc:
                log.warning("provider %s failed (%s); %s", attempt.provider.name, exc.code,
                            "trying the next" if exc.retryable else "not retrying")
                last = exc
                if not exc.retryable:
                    raise
                failed.append(attempt.provider.name)
        assert last is not None
        if len(failed) > 1:
            raise type(last)(f"Every provider failed ({', '.join(failed)}); the last said: {last.message}",
                             provider=last.provider)
        raise last

    async def _run_attempt(
        self, attempt: Attempt, plan: Plan, progress: Progress | None, request_id: str = "", user: str = ""
    ) -> tuple[list[GeneratedImage], list[str]]:
        provider, model = attempt.provider, attempt.model
        prompt = plan.prompt
        reference = plan.reference
        if reference is not None and not model.supports_reference:
            description = await self.registry.enhancer.describe(reference)
            prompt = f"{prompt}. In the manner of the reference: {description}"[: model.prompt_limit]
            reference = None
        batches = calls_needed(plan.count, model.max_per_call)
        style = model.map_style(plan.style)
        seed = plan.seed
        previews = int(getattr(provider, "previews", 0) or 0) if model.streaming and progress is not None else 0
        requests = [
            GenerationRequest(prompt=prompt, model=model.name, size=plan.size, style=style, quality=plan.quality,
                              count=n, reference=reference, seed=seed + i, output_format=plan.output_format,
                              background=plan.background, safety_id=user, previews=previews,
                              on_preview=self._preview_sink(request_id, i, attempt, progress) if previews else None)
            for i, n in enumerate(batches)
        ]
        results = await _outcomes([self._call(provider, r, progress) for r in requests])
        produced: list[GeneratedImage] = []
        errors: list[BaseException] = []
        for r in results:
            if isinstance(r, BaseException):
                errors.append(r)
            else:
                produced.extend(r)
        for err in errors:
            if isinstance(err, asyncio.CancelledError):
                raise err
        if not produced:
            policy = next((e for e in errors if isinstance(e, ContentRejected)), None)
            retired = next((e for e in errors if isinstance(e, ModelRetired)), None)
            first = policy or retired or next((e for e in errors if isinstance(e, ProviderError)), None)
            if first is not None:
                raise first
            raise ProviderBadResponse("The provider returned no image.", provider=provider.name)
        notes = []
        if errors:
            notes.append(f"{len(errors)} of {len(batches)} calls to {provider.name} failed.")
        return produced, notes

    def _preview_sink(self, request_id: str, batch: int, attempt: Attempt, progress: Progress | None) -> PreviewSink:
        """Partial images are saved under ``previews/`` and shown; they are free and never a result."""

        async def sink(data: bytes, index: int) -> None:
            try:
                path, mime = await self.images.save_preview(f"{request_id}-{batch}-{index}", data)
            except Exception:  # noqa: BLE001 - a bad preview must not fail the generation
                log.info("preview %d of %s was not a readable image; skipped", index, request_id)
                return
            await _notify(progress, "preview", {"index": index + 1, "path": path, "data": data, "mime": mime,
                                                "provider": attempt.provider.name, "model": attempt.model.name})

        return sink

    async def _call(
        self, provider: ImageProvider, request: GenerationRequest, progress: Progress | None
    ) -> list[GeneratedImage]:
        slot = self._slots[provider.name]
        if slot.locked():
            self._waiting[provider.name] += 1
            await _notify(progress, "queued", {"position": self._waiting[provider.name], "provider": provider.name})
            try:
                await slot.acquire()
            finally:
                self._waiting[provider.name] -= 1
        else:
            await slot.acquire()
        try:
            await _notify(progress, "generating", {"provider": provider.name, "model": request.model})
            try:
                images = await provider.generate(request)
            except ProviderError as exc:
                if not exc.provider:
                    exc.provider = provider.name
                raise
            except (asyncio.CancelledError, ImagebotError):
                raise
            except Exception as exc:  # noqa: BLE001 - a provider bug must not leak raw text
                log.error("provider %s raised %s", provider.name, type(exc).__name__)
                raise ProviderBadResponse("The provider failed unexpectedly.", provider=provider.name) from None
            return list(images)[: request.count]
        finally:
            slot.release()

    async def _store_images(self, produced: list[GeneratedImage]) -> list[StoredImage]:
        saved = await _outcomes([self.images.save(image.data, drawn_size=image.drawn_size) for image in produced])
        stored: list[StoredImage] = []
        for outcome in saved:
            if isinstance(outcome, ProviderBadResponse):
                log.warning("a provider returned bytes that are not an image; dropped")
            elif isinstance(outcome, BaseException):
                raise outcome
            else:
                stored.append(outcome)
        return stored

    # -- buttons: re-roll, variations, upscale -----------------------------------------------------

    async def _own_generation(self, ctx: Context, generation_id: str) -> GenerationRow:
        gen = await self.store.generation(generation_id)
        if gen is None or (gen.platform, gen.server_id) != (ctx.identity.platform, ctx.identity.server_id):
            raise NotFound("That image is no longer known to the bot.", code="IMG-NOTFOUND-GEN")
        return gen

    async def reroll(self, ctx: Context, generation_id: str, *, progress: Progress | None = None) -> ImagineResult:
        """The same request again, with a new seed."""
        gen = await self._own_generation(ctx, generation_id)
        return await self.imagine(ctx, self._options_from(gen, seed=secrets.randbelow(2**31)),
                                  progress=progress, command="reroll")

    async def variations(
        self, ctx: Context, generation_id: str, index: int = 0, *, progress: Progress | None = None
    ) -> ImagineResult:
        """The same prompt with the chosen image as the reference."""
        gen = await self._own_generation(ctx, generation_id)
        image = self._image_bytes(gen, index)
        options = self._options_from(gen, seed=secrets.randbelow(2**31), reference=image)
        return await self.imagine(ctx, options, progress=progress, command="variations")

    async def upscale(
        self, ctx: Context, generation_id: str, index: int = 0, *, progress: Progress | None = None
    ) -> ImagineResult:
        gen = await self._own_generation(ctx, generation_id)
        provider = self.registry.get(gen.provider or "")
        upscaler = getattr(provider, "upscale", None)
        model = provider.capabilities.model(gen.model) if provider else None
        if provider is None or upscaler is None or model is None or not model.supports_upscale:
            raise ProviderUnsupported(
                f"Upscale is not supported by {gen.provider or 'that provider'}; try Variations instead.",
                provider=gen.provider or "",
            )
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
            await _notify(progress, "generating", {"provider": provider.name, "model": gen.model})
            image = await upscaler(source)
            stored = await self.images.save(image.data, drawn_size=image.drawn_size)
            bill.produced(price, provider=provider.name, model=gen.model,
                          images=[ImageRow(stored.sha256, stored.mime, stored.size_bytes, stored.width, stored.height)])
        settled = bill.settlement
        assert settled is not None
        return ImagineResult(
            generation_id=request_id, prompt=gen.prompt, images=[stored], provider=provider.name,
            model=gen.model or "", size=f"{stored.width}x{stored.height}", style=gen.options.get("style", ""),
            quality="standard", requested=1, credits_spent=settled.consumed, credits_refunded=settled.released,
            balance=settled.balance,
        )

    def _image_bytes(self, gen: GenerationRow, index: int) -> bytes:
        if not gen.images:
            raise NotFound("That generation has no images.", code="IMG-NOTFOUND-IMAGE")
        image = gen.images[min(max(0, index), len(gen.images) - 1)]
        try:
            return self.images.load(image.sha256, image.mime)
        except FileNotFoundError:
            raise NotFound("That image file is gone from the bot's storage.", code="IMG-NOTFOUND-IMAGE") from None

    @staticmethod
    def _options_from(gen: GenerationRow, *, seed: int, reference: bytes | None = None) -> ImagineOptions:
        o = gen.options
        return ImagineOptions(
            prompt=gen.prompt, size=o.get("size"), style=o.get("style"), quality=o.get("quality"),
            count=o.get("count"), provider=o.get("provider"), model=o.get("model"), reference=reference, seed=seed,
            output_format=o.get("format"), background=o.get("background"),
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

    # -- /enhance --------------------------------------------------------------------------------

    async def enhance(self, ctx: Context, prompt: str) -> EnhanceResult:
        text = clean_prompt(prompt)
        await self.limiter.check(ctx.identity)
        price = self.config.pricing.enhance
        request_id = self._ids.new()
        enhancer = self.registry.enhancer
        async with self._charge(ctx, request_id, price, {
            "command": "enhance", "channel_id": ctx.channel_id, "prompt": text, "provider": enhancer.name,
            "options": {},
        }) as bill:
            try:
                enhanced = clean_prompt(await enhancer.enhance(text, limit=PROMPT_LIMIT), PROMPT_LIMIT)
            except ValidationError:
                raise ProviderBadResponse("The enhancer returned an empty prompt.") from None
            bill.produced(price, provider=enhancer.name, result_text=enhanced)
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


async def _outcomes(jobs: list[Coroutine[Any, Any, T]]) -> list[T | BaseException]:
    """Each job's result or exception, run concurrently; a single job is awaited directly (the common
    case: no task to spawn)."""
    if len(jobs) == 1:
        try:
            return [await jobs[0]]
        except Exception as exc:  # noqa: BLE001 - handed back, as gather does below
            return [exc]
    return list(await asyncio.gather(*jobs, return_exceptions=True))


async def _notify(progress: Progress | None, stage: str, details: dict[str, Any]) -> None:
    if progress is None:
        return
    try:
        await progress(stage, details)
    except Exception:  # noqa: BLE001 - a failed progress edit must not fail the generation
        log.warning("progress update %s failed", stage)

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
import contextlib
import dataclasses
import hashlib
import itertools
import logging
import secrets
import time
import uuid
from collections.abc import AsyncIterator, Mapping
from contextlib import AbstractAsyncContextManager
from dataclasses import dataclass
from typing import Any

import aiohttp

from providers.registry import ProviderRegistry
from storage.images import ImageStore
from storage.ledger import GenerationRow, JobRow, JobSpec, Ledger, LedgerRefused

from . import metrics
from .billing import Bill, charge, hold, image_rows, keep_lease, not_charged
from .config import Config
from .errors import (
    Interrupted,
    LimitsUnavailable,
    NotFound,
    PermissionDenied,
    ProviderBadResponse,
    RateLimited,
    ValidationError,
)
from .generation import Generator, Outcome, Progress
from .imaging import inspect_image
from .models import (
    Context,
    CreditsSummary,
    EnhanceResult,
    Identity,
    ImagineOptions,
    ImagineResult,
    Queued,
    StoredImage,
    UsageLine,
)
from .ratelimit import RateLimiter
from .references import fetch_references
from .replies import interrupted_text, refusal
from .validation import Plan, clean_prompt, parse_amount, plan_imagine, recorded_options, repeat_options

log = logging.getLogger(__name__)
#: Seconds a job may wait to be delivered when its adapter set no deadline of its own.
DEFAULT_DELIVER_WITHIN = 15 * 60.0

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
        self._session: aiohttp.ClientSession | None = None
        #: Set when this process queued a job, so its own worker claims it at once instead of at its next poll.
        self.job_added = asyncio.Event()

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
        await self.limiter.aclose()
        if self._session is not None:
            await self._session.close()
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
        for data in (plan.reference, *plan.references):
            if data is None:
                continue
            try:
                inspect_image(data)
            except ProviderBadResponse:
                raise ValidationError(
                    "The reference is not a readable image (PNG, JPEG, WebP or GIF).", code="IMG-VALID-REFERENCE"
                ) from None
        return plan

    async def imagine(
        self, ctx: Context, options: ImagineOptions, *, progress: Progress | None = None, command: str = "imagine"
    ) -> ImagineResult:
        plan = self.plan(ctx, options)
        await self._check_limits(ctx, command)
        request_id = self._ids.new()
        work = await self._imagine_work(ctx, plan, options, command)
        async with self._charge(ctx, request_id, work) as bill:
            made = await self._generate(plan, bill, progress, ctx.identity)
        return self._imagine_result(plan, made, bill)

    async def _imagine_work(self, ctx: Context, plan: Plan, options: ImagineOptions, command: str) -> _Work:
        recorded = recorded_options(plan, options)
        if plan.reference is not None:
            recorded["reference_sha256"] = (await self.images.save(plan.reference)).sha256
            recorded["reference_mime"] = inspect_image(plan.reference)[0]
        if options.reference_urls:
            # Fetched by whichever worker runs the job (``_stored_options``): the ack never waits for them.
            recorded["reference_urls"] = list(options.reference_urls)
        primary = plan.attempts[0]
        generation = {"command": command, "channel_id": ctx.channel_id, "prompt": plan.prompt,
                      "provider": primary.provider.name, "model": primary.model.name, "options": recorded}
        return _Work("imagine", plan.total, generation, {"kind": "imagine", "command": command})

    async def _generate(self, plan: Plan, bill: Bill, progress: Progress | None, identity: Identity) -> Outcome:
        made = await self.generator.imagine(plan, progress, request_id=bill.request_id, user=safety_id(identity))
        bill.produced(plan.price_per_image * len(made.images), provider=made.provider, model=made.model,
                      revised_prompt=made.revised_prompt, images=image_rows(made.images),
                      input_tokens=made.input_tokens, output_tokens=made.output_tokens)
        return made

    @staticmethod
    def _imagine_result(plan: Plan, made: Outcome, bill: Bill) -> ImagineResult:
        settled = bill.settlement
        assert settled is not None
        notes = list(made.notes)
        if len(made.images) < plan.count:
            notes.append(f"{len(made.images)} of {plan.count} images were made; you paid only for those.")
        return ImagineResult(
            generation_id=bill.request_id, prompt=plan.prompt, images=made.images, provider=made.provider,
            model=made.model, size=plan.size, style=plan.style, quality=plan.quality,
            requested=plan.count, credits_spent=settled.consumed, credits_refunded=settled.released,
            balance=settled.balance, revised_prompt=made.revised_prompt, partial_note=" ".join(notes) or None,
            failed_over=made.failed_over,
        )

    # -- buttons: re-roll, variations, upscale -----------------------------------------------------

    async def reroll(self, ctx: Context, generation_id: str, *, progress: Progress | None = None) -> ImagineResult:
        """The same request again, with a new seed."""
        return await self.imagine(ctx, await self._button_options(ctx, "reroll", generation_id, 0),
                                  progress=progress, command="reroll")

    async def variations(
        self, ctx: Context, generation_id: str, index: int = 0, *, progress: Progress | None = None
    ) -> ImagineResult:
        """The same prompt with the chosen image as the reference."""
        return await self.imagine(ctx, await self._button_options(ctx, "variations", generation_id, index),
                                  progress=progress, command="variations")

    async def _button_options(self, ctx: Context, kind: str, generation_id: str, index: int) -> ImagineOptions:
        gen = await self._own_generation(ctx, generation_id)
        reference = self._image_bytes(gen, index) if kind == "variations" else None
        return repeat_options(gen.prompt, gen.options, seed=secrets.randbelow(2**31), reference=reference)

    async def upscale(
        self, ctx: Context, generation_id: str, index: int = 0, *, progress: Progress | None = None
    ) -> ImagineResult:
        """The chosen image at twice its size, by the provider that made it (when its model can)."""
        work = await self._upscale_work(ctx, generation_id, index)
        await self._check_limits(ctx, "upscale")
        request_id = self._ids.new()
        async with self._charge(ctx, request_id, work) as bill:
            stored = await self._upscale(bill, work.generation, progress)
        return self._upscale_result(bill, work.generation, stored)

    async def _upscale_work(self, ctx: Context, generation_id: str, index: int) -> _Work:
        gen = await self._own_generation(ctx, generation_id)
        provider = self.generator.upscaler(gen.provider or "", gen.model)
        _, w, h = inspect_image(self._image_bytes(gen, index))
        size = f"{w * 2}x{h * 2}"
        price = self.config.pricing.per_image(size, "standard")
        generation = {"command": "upscale", "channel_id": ctx.channel_id, "prompt": gen.prompt,
                      "provider": provider.name, "model": gen.model,
                      "options": {"source": generation_id, "index": index, "size": size,
                                  "style": gen.options.get("style", "")}}
        return _Work("upscale", price, generation, {"kind": "upscale"})

    async def _upscale(self, bill: Bill, generation: Mapping[str, Any], progress: Progress | None) -> StoredImage:
        """Run an upscale under its hold, from what its generation row records."""
        options = generation.get("options") or {}
        source = await self.store.generation(str(options.get("source", "")))
        if source is None:
            raise NotFound("That image is no longer known to the bot.", code="IMG-NOTFOUND-GEN")
        provider = self.generator.upscaler(generation.get("provider") or "", generation.get("model"))
        data = self._image_bytes(source, int(options.get("index", 0)))
        stored = await self.generator.upscale(provider, generation.get("model") or "", data, progress)
        bill.produced(bill.amount, provider=provider.name, model=generation.get("model"), images=image_rows([stored]))
        return stored

    @staticmethod
    def _upscale_result(bill: Bill, generation: Mapping[str, Any], stored: StoredImage) -> ImagineResult:
        settled = bill.settlement
        assert settled is not None
        return ImagineResult(
            generation_id=bill.request_id, prompt=str(generation.get("prompt") or ""), images=[stored],
            provider=str(generation.get("provider") or ""), model=str(generation.get("model") or ""),
            size=f"{stored.width}x{stored.height}", style=str((generation.get("options") or {}).get("style", "")),
            quality="standard", requested=1, credits_spent=settled.consumed, credits_refunded=settled.released,
            balance=settled.balance,
        )

    async def generation(self, generation_id: str) -> GenerationRow | None:
        return await self.store.generation(generation_id)

    async def delivery_failed(self, generation_id: str, *, code: str = "IMG-DELIVERY-001") -> int:
        """The adapter could deliver the images nowhere (channel nor DM): give the credits back.

        Returns the credits refunded (0 if they were already refunded)."""
        refunded = await self.store.refund_completed(generation_id, code=code)
        metrics.refunded(refunded, "undelivered")
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
        work = self._enhance_work(ctx, prompt)
        await self._check_limits(ctx, "enhance")
        request_id = self._ids.new()
        async with self._charge(ctx, request_id, work) as bill:
            enhanced = await self._enhance(bill, work.generation["prompt"])
        return self._enhance_result(bill, work.generation["prompt"], enhanced)

    def _enhance_work(self, ctx: Context, prompt: str) -> _Work:
        text = clean_prompt(prompt)
        generation = {"command": "enhance", "channel_id": ctx.channel_id, "prompt": text,
                      "provider": self.generator.enhancer.name, "options": {}}
        return _Work("enhance", self.config.pricing.enhance, generation, {"kind": "enhance"})

    async def _enhance(self, bill: Bill, text: str) -> str:
        enhancer = self.generator.enhancer
        enhanced = await self.generator.enhance(text)
        bill.produced(bill.amount, provider=enhancer.name, model=getattr(enhancer, "model", None) or None,
                      result_text=enhanced)
        return enhanced

    def _enhance_result(self, bill: Bill, original: str, enhanced: str) -> EnhanceResult:
        settled = bill.settlement
        assert settled is not None
        return EnhanceResult(generation_id=bill.request_id, original=original, enhanced=enhanced,
                             credits_spent=settled.consumed, balance=settled.balance,
                             enhancer=self.generator.enhancer.name)

    # -- jobs: queued for any worker, resumed by any worker ----------------------------------------

    async def enqueue(self, ctx: Context, kind: str, *, options: ImagineOptions | None = None,
                      generation_id: str | None = None, index: int = 0, prompt: str | None = None,
                      queued: bool = True) -> Queued:
        """Accept a command as a job: validate, check the limits, and reserve its credits and insert its
        job in one transaction. Raises an ``ImagebotError`` when refused; nothing is charged then.

        Adapters call this *before* acknowledging the platform, so no command is acknowledged without a
        job row: a process killed right after the ack leaves a job any worker resumes, never silence.
        ``queued``: for any worker (``bot.worker``); otherwise held by this process, which runs it at once
        (``run``)."""
        if ctx.address is None:
            raise ValueError("a queued job needs an address to deliver to")
        if kind == "imagine":
            if options is None:
                raise ValueError("imagine needs options")
            plan = self.plan(ctx, options)
            work = await self._imagine_work(ctx, plan, options, "imagine")
        elif kind in ("reroll", "variations"):
            replay = await self._button_options(ctx, kind, generation_id or "", index)
            plan = self.plan(ctx, replay)
            work = await self._imagine_work(ctx, plan, replay, kind)
        elif kind == "upscale":
            work = await self._upscale_work(ctx, generation_id or "", index)
        elif kind == "enhance":
            work = self._enhance_work(ctx, prompt or "")
        else:
            raise ValueError(f"unknown job kind {kind!r}")
        await self._check_limits(ctx, kind)
        request_id = self._ids.new()
        try:
            balance = await self.store.reserve(
                ctx.identity, request_id, work.amount, max_concurrent=self.config.limits.max_concurrent,
                lease=self.config.lease_seconds, generation=work.generation, job=self._job_spec(ctx, work),
                queued=queued)
        except LedgerRefused as exc:
            raise refusal(exc) from None
        if not queued:
            return Queued(request_id, kind, work.amount, balance, 0)
        self.job_added.set()
        ahead = await self.store.queued_ahead(request_id)
        return Queued(request_id, kind, work.amount, balance, ahead)

    async def run(self, generation_id: str, progress: Progress | None = None) -> ImagineResult | EnhanceResult:
        """Run a job this process accepted with ``enqueue(queued=False)``. A failure carries the job's id
        (``generation_id``) for the runner, which finishes the job once it has told the asker."""
        try:
            job = await self.store.job(generation_id)
            if job is None or job.holder != self.store.holder or job.state == "done":
                # Its lease ran out while this process stalled: another worker has it now (or had it).
                raise Interrupted(interrupted_text(None), code="IMG-JOB-TAKEN")
            return await self.work(job, progress)
        except BaseException as exc:
            exc.generation_id = generation_id  # type: ignore[attr-defined]
            raise

    async def abandon(self, generation_id: str, *, code: str = "IMG-NOT-ACKED") -> int:
        """A job accepted here whose command the platform then refused to acknowledge: give its credits
        back and finish it (the adapter tells the asker). Returns the credits refunded."""
        settled = await self.store.refund(generation_id, code=code)
        await self.store.finish_job(generation_id, "refunded")
        return settled.released if settled.charged else 0

    async def work(self, job: JobRow, progress: Progress | None = None) -> ImagineResult | EnhanceResult:
        """Run a job this process claimed (``Ledger.claim``) to its result, charged under the claimed
        reservation; a job already settled (its worker died while delivering) returns its stored result
        again, charging nothing more. Raises like the in-process commands (``GenerationFailed``...)."""
        gen = job.generation
        if job.state == "delivering" or gen.status == "COMPLETED":
            return await self._stored_result(gen)
        if gen.status != "PENDING":
            raise Interrupted(interrupted_text(None), code=gen.error_code or "IMG-INTERRUPTED")
        lease = self.config.lease_seconds
        async with hold(self.store, job.id, gen.credits_reserved, await self.store.balance(gen.identity),
                        lease=lease, failure=not_charged, identity=gen.identity, generation=_row_dict(gen)) as bill:
            kind = job.payload.get("kind")
            if kind == "imagine":
                plan = self.plan(Context(gen.identity, gen.channel_id), await self._stored_options(gen))
                made = await self._generate(plan, bill, progress, gen.identity)
            elif kind == "upscale":
                stored = await self._upscale(bill, _row_dict(gen), progress)
            elif kind == "enhance":
                enhanced = await self._enhance(bill, gen.prompt)
            else:
                raise ValidationError(f"This job's kind ({kind!r}) is unknown to this version of the bot.",
                                      code="IMG-JOB-KIND")
        if kind == "imagine":
            return self._imagine_result(plan, made, bill)
        if kind == "upscale":
            return self._upscale_result(bill, _row_dict(gen), stored)
        return self._enhance_result(bill, gen.prompt, enhanced)

    async def _stored_options(self, gen: GenerationRow) -> ImagineOptions:
        o = gen.options
        reference = None
        if o.get("reference_sha256"):
            reference = self.generator.load(str(o["reference_sha256"]), str(o.get("reference_mime") or "image/png"))
        options = repeat_options(gen.prompt, o, seed=int(o.get("seed") or 0), reference=reference)
        urls = [str(u) for u in o.get("reference_urls") or ()]
        if urls:
            fetched = await fetch_references(self._http(), urls)
            options = dataclasses.replace(options, reference=fetched[0], references=tuple(fetched[1:]))
        return options

    def _http(self) -> aiohttp.ClientSession:
        if self._session is None or self._session.closed:
            self._session = aiohttp.ClientSession()
        return self._session

    async def _stored_result(self, gen: GenerationRow) -> ImagineResult | EnhanceResult:
        balance = await self.store.balance(gen.identity)
        if gen.command == "enhance":
            return EnhanceResult(generation_id=gen.id, original=gen.prompt, enhanced=gen.result_text or "",
                                 credits_spent=gen.credits_consumed, balance=balance, enhancer=gen.provider or "")
        images = [StoredImage(i.sha256, self.images.path_for(i.sha256, i.mime), i.mime, i.size_bytes, i.width,
                              i.height) for i in gen.images]
        o = gen.options
        return ImagineResult(
            generation_id=gen.id, prompt=gen.prompt, images=images, provider=gen.provider or "",
            model=gen.model or "", size=str(o.get("size") or ""), style=str(o.get("style") or ""),
            quality=str(o.get("quality") or ""), requested=int(o.get("count") or len(images) or 1),
            credits_spent=gen.credits_consumed, credits_refunded=gen.credits_reserved - gen.credits_consumed,
            balance=balance, revised_prompt=gen.revised_prompt,
        )

    async def job_finished(self, generation_id: str, outcome: str) -> bool:
        """The job's one outcome reached its user (or was refunded and told): no worker takes it again."""
        return await self.store.finish_job(generation_id, outcome)

    async def may_deliver(self, generation_id: str) -> bool:
        """Right before a result is posted: renew its job's lease, so no other worker takes it over while it
        travels. False when another worker holds the job now (this process stalled past the lease): the
        result is theirs to post. True for a result with no job row (the console)."""
        if await self.store.renew(generation_id, lease=self.config.lease_seconds):
            return True
        return await self.store.job(generation_id) is None

    def keep_lease(self, generation_id: str) -> AbstractAsyncContextManager[Bill]:
        """Renew a job's lease while its result is delivered (``bot.billing.keep_lease``)."""
        return keep_lease(self.store, generation_id, self.config.lease_seconds)

    async def _check_limits(self, ctx: Context, kind: str) -> None:
        """The rate limits, before anything is reserved; a refusal is counted (``imagebot_commands_total``)."""
        try:
            await self.limiter.check(ctx.identity)
        except RateLimited as exc:
            metrics.command(kind, "unavailable" if isinstance(exc, LimitsUnavailable) else "rate_limited")
            raise

    @staticmethod
    def _job_spec(ctx: Context, work: _Work) -> JobSpec | None:
        if ctx.address is None:
            return None
        deliver_by = ctx.deliver_by or time.time() + DEFAULT_DELIVER_WITHIN
        return JobSpec(payload=work.payload, address=dict(ctx.address), deliver_by=deliver_by)

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

    @contextlib.asynccontextmanager
    async def _charge(self, ctx: Context, request_id: str, work: _Work) -> AsyncIterator[Bill]:
        """``bot.billing.charge`` with this bot's ledger, limits and lease, worded for the user; the job
        row goes with it when the adapter gave an address (any worker can then resume it). A job that
        failed here carries its id on the exception (``generation_id``) for the runner that tells its user."""
        job = self._job_spec(ctx, work)
        reserved = False
        try:
            async with charge(self.store, ctx.identity, request_id, work.amount,
                              max_concurrent=self.config.limits.max_concurrent, lease=self.config.lease_seconds,
                              generation=work.generation, failure=not_charged, job=job) as bill:
                reserved = True
                yield bill
        except BaseException as exc:
            if job is not None and reserved:
                # The runner finishes the job once it has told the asker (``bot.jobs``): a process killed
                # in between leaves the job to a worker, which tells them after the restart.
                exc.generation_id = request_id  # type: ignore[attr-defined]
            raise


@dataclass(frozen=True)
class _Work:
    """A command made ready to charge: its price, its generation row, and its job payload."""

    kind: str
    amount: int
    generation: dict[str, Any]
    payload: dict[str, Any]


def _row_dict(gen: GenerationRow) -> dict[str, Any]:
    return {"command": gen.command, "prompt": gen.prompt, "provider": gen.provider, "model": gen.model,
            "options": gen.options, "channel_id": gen.channel_id}

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
import weakref
from collections.abc import AsyncIterator, Awaitable, Callable, Mapping, Sequence
from contextlib import AbstractAsyncContextManager
from dataclasses import dataclass
from typing import Any

import aiohttp

from providers.base import ModelInfo
from providers.registry import ProviderRegistry
from storage.images import ImageStore
from storage.ledger import GenerationRow, ImageRow, JobRow, JobSpec, Ledger, LedgerRefused

from . import metrics
from .billing import Bill, charge, hold, image_rows, keep_lease, not_charged
from .canvas import OPS, available_ops, outpaint_canvas, plan_canvas, restore_original
from .config import Config
from .errors import (
    ImagebotError,
    Interrupted,
    LimitsUnavailable,
    NotFound,
    PermissionDenied,
    ProviderBadResponse,
    RateLimited,
    ValidationError,
)
from .generation import Generator, Outcome, Progress, fit_inputs
from .imaging import inspect_image
from .models import (
    Context,
    CreditsSummary,
    DescribeResult,
    EnhanceResult,
    HelpInfo,
    HistoryItem,
    HistoryPage,
    Identity,
    ImagineOptions,
    ImagineResult,
    Queued,
    Quote,
    SettingsView,
    StoredImage,
    UsageLine,
)
from .moderation import Moderation
from .ratelimit import RateLimiter
from .references import fetch_references
from .replies import HELP_COMMANDS, HELP_OPTIONS, age_text, interrupted_text, plural, refusal
from .server_settings import Rules, parse_changes, rules_from
from .server_settings import shown as settings_shown
from .thumbnails import contact_sheet
from .validation import Plan, clean_prompt, parse_amount, plan_imagine, recorded_options, repeat_options

log = logging.getLogger(__name__)
#: Seconds a job may wait to be delivered when its adapter set no deadline of its own.
DEFAULT_DELIVER_WITHIN = 15 * 60.0
#: Seconds a costly command waits for its Confirm click.
PROPOSAL_LIFETIME = 15 * 60.0
#: Results per /history page.
HISTORY_PAGE = 10
#: Seconds a server's settings are used before they are read again (changes elsewhere apply within this).
RULES_TTL = 5.0

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
        self._rules: dict[str, tuple[float, Rules]] = {}
        #: Set when this process queued a job, so its own worker claims it at once instead of at its next poll.
        self.job_added = asyncio.Event()
        #: The task working each job in this process (``work``), until it ends (``working_here``).
        self._working: weakref.WeakValueDictionary[str, asyncio.Task[Any]] = weakref.WeakValueDictionary()
        #: The screen before generating (``bot.moderation``): the blocklist, and the moderation model when an
        #: OpenAI key is set; ``moderation_default`` is the operator's (IMAGEBOT_MODERATION), servers override it.
        self.moderation = Moderation(None)
        self.moderation_default = False

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
        if self.moderation.moderator is not None:
            await self.moderation.moderator.aclose()
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

    def plan(self, ctx: Context, options: ImagineOptions, rules: Rules | None = None) -> Plan:
        """Validate without side effects (adapters use it to reject bad flags before acking work); with the
        server's ``rules`` (``enqueue`` reads them) its defaults, providers, counts and prices apply."""
        # Inputs (a mask, several images) narrow the models that can serve it: refused here, before any credit.
        plan = fit_inputs(plan_imagine(options, self.registry, self.config, ctx.identity.server_key, rules),
                          self.registry)
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

    async def imagine(self, ctx: Context, options: ImagineOptions, *, progress: Progress | None = None,
                      command: str = "imagine") -> ImagineResult:
        """In-process /imagine (the console, tests): the same preparation as a job (the server's settings,
        moderation, the blocklist), charged in this process. ``command``: what its generation row records."""
        result = await self._inline(ctx, "imagine", progress, options=options, command=command)
        assert isinstance(result, ImagineResult)
        return result

    async def _imagine_work(self, ctx: Context, plan: Plan, options: ImagineOptions, command: str,
                            stored: ImageRow | None = None) -> _Work:
        """``stored``: the reference is already in the image store (Variations, Edit): recorded, not saved again."""
        recorded = recorded_options(plan, options)
        if stored is not None:
            recorded["reference_sha256"], recorded["reference_mime"] = stored.sha256, stored.mime
        elif plan.reference is not None:
            recorded["reference_sha256"] = (await self.images.save(plan.reference)).sha256
            recorded["reference_mime"] = inspect_image(plan.reference)[0]
        if options.reference_urls:
            # Fetched by whichever worker runs the job (``_stored_options``): the ack never waits for them.
            recorded["reference_urls"] = list(options.reference_urls)
        primary = plan.attempts[0]
        generation = {"command": command, "channel_id": ctx.channel_id, "prompt": plan.prompt,
                      "provider": primary.provider.name, "model": primary.model.name, "options": recorded}
        return _Work("imagine", plan.total, generation, {"kind": "imagine", "command": command}, plan)

    async def _generate(self, plan: Plan, bill: Bill, progress: Progress | None, identity: Identity,
                        restore: Callable[[StoredImage], Awaitable[StoredImage]] | None = None) -> Outcome:
        made = await self.generator.imagine(plan, progress, request_id=bill.request_id, user=safety_id(identity))
        if restore is not None:
            made = dataclasses.replace(made, images=[await restore(i) for i in made.images])
        # The price held at the reservation, per image delivered (a setting changed since does not apply).
        per_image = bill.amount // plan.count if plan.count else plan.price_per_image
        bill.produced(per_image * len(made.images), provider=made.provider, model=made.model,
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
        result = await self._inline(ctx, "reroll", progress, generation_id=generation_id)
        assert isinstance(result, ImagineResult)
        return result

    async def variations(
        self, ctx: Context, generation_id: str, index: int = 0, *, progress: Progress | None = None
    ) -> ImagineResult:
        """The same prompt with the chosen image as the reference."""
        result = await self._inline(ctx, "variations", progress, generation_id=generation_id, index=index)
        assert isinstance(result, ImagineResult)
        return result

    async def _button_options(self, ctx: Context, kind: str, generation_id: str, index: int,
                              instruction: str | None = None) -> tuple[ImagineOptions, ImageRow | None]:
        """A stored request again: Re-roll (a new seed), Variations (the chosen image as the reference), Edit
        (the chosen image and an instruction, one image at its own size); and the stored image it uses."""
        gen = await self._own_generation(ctx, generation_id)
        seed = secrets.randbelow(2**31)
        if kind == "reroll":
            return repeat_options(gen.prompt, gen.options, seed=seed), None
        image = self._chosen(gen, index)
        data = self.generator.load(image.sha256, image.mime)
        if kind == "variations":
            return repeat_options(gen.prompt, gen.options, seed=seed, reference=data), image
        o = {**gen.options, "count": 1, "size": gen.options.get("size") or f"{image.width}x{image.height}"}
        return repeat_options(clean_prompt(instruction or ""), o, seed=seed, reference=data), image

    async def upscale(
        self, ctx: Context, generation_id: str, index: int = 0, *, progress: Progress | None = None
    ) -> ImagineResult:
        """The chosen image at twice its size, by the provider that made it (when its model can)."""
        result = await self._inline(ctx, "upscale", progress, generation_id=generation_id, index=index)
        assert isinstance(result, ImagineResult)
        return result

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

    @staticmethod
    def _chosen(gen: GenerationRow, index: int) -> ImageRow:
        if not gen.images:
            raise NotFound("That generation has no images.", code="IMG-NOTFOUND-IMAGE")
        return gen.images[min(max(0, index), len(gen.images) - 1)]

    def _image_bytes(self, gen: GenerationRow, index: int) -> bytes:
        image = self._chosen(gen, index)
        return self.generator.load(image.sha256, image.mime)

    # -- /enhance --------------------------------------------------------------------------------

    async def enhance(self, ctx: Context, prompt: str) -> EnhanceResult:
        """A richer prompt from the text model; a retired text model is replaced within the same charge."""
        result = await self._inline(ctx, "enhance", None, prompt=prompt)
        assert isinstance(result, EnhanceResult)
        return result

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
                      op: str | None = None, queued: bool = True, position: bool = True,
                      moderate: bool = True) -> Queued:
        """Accept a command as a job: validate, check the limits, and reserve its credits and insert its
        job in one transaction. Raises an ``ImagebotError`` when refused; nothing is charged then.

        Adapters call this *before* acknowledging the platform, so no command is acknowledged without a
        job row: a process killed right after the ack leaves a job any worker resumes, never silence.
        ``queued``: for any worker (``bot.worker``); otherwise held by this process, which runs it at once
        (``run``). ``position``: count the jobs queued ahead of it (an adapter that does not show it saves
        the read). ``moderate``: False only for a confirmed proposal, screened when it was quoted (the
        blocklist and the limits apply again)."""
        if ctx.address is None:
            raise ValueError("a queued job needs an address to deliver to")
        work = await self._prepare(ctx, kind, options=options, generation_id=generation_id, index=index,
                                   prompt=prompt, op=op, moderate=moderate)
        return await self._reserve(ctx, kind, work, queued=queued, position=position)

    async def accept(self, ctx: Context, kind: str, *, queued: bool, position: bool = True,
                     **args: Any) -> Queued | Quote:
        """What an adapter calls before it acknowledges a command that costs credits: above the server's
        confirm threshold a ``Quote`` (stored as a proposal; nothing charged: ask first), otherwise the job,
        reserved as ``enqueue`` reserves it. One preparation either way: the 3-second acknowledgement
        waits for no second plan, image read or moderation call."""
        if ctx.address is None:
            raise ValueError("a queued job needs an address to deliver to")
        work = await self._prepare(ctx, kind, screen=False, **args)
        rules = await self.rules(ctx)
        quote = await self._quote(ctx, kind, work, rules, args, propose=True)
        if quote.confirm:
            return quote
        await self._admit(ctx, kind, work, args.get("options"), rules)
        return await self._reserve(ctx, kind, work, queued=queued, position=position)

    async def _reserve(self, ctx: Context, kind: str, work: _Work, *, queued: bool, position: bool) -> Queued:
        """The reservation, the generation and the job, in one transaction."""
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
        ahead = await self.store.queued_ahead(request_id) if position else 0
        return Queued(request_id, kind, work.amount, balance, ahead)

    async def _prepare(self, ctx: Context, kind: str, *, options: ImagineOptions | None = None,
                       generation_id: str | None = None, index: int = 0, prompt: str | None = None,
                       op: str | None = None, screen: bool = True, moderate: bool = True,
                       command: str = "imagine") -> _Work:
        """A command made ready to charge: validated against the server's settings, priced, then (``screen``)
        rate-limited and screened by the blocklist and moderation, in that order, so a limited user costs
        no moderation call. Raises an ``ImagebotError`` (nothing moved) when refused."""
        rules = await self.rules(ctx)
        if kind == "imagine":
            if options is None:
                raise ValueError("imagine needs options")
            plan = self.plan(ctx, options, rules)
            work = await self._imagine_work(ctx, plan, options, command)
        elif kind in ("reroll", "variations", "edit"):
            replay, stored = await self._button_options(ctx, kind, generation_id or "", index, prompt)
            plan = self.plan(ctx, replay, rules)
            work = await self._imagine_work(ctx, plan, replay, kind, stored)
            if kind == "edit":
                work.generation["options"].update(source=generation_id, index=index)
        elif kind == "outpaint":
            work = await self._outpaint_work(ctx, generation_id or "", index, op or "", rules)
        elif kind == "upscale":
            work = await self._upscale_work(ctx, generation_id or "", index)
        elif kind == "enhance":
            work = self._enhance_work(ctx, prompt or "")
        elif kind == "describe":
            work = await self._describe_work(ctx, options, rules)
        else:
            raise ValueError(f"unknown job kind {kind!r}")
        if kind in ("upscale", "enhance"):  # priced here; imagine-like kinds were priced by their plan
            work = dataclasses.replace(work, amount=rules.price(work.amount))
        if ctx.adult_channel and options is not None and options.reference_urls:
            work.generation["options"]["adult_channel"] = True  # for the screen of the fetched images
        if screen:
            await self._admit(ctx, kind, work, options, rules, moderate=moderate)
        return work

    async def _admit(self, ctx: Context, kind: str, work: _Work, options: ImagineOptions | None, rules: Rules,
                     *, moderate: bool = True) -> None:
        """The rate limits, then the blocklist and moderation: a limited user costs no moderation call."""
        await self._check_limits(ctx, kind)
        await self._screen_work(ctx, kind, work, options, rules, model=moderate)

    async def _screen_work(self, ctx: Context, kind: str, work: _Work, options: ImagineOptions | None,
                           rules: Rules, *, model: bool = True) -> None:
        if work.generation.get("prompt") and kind != "describe":
            images = [] if options is None else [i for i in (options.reference, *options.references) if i]
            await self._screen(ctx, str(work.generation["prompt"]), rules, images, model=model)

    async def run(self, generation_id: str, progress: Progress | None = None,
                  ) -> ImagineResult | EnhanceResult | DescribeResult:
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

    async def work(self, job: JobRow, progress: Progress | None = None) -> ImagineResult | EnhanceResult | DescribeResult:
        """Run a job this process claimed (``Ledger.claim``) to its result, charged under the claimed
        reservation; a job already settled (its worker died while delivering) returns its stored result
        again, charging nothing more. Raises like the in-process commands (``GenerationFailed``...)."""
        task = asyncio.current_task()
        if task is not None:  # the same task then delivers the result and finishes the job
            self._working[job.id] = task
        gen = job.generation
        if job.state == "delivering" or gen.status == "COMPLETED":
            return await self._stored_result(gen)
        if gen.status != "PENDING":
            raise Interrupted(interrupted_text(None), code=gen.error_code or "IMG-INTERRUPTED")
        lease = self.config.lease_seconds
        async with hold(self.store, job.id, gen.credits_reserved, lease=lease, failure=not_charged,
                        identity=gen.identity, generation=_row_dict(gen)) as bill:
            finish = await self._body(str(job.payload.get("kind")), gen, bill, progress)
        return finish()

    async def _body(self, kind: str, gen: GenerationRow, bill: Bill, progress: Progress | None,
                    ) -> Callable[[], ImagineResult | EnhanceResult | DescribeResult]:
        """One job's work under its hold, from what its generation row records; returns how to build its
        result once the hold has settled."""
        rules = await self._rules_of(gen.identity.server_key)
        if kind in ("imagine", "edit"):
            options = await self._stored_options(gen)
            plan = self.plan(Context(gen.identity, gen.channel_id), options, rules)
            await self._screen_images(plan, rules, gen)
            made = await self._generate(plan, bill, progress, gen.identity)
            return lambda: self._imagine_result(plan, made, bill)
        if kind == "outpaint":
            canvas_plan, restore = await self._outpaint_plan(gen, rules)
            painted = await self._generate(canvas_plan, bill, progress, gen.identity, restore)
            return lambda: self._imagine_result(canvas_plan, painted, bill)
        if kind == "upscale":
            stored = await self._upscale(bill, _row_dict(gen), progress)
            return lambda: self._upscale_result(bill, _row_dict(gen), stored)
        if kind == "enhance":
            enhanced = await self._enhance(bill, gen.prompt)
            return lambda: self._enhance_result(bill, gen.prompt, enhanced)
        if kind == "describe":
            prompts = await self._describe(bill, gen)

            def described() -> DescribeResult:
                assert bill.settlement is not None
                return DescribeResult(gen.id, prompts, bill.settlement.consumed, bill.settlement.balance)

            return described
        raise ValidationError(f"This job's kind ({kind!r}) is unknown to this version of the bot.",
                              code="IMG-JOB-KIND")

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

    async def _stored_result(self, gen: GenerationRow) -> ImagineResult | EnhanceResult | DescribeResult:
        balance = await self.store.balance(gen.identity)
        if gen.command == "describe":
            return DescribeResult(gen.id, (gen.result_text or "").split("\n"), gen.credits_consumed, balance)
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

    def working_here(self, generation_id: str) -> bool:
        """Whether a task of this process is still working this job (its result, its delivery, its note).
        A claim can hand a process back a job it is still on, when a renewal of its lease waited past the
        lease under load: the claim renewed the lease, and the task goes on; starting the job a second time
        would post its result twice."""
        task = self._working.get(generation_id)
        return task is not None and not task.done()

    async def job_finished(self, generation_id: str, outcome: str) -> bool:
        """The job's one outcome reached its user (or was refunded and told): no worker takes it again."""
        return await self.store.finish_job(generation_id, outcome)

    async def may_deliver(self, generation_id: str, *, held_since: float | None = None) -> bool:
        """Right before a result is posted: renew its job's lease, so no other worker takes it over while it
        travels. False when another worker holds the job now (this process stalled past the lease): the
        result is theirs to post. True for a result with no job row (the console).

        ``held_since``: ``time.monotonic()`` just before this process's last claim or renewal of the job's
        lease that succeeded. Within a third of the lease of it (the heartbeat's interval) the lease still
        has two thirds to run, as right after a renewal, so no write is needed to know the job is ours: a
        job worked at once after its claim is posted without a fourth write transaction. A process paused
        past that moment renews first, as before (the monotonic clock counts the pause)."""
        lease = self.config.lease_seconds
        if held_since is not None and time.monotonic() - held_since < lease / 3:
            return True
        if await self.store.renew(generation_id, lease=lease):
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

    # -- server settings, moderation -------------------------------------------------------------------

    async def rules(self, ctx: Context) -> Rules:
        return await self._rules_of(ctx.identity.server_key)

    async def _rules_of(self, server_key: str) -> Rules:
        """A server's rules, read at most every ``RULES_TTL`` seconds: every command needs them before its
        acknowledgement, so they cost no round trip in a burst. A change made through this process applies
        at once; one made through another process within ``RULES_TTL``."""
        now = time.monotonic()
        cached = self._rules.get(server_key)
        if cached is not None and now - cached[0] < RULES_TTL:
            return cached[1]
        rules = rules_from(await self.store.server_settings(server_key), self.config,
                           moderation_default=self.moderation_default)
        if len(self._rules) > 10_000:
            self._rules.clear()
        self._rules[server_key] = (now, rules)
        return rules

    async def visibility(self, ctx: Context) -> str:
        """``public`` or ``private``: where this server's results are posted."""
        return (await self.rules(ctx)).visibility

    async def server_settings(self, ctx: Context) -> SettingsView:
        key = ctx.identity.server_key
        stored = await self.store.server_settings(key)
        return SettingsView(values=settings_shown(stored, self.config, moderation_default=self.moderation_default),
                            overridden=frozenset(stored),
                            log=await self.store.settings_log(key, 10))

    async def change_settings(self, ctx: Context, changes: Mapping[str, str]) -> SettingsView:
        """A server admin's change, all or nothing, recorded with who made it."""
        if not ctx.is_admin:
            raise PermissionDenied("Only server admins can change the settings. Nothing was changed.")
        key = ctx.identity.server_key
        typed = parse_changes(changes, self.registry, self.config, await self.store.server_settings(key),
                              moderation_available=self.moderation.available)
        await self.store.change_settings(key, typed, actor=ctx.actor)
        self._rules.pop(key, None)
        log.info("settings of %s changed by %s: %s", key, ctx.actor, ", ".join(sorted(typed)))
        return await self.server_settings(ctx)

    async def _screen(self, ctx: Context, prompt: str, rules: Rules, images: Sequence[bytes] = (),
                      *, model: bool = True) -> None:
        """The server's blocklist always; the moderation model when the server (or operator) turned it on
        (``model`` False: it already passed, when its confirmation was quoted). A refusal costs nothing: it
        comes before the reservation."""
        await self.moderation.screen(prompt, images, blocklist=rules.blocklist, check=rules.moderation and model,
                                     adult_ok=rules.adult and ctx.adult_channel)

    async def _screen_images(self, plan: Plan, rules: Rules, gen: GenerationRow) -> None:
        """Input images fetched when the job runs (attachments) are screened then, before any provider call;
        a refusal there is refunded in full. Images in hand at the command were screened before the
        reservation (``_prepare``)."""
        if not gen.options.get("reference_urls") or not rules.moderation:
            return
        images = [i for i in (plan.reference, *plan.references) if i is not None]
        await self.moderation.screen(plan.prompt, images, blocklist=rules.blocklist, check=True,
                                     adult_ok=rules.adult and bool(gen.options.get("adult_channel")))

    # -- edit, outpaint, describe ---------------------------------------------------------------------

    async def _source(self, generation_id: str) -> GenerationRow:
        source = await self.store.generation(generation_id)
        if source is None:
            raise NotFound("That image is no longer known to the bot.", code="IMG-NOTFOUND-GEN")
        return source

    def _mask_model(self, gen: GenerationRow) -> tuple[str, ModelInfo]:
        """The model that extends this image: its own model if it takes a mask, else its provider's, else
        the first in the rotation that does (the offline renderer can)."""
        own = self.registry.get(gen.provider or "")
        candidates = ([own] if own is not None else []) + self.registry.ordered(
            self.config.providers_for(gen.identity.server_key)) + self.registry.ordered(self.registry.names())
        for provider in candidates:
            caps = provider.capabilities
            models = sorted(caps.models, key=lambda m: (m.name != gen.model, m.name != caps.default_model))
            for model in models:
                if model.supports_mask and model.supports_reference:
                    return provider.name, model
        raise ValidationError("None of this bot's image models can extend an image (none takes a mask).",
                              code="IMG-VALID-OUTPAINT")

    async def outpaint_ops(self, ctx: Context, generation_id: str, index: int = 0) -> tuple[str, ...]:
        """Which of Zoom out, Pan and Make square this image can have (empty: none; offer no buttons)."""
        try:
            gen = await self._own_generation(ctx, generation_id)
            _, model = self._mask_model(gen)
            image = gen.images[min(max(0, index), len(gen.images) - 1)] if gen.images else None
        except ImagebotError:
            return ()
        if image is None:
            return ()
        return available_ops(image.width, image.height, model)

    async def _outpaint_work(self, ctx: Context, generation_id: str, index: int, op: str, rules: Rules) -> _Work:
        gen = await self._own_generation(ctx, generation_id)
        if op not in OPS:
            raise ValidationError(f"Unknown change {op!r}; choose one of {', '.join(OPS)}.", code="IMG-VALID-OUTPAINT")
        provider, model = self._mask_model(gen)
        if not gen.images:
            raise NotFound("That generation has no images.", code="IMG-NOTFOUND-IMAGE")
        image = gen.images[min(max(0, index), len(gen.images) - 1)]
        size = plan_canvas(image.width, image.height, op, model).size_label
        quality = str(gen.options.get("quality") or "medium")
        quality = quality if quality in model.qualities else model.qualities[0]
        price = rules.price(self.config.pricing.per_image(size, quality, model.name))
        generation = {"command": "outpaint", "channel_id": ctx.channel_id, "prompt": gen.prompt,
                      "provider": provider, "model": model.name,
                      "options": {"source": generation_id, "index": index, "op": op, "size": size, "count": 1,
                                  "quality": quality, "style": gen.options.get("style") or "natural", "seed": 0}}
        return _Work("outpaint", price, generation, {"kind": "outpaint"})

    async def _outpaint_plan(self, gen: GenerationRow, rules: Rules,
                             ) -> tuple[Plan, Callable[[StoredImage], Awaitable[StoredImage]]]:
        """The enlarged canvas and its mask as the plan's input, and how each result gets the original's
        pixels back where they were (``bot.canvas.restore_original``)."""
        o = gen.options
        source = await self._source(str(o.get("source") or ""))
        original = self._image_bytes(source, int(o.get("index") or 0))
        provider = self.registry.get(gen.provider or "")
        model = provider.capabilities.model(gen.model) if provider is not None else None
        if provider is None or model is None or not model.supports_mask:
            name, model = self._mask_model(source)
            provider = self.registry.get(name)
        canvas = await asyncio.to_thread(outpaint_canvas, original, str(o.get("op") or ""), model)
        options = ImagineOptions(prompt=gen.prompt, size=canvas.size, count=1, quality=str(o.get("quality") or ""),
                                 provider=f"{provider.name}" if provider else None, model=model.name,
                                 reference=canvas.image)
        plan = dataclasses.replace(self.plan(Context(gen.identity, gen.channel_id), options, rules), mask=canvas.mask)

        async def restore(image: StoredImage) -> StoredImage:
            data = self.generator.load(image.sha256, image.mime)
            restored = await asyncio.to_thread(restore_original, data, canvas, original)
            return await self.images.save(restored)

        return plan, restore

    async def _describe_work(self, ctx: Context, options: ImagineOptions | None, rules: Rules) -> _Work:
        if options is None or (options.reference is None and not options.reference_urls):
            raise ValidationError("Attach the image to describe.", code="IMG-VALID-REFERENCE")
        recorded: dict[str, Any] = {}
        if options.reference is not None:
            try:
                mime = inspect_image(options.reference)[0]
            except ProviderBadResponse:
                raise ValidationError("That is not a readable image (PNG, JPEG, WebP or GIF).",
                                      code="IMG-VALID-REFERENCE") from None
            recorded = {"reference_sha256": (await self.images.save(options.reference)).sha256,
                        "reference_mime": mime}
        else:
            recorded = {"reference_urls": list(options.reference_urls[:1])}
        generation = {"command": "describe", "channel_id": ctx.channel_id, "prompt": "",
                      "provider": self.generator.enhancer.name, "options": recorded}
        return _Work("describe", rules.price(self.config.pricing.enhance), generation, {"kind": "describe"})

    async def _describe(self, bill: Bill, gen: GenerationRow) -> list[str]:
        options = await self._stored_options(gen)
        if options.reference is None:
            raise ValidationError("The image to describe is gone; attach it again.", code="IMG-VALID-REFERENCE")
        try:
            inspect_image(options.reference)
        except ProviderBadResponse:
            raise ValidationError("That is not a readable image (PNG, JPEG, WebP or GIF).",
                                  code="IMG-VALID-REFERENCE") from None
        description = await self.generator.describe(options.reference)
        prompts = suggested_prompts(description)
        enhancer = self.generator.enhancer
        bill.produced(bill.amount, provider=enhancer.name, model=getattr(enhancer, "model", None) or None,
                      result_text="\n".join(prompts))
        return prompts

    async def edit(self, ctx: Context, generation_id: str, index: int, instruction: str,
                   *, progress: Progress | None = None) -> ImagineResult:
        """In-process (the console): Edit by an instruction."""
        result = await self._inline(ctx, "edit", progress, generation_id=generation_id, index=index,
                                    prompt=instruction)
        assert isinstance(result, ImagineResult)
        return result

    async def outpaint(self, ctx: Context, generation_id: str, index: int, op: str,
                       *, progress: Progress | None = None) -> ImagineResult:
        """In-process (the console): Zoom out, Pan or Make square."""
        result = await self._inline(ctx, "outpaint", progress, generation_id=generation_id, index=index, op=op)
        assert isinstance(result, ImagineResult)
        return result

    async def describe(self, ctx: Context, image: bytes) -> DescribeResult:
        """In-process (the console): four prompts for an image."""
        result = await self._inline(ctx, "describe", None, options=ImagineOptions(prompt="", reference=image))
        assert isinstance(result, DescribeResult)
        return result

    async def _inline(self, ctx: Context, kind: str, progress: Progress | None, **args: Any,
                      ) -> ImagineResult | EnhanceResult | DescribeResult:
        work = await self._prepare(ctx, kind, **args)
        request_id = self._ids.new()
        async with self._charge(ctx, request_id, work) as bill:
            finish = await self._here(kind, work, bill, progress, ctx.identity)
        return finish()

    async def _here(self, kind: str, work: _Work, bill: Bill, progress: Progress | None, identity: Identity,
                    ) -> Callable[[], ImagineResult | EnhanceResult | DescribeResult]:
        """A command's work in the process that took it, from what ``_prepare`` made (no row read back);
        the kinds that need their row (outpaint, describe, fetched inputs) run as a job would."""
        plan = work.plan
        if plan is not None and not work.generation["options"].get("reference_urls"):
            made = await self._generate(plan, bill, progress, identity)
            return lambda: self._imagine_result(plan, made, bill)
        if kind == "upscale":
            stored = await self._upscale(bill, work.generation, progress)
            return lambda: self._upscale_result(bill, work.generation, stored)
        if kind == "enhance":
            prompt = str(work.generation["prompt"])
            enhanced = await self._enhance(bill, prompt)
            return lambda: self._enhance_result(bill, prompt, enhanced)
        gen = await self.store.generation(bill.request_id)
        assert gen is not None
        return await self._body(str(work.payload["kind"]), gen, bill, progress)

    # -- confirm before spending ----------------------------------------------------------------------

    async def quote(self, ctx: Context, kind: str, *, propose: bool = True, **args: Any) -> Quote:
        """The price of a command before it runs. Above the server's threshold (and within the balance) it
        asks for a confirmation, stored as a proposal that runs only when its asker confirms
        (``enqueue_proposal``); ``propose`` False stores none (the console asks and runs it itself)."""
        work = await self._prepare(ctx, kind, screen=False, **args)
        return await self._quote(ctx, kind, work, await self.rules(ctx), args, propose=propose)

    async def _quote(self, ctx: Context, kind: str, work: _Work, rules: Rules, args: Mapping[str, Any],
                     *, propose: bool) -> Quote:
        if not rules.confirm_above or work.amount <= rules.confirm_above:
            return Quote(work.amount, 0, False)
        balance = await self.store.balance(ctx.identity)
        if work.amount > balance:  # nothing to ask: the enqueue that follows words the short balance
            return Quote(work.amount, balance, False)
        # Refused now rather than after the click; the limits count the run, not the question.
        await self._screen_work(ctx, kind, work, args.get("options"), rules)
        if not propose:
            return Quote(work.amount, balance, True)
        proposal_id = self._ids.new()
        await self.store.save_proposal(proposal_id, ctx.identity, _proposal(kind, args),
                                       expires_at=time.time() + PROPOSAL_LIFETIME)
        return Quote(work.amount, balance, True, proposal_id)

    async def enqueue_proposal(self, ctx: Context, proposal_id: str, *, queued: bool = True) -> Queued:
        """The Confirm click: runs what was quoted, once, for its asker only."""
        payload = await self.store.take_proposal(proposal_id, ctx.identity)
        if payload is None:
            raise NotFound("That confirmation was already used, has expired, or is someone else's; run the "
                           "command again.", code="IMG-NOTFOUND-PROPOSAL")
        kind, args = _from_proposal(payload)
        return await self.enqueue(ctx, kind, queued=queued, moderate=False, **args)  # screened when quoted

    # -- find it again --------------------------------------------------------------------------------

    async def history(self, ctx: Context, page: int = 1) -> HistoryPage:
        """The asker's results in this server, ten a page, newest first, with a contact sheet."""
        if not isinstance(page, int) or page < 1 or page > 100_000:
            raise ValidationError("The page must be a whole number from 1.", code="IMG-VALID-PAGE")
        rows, total = await self.store.history(ctx.identity, offset=(page - 1) * HISTORY_PAGE, limit=HISTORY_PAGE)
        pages = max(1, -(-total // HISTORY_PAGE))
        if page > pages and total:
            raise ValidationError(f"There {'is' if pages == 1 else 'are'} only {plural(pages, 'page')} of results.",
                                  code="IMG-VALID-PAGE")
        now = time.time()
        items = [HistoryItem(r.id, r.command, r.prompt, r.credits_consumed, r.created_at,
                             self._stored_images(r), age_text(now - r.created_at)) for r in rows]
        sheet = None
        if items:
            firsts = [self._maybe_bytes(i.images[0]) if i.images else None for i in items]
            sheet = await asyncio.to_thread(contact_sheet, firsts, [str(n + 1) for n in range(len(items))])
        return HistoryPage(items, page, pages, total, sheet)

    def _stored_images(self, gen: GenerationRow) -> list[StoredImage]:
        return [StoredImage(i.sha256, self.images.path_for(i.sha256, i.mime), i.mime, i.size_bytes, i.width,
                            i.height) for i in gen.images]

    def _maybe_bytes(self, image: StoredImage) -> bytes | None:
        try:
            return self.images.load(image.sha256, image.mime)
        except FileNotFoundError:
            return None

    async def show(self, ctx: Context, generation_id: str) -> ImagineResult:
        """A result again, free, with all its buttons, anywhere in the same server (Midjourney's /show)."""
        gen = await self._own_generation(ctx, generation_id.strip())
        if gen.deleted_at is not None:
            raise NotFound("That result was deleted.", code="IMG-NOTFOUND-GEN")
        if gen.status != "COMPLETED" or not gen.images:
            raise NotFound("That generation has no images to show.", code="IMG-NOTFOUND-IMAGE")
        if any(not self.images.path_for(i.sha256, i.mime).exists() for i in gen.images):
            raise NotFound("The images of that result were pruned by the bot's operator.", code="IMG-NOTFOUND-IMAGE")
        result = await self._stored_result(gen)
        assert isinstance(result, ImagineResult)
        return result

    async def delete(self, ctx: Context, generation_id: str) -> None:
        """The asker (or an admin) removes a result; its ledger rows and image files stay."""
        gen = await self._own_generation(ctx, generation_id)
        if gen.user_id != ctx.identity.user_id and not ctx.is_admin:
            raise PermissionDenied("Only the person who asked for it, or an admin, can delete that. Nothing "
                                   "was changed.")
        if not await self.store.delete_generation(generation_id, actor=ctx.actor):
            raise NotFound("That result was already deleted.", code="IMG-NOTFOUND-GEN")

    async def prune(self, older_than: float) -> tuple[int, int]:
        """The operator's ``imagebot prune``: image files no generation newer than that needs; ledger rows stay."""
        cutoff = time.time() - older_than
        return await self.images.prune(await self.store.live_images(cutoff), cutoff)

    # -- help -----------------------------------------------------------------------------------------

    async def help(self, ctx: Context) -> HelpInfo:
        """The commands, this server's prices and limits, and the asker's balance."""
        rules = await self.rules(ctx)
        pricing = self.config.pricing
        prices = [(f"{size} {quality}", rules.price(pricing.per_image(size, quality)))
                  for size in ("1024x1024", "1536x1024") for quality in ("low", "medium", "high")]
        prices.append(("/enhance, /describe", rules.price(pricing.enhance)))
        limits = self.config.limits
        return HelpInfo(
            commands=list(HELP_COMMANDS), options=list(HELP_OPTIONS), prices=prices,
            balance=await self.store.balance(ctx.identity),
            limits=[f"{limits.user_rate} per user, {limits.server_rate} per server",
                    f"at most {rules.max_images or limits.max_count} images per command, "
                    f"{limits.max_concurrent} running at once",
                    f"a command above {rules.confirm_above} credits asks first" if rules.confirm_above
                    else "no confirmation step"],
            notes=[f"Prices here are x{rules.price_multiplier:g}." if rules.price_multiplier != 1 else "",
                   "Moderation checks prompts first." if rules.moderation else "",
                   "Results here are posted privately." if rules.visibility == "private" else ""],
        )

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
    #: The validated plan, for a command run in this process (a job replans from its row).
    plan: Plan | None = None


def _row_dict(gen: GenerationRow) -> dict[str, Any]:
    return {"command": gen.command, "prompt": gen.prompt, "provider": gen.provider, "model": gen.model,
            "options": gen.options, "channel_id": gen.channel_id}


#: How the four /describe suggestions differ: the description as it is, and three treatments of it.
_TREATMENTS = ("", ", as a detailed oil painting", ", as a cinematic photograph with dramatic light",
               ", as a clean flat vector illustration")


def suggested_prompts(description: str) -> list[str]:
    """Four prompts from one description of an image (``/describe``), each a starting point for /imagine."""
    base = clean_prompt(description.strip().rstrip("."), 900)
    return [clean_prompt(base + treatment, 1000) for treatment in _TREATMENTS]


def _proposal(kind: str, args: Mapping[str, Any]) -> dict[str, Any]:
    """A command's arguments as JSON for the proposals table (``Imagebot.quote``)."""
    out: dict[str, Any] = {"kind": kind}
    for key, value in args.items():
        if isinstance(value, ImagineOptions):
            if value.reference is not None or value.references:
                raise ValidationError("A command with attached image bytes cannot wait for a confirmation.",
                                      code="IMG-VALID-CONFIRM")
            fields = dataclasses.asdict(value)
            fields["reference_urls"] = list(value.reference_urls)
            out[key] = {k: v for k, v in fields.items() if k not in ("reference", "references")}
        elif value is not None:
            out[key] = value
    return out


def _from_proposal(payload: Mapping[str, Any]) -> tuple[str, dict[str, Any]]:
    args = {k: v for k, v in payload.items() if k != "kind"}
    if isinstance(args.get("options"), dict):
        fields = dict(args["options"])
        fields["reference_urls"] = tuple(fields.get("reference_urls") or ())
        args["options"] = ImagineOptions(**fields)
    return str(payload["kind"]), args

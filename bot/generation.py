"""Generation: a validated ``Plan`` in, stored images out, whichever provider and model serve it.

    generator = Generator(registry, images)
    outcome = await generator.imagine(plan, progress, request_id=..., user=...)

Money is not this module's business: the core runs all of this inside one charge (``bot.billing``), so
every way out of here that is not an ``Outcome`` is refunded.

- **Failover.** ``plan.attempts`` holds each provider that can serve the plan with the model it would
  use, in the server's order; each is tried until one delivers. A content refusal is never retried
  elsewhere (the next vendor would be asked the same thing), a non-retryable error (a bad key) stops.
- **Input images** (an edit, a blend, outpainting). ``fit_inputs`` narrows the attempts to models that
  can take the plan's inputs, swapping in the same provider's fitting model where the planned one
  cannot: a ``mask`` only on a model that ``supports_mask`` (never dropped; ``IMG-VALID-MASK`` naming the
  providers that can when none of the plan's can), N input images on a model whose ``max_references``
  is at least N, or on a model that takes no images at all, which gets each one described in words by
  the text model instead (``IMG-VALID-REFERENCE`` when none fits). The core calls it while planning,
  before any credit moves; ``imagine`` applies it again (it is idempotent).
- **Retired models.** ``ModelRetired``: the model leaves the rotation at once (``registry.retire``; the
  catalogue logs it once) and the same provider's next fitting model (``fitting_model``) is tried
  before the next provider. The text model follows the same rule (``enhance``, ``describe``): retired,
  the catalogue moves the text provider to its next model, which is tried once.
- **Fan-out.** A count above the model's ``max_per_call`` becomes per-call batches (``calls_needed``)
  run concurrently; images of the calls that succeeded are kept (and only those are paid for), the
  failed calls are noted for the user.
- **Slots.** A provider's ``capabilities.concurrency`` caps its calls in flight across every user; a
  call that must wait is told its position in that provider's queue.
- **Previews.** A streaming model's partial images are saved under ``previews/`` and shown: free, never
  a result, and a bad one never fails the generation.
- **Storing.** Results are stored by content hash; bytes that are not an image are dropped.

The progress protocol (stages and their detail keys) is drawn at the top of ``bot.core``. Each provider
call's duration and each failover are counted in ``bot.metrics``.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import logging
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Coroutine
from dataclasses import dataclass, field
from typing import Any, TypeVar

from providers.base import (
    GeneratedImage,
    GenerationRequest,
    ImageProvider,
    ModelInfo,
    PreviewSink,
    TextProvider,
)
from providers.local import LocalRenderer
from providers.registry import ProviderRegistry
from storage.images import ImageStore

from . import metrics
from .errors import (
    ContentRejected,
    ImagebotError,
    ModelRetired,
    NotFound,
    ProviderBadResponse,
    ProviderError,
    ProviderUnavailable,
    ProviderUnsupported,
    ValidationError,
)
from .models import StoredImage
from .validation import PROMPT_LIMIT, Attempt, Plan, calls_needed, clean_prompt, fitting_model

log = logging.getLogger(__name__)
T = TypeVar("T")

#: ``await progress(stage, details)``: see the top of ``bot.core`` for the stages and their keys.
Progress = Callable[[str, dict[str, Any]], Awaitable[None]]

#: Shown with a result the local renderer made when no other provider is configured: the sketch is
#: a placeholder, and a newcomer should learn how to get real images rather than think generation broke.
#: The variables are the ones the built-in providers read (``providers/openai_images.py``,
#: ``google_images.py``, ``compat.py``).
OFFLINE_NOTE = ("Offline sketch: no image model is configured. Set OPENAI_API_KEY (or GEMINI_API_KEY / "
                "XAI_API_KEY) and restart to get real images.")
#: The same, when other providers are configured and the sketch was asked for (or failed over to).
SKETCH_NOTE = "Offline sketch (the local renderer)."


def plan_inputs(plan: Plan) -> tuple[bytes, ...]:
    """Every input image of the plan, ``reference`` first."""
    first = () if plan.reference is None else (plan.reference,)
    return (*first, *plan.references)


def takes_inputs(model: ModelInfo, count: int, mask: bool) -> bool:
    """Whether ``model`` can serve ``count`` input images (and a mask): with a mask it must edit with one
    and take them all; without, take them all or take none (then each is described in words). A model
    that takes references takes at least one, whatever its ``max_references`` says."""
    slots = max(1, model.max_references) if model.supports_reference else 0
    if mask:
        return model.supports_mask and slots >= max(1, count)
    return count == 0 or slots == 0 or slots >= count


def fitting_for_inputs(provider: ImageProvider, plan: Plan, exclude: tuple[str, ...] = ()) -> ModelInfo | None:
    """``fitting_model`` among the provider's models that can take the plan's inputs."""
    count, mask = len(plan_inputs(plan)), plan.mask is not None
    unfit = tuple(m.name for m in provider.capabilities.models if not takes_inputs(m, count, mask))
    return fitting_model(provider, plan.size, len(plan.prompt), plan.reference is not None, quality=plan.quality,
                         output_format=plan.output_format, background=plan.background, exclude=(*exclude, *unfit))


def fit_inputs(plan: Plan, registry: ProviderRegistry) -> Plan:
    """The plan with only attempts whose model can take its input images and mask (see the module
    docstring); a ``ValidationError`` when none can, naming the configured providers that could."""
    count, mask = len(plan_inputs(plan)), plan.mask is not None
    if mask and plan.reference is None:
        raise ValidationError("A mask needs the image it applies to. Nothing was charged.", code="IMG-VALID-MASK")
    if count == 0:
        return plan
    fitted: list[Attempt] = []
    for attempt in plan.attempts:
        model = attempt.model if takes_inputs(attempt.model, count, mask) else fitting_for_inputs(attempt.provider, plan)
        if model is not None and not any(a.provider is attempt.provider and a.model.name == model.name
                                         for a in fitted):
            fitted.append(Attempt(attempt.provider, model))
    if fitted == list(plan.attempts):
        return plan
    if fitted:
        return dataclasses.replace(plan, attempts=tuple(fitted))
    tried = ", ".join(dict.fromkeys(a.provider.name for a in plan.attempts)) or "none"
    able = [p.name for p in registry.providers.values()
            if any(takes_inputs(m, count, mask) for m in p.capabilities.models)]
    could = (f"Providers that can: {', '.join(able)} (choose one with the provider option)." if able
             else "No configured provider can.")
    if mask:
        raise ValidationError(
            f"Zoom out, pan and make square need a model that edits with a mask, and this request's providers "
            f"({tried}) have none. {could} Nothing was charged.", code="IMG-VALID-MASK")
    raise ValidationError(
        f"{count} input images need a model that takes that many at once, and this request's providers "
        f"({tried}) have none. {could} Nothing was charged.", code="IMG-VALID-REFERENCE")


@dataclass
class Outcome:
    """What a plan produced: the attempt that delivered, its stored images, and what to tell the user."""

    attempt: Attempt
    images: list[StoredImage]
    #: ``provider`` or ``provider/model`` of each attempt that failed before ``attempt`` delivered.
    failed_over: list[str] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)
    revised_prompt: str | None = None
    input_tokens: int = 0
    output_tokens: int = 0

    @property
    def provider(self) -> str:
        return self.attempt.provider.name

    @property
    def model(self) -> str:
        return self.attempt.model.name


class Generator:
    """Runs plans against the providers: failover, fan-out, per-provider slots and queues, previews."""

    def __init__(self, registry: ProviderRegistry, images: ImageStore) -> None:
        self.registry = registry
        self.images = images
        self._slots = {
            name: asyncio.Semaphore(p.capabilities.concurrency) for name, p in registry.providers.items()
        }
        self._waiting: dict[str, int] = dict.fromkeys(registry.providers, 0)

    # -- images ----------------------------------------------------------------------------------

    async def imagine(self, plan: Plan, progress: Progress | None, *, request_id: str, user: str) -> Outcome:
        """Generate with failover, then store the first ``plan.count`` images (at least one, or raise)."""
        plan = fit_inputs(plan, self.registry)
        attempt, produced, failed, notes = await self._failover(plan, progress, request_id, user)
        if isinstance(attempt.provider, LocalRenderer):
            alone = set(self.registry.providers) == {attempt.provider.name}
            notes.insert(0, OFFLINE_NOTE if alone else SKETCH_NOTE)
        await notify(progress, "made", {"count": len(produced[: plan.count]), "provider": attempt.provider.name})
        stored = await self._store(produced[: plan.count])
        if not stored:
            raise ProviderBadResponse("The provider returned no usable image.", provider=attempt.provider.name)
        return Outcome(
            attempt, stored, failed, notes,
            revised_prompt=next((g.revised_prompt for g in produced if g.revised_prompt), None),
            input_tokens=sum(g.input_tokens for g in produced), output_tokens=sum(g.output_tokens for g in produced),
        )

    async def _failover(
        self, plan: Plan, progress: Progress | None, request_id: str, user: str
    ) -> tuple[Attempt, list[GeneratedImage], list[str], list[str]]:
        """Try each attempt in order until one delivers; a retired model makes room for the same
        provider's next fitting model before the next provider."""
        failed: list[str] = []
        last: ProviderError | None = None
        attempts = list(plan.attempts)
        i = 0
        while i < len(attempts):
            attempt = attempts[i]
            i += 1
            if failed:
                metrics.failover(attempts[i - 2].provider.name)
                await notify(progress, "failover", {"from": failed[-1], "to": attempt.provider.name})
            try:
                produced, notes = await self._attempt(attempt, plan, progress, request_id, user)
                return attempt, produced, failed, notes
            except ContentRejected:
                raise
            except ModelRetired as exc:
                self.registry.retire(attempt.provider.name, exc.model or attempt.model.name)
                tried = tuple(a.model.name for a in attempts[:i] if a.provider is attempt.provider)
                other = fitting_for_inputs(attempt.provider, plan, exclude=tried)
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

    async def _attempt(
        self, attempt: Attempt, plan: Plan, progress: Progress | None, request_id: str, user: str
    ) -> tuple[list[GeneratedImage], list[str]]:
        """One provider and model: fan the count out into per-call batches and keep what came back."""
        provider, model = attempt.provider, attempt.model
        prompt, inputs = plan.prompt, plan_inputs(plan)
        if plan.mask is not None and not takes_inputs(model, len(inputs), True):  # fit_inputs rules it out
            raise ValidationError(f"{provider.name}/{model.name} does not edit with a mask. Nothing was charged.",
                                  code="IMG-VALID-MASK")
        if inputs and not model.supports_reference:
            prompt = (await self._described(prompt, inputs))[: model.prompt_limit]
            inputs = ()
        batches = calls_needed(plan.count, model.max_per_call)
        style = model.map_style(plan.style)
        previews = int(getattr(provider, "previews", 0) or 0) if model.streaming and progress is not None else 0
        requests = [
            GenerationRequest(prompt=prompt, model=model.name, size=plan.size, style=style, quality=plan.quality,
                              count=n, reference=inputs[0] if inputs else None, references=inputs[1:],
                              mask=plan.mask if inputs else None, seed=plan.seed + i,
                              output_format=plan.output_format,
                              background=plan.background, safety_id=user, previews=previews,
                              on_preview=self._preview_sink(request_id, i, attempt, previews, progress)
                              if previews else None)
            for i, n in enumerate(batches)
        ]
        results = await outcomes([self._call(provider, r, progress) for r in requests])
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
        notes = [f"{len(errors)} of {len(batches)} calls to {provider.name} failed."] if errors else []
        return produced, notes

    async def _described(self, prompt: str, inputs: tuple[bytes, ...]) -> str:
        """The prompt with each input image described in words, for a model that takes no images (one
        after another: a retired text model moves the describer on once, not once per image)."""
        descriptions = [await self.describe(image) for image in inputs]
        if len(descriptions) == 1:
            return f"{prompt}. In the manner of the reference: {descriptions[0]}"
        listed = " ".join(f"({i}) {d}" for i, d in enumerate(descriptions, start=1))
        return f"{prompt}. Combining the {len(descriptions)} references: {listed}"

    def _preview_sink(
        self, request_id: str, batch: int, attempt: Attempt, wanted: int, progress: Progress | None
    ) -> PreviewSink:
        """Partial images are saved under ``previews/`` and shown; they are free and never a result."""

        async def sink(data: bytes, index: int) -> None:
            try:
                path, mime = await self.images.save_preview(f"{request_id}-{batch}-{index}", data)
            except Exception:  # noqa: BLE001 - a bad preview must not fail the generation
                log.info("preview %d of %s was not a readable image; skipped", index, request_id)
                return
            await notify(progress, "preview", {"index": index + 1, "of": wanted, "path": path, "data": data,
                                               "mime": mime, "provider": attempt.provider.name,
                                               "model": attempt.model.name})

        return sink

    async def _call(
        self, provider: ImageProvider, request: GenerationRequest, progress: Progress | None
    ) -> list[GeneratedImage]:
        """One provider call inside the provider's concurrency slot; a provider bug becomes our error."""
        async with self._slot(provider.name, progress):
            await notify(progress, "generating", {"provider": provider.name, "model": request.model})
            started = time.perf_counter()
            outcome = "error"
            try:
                images = await provider.generate(request)
                outcome = "ok"
            except ProviderError as exc:
                if not exc.provider:
                    exc.provider = provider.name
                raise
            except asyncio.CancelledError:
                outcome = "cancelled"
                raise
            except ImagebotError:
                raise
            except Exception as exc:  # noqa: BLE001 - a provider bug must not leak raw text
                log.error("provider %s raised %s", provider.name, type(exc).__name__)
                raise ProviderBadResponse("The provider failed unexpectedly.", provider=provider.name) from None
            finally:
                metrics.provider_call(provider.name, request.model, time.perf_counter() - started, outcome)
            return list(images)[: request.count]

    @contextlib.asynccontextmanager
    async def _slot(self, name: str, progress: Progress | None) -> AsyncIterator[None]:
        """Hold one of the provider's concurrency slots; a call that has to wait is told its queue
        position (``queued``) first."""
        slot = self._slots[name]
        if slot.locked():
            self._waiting[name] += 1
            await notify(progress, "queued", {"position": self._waiting[name], "provider": name})
            try:
                await slot.acquire()
            finally:
                self._waiting[name] -= 1
        else:
            await slot.acquire()
        try:
            yield
        finally:
            slot.release()

    async def _store(self, produced: list[GeneratedImage]) -> list[StoredImage]:
        saved = await outcomes([self.images.save(image.data, drawn_size=image.drawn_size) for image in produced])
        stored: list[StoredImage] = []
        for outcome in saved:
            if isinstance(outcome, ProviderBadResponse):
                log.warning("a provider returned bytes that are not an image; dropped")
            elif isinstance(outcome, BaseException):
                raise outcome
            else:
                stored.append(outcome)
        return stored

    # -- buttons ---------------------------------------------------------------------------------

    def load(self, sha256: str, mime: str) -> bytes:
        """The bytes of a stored result (a button's source image)."""
        try:
            return self.images.load(sha256, mime)
        except FileNotFoundError:
            raise NotFound("That image file is gone from the bot's storage.", code="IMG-NOTFOUND-IMAGE") from None

    def upscaler(self, provider_name: str, model_name: str | None) -> ImageProvider:
        """The provider that made an image, if its model upscales; else the user is told to use Variations."""
        provider = self.registry.get(provider_name)
        model = provider.capabilities.model(model_name) if provider else None
        if provider is None or getattr(provider, "upscale", None) is None or model is None \
                or not model.supports_upscale:
            raise ProviderUnsupported(
                f"Upscale is not supported by {provider_name or 'that provider'}; try Variations instead.",
                provider=provider_name,
            )
        return provider

    async def upscale(self, provider: ImageProvider, model: str, source: bytes,
                      progress: Progress | None) -> StoredImage:
        """Upscale in the provider's slot (it counts against its concurrency like any call), then store."""
        async with self._slot(provider.name, progress):
            await notify(progress, "generating", {"provider": provider.name, "model": model})
            started = time.perf_counter()
            outcome = "error"
            try:
                image: GeneratedImage = await provider.upscale(source)  # type: ignore[attr-defined]
                outcome = "ok"
            finally:
                metrics.provider_call(provider.name, model, time.perf_counter() - started, outcome)
        return await self.images.save(image.data, drawn_size=image.drawn_size)

    # -- text ------------------------------------------------------------------------------------

    @property
    def enhancer(self) -> TextProvider:
        return self.registry.enhancer

    async def enhance(self, text: str) -> str:
        """The /enhance rewrite of an already cleaned prompt, cut under the image prompt limit."""
        written = await self._text(lambda t: t.enhance(text, limit=PROMPT_LIMIT))
        try:
            return clean_prompt(written, PROMPT_LIMIT)
        except ValidationError:
            raise ProviderBadResponse("The enhancer returned an empty prompt.") from None

    async def describe(self, image: bytes) -> str:
        """A reference image in words, for a model that takes no reference. A retired text model here
        must not look like the image model's retirement: it fails this attempt over instead."""
        try:
            return await self._text(lambda t: t.describe(image))
        except ModelRetired as exc:
            raise ProviderUnavailable("The model that describes reference images is no longer available.",
                                      provider=exc.provider or self.enhancer.name) from None

    async def _text(self, call: Callable[[TextProvider], Awaitable[str]]) -> str:
        """Call the text provider; a retired text model leaves the rotation (logged once by the
        catalogue) and the call is tried once more with the model the catalogue moved to."""
        enhancer = self.enhancer
        before = getattr(enhancer, "model", "")
        try:
            return await call(enhancer)
        except ModelRetired as exc:
            self.registry.retire(enhancer.name, exc.model or before)
            if getattr(enhancer, "model", "") in ("", before, exc.model):
                raise  # nothing left to move to
        try:
            return await call(enhancer)
        except ModelRetired as exc:
            self.registry.retire(enhancer.name, exc.model or getattr(enhancer, "model", ""))
            raise


async def outcomes(jobs: list[Coroutine[Any, Any, T]]) -> list[T | BaseException]:
    """Each job's result or exception, run concurrently; a single job is awaited directly (the common
    case: no task to spawn)."""
    if len(jobs) == 1:
        try:
            return [await jobs[0]]
        except Exception as exc:  # noqa: BLE001 - handed back, as gather does below
            return [exc]
    return list(await asyncio.gather(*jobs, return_exceptions=True))


async def notify(progress: Progress | None, stage: str, details: dict[str, Any]) -> None:
    """Tell the adapter; a failed progress update never fails the generation."""
    if progress is None:
        return
    try:
        await progress(stage, details)
    except Exception:  # noqa: BLE001 - a failed progress edit must not fail the generation
        log.warning("progress update %s failed", stage)

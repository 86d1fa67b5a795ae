"""Prometheus metrics of this process, served at ``GET /metrics`` by ``bot.web``.

One registry per process (``REGISTRY``, not the client library's global one, so a test or an embedding
program reads exactly these series). The hooks that feed it sit where the events happen once:

    imagebot_commands_total{kind, outcome}           bot.billing: every charged command's end (and refusals)
    imagebot_credits_reserved_total                  bot.billing: held for a job that starts
    imagebot_credits_consumed_total                  bot.billing: settled as spent
    imagebot_credits_refunded_total{reason}          bot.billing (unused, failed), bot.worker (undelivered,
                                                     interrupted: a queued job refunded before it ran)
    imagebot_provider_latency_seconds{provider, model, outcome}   bot.generation: each provider call
    imagebot_failovers_total{provider}               bot.generation: an attempt failed and the next is tried
    imagebot_jobs_total{outcome}                     bot.worker: a job's one outcome reached its user
    imagebot_queue_depth                             jobs queued, not yet claimed (read at each scrape)
    imagebot_database_up, imagebot_ratelimit_store_up  the last readiness probe (scrape or /readyz)

The credit counters add up: ``reserved == consumed + refunded{unused, failed, lease_lost, interrupted}``;
``refunded{undelivered}`` gives back credits already counted as consumed (the images reached nobody).
Reservations released by the lease sweep (their process died) are counted by nobody: the process that
held them is gone, and the next one only sees the released sum.

Labels only ever hold names the bot chose (commands, providers, models, outcomes, error codes), never
what a user typed or a configured secret, so the series stay few and the page is safe to expose.
"""

from __future__ import annotations

import asyncio
import logging
from typing import TYPE_CHECKING

from prometheus_client import (
    CONTENT_TYPE_LATEST,
    CollectorRegistry,
    Counter,
    Gauge,
    Histogram,
    generate_latest,
)
from prometheus_client import (
    gc_collector as _gc,
)
from prometheus_client import (
    platform_collector as _platform,
)
from prometheus_client import (
    process_collector as _process,
)

if TYPE_CHECKING:
    from .core import Imagebot

log = logging.getLogger(__name__)

#: Seconds a scrape or readiness probe waits for the database; a hung one must not hang the scraper.
PROBE_TIMEOUT = 2.0

REGISTRY = CollectorRegistry(auto_describe=True)
_process.ProcessCollector(registry=REGISTRY)
_platform.PlatformCollector(registry=REGISTRY)
_gc.GCCollector(registry=REGISTRY)

COMMANDS = Counter("imagebot_commands", "Charged commands by kind and how they ended "
                   "(completed, failed, cancelled, refused, lease_lost).",
                   ("kind", "outcome"), registry=REGISTRY)
CREDITS_RESERVED = Counter("imagebot_credits_reserved", "Credits held for jobs that started.", registry=REGISTRY)
CREDITS_CONSUMED = Counter("imagebot_credits_consumed", "Credits settled as spent.", registry=REGISTRY)
CREDITS_REFUNDED = Counter("imagebot_credits_refunded", "Credits given back, by reason (unused: a partial "
                           "result; failed; lease_lost; interrupted: queued, never run; undelivered).",
                           ("reason",), registry=REGISTRY)
PROVIDER_LATENCY = Histogram("imagebot_provider_latency_seconds", "Duration of each image provider call.",
                             ("provider", "model", "outcome"),
                             buckets=(0.25, 0.5, 1, 2, 5, 10, 20, 30, 45, 60, 90, 120, 180, 300),
                             registry=REGISTRY)
FAILOVERS = Counter("imagebot_failovers", "Attempts that failed over to the next provider or model, by the "
                    "provider that failed.", ("provider",), registry=REGISTRY)
JOBS = Counter("imagebot_jobs", "Jobs a worker ended, by outcome (delivered, failed, undelivered, refunded).",
               ("outcome",), registry=REGISTRY)
QUEUE_DEPTH = Gauge("imagebot_queue_depth", "Jobs queued and not yet claimed, across processes "
                    "(read at scrape time; kept at its last value while the database does not answer).",
                    registry=REGISTRY)
DATABASE_UP = Gauge("imagebot_database_up", "1 when the database answered the last probe.", registry=REGISTRY)
RATELIMIT_UP = Gauge("imagebot_ratelimit_store_up", "1 when the rate-limit store answered the last probe "
                     "(always 1 for memory://).", registry=REGISTRY)


# -- hooks -------------------------------------------------------------------------------------------


def command(kind: str, outcome: str) -> None:
    COMMANDS.labels(kind or "unknown", outcome).inc()


def reserved(credits: int) -> None:
    if credits > 0:
        CREDITS_RESERVED.inc(credits)


def consumed(credits: int) -> None:
    if credits > 0:
        CREDITS_CONSUMED.inc(credits)


def refunded(credits: int, reason: str) -> None:
    if credits > 0:
        CREDITS_REFUNDED.labels(reason).inc(credits)


def provider_call(provider: str, model: str, seconds: float, outcome: str) -> None:
    PROVIDER_LATENCY.labels(provider, model or "unknown", outcome).observe(max(0.0, seconds))


def failover(provider: str) -> None:
    FAILOVERS.labels(provider).inc()


def job(outcome: str) -> None:
    JOBS.labels(outcome).inc()


# -- probes and the page ---------------------------------------------------------------------------


async def database_ok(core: Imagebot, timeout: float = PROBE_TIMEOUT) -> bool:
    """A cheap read (the queued-jobs count), bounded; it also refreshes ``imagebot_queue_depth``.
    Any failure means "down": a closed store, a missing file, a server that does not answer."""
    try:
        async with asyncio.timeout(timeout):
            depth = await core.store.queue_depth()
    except Exception as exc:  # noqa: BLE001 - whatever the reason, the database is not usable now
        log.debug("database probe failed: %s", type(exc).__name__)
        DATABASE_UP.set(0)
        return False
    QUEUE_DEPTH.set(depth)
    DATABASE_UP.set(1)
    return True


async def ratelimit_ok(core: Imagebot) -> bool:
    """The limiter's own bounded PING (``RateLimiter.reachable``); ``memory://`` is always there."""
    try:
        ok = await core.limiter.reachable()
    except Exception as exc:  # noqa: BLE001 - a broken client is an unreachable store
        log.debug("rate-limit store probe failed: %s", type(exc).__name__)
        ok = False
    RATELIMIT_UP.set(1 if ok else 0)
    return ok


async def refresh(core: Imagebot | None) -> None:
    """Gauges read at scrape time. Never raises: a scrape while the database is down still answers."""
    if core is None:
        return
    await database_ok(core)


def exposition() -> tuple[bytes, str]:
    """The text exposition of ``REGISTRY`` and its content type."""
    return generate_latest(REGISTRY), CONTENT_TYPE_LATEST


def value(name: str, **labels: str) -> float:
    """One sample's current value (0 when it was never set): for tests and the bench scripts."""
    found = REGISTRY.get_sample_value(name, labels)
    return float(found) if found is not None else 0.0

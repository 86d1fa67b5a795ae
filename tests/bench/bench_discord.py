"""Discord benchmark: is every /imagine acknowledged (deferred) fast while the provider is slow?

Starts the bot as its own process through the real entry point (``run_discord``: the real discord.py client
and core, SQLite), with a test-double provider in the real registry that takes 2 s per image. This process
runs a loopback fake of Discord's gateway and REST API and pushes N concurrent /imagine interactions
(default 200, one per member) down the gateway. Prints the defer latency p50/p99/max (gateway dispatch ->
interaction callback received) and the time until every image is delivered.
Target: defer p99 < 300 ms.

First, on the idle bot, a burst of 40 concurrent /imagine (``--burst``) measures how soon results follow the
provider: the time from a command's dispatch to its image arriving, as a multiple of the provider's latency
(the last of the 40 is the headline). Progress edits must never delay a result.
Target: command -> last image <= 1.1x the provider latency.

Run: python tests/bench/bench_discord.py [--requests 200] [--burst 40] [--delay 2.0] [--provider-concurrency 50]
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import signal
import statistics
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))

from bot.config import load_config  # noqa: E402
from bot.discord_app import run_discord  # noqa: E402
from providers.base import GeneratedImage, GenerationRequest  # noqa: E402
from storage.sqlite import SqliteStore  # noqa: E402
from tests.doubles import ScriptedProvider, make_core  # noqa: E402
from tests.fakes.discord_api import Call, FakeDiscord, Payloads  # noqa: E402

TARGET_P99 = 0.300
TARGET_RATIO = 1.10


def percentile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, max(0, round(q / 100 * len(ordered)) - 1))]


class TimedProvider(ScriptedProvider):
    """The slow double, noting when each call starts and ends (for ``--breakdown``; the clock is shared
    by both processes: ``time.perf_counter`` is the system's monotonic clock)."""

    def __init__(self, log: Path, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.log = log
        self.times: dict[str, tuple[float, float]] = {}

    async def generate(self, request: GenerationRequest) -> list[GeneratedImage]:
        started = time.perf_counter()
        try:
            return await super().generate(request)
        finally:
            self.times[request.prompt] = (started, time.perf_counter())

    def save(self) -> None:
        self.log.write_text(json.dumps(self.times))


async def serve_bot(workdir: Path, api_base: str, gateway: str, delay: float, concurrency: int) -> None:
    """The bot process: ``run_discord`` on a core whose registry holds the slow double."""
    (workdir / "imagebot.toml").write_text("")
    env = {
        "IMAGEBOT_DATABASE": str(workdir / "imagebot.sqlite3"), "IMAGEBOT_DATA_DIR": str(workdir / "data"),
        "IMAGEBOT_USER_RATE": "1000/minute", "IMAGEBOT_SERVER_RATE": "100000/hour",
        "DISCORD_TOKEN": "bench-token", "DISCORD_API_BASE_URL": api_base, "DISCORD_GATEWAY_URL": gateway,
    }
    config = load_config(env=env, path=workdir / "imagebot.toml")
    slow = TimedProvider(workdir / "provider-times.jsonl", "slow", delay=delay, concurrency=concurrency,
                         max_per_call=1, sizes=("256x256",))
    async with make_core(config, [slow]) as core:
        task = asyncio.create_task(run_discord(core, config))
        asyncio.get_running_loop().add_signal_handler(signal.SIGTERM, task.cancel)
        await asyncio.gather(task, return_exceptions=True)
    slow.save()


def delivered(calls: list[Call]) -> Call | None:
    """The call that brought the result's images (a preview edit carries ``preview-*`` files, not a result)."""
    return next((c for c in calls if c.files and c.status < 300
                 and not all(name.startswith("preview-") for name, _ in c.files)), None)


async def result_ratios(fake: FakeDiscord, payloads: list[dict[str, object]], delay: float) -> list[float]:
    """Dispatch the commands one after another (one gateway connection); for each, the seconds from its
    dispatch to its image, divided by the provider latency."""
    tokens = [str(p["token"]) for p in payloads]
    for payload in payloads:
        await fake.dispatch(payload)

    def results() -> list[Call] | None:
        found = [delivered(fake.by_token.get(t, [])) for t in tokens]
        return None if any(r is None for r in found) else [r for r in found if r is not None]

    found = await fake.wait_for(results, timeout=60 + len(tokens) * delay)
    return [(r.at - fake.dispatched[t]) / delay for r, t in zip(found, tokens, strict=True)]


def print_breakdown(calls: dict[str, tuple[float, list[Call]]], provider: dict[str, list[float]]) -> None:
    """Where the burst's time went, per command (ms, p50 / max over the burst): dispatch -> defer received,
    -> provider call starts, provider ends -> the next REST call arrives, -> the result arrives; and which
    calls each command made."""
    phases: dict[str, list[float]] = {"dispatch->defer": [], "defer->provider": [], "dispatch->provider": [],
                                      "provider end->next call": [], "provider end->result": [],
                                      "calls after provider": []}
    for prompt, (dispatched, made) in calls.items():
        start, end = provider[prompt]
        result = delivered(made)
        if result is None:
            continue
        after = [c for c in made if c.at >= end]
        phases["dispatch->defer"].append(made[0].at - dispatched)
        phases["defer->provider"].append(start - made[0].at)
        phases["dispatch->provider"].append(start - dispatched)
        phases["provider end->next call"].append(after[0].at - end if after else 0.0)
        phases["provider end->result"].append(result.at - end)
        phases["calls after provider"].append(len(after) / 1000)
    for name, values in phases.items():
        print(f"  {name:<24} p50 {percentile(values, 50) * 1000:6.1f} ms   max {max(values) * 1000:6.1f} ms")


async def stop_bot(bot: asyncio.subprocess.Process) -> None:
    """SIGTERM (the bot drains its jobs), then SIGKILL if it is still there after a minute; never hang
    on a child whose exit the event loop did not hear about."""
    if bot.returncode is None:
        bot.terminate()
    try:
        await asyncio.wait_for(bot.wait(), 60)
    except TimeoutError:
        if bot.returncode is None:
            with contextlib.suppress(ProcessLookupError):
                bot.kill()
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(bot.wait(), 5)


async def run(requests: int, delay: float, concurrency: int, workdir: Path, burst: int = 40,
              breakdown: bool = False) -> bool:
    fake = await FakeDiscord().start()
    payloads = Payloads(fake)
    # The bot runs in its own process, as in production: the fake Discord does not share its event loop.
    bot = await asyncio.create_subprocess_exec(
        sys.executable, __file__, "--serve-bot", str(workdir), fake.api_base, fake.gateway_url, str(delay),
        str(concurrency))

    def imagine(user_id: int, prompt: str) -> dict[str, object]:
        return payloads.command("imagine", [payloads.opt("prompt", prompt), payloads.opt("size", "256x256")],
                                user_id=user_id)

    try:
        await fake.wait_for(lambda: fake.identifies, timeout=60)
        warm = imagine(1, "warm-up")  # first command: imports, connection pool; kept out of the figures
        await fake.dispatch(warm)
        await fake.wait_for(lambda: delivered(fake.for_token(warm["token"])), timeout=60)

        burst_payloads = [imagine(5000 + i, f"burst fox {i}") for i in range(burst)]
        ratios = await result_ratios(fake, burst_payloads, delay)
        burst_calls = {f"burst fox {i}": (fake.dispatched[str(p["token"])], list(fake.for_token(p["token"])))
                       for i, p in enumerate(burst_payloads)}

        batch = [imagine(1000 + i, f"benchmark fox {i}") for i in range(requests)]
        tokens = [str(p["token"]) for p in batch]
        started = time.perf_counter()
        for payload in batch:  # Discord sends events down one gateway connection, one after another
            await fake.dispatch(payload)

        def defers() -> list[float] | None:
            times = []
            for token in tokens:
                calls = fake.by_token.get(token)
                if not calls:
                    return None
                times.append(calls[0].at - fake.dispatched[token])
            return times

        latencies = await fake.wait_for(defers, timeout=60)
        last: list[float] = []

        def all_delivered() -> bool:
            results = [delivered(fake.by_token.get(t, [])) for t in tokens]
            if any(r is None for r in results):
                return False
            last.append(max(r.at for r in results if r is not None))
            return True

        await fake.wait_for(all_delivered, timeout=60 + requests * delay)
        everything = last[-1] - started
        queued = sum(1 for t in tokens if any("Queued" in (c.content or "") for c in fake.by_token[t]))
        first_call = [fake.by_token[t][0].json for t in tokens]
    finally:
        await stop_bot(bot)
        await asyncio.wait_for(fake.stop(), 30)
    store = SqliteStore(workdir / "imagebot.sqlite3")
    await store.open()
    audit = await store.audit()
    await store.close()

    p50, p99 = percentile(latencies, 50), percentile(latencies, 99)
    waves = -(-requests // concurrency)
    print(f"interactions: {requests} concurrent /imagine over the gateway, provider {delay:.1f} s per image, "
          f"{concurrency} provider calls at once (ideal: {waves} waves = {waves * delay:.1f} s)")
    print(f"defer latency: p50 {p50 * 1000:.0f} ms, p99 {p99 * 1000:.0f} ms, max {max(latencies) * 1000:.0f} ms, "
          f"mean {statistics.mean(latencies) * 1000:.0f} ms "
          f"({sum(1 for j in first_call if j == {'type': 5})} of {requests} first responses were defers)")
    print(f"every image delivered after {everything:.2f} s ({requests} messages with files); "
          f"{queued} members saw their queue position")
    print(f"ledger audit: {'balanced' if not audit else f'{len(audit)} accounts off'}")
    ok = p99 < TARGET_P99 and not audit
    print(f"target defer p99 < {TARGET_P99 * 1000:.0f} ms: {'met' if ok else 'MISSED'}")
    last = max(ratios)
    print(f"results, {burst} concurrent /imagine on the idle bot: command -> last image {last * delay:.2f} s = "
          f"{last:.2f}x the provider's {delay:.1f} s (per command p50 {percentile(ratios, 50):.2f}x, "
          f"min {min(ratios):.2f}x)")
    fast = last <= TARGET_RATIO
    if breakdown:
        print_breakdown(burst_calls, json.loads((workdir / "provider-times.jsonl").read_text()))
    print(f"target command -> last image <= {TARGET_RATIO:.1f}x: {'met' if fast else 'MISSED'}")
    return ok and fast


def main() -> int:
    if len(sys.argv) == 7 and sys.argv[1] == "--serve-bot":
        workdir, api_base, gateway, delay, concurrency = sys.argv[2:]
        asyncio.run(serve_bot(Path(workdir), api_base, gateway, float(delay), int(concurrency)))
        return 0
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--requests", type=int, default=200)
    parser.add_argument("--delay", type=float, default=2.0, help="provider seconds per image")
    parser.add_argument("--provider-concurrency", type=int, default=50)
    parser.add_argument("--burst", type=int, default=40, help="concurrent commands for the result-latency figure")
    parser.add_argument("--breakdown", action="store_true", help="print where the burst's time went")
    parser.add_argument("--dir", type=Path, default=None, help="where the SQLite file goes (default: a temp dir)")
    args = parser.parse_args()
    if args.dir is not None:
        args.dir.mkdir(parents=True, exist_ok=True)
        return 0 if asyncio.run(run(args.requests, args.delay, args.provider_concurrency, args.dir, args.burst,
                                           args.breakdown)) else 1
    with tempfile.TemporaryDirectory() as tmp:
        return 0 if asyncio.run(run(args.requests, args.delay, args.provider_concurrency, Path(tmp), args.burst,
                                           args.breakdown)) else 1


if __name__ == "__main__":
    raise SystemExit(main())

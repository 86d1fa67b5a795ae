"""Slack HTTP-mode benchmark: does every /imagine get its ack inside Slack's 3 s while the provider is slow?

Starts the bot as its own process through the real entry point (``run_slack``, HTTP mode), with a test-double
provider in the real registry that takes 2 s per image, talking to a loopback fake of the Slack Web API run
by this process. Sends N concurrent signed /imagine requests (default 200, one per user). Prints the
ack latency p50/p99/max and the time until every image is uploaded.
Target: ack p99 < 300 ms.

First, on the idle bot, a burst of 40 concurrent /imagine (``--burst``) measures how soon results follow the
provider: the time from sending a command to its upload completing, as a multiple of the provider's latency
(the last of the 40 is the headline). Progress notes must never delay a result.
Target: command -> last image <= 1.1x the provider latency.

Run: python tests/bench/bench_slack.py [--requests 200] [--burst 40] [--delay 2.0] [--provider-concurrency 50]
"""

from __future__ import annotations

import argparse
import asyncio
import json
import signal
import socket
import statistics
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))

import aiohttp  # noqa: E402

from bot.config import load_config  # noqa: E402
from bot.slack_app import run_slack  # noqa: E402
from providers.base import Capabilities, GeneratedImage, GenerationRequest, ModelInfo  # noqa: E402
from providers.local import render  # noqa: E402
from storage.sqlite import SqliteStore  # noqa: E402
from tests.fakes.slack_api import FakeSlack, command_payload, form_body, signed_headers  # noqa: E402
from tests.fakes.slack_harness import BOT_TOKEN, SECRET, make_core  # noqa: E402

TARGET_P99 = 0.300
TARGET_RATIO = 1.10


class SlowProvider:
    """A test double registered through the real registry: ``delay`` seconds per image, real PNG bytes."""

    name = "slow"

    def __init__(self, delay: float, concurrency: int) -> None:
        self.delay = delay
        #: prompt -> (start, end) of its call, for ``--breakdown`` (``time.monotonic`` is the system's clock,
        #: shared by both processes).
        self.times: dict[str, tuple[float, float]] = {}
        self.capabilities = Capabilities(
            models=(ModelInfo("slow-1", sizes=("256x256", "1024x1024"), max_per_call=1),),
            default_model="slow-1", concurrency=concurrency,
        )
        self.image = render("benchmark", "256x256", "natural", 0, 0)

    async def generate(self, request: GenerationRequest) -> list[GeneratedImage]:
        started = time.monotonic()
        await asyncio.sleep(self.delay * request.count)
        self.times[request.prompt] = (started, time.monotonic())
        return [GeneratedImage(self.image) for _ in range(request.count)]

    async def aclose(self) -> None:
        return None


def percentile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, max(0, round(q / 100 * len(ordered)) - 1))]


def bot_env(workdir: Path, api_url: str, port: int) -> dict[str, str]:
    return {
        "IMAGEBOT_DATABASE": str(workdir / "imagebot.sqlite3"), "IMAGEBOT_DATA_DIR": str(workdir / "data"),
        "IMAGEBOT_USER_RATE": "1000/minute", "IMAGEBOT_SERVER_RATE": "100000/hour",
        "SLACK_BOT_TOKEN": BOT_TOKEN, "SLACK_SIGNING_SECRET": SECRET, "SLACK_API_URL": api_url,
        "IMAGEBOT_HTTP_PORT": str(port), "IMAGEBOT_HTTP_HOST": "127.0.0.1",
    }


async def serve_bot(workdir: Path, api_url: str, port: int, delay: float, concurrency: int) -> None:
    """The bot process: the real entry point ``run_slack`` on a core whose registry holds the slow double."""
    (workdir / "imagebot.toml").write_text("")
    config = load_config(env=bot_env(workdir, api_url, port), path=workdir / "imagebot.toml")
    slow = SlowProvider(delay, concurrency)
    async with make_core(config, [slow]) as core:
        task = asyncio.create_task(run_slack(core, config))
        loop = asyncio.get_running_loop()
        loop.add_signal_handler(signal.SIGTERM, task.cancel)
        await asyncio.gather(task, return_exceptions=True)
    (workdir / "provider-times.json").write_text(json.dumps(slow.times))


def raw_request(fake: FakeSlack, port: int, i: int) -> bytes:
    body = form_body(command_payload(fake, "/imagine", f"benchmark fox {i} --size 256x256", user=f"U{i:08d}",
                                     key=f"k{i}"))
    headers = signed_headers(SECRET, body)
    head = "".join(f"{k}: {v}\r\n" for k, v in headers.items())
    return (f"POST /slack/events HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\n{head}"
            f"Content-Length: {len(body)}\r\nConnection: close\r\n\r\n{body}").encode()


async def timed_ack(reader: asyncio.StreamReader, writer: asyncio.StreamWriter, data: bytes,
                    go: asyncio.Event) -> float:
    """Seconds from sending a signed /imagine to reading the whole HTTP answer (the ack)."""
    await go.wait()
    started = time.perf_counter()
    writer.write(data)
    head = await reader.readuntil(b"\r\n\r\n")
    length = next((int(line.split(b":")[1]) for line in head.split(b"\r\n")
                   if line.lower().startswith(b"content-length:")), 0)
    body = await reader.readexactly(length)
    seconds = time.perf_counter() - started
    writer.close()
    if not head.startswith(b"HTTP/1.1 200") or b"Generating" not in body:
        raise RuntimeError(f"not acknowledged: {head[:40]!r} {body[:200]!r}")
    return seconds


def print_breakdown(sent: dict[str, float], done: dict[str, float], provider: dict[str, list[float]]) -> None:
    """Where the burst's time went (ms, p50 / max over the burst): command sent -> provider call starts,
    provider ends -> upload complete."""
    phases: dict[str, list[float]] = {"sent->provider": [], "provider end->result": []}
    for i, user in enumerate(sent):
        start, end = provider[f"burst fox {i}"]
        phases["sent->provider"].append(start - sent[user])
        phases["provider end->result"].append(done[user] - end)
    for name, values in phases.items():
        print(f"  {name:<24} p50 {percentile(values, 50) * 1000:6.1f} ms   max {max(values) * 1000:6.1f} ms")


async def result_ratios(fake: FakeSlack, http: aiohttp.ClientSession, url: str, burst: int,
                        delay: float, sent: dict[str, float], done: dict[str, float]) -> list[float]:
    """``burst`` concurrent signed /imagine; for each, the seconds from sending it to its upload completing
    (``files.completeUploadExternal`` accepted by the fake), divided by the provider latency. ``sent`` and
    ``done`` are filled in: user -> when the command was sent, when its upload completed."""
    before = len(fake.uploads)

    async def send(i: int) -> None:
        user = f"UB{i:07d}"
        body = form_body(command_payload(fake, "/imagine", f"burst fox {i} --size 256x256", user=user, key=f"b{i}"))
        sent[user] = time.monotonic()
        async with http.post(f"{url}/slack/events", data=body, headers=signed_headers(SECRET, body)) as resp:
            if resp.status != 200:
                raise RuntimeError(f"burst command {i} answered {resp.status}")

    await asyncio.gather(*(send(i) for i in range(burst)))
    await fake.until(lambda: len(fake.uploads) >= before + burst, timeout=60 + burst * delay)
    ratios = []
    for upload in fake.uploads[before:]:
        user = next(u for u in sent if f"<@{u}>" in upload.initial_comment)
        done[user] = upload.at
        ratios.append((upload.at - sent[user]) / delay)
    return ratios


async def run(requests: int, delay: float, concurrency: int, workdir: Path, burst: int = 40,
              breakdown: bool = False) -> bool:
    fake = await FakeSlack().start()
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    # The bot runs in its own process, as in production: the fake Slack and this client do not share its loop.
    bot = await asyncio.create_subprocess_exec(
        sys.executable, __file__, "--serve-bot", str(workdir), fake.api_url, str(port), str(delay), str(concurrency))
    url = f"http://127.0.0.1:{port}"
    try:
        async with aiohttp.ClientSession(connector=aiohttp.TCPConnector(limit=0)) as http:
            for _ in range(500):
                try:
                    async with http.get(f"{url}/healthz") as resp:
                        if resp.status == 200:
                            break
                except aiohttp.ClientConnectionError:
                    await asyncio.sleep(0.02)

            async def one(i: int, user: str) -> float:
                body = form_body(command_payload(fake, "/imagine", f"benchmark fox {i} --size 256x256",
                                                 user=user, key=f"k{i}"))
                async with http.post(f"{url}/slack/events", data=body, headers=signed_headers(SECRET, body)) as resp:
                    return resp.status

            await one(-1, "U0WARM001")  # Bolt calls auth.test on its first request: keep it out of the figures
            await fake.until(lambda: fake.uploads, timeout=60)
            fake.uploads.clear()
            sent: dict[str, float] = {}
            done: dict[str, float] = {}
            ratios = await result_ratios(fake, http, url, burst, delay, sent, done)
            fake.uploads.clear()
            # Slack's requests come from many machines: prepare, sign and connect all of them first, so the
            # figures measure the bot's answer, not this one client process building 200 requests.
            requests_bytes = [raw_request(fake, port, i) for i in range(requests)]
            connections = await asyncio.gather(
                *(asyncio.open_connection("127.0.0.1", port) for _ in range(requests)))
            go = asyncio.Event()
            tasks = [asyncio.create_task(timed_ack(r, w, data, go)) for (r, w), data in zip(connections, requests_bytes,
                                                                                        strict=True)]
            await asyncio.sleep(0.05)
            started = time.perf_counter()
            go.set()
            acks = await asyncio.gather(*tasks)
            await fake.until(lambda: len(fake.uploads) >= requests, timeout=60 + requests * delay)
            all_uploaded = time.perf_counter() - started
            queued = sum(1 for i in range(requests) if any("Waiting in line" in r for r in fake.replies(f"k{i}")))
    finally:
        if bot.returncode is None:
            bot.terminate()
        try:  # never hang on a child whose exit the event loop did not hear about
            await asyncio.wait_for(bot.wait(), 60)
        except TimeoutError:
            if bot.returncode is None:
                bot.kill()
        await fake.close()
    store = SqliteStore(workdir / "imagebot.sqlite3")
    await store.open()
    audit = await store.audit()
    await store.close()

    p50, p99 = percentile(acks, 50), percentile(acks, 99)
    waves = -(-requests // concurrency)
    print(f"requests: {requests} concurrent signed /imagine, provider {delay:.1f} s per image, "
          f"{concurrency} provider calls at once (ideal: {waves} waves = {waves * delay:.1f} s)")
    print(f"ack latency: p50 {p50 * 1000:.0f} ms, p99 {p99 * 1000:.0f} ms, max {max(acks) * 1000:.0f} ms, "
          f"mean {statistics.mean(acks) * 1000:.0f} ms")
    print(f"every image uploaded after {all_uploaded:.2f} s ({requests} uploads); "
          f"{queued} users were told their queue position")
    print(f"ledger audit: {'balanced' if not audit else f'{len(audit)} accounts off'}")
    ok = p99 < TARGET_P99 and not audit
    print(f"target ack p99 < {TARGET_P99 * 1000:.0f} ms: {'met' if ok else 'MISSED'}")
    last = max(ratios)
    print(f"results, {burst} concurrent /imagine on the idle bot: command -> last image {last * delay:.2f} s = "
          f"{last:.2f}x the provider's {delay:.1f} s (per command p50 {percentile(ratios, 50):.2f}x, "
          f"min {min(ratios):.2f}x)")
    fast = last <= TARGET_RATIO
    if breakdown:
        print_breakdown(sent, done, json.loads((workdir / "provider-times.json").read_text()))
    print(f"target command -> last image <= {TARGET_RATIO:.1f}x: {'met' if fast else 'MISSED'}")
    return ok and fast


def main() -> int:
    if len(sys.argv) == 7 and sys.argv[1] == "--serve-bot":
        workdir, api_url, port, delay, concurrency = sys.argv[2:]
        asyncio.run(serve_bot(Path(workdir), api_url, int(port), float(delay), int(concurrency)))
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

"""Scale benchmark: jobs per second on PostgreSQL with one and with two worker processes, against what
the server's raw write rate allows; and the ack latency of the Discord HTTP interactions endpoint.

Everything runs on this machine's PostgreSQL (127.0.0.1:5432, database ``test``, a schema of its own,
dropped afterwards) and Redis (rate limits, as deployed). This process runs the loopback fake of Discord
(the workers deliver there: one ``PATCH @original`` with the files per job) and the driver.

  (a) the raw psycopg rate: single-row write transactions (``BEGIN; INSERT; COMMIT``) one after another
      on one connection to the same server, before and after the runs, averaged;
  (b) commands per second with 1, then with 2 worker processes: the driver enqueues N commands (the
      ingress's own call, ``core.enqueue``: validate, rate-limit, reserve and insert the job in one
      transaction) with Discord addresses from 200 users on 20 servers, and the clock runs until the fake
      has every result. The workers are their own processes (``bot.worker.Worker`` with the couriers
      ``imagebot run`` builds) whose provider returns a ready-made image at once, so the figure is the
      job path: enqueue, claim, settle, store the image, deliver, finish. Each process counts its write
      transactions during the run (one command needs about 4: enqueue, claim (shared by a batch), settle,
      finish), and (b) is compared with (a) / (write transactions per command);
  (c) ack p99: 200 signed ``/imagine`` interactions sent at once to ``POST /discord/interactions`` of an
      ``imagebot run`` ingress process (``IMAGEBOT_ROLE=ingress``), connections opened beforehand.

Targets (issue 11): (b) with 1 worker >= 40% of what (a) allows; 2 workers >= 1.3x one; (c) p99 < 100 ms.

Run: .venv/bin/python tests/bench/bench_scale.py [--commands 2000] [--acks 200] [--raw 2000]
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import os
import signal
import sys
import tempfile
import time
from collections import Counter
from collections.abc import Awaitable, Callable, Iterator
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))

import psycopg  # noqa: E402

from bot.config import Config, load_config  # noqa: E402
from bot.core import Imagebot  # noqa: E402
from bot.models import ImagineOptions  # noqa: E402
from bot.ratelimit import RateLimiter  # noqa: E402
from providers.base import Capabilities, GeneratedImage, GenerationRequest, ModelInfo  # noqa: E402
from providers.local_text import LocalEnhancer  # noqa: E402
from providers.registry import ProviderRegistry  # noqa: E402
from storage.images import ImageStore  # noqa: E402
from storage.ledger import Ledger, open_ledger  # noqa: E402
from tests.bench.bench_core import ready_made  # noqa: E402
from tests.fakes.discord_api import FakeDiscord, Payloads  # noqa: E402
from tests.fakes.scale_harness import (  # noqa: E402
    POSTGRES,
    Bot,
    Deployment,
    DiscordSigner,
    Fakes,
    pg_schema,
    query,
    schema_of,
    servers_problem,
)

SIZE = "256x256"
USERS, SERVERS = 200, 20
RATIO_TARGET = 0.40
SCALING_TARGET = 1.30
ACK_P99_TARGET = 0.100
#: Enqueues in flight from the driver at once (an ingress tier under load).
ENQUEUERS = 64
STARTING = 1_000_000


def percentile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, max(0, round(q / 100 * len(ordered)) - 1))]


def verdict(ok: bool) -> str:
    return "PASS" if ok else "FAIL"


# -- a ready-made provider, and a ledger that counts its write transactions ---------------------------

class ReadyMade:
    """Answers at once with the next ready-made PNG (distinct bytes per call, as a vendor's would be)."""

    name = "ready"

    def __init__(self, images: Iterator[bytes]) -> None:
        self.capabilities = Capabilities(models=(ModelInfo("ready-made", sizes=(SIZE,)),),
                                         default_model="ready-made", concurrency=1000)
        self._images = images

    async def generate(self, request: GenerationRequest) -> list[GeneratedImage]:
        return [GeneratedImage(next(self._images)) for _ in range(request.count)]

    async def aclose(self) -> None:
        return None


def count_writes(store: Ledger) -> Counter[str]:
    """Count the store's write transactions (all of them go through ``_write``), by the method that ran
    them, and its single-query reads (``_read``) under "(reads)"."""
    counts: Counter[str] = Counter()
    inner: Callable[..., Awaitable[Any]] = store._write  # type: ignore[attr-defined]

    async def counted(body: Any, **kwargs: Any) -> Any:
        counts[getattr(body, "__qualname__", "?").split(".<locals>")[0].split(".")[-1]] += 1
        return await inner(body, **kwargs)

    store._write = counted  # type: ignore[attr-defined]
    read: Callable[..., Awaitable[Any]] = store._read  # type: ignore[attr-defined]

    async def counted_read(query: str, params: tuple[Any, ...] = ()) -> Any:
        counts["(reads)"] += 1  # not a write: left out of the total
        return await read(query, params)

    store._read = counted_read  # type: ignore[attr-defined]
    return counts


def bench_config(workdir: Path, env: dict[str, str]) -> Config:
    (workdir / "imagebot.toml").write_text("")
    return load_config(env=env, path=workdir / "imagebot.toml")


def make_core(config: Config, images: Iterator[bytes]) -> tuple[Imagebot, Counter[str]]:
    store = open_ledger(config.database, starting_credits=config.starting_credits)
    counts = count_writes(store)
    registry = ProviderRegistry([ReadyMade(images)], ["ready"], LocalEnhancer())
    limiter = RateLimiter(config.limits.user_rate, config.limits.server_rate, config.limits.storage_uri,
                          on_outage=config.limits.on_outage)
    return Imagebot(config, store, ImageStore(config.data_dir), registry, limiter), counts


# -- a worker process --------------------------------------------------------------------------------

async def serve_worker(workdir: Path) -> None:
    """A worker process as ``imagebot run`` with ``IMAGEBOT_ROLE=worker`` makes it (the couriers from the
    environment, ``bot.worker.Worker``), with the ready-made provider. SIGUSR1 writes its write-transaction
    counts to ``counts.json``; it claims nothing before SIGUSR2 (so a queue can be filled first); SIGTERM stops it."""
    import logging

    from bot.platforms import build_couriers
    from bot.worker import Worker

    logging.basicConfig(level=logging.WARNING, format="%(asctime)s %(levelname)s %(name)s: %(message)s")

    config = bench_config(workdir, dict(os.environ))
    core, counts = make_core(config, ready_made(10**7))
    await core.start(sweep=True)
    couriers = build_couriers(config)
    worker = Worker(core, couriers)
    loop = asyncio.get_running_loop()
    go = asyncio.Event()
    snapshots = 0

    def snapshot() -> None:
        nonlocal snapshots
        snapshots += 1
        tmp = workdir / "counts.tmp"
        tmp.write_text(json.dumps({"seq": snapshots, "counts": dict(counts)}))
        tmp.replace(workdir / "counts.json")

    async def work() -> None:
        await go.wait()
        await worker.run()

    task = asyncio.create_task(work())
    loop.add_signal_handler(signal.SIGUSR1, snapshot)
    loop.add_signal_handler(signal.SIGUSR2, go.set)
    loop.add_signal_handler(signal.SIGTERM, task.cancel)
    print("worker: taking jobs on SIGUSR2", file=sys.stderr, flush=True)
    with contextlib.suppress(asyncio.CancelledError):
        await task
    await worker.close(grace=10)
    for courier in couriers.values():
        await courier.aclose()
    await core.close()


class WorkerProcess(Bot):
    """``serve_worker`` in its own process (the same readiness and stopping as an ``imagebot run`` bot)."""

    async def start(self, timeout: float = 60.0) -> Bot:
        self.starts += 1
        log = self.log.with_suffix(f".{self.starts}.log")
        (self.workdir / "counts.json").unlink(missing_ok=True)
        with log.open("wb") as out:
            self.proc = await asyncio.create_subprocess_exec(
                sys.executable, __file__, "--serve-worker", str(self.workdir), cwd=self.workdir, env=self.env,
                stdin=asyncio.subprocess.DEVNULL, stdout=out, stderr=out)
        await self._ready(log, timeout)
        return self

    def go(self) -> None:
        assert self.proc is not None
        self.proc.send_signal(signal.SIGUSR2)

    async def counts(self) -> Counter[str]:
        """Its write transactions so far, by ledger method."""
        path = self.workdir / "counts.json"
        before = json.loads(path.read_text())["seq"] if path.exists() else 0
        assert self.proc is not None
        self.proc.send_signal(signal.SIGUSR1)
        for _ in range(500):
            if path.exists() and json.loads(path.read_text())["seq"] > before:
                return Counter(json.loads(path.read_text())["counts"])
            await asyncio.sleep(0.01)
        raise RuntimeError(f"{self.name} did not report its counts")


# -- the runs ---------------------------------------------------------------------------------------

def raw_rate(database: str, n: int) -> float:
    """(a): single-row write transactions one after another on one psycopg connection."""
    with psycopg.connect(POSTGRES, autocommit=True) as conn:
        conn.execute(f'SET search_path TO "{schema_of(database)}"')
        conn.execute("CREATE TABLE IF NOT EXISTS raw_rate (id BIGSERIAL PRIMARY KEY, v TEXT NOT NULL)")
        start = time.perf_counter()
        for i in range(n):
            with conn.transaction():
                conn.execute("INSERT INTO raw_rate (v) VALUES (%s)", (str(i),))
        elapsed = time.perf_counter() - start
        conn.execute("DROP TABLE raw_rate")
    return n / elapsed


class Driver:
    """Enqueues commands the way the Discord ingress does, and waits for the fake to have every result."""

    def __init__(self, core: Imagebot, counts: Counter[str], fake: FakeDiscord, config: Config) -> None:
        from bot.discord_app.http_interactions import context_of
        from bot.discord_app.settings import DiscordSettings

        self.core = core
        self.counts = counts
        self.fake = fake
        self.payloads = Payloads(fake)
        self.settings = DiscordSettings.from_env(config.env)
        self.context_of = context_of
        self.database = config.database
        self.prompts: dict[str, str] = {}

    def arrived(self, token: str) -> bool:
        return any(c.files and c.method == "PATCH" for c in self.fake.by_token.get(token, ()))

    def delivered(self, tokens: list[str]) -> int:
        return sum(1 for t in tokens if self.arrived(t))

    async def enqueue(self, n: int, tag: str) -> tuple[float, list[str]]:
        """Enqueue ``n`` commands (``ENQUEUERS`` at once): the seconds it took, and their interaction tokens."""
        payloads = [self.payloads.command("imagine", [Payloads.opt("prompt", f"bench {tag} {i}")],
                                          user_id=500000000000000000 + i % USERS,
                                          guild_id=800000000000000000 + i % SERVERS) for i in range(n)]
        tokens = [str(p["token"]) for p in payloads]
        self.prompts.update((str(p["token"]), str(p["data"]["options"][0]["value"])) for p in payloads)
        gate = asyncio.Semaphore(ENQUEUERS)

        async def one(payload: dict[str, Any]) -> None:
            async with gate:
                ctx = self.context_of(payload, self.settings)
                await self.core.enqueue(ctx, "imagine", options=ImagineOptions(prompt=str(payload["data"]["options"][0]
                                                                                        ["value"]), size=SIZE))

        start = time.perf_counter()
        await asyncio.gather(*(one(p) for p in payloads))
        return time.perf_counter() - start, tokens

    async def wait(self, tokens: list[str]) -> None:
        """Until every one of these commands' results reached the fake."""
        deadline = time.monotonic() + 60 + len(tokens) / 5
        # Only the calls that arrived since the last look are read: this process shares the cores with the
        # workers it measures.
        pending, seen = set(tokens), 0
        while pending:
            new, seen = self.fake.calls[seen:], len(self.fake.calls)
            pending.difference_update(c.token for c in new if c.files and c.method == "PATCH")
            if not pending:
                break
            if time.monotonic() > deadline:
                missing = [t for t in tokens if not self.delivered([t])]
                prompts = [self.prompts[t] for t in missing]
                rows = query(self.database, "SELECT g.id, g.status, g.error_code, j.state, j.attempts, j.outcome,"
                             " j.holder FROM generations g LEFT JOIN jobs j ON j.id = g.id WHERE g.prompt = ANY(%s)",
                             (prompts,))
                print(f"missing jobs: {rows}", file=sys.stderr)
                calls = {t: [(c.method, c.path[-60:], c.status, len(c.files)) for c in self.fake.by_token.get(t, [])]
                         for t in missing[:5]}
                raise RuntimeError(f"only {self.delivered(tokens)} of {len(tokens)} results arrived; "
                                   f"the missing ones' calls at the fake: {calls}")
            await asyncio.sleep(0.01)


def cpu_seconds(pid: int | None = None) -> float:
    """User + system CPU seconds a process has used so far (Linux ``/proc``)."""
    fields = Path(f"/proc/{pid or os.getpid()}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


async def throughput(driver: Driver, workers: list[WorkerProcess], n: int,
                     tag: str) -> tuple[float, float, float]:
    """``n`` commands enqueued while the workers wait, then worked by ``workers`` from the go signal until
    the fake has every result. Returns the workers' commands per second, the enqueue rate, and the write
    transactions per command (the enqueue's and every worker's while it ran). Prints where the CPU went
    (this driver with the fake, each worker) and which writes a command needed."""
    mine = Counter(driver.counts)
    enqueue_seconds, tokens = await driver.enqueue(n, tag)
    enqueued = driver.counts - mine
    before = [await w.counts() for w in workers]
    pids = [w.proc.pid for w in workers if w.proc is not None]
    cpu = [cpu_seconds()] + [cpu_seconds(p) for p in pids]
    start = time.perf_counter()
    for w in workers:
        w.go()
    await driver.wait(tokens)
    seconds = time.perf_counter() - start
    cpu = [after - was for after, was in zip([cpu_seconds()] + [cpu_seconds(p) for p in pids], cpu, strict=True)]
    after = [await w.counts() for w in workers]
    kinds = sum((a - b for a, b in zip(after, before, strict=True)), enqueued)
    reads = kinds.pop("(reads)", 0)
    print(f"    {len(workers)} worker(s): {n} queued commands worked in {seconds:.2f} s; CPU s: driver+fake "
          f"{cpu[0]:.2f}, " + ", ".join(f"worker {i + 1} {c:.2f}" for i, c in enumerate(cpu[1:]))
          + "; write transactions per command: " + ", ".join(f"{k} {v / n:.2f}" for k, v in kinds.most_common())
          + f" (and {reads / n:.2f} reads)")
    return n / seconds, n / enqueue_seconds, kinds.total() / n


def interaction(ingress: Bot, signer: DiscordSigner, payloads: Payloads, i: int) -> bytes:
    """One signed /imagine interaction as raw HTTP (closing its connection after the answer)."""
    body = json.dumps(payloads.command("imagine", [Payloads.opt("prompt", f"ack {i}")],
                                       user_id=510000000000000000 + i,
                                       guild_id=810000000000000000 + i % SERVERS)).encode()
    head = "".join(f"{k}: {v}\r\n" for k, v in signer.headers(body).items())
    return (f"POST /discord/interactions HTTP/1.1\r\nHost: 127.0.0.1:{ingress.port}\r\n{head}"
            f"Content-Length: {len(body)}\r\nConnection: close\r\n\r\n").encode() + body


async def timed_ack(reader: asyncio.StreamReader, writer: asyncio.StreamWriter, data: bytes,
                    go: asyncio.Event) -> float:
    """Seconds from sending the interaction to reading the whole answer, which must defer (type 5)."""
    await go.wait()
    started = time.perf_counter()
    writer.write(data)
    head = await reader.readuntil(b"\r\n\r\n")
    length = next((int(line.split(b":")[1]) for line in head.split(b"\r\n")
                   if line.lower().startswith(b"content-length:")), 0)
    body = await reader.readexactly(length)
    seconds = time.perf_counter() - started
    writer.close()
    if not head.startswith(b"HTTP/1.1 200") or json.loads(body).get("type") != 5:
        raise RuntimeError(f"not deferred: {head[:40]!r} {body[:200]!r}")
    return seconds


def machine_cpu_seconds() -> float:
    """CPU seconds every process on the machine has used so far, the kernel's included (Linux ``/proc/stat``)."""
    # user, nice, system, idle, iowait, irq, softirq (then steal, which is the host's, and guest, in user)
    fields = [int(x) for x in Path("/proc/stat").read_text().split("\n", 1)[0].split()[1:8]]
    return (sum(fields) - fields[3] - fields[4]) / os.sysconf("SC_CLK_TCK")


async def acks(ingress: Bot, signer: DiscordSigner, fake: FakeDiscord, n: int,
               ) -> tuple[list[float], list[float], float]:
    """(c): ``n`` signed /imagine interactions at once, on connections opened beforehand (Discord's come
    from many machines); seconds to each ack. First, 20 one at a time: what one costs on an idle ingress.
    Also the CPU seconds the whole machine used while the ``n`` were answered (every process, the kernel's
    share included): spread over every core, the last answer cannot come sooner."""
    payloads = Payloads(fake)
    alone = []
    for i in range(20):
        reader, writer = await asyncio.open_connection("127.0.0.1", ingress.port)
        go = asyncio.Event()
        go.set()
        alone.append(await timed_ack(reader, writer, interaction(ingress, signer, payloads, n + i), go))
        await asyncio.sleep(0.02)  # its enqueue runs after the answer: let it finish
    requests = [interaction(ingress, signer, payloads, i) for i in range(n)]
    connections = await asyncio.gather(*(asyncio.open_connection("127.0.0.1", ingress.port) for _ in range(n)))
    go = asyncio.Event()
    tasks = [asyncio.create_task(timed_ack(r, w, d, go)) for (r, w), d in zip(connections, requests, strict=True)]
    await asyncio.sleep(0.05)
    machine = machine_cpu_seconds()
    go.set()
    answered = list(await asyncio.gather(*tasks))
    return alone, answered, machine_cpu_seconds() - machine


async def run(root: Path, commands: int, ack_count: int, raw_n: int, pool_size: int | None = None) -> bool:
    problem = servers_problem()
    if problem:
        raise SystemExit(f"bench_scale: {problem}")
    fakes = await Fakes.start(0.0)
    signer = DiscordSigner()
    try:
        with pg_schema("imagebot_bench") as database:
            if pool_size:
                database += f"&pool_size={pool_size}"
            deployment = Deployment(root, database, fakes, signer, slack=False, lease=30.0,
                                    starting_credits=STARTING)
            try:
                return await measure(deployment, database, fakes, signer, commands, ack_count, raw_n)
            finally:
                await deployment.stop(grace=20)
    finally:
        await fakes.close()


def worker(deployment: Deployment, name: str) -> WorkerProcess:
    plain = deployment.bot(name, "worker")
    made = WorkerProcess(plain.name, plain.role, plain.env, plain.workdir, plain.log, plain.port)
    deployment.bots[-1] = made
    return made


async def measure(deployment: Deployment, database: str, fakes: Fakes, signer: DiscordSigner, commands: int,
                  ack_count: int, raw_n: int) -> bool:
    raw_before = await asyncio.to_thread(raw_rate, database, raw_n // 2)
    first = worker(deployment, "worker-1")
    second = worker(deployment, "worker-2")
    driver_dir = deployment.root / "driver"
    driver_dir.mkdir()
    env = {k: v for k, v in first.env.items() if k.startswith(("IMAGEBOT_", "DISCORD_"))}
    env["IMAGEBOT_ROLE"] = "ingress"
    config = bench_config(driver_dir, env)
    core, counts = make_core(config, ready_made(1))
    await core.start(catalogue=False)
    try:
        driver = Driver(core, counts, fakes.discord, config)
        # Warm-up: every account opened (as on a server in use), the images' folders made.
        await first.start()
        _, warm = await driver.enqueue(max(USERS, min(commands, 1000)), "warm-up")
        first.go()
        await driver.wait(warm)
        await first.stop()
        # Each run: fresh worker processes, waiting while the queue fills, then let go at once.
        await first.start()
        one, enqueue_one, per_one = await throughput(driver, [first], commands, "one")
        await first.stop()
        await asyncio.gather(first.start(), second.start())
        two, enqueue_two, per_two = await throughput(driver, [first, second], commands, "two")
        await asyncio.gather(first.stop(), second.stop())
    finally:
        await core.close()
    raw = (raw_before + await asyncio.to_thread(raw_rate, database, raw_n // 2)) / 2

    ingress = deployment.bot("ingress", "ingress")
    await ingress.start()
    alone, latencies, burst_cpu = await acks(ingress, signer, fakes.discord, ack_count)
    await ingress.stop()

    [(audit,)] = query(database, "SELECT COUNT(*) FROM (SELECT a.platform FROM accounts a JOIN ledger l"
                       " USING (platform, server_id, user_id) GROUP BY a.platform, a.server_id, a.user_id"
                       " HAVING MAX(a.balance) <> SUM(l.delta)) off")
    allowed = raw / per_one
    ratio = one / allowed
    scaling = two / one
    p50, p99 = percentile(latencies, 50), percentile(latencies, 99)
    print(f"(a) raw psycopg single-row write transactions, one after another: {raw:.0f}/s")
    print(f"    the driver enqueued (the ingress's reserve + job insert, {ENQUEUERS} at once): "
          f"{enqueue_one:.0f} and {enqueue_two:.0f} commands/s")
    print(f"(b) 1 worker: {one:.0f} commands/s ({commands} commands, {per_one:.2f} write transactions each);"
          f" (a) allows {allowed:.0f}/s at that; ratio {ratio:.0%}  [target >= {RATIO_TARGET:.0%}:"
          f" {verdict(ratio >= RATIO_TARGET)}]")
    print(f"    2 workers: {two:.0f} commands/s ({per_two:.2f} write transactions each); {scaling:.2f}x one"
          f"  [target >= {SCALING_TARGET:.1f}x: {verdict(scaling >= SCALING_TARGET)}]")
    print(f"(c) ack of {ack_count} concurrent signed Discord interactions: p50 {p50 * 1000:.0f} ms,"
          f" p99 {p99 * 1000:.0f} ms, max {max(latencies) * 1000:.0f} ms  [target p99 < {ACK_P99_TARGET * 1000:.0f}"
          f" ms: {verdict(p99 < ACK_P99_TARGET)}]; one at a time on the idle ingress: p50"
          f" {percentile(alone, 50) * 1000:.1f} ms")
    cores = os.cpu_count() or 1
    print(f"    the machine used {burst_cpu:.2f} CPU s (every process) while the {ack_count} were answered: spread"
          f" over its {cores} cores, the last answer cannot come before {burst_cpu / cores * 1000:.0f} ms")
    print(f"ledger audit: {'balanced' if not audit else f'{audit} accounts off'}")
    return ratio >= RATIO_TARGET and scaling >= SCALING_TARGET and p99 < ACK_P99_TARGET and not audit


def main() -> int:
    if len(sys.argv) == 3 and sys.argv[1] == "--serve-worker":
        if os.environ.get("BENCH_PROFILE"):  # --profile: where a worker's CPU goes
            import cProfile

            with cProfile.Profile(time.process_time) as profile:  # CPU time, not waits
                asyncio.run(serve_worker(Path(sys.argv[2])))
            out = Path(os.environ["BENCH_PROFILE"])
            out.mkdir(parents=True, exist_ok=True)
            profile.dump_stats(out / f"{Path(sys.argv[2]).name}-{os.getpid()}.prof")
            return 0
        asyncio.run(serve_worker(Path(sys.argv[2])))
        return 0
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--commands", type=int, default=2000, help="commands per worker-count run (b)")
    parser.add_argument("--acks", type=int, default=200, help="concurrent interactions for (c)")
    parser.add_argument("--raw", type=int, default=2000, help="transactions for (a)")
    parser.add_argument("--pool-size", type=int, default=None,
                        help="connections per process (the database URL's pool_size; default: the ledger's)")
    parser.add_argument("--profile", type=Path, default=None,
                        help="a folder for each worker process's cProfile stats (NAME-PID.prof)")
    parser.add_argument("--keep", type=Path, default=None, help="a folder to keep the bots' logs in")
    args = parser.parse_args()
    if args.profile is not None:
        os.environ["BENCH_PROFILE"] = str(args.profile.resolve())
    if args.keep is not None:
        args.keep.mkdir(parents=True, exist_ok=True)
        ok = asyncio.run(run(args.keep, args.commands, args.acks, args.raw, args.pool_size))
        return 0 if ok else 1
    with tempfile.TemporaryDirectory() as tmp:
        ok = asyncio.run(run(Path(tmp), args.commands, args.acks, args.raw, args.pool_size))
    return 0 if ok else 1


if __name__ == "__main__":
    raise SystemExit(main())

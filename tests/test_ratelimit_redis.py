"""Rate limits on a real Redis: shared by separate processes, and a bot that keeps running (closed or
open, as configured) when Redis is unreachable, then recovers by itself when it is back.

Uses this machine's Redis on 127.0.0.1:6379 (a missing server is a failure, not a skip) and throwaway
``redis-server`` processes on free ports for the outage and recovery cases."""

from __future__ import annotations

import asyncio
import json
import logging
import os
import shutil
import signal
import socket
import sqlite3
import subprocess
import sys
import time
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest

from bot.app import build_core
from bot.config import Config
from bot.errors import ConfigError, LimitsUnavailable, RateLimited
from bot.models import ImagineOptions
from bot.replies import error_text
from tests.doubles import ctx_for, make_config
from tests.test_cli import run as run_cli

ROOT = Path(__file__).resolve().parents[1]
FOX = ImagineOptions(prompt="fox", size="256x256")
#: Nothing listens on port 1: connection refused at once.
DEAD = "redis://127.0.0.1:1"
DEAD_WITH_PASSWORD = "redis://:secretpw@127.0.0.1:1"
UNAVAILABLE = ("Rate limits can't be checked right now (the limits store is unreachable); nothing was charged. "
               "Try again in a minute. (IMG-RATE-UNAVAILABLE)")
#: Only a guard so a regression shows as a failure instead of a hung run; not a speed assertion.
HANG_GUARD = 30.0


# -- servers ---------------------------------------------------------------------------------------

def _ping(port: int) -> bool:
    try:
        with socket.create_connection(("127.0.0.1", port), timeout=1.0) as sock:
            sock.sendall(b"PING\r\n")
            return sock.recv(16).startswith(b"+PONG")
    except OSError:
        return False


@pytest.fixture(scope="module")
def machine_redis() -> str:
    """The machine's Redis. Down: a failure (CI starts it), never a skip."""
    if not _ping(6379):
        pytest.fail("no Redis answering on 127.0.0.1:6379: start it (redis-server) and run again")
    return "redis://127.0.0.1:6379"


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


class ThrowawayRedis:
    """A ``redis-server`` of our own on one port, to kill, pause and start again."""

    def __init__(self) -> None:
        binary = shutil.which("redis-server")
        if binary is None:
            pytest.fail("redis-server is not installed: the outage tests need it")
        self.binary = binary
        self.port = _free_port()
        self.proc: subprocess.Popen[bytes] | None = None

    @property
    def uri(self) -> str:
        return f"redis://127.0.0.1:{self.port}"

    def start(self) -> None:
        self.proc = subprocess.Popen(
            [self.binary, "--port", str(self.port), "--bind", "127.0.0.1", "--save", "", "--appendonly", "no",
             "--daemonize", "no"], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        deadline = time.monotonic() + 15
        while not _ping(self.port):
            if self.proc.poll() is not None or time.monotonic() > deadline:
                pytest.fail(f"redis-server did not start on port {self.port}")
            time.sleep(0.05)

    def kill(self) -> None:
        if self.proc is not None:
            self.proc.kill()
            self.proc.wait()
            self.proc = None

    def pause(self) -> None:
        assert self.proc is not None
        self.proc.send_signal(signal.SIGSTOP)

    def resume(self) -> None:
        assert self.proc is not None
        self.proc.send_signal(signal.SIGCONT)


@pytest.fixture
def throwaway_redis() -> Iterator[ThrowawayRedis]:
    server = ThrowawayRedis()
    server.start()
    try:
        yield server
    finally:
        if server.proc is not None:
            server.resume()
        server.kill()


# -- helpers ---------------------------------------------------------------------------------------

def _config(tmp_path: Path, storage: str, **env: str) -> Config:
    return make_config(tmp_path, IMAGEBOT_RATELIMIT_STORAGE=storage, **env)


def _rows(tmp_path: Path) -> dict[str, int]:
    """What the ledger file holds: movements, reservations, generations."""
    with sqlite3.connect(tmp_path / "imagebot.sqlite3") as db:
        return {table: db.execute(f"SELECT count(*) FROM {table}").fetchone()[0]
                for table in ("ledger", "reservations", "generations")}


def _ratelimit_logs(caplog: pytest.LogCaptureFixture, level: int) -> list[str]:
    return [r.getMessage() for r in caplog.records if r.name == "bot.ratelimit" and r.levelno == level]


# -- (a) two OS processes share one user's limit -----------------------------------------------------

CHECKER = """
import asyncio, json, sys
from bot.errors import RateLimited
from bot.models import Identity
from bot.ratelimit import RateLimiter

async def main() -> None:
    storage, server, *users = sys.argv[1:]
    limiter = RateLimiter("3/minute", "1000/hour", storage)
    outcomes = []
    for user in users:
        try:
            await limiter.check(Identity("test", server, user))
            outcomes.append("ok")
        except RateLimited as exc:
            outcomes.append(exc.code)
    print(json.dumps(outcomes))

asyncio.run(main())
"""


def _checker(storage: str, server: str, *users: str) -> subprocess.Popen[str]:
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    return subprocess.Popen([sys.executable, "-c", CHECKER, storage, server, *users], cwd=ROOT, env=env,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)


def _outcomes(proc: subprocess.Popen[str]) -> list[str]:
    out, err = proc.communicate(timeout=60)
    assert proc.returncode == 0, err
    return list(json.loads(out))


def test_two_processes_share_one_users_limit(machine_redis: str) -> None:
    server = uuid.uuid4().hex  # a server id of this run only: no other run's keys count here
    first = _outcomes(_checker(machine_redis, server, "alice", "alice"))
    second = _outcomes(_checker(machine_redis, server, "alice", "alice", "bob"))
    assert first == ["ok", "ok"]
    assert second == ["ok", "IMG-RATE-001", "ok"]  # alice's third of 3/minute, then refused; bob is his own


def test_processes_racing_for_one_limit_get_exactly_the_limit(machine_redis: str) -> None:
    server = uuid.uuid4().hex
    racers = [_checker(machine_redis, server, *["alice"] * 5) for _ in range(2)]
    outcomes = [o for proc in racers for o in _outcomes(proc)]
    assert outcomes.count("ok") == 3 and outcomes.count("IMG-RATE-001") == 7


# -- (b) unreachable Redis, failing closed (the default) --------------------------------------------

async def test_unreachable_redis_fails_closed_charges_nothing_and_logs_once(
        tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.INFO)
    core = build_core(_config(tmp_path, DEAD))
    async with core:
        for _ in range(3):  # the bot keeps going: every command is refused the same way
            with pytest.raises(LimitsUnavailable) as err:
                await core.imagine(ctx_for("a"), FOX)
            assert err.value.code == "IMG-RATE-UNAVAILABLE" and error_text(err.value) == UNAVAILABLE
        with pytest.raises(LimitsUnavailable):
            await core.enhance(ctx_for("a"), "fox")
        assert _rows(tmp_path) == {"ledger": 0, "reservations": 0, "generations": 0}
        summary = await core.credits(ctx_for("a").identity)
        assert (summary.balance, summary.held, summary.recent) == (50, 0, [])
        assert not await core.limiter.reachable()
    warnings = _ratelimit_logs(caplog, logging.WARNING)
    assert len(warnings) == 1, warnings
    assert "127.0.0.1:1" in warnings[0] and "failing closed" in warnings[0]
    assert _ratelimit_logs(caplog, logging.INFO) == []  # it never came back
    # nor a line per command from the Redis client underneath
    assert not [r for r in caplog.records if r.name.startswith("coredis") and r.levelno >= logging.INFO]


# -- (c) failing open ---------------------------------------------------------------------------------

async def test_unreachable_redis_fails_open_when_configured(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.INFO)
    core = build_core(_config(tmp_path, DEAD, IMAGEBOT_RATELIMIT_ON_OUTAGE="open",
                              IMAGEBOT_USER_RATE="1/minute"))
    async with core:
        first = await core.imagine(ctx_for("a"), FOX)
        second = await core.imagine(ctx_for("a"), FOX)  # unchecked: the 1/minute limit cannot be counted
        assert first.images and second.images
        assert first.credits_spent == second.credits_spent > 0
        assert second.balance == 50 - 2 * first.credits_spent
        assert (await core.credits(ctx_for("a").identity)).balance == second.balance
    warnings = _ratelimit_logs(caplog, logging.WARNING)
    assert len(warnings) == 1 and "failing open" in warnings[0]


# -- (d) recovery without a restart ---------------------------------------------------------------

async def test_recovers_by_itself_when_redis_comes_back(
        tmp_path: Path, throwaway_redis: ThrowawayRedis, caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.INFO)
    core = build_core(_config(tmp_path, throwaway_redis.uri))
    async with core:
        assert await core.limiter.reachable()
        first = await core.imagine(ctx_for("a"), FOX)
        throwaway_redis.kill()  # Redis goes away mid-run
        for _ in range(2):
            with pytest.raises(LimitsUnavailable):
                await core.imagine(ctx_for("a"), FOX)
        assert not await core.limiter.reachable()
        throwaway_redis.start()  # back on the same port; nothing of the bot is rebuilt
        again = await core.imagine(ctx_for("a"), FOX)
        assert again.balance == first.balance - again.credits_spent
        assert await core.limiter.reachable()
    assert len(_ratelimit_logs(caplog, logging.WARNING)) == 1
    back = _ratelimit_logs(caplog, logging.INFO)
    assert len(back) == 1 and "reachable again" in back[0]


async def test_a_redis_that_stops_answering_costs_a_bounded_wait_then_recovers(
        tmp_path: Path, throwaway_redis: ThrowawayRedis, caplog: pytest.LogCaptureFixture) -> None:
    """A paused server accepts connections and never answers (like a blackholed host): the check gives
    up after its timeout instead of hanging the command, and the client's half-used connection is not
    reused once the server answers again."""
    caplog.set_level(logging.INFO)
    core = build_core(_config(tmp_path, throwaway_redis.uri))
    async with core:
        await core.imagine(ctx_for("a"), FOX)
        throwaway_redis.pause()
        for _ in range(2):
            with pytest.raises(LimitsUnavailable):
                await asyncio.wait_for(core.imagine(ctx_for("a"), FOX), HANG_GUARD)
        throwaway_redis.resume()
        result = await asyncio.wait_for(core.imagine(ctx_for("a"), FOX), HANG_GUARD)
        assert result.balance == 50 - 2 * result.credits_spent
    assert len(_ratelimit_logs(caplog, logging.WARNING)) == 1
    assert len(_ratelimit_logs(caplog, logging.INFO)) == 1


async def test_limits_counted_before_the_outage_still_hold_after_it(
        tmp_path: Path, throwaway_redis: ThrowawayRedis) -> None:
    """The fresh client after an outage counts in the same windows: recovering is not a free reset."""
    core = build_core(_config(tmp_path, throwaway_redis.uri, IMAGEBOT_USER_RATE="2/minute"))
    async with core:
        await core.imagine(ctx_for("a"), FOX)
        throwaway_redis.pause()
        with pytest.raises(LimitsUnavailable):
            await asyncio.wait_for(core.imagine(ctx_for("a"), FOX), HANG_GUARD)
        throwaway_redis.resume()
        await core.imagine(ctx_for("b"), FOX)  # another user: allowed, and the store answers again
        # Alice used one of her two; the check cut short by the outage may have counted on the server
        # once it woke up, or not. Either way she gets at most one more, never a fresh window.
        outcomes = []
        for _ in range(2):
            try:
                await core.imagine(ctx_for("a"), FOX)
                outcomes.append("ok")
            except RateLimited as exc:
                outcomes.append(exc.code)
        assert outcomes in (["ok", "IMG-RATE-001"], ["IMG-RATE-001", "IMG-RATE-001"])


# -- (e) the password never shows -------------------------------------------------------------------

async def test_the_uri_password_never_reaches_replies_or_logs(
        tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.DEBUG)
    core = build_core(_config(tmp_path, DEAD_WITH_PASSWORD))
    async with core:
        with pytest.raises(LimitsUnavailable) as err:
            await core.imagine(ctx_for("a"), FOX)
        await core.limiter.reachable()
    shown = [err.value.message, str(err.value), repr(err.value), error_text(err.value), caplog.text]
    assert not [text for text in shown if "secretpw" in text]
    assert "redis://***@127.0.0.1:1" in caplog.text


def test_a_malformed_uri_stops_the_start_naming_the_key_without_the_password(tmp_path: Path) -> None:
    with pytest.raises(ConfigError) as err:
        build_core(_config(tmp_path, "redis://:secretpw@127.0.0.1:notaport"))
    assert "IMAGEBOT_RATELIMIT_STORAGE" in err.value.message and "secretpw" not in err.value.message
    result = run_cli(tmp_path, "run", stdin="/quit\n", IMAGEBOT_RATELIMIT_STORAGE="redis://:secretpw@127.0.0.1:x")
    assert result.returncode == 2 and "IMAGEBOT_RATELIMIT_STORAGE" in result.stderr
    assert "secretpw" not in result.stderr + result.stdout


# -- end to end: the console of `imagebot run` ------------------------------------------------------

def test_imagebot_run_keeps_going_with_redis_down(tmp_path: Path) -> None:
    """As a new user tries it: the bot starts, each /imagine is refused in words, /credits still works."""
    session = "/imagine a red fox\n/imagine a red fox\n/credits\n/quit\n"
    result = run_cli(tmp_path, "run", stdin=session, IMAGEBOT_RATELIMIT_STORAGE=DEAD_WITH_PASSWORD)
    assert result.returncode == 0, result.stderr
    assert result.stdout.count(UNAVAILABLE) == 2 and "Balance: 50 credits" in result.stdout
    assert "Traceback" not in result.stderr
    assert result.stderr.count("is unreachable") == 1 and "coredis" not in result.stderr
    assert "secretpw" not in result.stdout + result.stderr

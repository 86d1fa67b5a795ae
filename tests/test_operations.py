"""What an operator sees: /healthz, /readyz and /metrics over real HTTP on the real ``WebServer`` with a
real core (SQLite file, the OpenAI fake), the one log line per generation in JSON, and no secret in
either. Metrics are process-wide counters, so each test compares the page before and after."""

from __future__ import annotations

import asyncio
import io
import json
import logging
import os
import signal
import socket
import subprocess
import sys
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any

import aiohttp
import pytest
from prometheus_client.parser import text_string_to_metric_families

from bot.app import build_core
from bot.config import Config
from bot.core import Imagebot
from bot.errors import ConfigError, GenerationFailed, RateLimited
from bot.logs import JsonFormatter, Redactor, secrets_in, setup_logging
from bot.models import ImagineOptions
from bot.platforms import build_process
from bot.web import WebServer
from tests.fakes.harness import CTX, OPENAI_KEY, USER, make_config, openai_env
from tests.fakes.openai_api import FakeOpenAI

ROOT = Path(__file__).resolve().parents[1]
REDIS_PASSWORD = "pw-Redis-SECRET-4711"


@pytest.fixture
async def oai() -> AsyncIterator[FakeOpenAI]:
    fake = FakeOpenAI()
    async with fake:
        yield fake


class Served:
    """A started core behind a started WebServer on a free loopback port, and a client for it."""

    def __init__(self, core: Imagebot, web: WebServer, http: aiohttp.ClientSession) -> None:
        self.core, self.web, self.http = core, web, http

    async def get(self, path: str) -> tuple[int, str, str]:
        async with self.http.get(f"http://127.0.0.1:{self.web.port}{path}") as response:
            return response.status, response.headers.get("Content-Type", ""), await response.text()

    async def metrics(self) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
        status, content_type, text = await self.get("/metrics")
        assert status == 200 and content_type.startswith("text/plain")
        return {(s.name, tuple(sorted(s.labels.items()))): s.value
                for family in text_string_to_metric_families(text) for s in family.samples}


def sample(page: dict[tuple[str, tuple[tuple[str, str], ...]], float], name: str, **labels: str) -> float:
    return page.get((name, tuple(sorted(labels.items()))), 0.0)


def delta(before: dict[Any, float], after: dict[Any, float], name: str, **labels: str) -> float:
    return sample(after, name, **labels) - sample(before, name, **labels)


async def serve(config: Config) -> AsyncIterator[Served]:
    core = build_core(config)
    await core.start()
    web = WebServer("127.0.0.1", 0)
    web.attach(core)
    await web.start()
    try:
        async with aiohttp.ClientSession() as http:
            yield Served(core, web, http)
    finally:
        await web.stop()
        await core.close()


@pytest.fixture
async def served(tmp_path: Path, oai: FakeOpenAI) -> AsyncIterator[Served]:
    config = make_config(tmp_path, openai_env(oai.base_url, IMAGEBOT_PROVIDERS="openai,local"))
    async for s in serve(config):
        yield s


@pytest.fixture
def json_logs() -> Iterator[io.StringIO]:
    """The process's logging as ``imagebot run`` sets it up in JSON (the OpenAI key in its environment),
    captured at DEBUG so that anything any library logs is seen; restored afterwards."""
    buffer = io.StringIO()
    root = logging.getLogger()
    level = root.level
    handler = setup_logging("json", "DEBUG", env={**os.environ, "OPENAI_API_KEY": OPENAI_KEY}, stream=buffer)
    try:
        yield buffer
    finally:
        root.removeHandler(handler)
        root.setLevel(level)


def lines(buffer: io.StringIO) -> list[dict[str, Any]]:
    return [json.loads(line) for line in buffer.getvalue().splitlines() if line.strip()]


# -- liveness and readiness ---------------------------------------------------------------------------


async def test_healthz_answers_and_readyz_is_ready_when_the_database_answers(served: Served) -> None:
    assert (await served.get("/healthz"))[0::2] == (200, "ok")
    status, content_type, body = await served.get("/readyz")
    assert status == 200 and content_type.startswith("application/json")
    assert json.loads(body) == {"status": "ready", "down": [], "checks": {"database": "ok"}}


async def test_readyz_says_shutting_down_while_the_process_drains(served: Served) -> None:
    served.web.draining = True
    status, _, body = await served.get("/readyz")
    assert status == 503 and json.loads(body)["down"] == ["shutting_down"]
    assert (await served.get("/healthz"))[0] == 200


async def test_readyz_names_the_database_when_it_is_gone_and_healthz_stays_up(served: Served) -> None:
    await served.core.store.close()
    status, _, body = await served.get("/readyz")
    assert status == 503 and json.loads(body)["down"] == ["database"]
    assert (await served.get("/healthz"))[0] == 200  # alive: a restart would not bring the database back
    page = await served.metrics()  # a scrape still answers while the database is down
    assert sample(page, "imagebot_database_up") == 0


@pytest.mark.parametrize("uri", ["redis://127.0.0.1:1", f"redis://:{REDIS_PASSWORD}@127.0.0.1:1/0"])
async def test_readyz_names_redis_when_the_rate_limit_store_is_unreachable(tmp_path: Path, oai: FakeOpenAI,
                                                                           uri: str) -> None:
    config = make_config(tmp_path, openai_env(oai.base_url, IMAGEBOT_RATELIMIT_STORAGE=uri))
    async for s in serve(config):
        status, _, body = await s.get("/readyz")
        assert status == 503
        assert json.loads(body) == {"status": "unavailable", "down": ["redis"],
                                    "checks": {"database": "ok", "redis": "down"}}
        assert REDIS_PASSWORD not in body and "127.0.0.1" not in body
        page = (await s.get("/metrics"))[2]
        assert REDIS_PASSWORD not in page


async def test_readyz_is_ready_with_the_real_redis(tmp_path: Path, oai: FakeOpenAI) -> None:
    config = make_config(tmp_path, openai_env(oai.base_url, IMAGEBOT_RATELIMIT_STORAGE="redis://127.0.0.1:6379/0"))
    async for s in serve(config):
        status, _, body = await s.get("/readyz")
        assert status == 200, body
        assert json.loads(body)["checks"] == {"database": "ok", "redis": "ok"}


# -- metrics -------------------------------------------------------------------------------------------


async def test_metrics_count_commands_credits_latency_and_failovers(served: Served, oai: FakeOpenAI) -> None:
    before = await served.metrics()
    balance0 = (await served.core.credits(USER)).balance

    made = await served.core.imagine(CTX, ImagineOptions("a fox", count=2, provider="openai"))
    oai.queue("generations", "policy")  # refused by the vendor: not retried elsewhere, refunded
    with pytest.raises(GenerationFailed):
        await served.core.imagine(CTX, ImagineOptions("a fox", provider="openai"))
    oai.queue("generations", "down")  # openai down: local delivers
    moved = await served.core.imagine(CTX, ImagineOptions("a hare"))
    after = await served.core.credits(USER)

    assert made.provider == "openai" and len(made.images) == 2
    assert moved.provider == "local" and moved.failed_over == ["openai"]
    spent = made.credits_spent + moved.credits_spent
    assert after.balance == balance0 - spent

    page = await served.metrics()
    assert delta(before, page, "imagebot_commands_total", kind="imagine", outcome="completed") == 2
    assert delta(before, page, "imagebot_commands_total", kind="imagine", outcome="failed") == 1
    assert delta(before, page, "imagebot_credits_consumed_total") == spent
    failed_price = made.credits_spent // 2  # one image at the same size and model
    assert delta(before, page, "imagebot_credits_refunded_total", reason="failed") == failed_price
    reserved = delta(before, page, "imagebot_credits_reserved_total")
    assert reserved == spent + failed_price + delta(before, page, "imagebot_credits_refunded_total", reason="unused")
    assert delta(before, page, "imagebot_failovers_total", provider="openai") == 1

    model = made.model
    calls = len(oai.calls("generations"))
    assert calls == 3
    ok = delta(before, page, "imagebot_provider_latency_seconds_count", provider="openai", model=model, outcome="ok")
    bad = delta(before, page, "imagebot_provider_latency_seconds_count", provider="openai", model=model,
                outcome="error")
    assert (ok, bad) == (1, 2)
    assert delta(before, page, "imagebot_provider_latency_seconds_count", provider="local", model=moved.model,
                 outcome="ok") == 1
    assert sample(page, "imagebot_queue_depth") == 0 and sample(page, "imagebot_database_up") == 1


async def test_a_refused_command_is_counted_and_charges_nothing(served: Served) -> None:
    await served.core.adjust("test", USER, "set", 0)
    before = await served.metrics()
    with pytest.raises(Exception, match="credits"):
        await served.core.imagine(CTX, ImagineOptions("a fox"))
    page = await served.metrics()
    assert delta(before, page, "imagebot_commands_total", kind="imagine", outcome="refused") == 1
    assert delta(before, page, "imagebot_credits_reserved_total") == 0


async def test_a_rate_limited_command_is_counted(tmp_path: Path, oai: FakeOpenAI) -> None:
    config = make_config(tmp_path, openai_env(oai.base_url, IMAGEBOT_PROVIDERS="local", IMAGEBOT_USER_RATE="1/minute"))
    async for served in serve(config):
        await served.core.imagine(CTX, ImagineOptions("a fox", size="256x256"))
        before = await served.metrics()
        with pytest.raises(RateLimited):
            await served.core.imagine(CTX, ImagineOptions("a fox", size="256x256"))
        page = await served.metrics()
        assert delta(before, page, "imagebot_commands_total", kind="imagine", outcome="rate_limited") == 1
        assert delta(before, page, "imagebot_credits_reserved_total") == 0


# -- the generation's log line and secrets -----------------------------------------------------------------


async def test_each_generation_logs_one_json_line_with_its_fields(served: Served, oai: FakeOpenAI,
                                                                  json_logs: io.StringIO) -> None:
    made = await served.core.imagine(CTX, ImagineOptions("a fox", count=2, provider="openai"))
    oai.queue("generations", "down", "down")
    with pytest.raises(GenerationFailed):
        await served.core.imagine(CTX, ImagineOptions("an owl", provider="openai"))

    records = lines(json_logs)
    assert all({"time", "level", "logger", "message"} <= set(r) for r in records)
    generations = [r for r in records if r["logger"] == "imagebot.generations"]
    assert len(generations) == 2  # one line per generation, not one per call or attempt
    good, bad = generations
    assert good["request_id"] == made.generation_id and good["outcome"] == "completed"
    assert (good["platform"], good["server"], good["user"]) == (USER.platform, USER.server_id, USER.user_id)
    assert (good["provider"], good["model"], good["command"]) == ("openai", made.model, "imagine")
    assert good["credits"] == made.credits_spent and good["images"] == 2 and good["code"] is None
    assert isinstance(good["duration_ms"], float) and good["duration_ms"] >= 0
    assert good["time"].endswith("Z") and good["level"] == "INFO"
    assert bad["outcome"] == "failed" and bad["credits"] == 0 and bad["credits_refunded"] == bad["credits_reserved"]
    assert bad["provider"] == "openai" and bad["code"] and bad["user"] == USER.user_id
    row = await served.core.generation(bad["request_id"])
    assert row is not None and row.status == "FAILED" and row.error_code == bad["code"]


async def test_a_job_claimed_by_a_worker_logs_its_user_too(tmp_path: Path, oai: FakeOpenAI,
                                                           json_logs: io.StringIO) -> None:
    """``hold`` without an identity (a worker's claim) still names the user, from the job's row."""
    from dataclasses import replace

    config = make_config(tmp_path, openai_env(oai.base_url, IMAGEBOT_PROVIDERS="openai"))
    async for s in serve(config):
        queued = await s.core.enqueue(replace(CTX, address={"platform": "test"}), "imagine",
                                      options=ImagineOptions("a fox"))
        assert sample(await s.metrics(), "imagebot_queue_depth") == 1
        [job] = await s.core.store.claim(1, lease=30)
        result = await s.core.work(job)
        assert sample(await s.metrics(), "imagebot_queue_depth") == 0
    [line] = [r for r in lines(json_logs) if r["logger"] == "imagebot.generations"]
    assert line["request_id"] == queued.generation_id == result.generation_id
    assert (line["user"], line["server"], line["command"], line["outcome"]) == (USER.user_id, USER.server_id,
                                                                                 "imagine", "completed")


async def test_the_api_key_never_reaches_logs_or_metrics(served: Served, oai: FakeOpenAI,
                                                         json_logs: io.StringIO) -> None:
    oai.queue("generations", "auth")  # the vendor's answer quotes the key it was sent
    with pytest.raises(GenerationFailed) as failed:
        await served.core.imagine(CTX, ImagineOptions("a fox", provider="openai"))
    assert OPENAI_KEY not in str(failed.value)
    await served.core.imagine(CTX, ImagineOptions("a fox", provider="openai"))
    logging.getLogger("test").error("a library put the key in a message: %s", OPENAI_KEY)
    text = json_logs.getvalue()
    assert text and OPENAI_KEY not in text and "***" in text
    assert OPENAI_KEY not in (await served.get("/metrics"))[2]


def test_formatter_scrubs_secrets_and_keeps_fields() -> None:
    env = {"SLACK_BOT_TOKEN": "xoxb-1234567890-abcdef", "DISCORD_PUBLIC_KEY": "ab" * 32,
           "IMAGEBOT_DATABASE": "postgresql://bot:pg-Secret-99@db:5432/imagebot", "SHORT_KEY": "abc"}
    formatter = JsonFormatter(Redactor(secrets_in(env)))
    record = logging.LogRecord("imagebot.x", logging.WARNING, __file__, 1, "token %s url %s", (
        env["SLACK_BOT_TOKEN"], env["IMAGEBOT_DATABASE"]), None)
    record.credits = 20
    out = json.loads(formatter.format(record))
    assert out["message"] == "token *** url postgresql://bot:***@db:5432/imagebot" and out["credits"] == 20
    assert (out["level"], out["logger"]) == ("WARNING", "imagebot.x")
    assert "ab" * 32 not in secrets_in(env) and "abc" not in secrets_in(env)  # public, and too short


def test_an_unknown_log_format_names_the_key() -> None:
    with pytest.raises(ConfigError, match="IMAGEBOT_LOG_FORMAT must be 'text' or 'json', not 'xml'"):
        setup_logging(None, "INFO", env={"IMAGEBOT_LOG_FORMAT": "xml"})


# -- one port in every mode --------------------------------------------------------------------------------


@pytest.mark.parametrize(("env", "served_here"), [
    ({"DISCORD_TOKEN": "discord-token"}, True),  # the gateway
    ({"SLACK_BOT_TOKEN": "xoxb-test", "SLACK_APP_TOKEN": "xapp-test"}, True),  # Socket Mode
    ({"SLACK_BOT_TOKEN": "xoxb-test", "IMAGEBOT_ROLE": "worker"}, True),
    ({}, False),  # the local console
    ({"IMAGEBOT_HTTP_PORT": "3999"}, True),  # the console, asked for it
    ({"DISCORD_TOKEN": "discord-token", "IMAGEBOT_HTTP_PORT": "off"}, False),
])
async def test_every_mode_but_the_console_has_the_operator_endpoints(tmp_path: Path, env: dict[str, str],
                                                                      served_here: bool) -> None:
    config = make_config(tmp_path, env)
    core = build_core(config)
    process = build_process(core, config)
    try:
        assert (process.web is not None) is served_here
        if process.web is not None:
            assert {"/healthz", "/readyz", "/metrics"} <= set(process.web.paths)
            assert process.web.core is core
    finally:
        for runner in process.runners:
            runner.close()
        for courier in process.couriers.values():
            await courier.aclose()


async def test_http_off_is_refused_where_a_platform_needs_the_port(tmp_path: Path) -> None:
    config = make_config(tmp_path, {"SLACK_BOT_TOKEN": "xoxb-test", "SLACK_SIGNING_SECRET": "s" * 32,
                                    "IMAGEBOT_HTTP_PORT": "off"})
    with pytest.raises(ConfigError, match="IMAGEBOT_HTTP_PORT=off, but Slack HTTP mode"):
        build_process(build_core(config), config)


async def test_a_taken_default_port_is_a_warning_for_the_operator_endpoints_only(
        caplog: pytest.LogCaptureFixture) -> None:
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        optional = WebServer("127.0.0.1", port, required=False)
        with caplog.at_level(logging.WARNING, logger="bot.web"):
            assert await optional.start() == 0
        assert not optional.listening and "IMAGEBOT_HTTP_PORT" in caplog.text
        with pytest.raises(ConfigError, match="IMAGEBOT_HTTP_PORT: cannot listen"):
            await WebServer("127.0.0.1", port).start()


def _free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


def _healthcheck() -> list[str]:
    """The Dockerfile's HEALTHCHECK command, as the container would run it."""
    text = (ROOT / "Dockerfile").read_text()
    start = text.index("HEALTHCHECK")
    command = text[text.index("CMD [", start) + 4:]
    return [sys.executable if part == "python" else part for part in json.loads(command[: command.index("]\n") + 1])]


async def test_a_worker_process_serves_the_endpoints_and_the_docker_healthcheck_passes(tmp_path: Path) -> None:
    """The real ``imagebot run`` as a worker (no inbound platform traffic at all) on its own port."""
    port = _free_port()
    env = {**{k: v for k, v in os.environ.items() if not k.startswith(("IMAGEBOT_", "SLACK_", "DISCORD_", "OPENAI_"))},
           "PYTHONPATH": str(ROOT), "IMAGEBOT_DATABASE": str(tmp_path / "db.sqlite3"),
           "IMAGEBOT_DATA_DIR": str(tmp_path / "data"), "IMAGEBOT_ROLE": "worker", "SLACK_BOT_TOKEN": "xoxb-test",
           "SLACK_API_URL": "http://127.0.0.1:1/api/", "IMAGEBOT_HTTP_PORT": str(port),
           "IMAGEBOT_HTTP_HOST": "127.0.0.1"}
    (tmp_path / "imagebot.toml").write_text("")
    proc = await asyncio.create_subprocess_exec(sys.executable, "-m", "bot", "run", cwd=tmp_path, env=env,
                                                stdin=asyncio.subprocess.DEVNULL, stdout=asyncio.subprocess.PIPE,
                                                stderr=asyncio.subprocess.PIPE)
    try:
        async with aiohttp.ClientSession() as http:
            for _ in range(200):
                try:
                    async with http.get(f"http://127.0.0.1:{port}/healthz") as r:
                        if r.status == 200:
                            break
                except aiohttp.ClientConnectionError:
                    await asyncio.sleep(0.05)
            else:
                raise AssertionError("the worker never served /healthz")
            async with http.get(f"http://127.0.0.1:{port}/readyz") as r:
                assert r.status == 200 and (await r.json())["status"] == "ready"
            async with http.get(f"http://127.0.0.1:{port}/metrics") as r:
                assert r.status == 200 and "imagebot_queue_depth 0.0" in await r.text()
        check = await asyncio.to_thread(subprocess.run, _healthcheck(), env={**env, "IMAGEBOT_HTTP_PORT": str(port)},
                                        capture_output=True, timeout=30)
        assert check.returncode == 0, check.stderr
        dead = await asyncio.to_thread(subprocess.run, _healthcheck(), env={**env, "IMAGEBOT_HTTP_PORT": "1"},
                                       capture_output=True, timeout=30)
        assert dead.returncode != 0
    finally:
        proc.send_signal(signal.SIGTERM)
        try:
            await asyncio.wait_for(proc.communicate(), 30)
        except TimeoutError:
            proc.kill()
            await proc.communicate()

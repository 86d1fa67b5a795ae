"""The entry point ``run_slack`` as ``imagebot run`` starts it: Socket Mode over the fake websocket, HTTP
mode on a real port, and the start-up checks that stop a misconfigured bot with the fix."""

from __future__ import annotations

import asyncio
import json
import socket
from collections.abc import AsyncIterator
from pathlib import Path

import aiohttp
import pytest

from bot.app import build_core
from bot.errors import ConfigError
from bot.slack_app import SlackSettings, run_slack
from bot.slack_app.blocks import REROLL
from tests.fakes.slack_api import FakeSlack, action_payload, command_payload, form_body, signed_headers
from tests.fakes.slack_harness import BOT_TOKEN, SECRET, slack_config


@pytest.fixture
async def fake() -> AsyncIterator[FakeSlack]:
    server = await FakeSlack().start()
    yield server
    await server.close()


async def test_socket_mode_round_trip(tmp_path: Path, fake: FakeSlack) -> None:
    config = slack_config(tmp_path, fake, SLACK_APP_TOKEN="xapp-1-A0APP0001-test", SLACK_SIGNING_SECRET="")
    async with build_core(config) as core:
        task = asyncio.create_task(run_slack(core, config))
        try:
            envelope = await fake.send_envelope(
                "slash_commands", command_payload(fake, "/imagine", "a socket fox --size 256x256", key="s"))
            await fake.until(lambda: envelope in fake.acks)
            assert "Generating 1 image" in fake.acks[envelope]["text"]
            await fake.until(lambda: fake.messages)
            assert "a socket fox" in fake.uploads[0].initial_comment
            gen_id = fake.messages[0]["blocks"][-1]["elements"][0]["value"]

            click = await fake.send_envelope("interactive", action_payload(fake, REROLL, gen_id, key="b"))
            await fake.until(lambda: click in fake.acks)
            await fake.until(lambda: len(fake.messages) == 2)
            assert len(fake.uploads) == 2
            assert fake.called("apps.connections.open")
        finally:
            task.cancel()
            await asyncio.gather(task, return_exceptions=True)


async def test_http_mode_serves_signed_requests_on_the_configured_port(tmp_path: Path, fake: FakeSlack) -> None:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    config = slack_config(tmp_path, fake, IMAGEBOT_HTTP_PORT=str(port), IMAGEBOT_HTTP_HOST="127.0.0.1")
    async with build_core(config) as core, aiohttp.ClientSession() as http:
        task = asyncio.create_task(run_slack(core, config))
        try:
            await fake.until(lambda: fake.called("auth.test"))
            url = f"http://127.0.0.1:{port}"
            for _ in range(200):
                try:
                    async with http.get(f"{url}/healthz") as resp:
                        if resp.status == 200:
                            break
                except aiohttp.ClientConnectionError:
                    await asyncio.sleep(0.02)
            body = form_body(command_payload(fake, "/credits", "", key="h"))
            async with http.post(f"{url}/slack/events", data=body, headers=signed_headers(SECRET, body)) as resp:
                assert resp.status == 200
            async with http.post(f"{url}/slack/events", data=body, headers=signed_headers("x", body)) as resp:
                assert resp.status == 401
            await fake.until(lambda: fake.replies("h"))
            assert "Balance: 50 credits" in fake.replies("h")[0]
        finally:
            task.cancel()
            await asyncio.gather(task, return_exceptions=True)


@pytest.mark.parametrize("error", ["invalid_auth", "token_revoked"])
async def test_a_refused_token_stops_the_bot_at_start_with_the_fix(tmp_path: Path, fake: FakeSlack, error: str) -> None:
    fake.fail("auth.test", error)
    config = slack_config(tmp_path, fake)
    async with build_core(config) as core:
        with pytest.raises(ConfigError) as info:
            await run_slack(core, config)
    assert "SLACK_BOT_TOKEN" in info.value.message and "OAuth & Permissions" in info.value.message
    assert BOT_TOKEN not in info.value.message


@pytest.mark.parametrize(("env", "says"), [
    ({"SLACK_BOT_TOKEN": ""}, "SLACK_BOT_TOKEN is not set"),
    ({"SLACK_BOT_TOKEN": "xoxp-user-token"}, "starts with xoxb-"),
    ({"SLACK_SIGNING_SECRET": ""}, "SLACK_APP_TOKEN (Socket Mode) or SLACK_SIGNING_SECRET"),
    ({"SLACK_APP_TOKEN": "xoxb-wrong"}, "app-level token"),
    ({"IMAGEBOT_HTTP_PORT": "http"}, "IMAGEBOT_HTTP_PORT"),
    ({"SLACK_API_URL": "ftp://x"}, "SLACK_API_URL"),
    ({"IMAGEBOT_SLACK_ADMINS": "ann,U0ADA0001"}, "IMAGEBOT_SLACK_ADMINS"),
])
def test_bad_settings_are_refused_naming_the_variable(tmp_path: Path, env: dict[str, str], says: str) -> None:
    config = slack_config(tmp_path, _offline_fake(), **env)
    with pytest.raises(ConfigError) as info:
        SlackSettings.from_config(config)
    assert says in info.value.message


def test_settings_pick_the_mode_and_keep_tokens_out_of_repr(tmp_path: Path) -> None:
    fake = _offline_fake()
    socket_mode = SlackSettings.from_config(slack_config(tmp_path, fake, SLACK_APP_TOKEN="xapp-1-abc"))
    http_mode = SlackSettings.from_config(slack_config(tmp_path, fake, IMAGEBOT_SLACK_ADMINS="U0ADA0001, W0GRID001"))
    assert socket_mode.socket_mode and not http_mode.socket_mode
    assert http_mode.http_port == 3000 and http_mode.admins == {"U0ADA0001", "W0GRID001"}
    assert http_mode.api_url == "http://127.0.0.1:9/api/"
    for settings in (socket_mode, http_mode):
        assert BOT_TOKEN not in repr(settings) and SECRET not in repr(settings) and "xapp" not in repr(settings)


def test_manifest_declares_commands_scopes_interactivity_and_socket_mode() -> None:
    path = Path(__file__).resolve().parents[1] / "bot" / "slack_app" / "manifest.json"
    manifest = json.loads(path.read_text())
    commands = {c["command"]: c for c in manifest["features"]["slash_commands"]}
    assert set(commands) == {"/imagine", "/enhance", "/credits", "/describe", "/history", "/show", "/help",
                             "/settings"}
    assert commands["/credits"]["should_escape"] is True
    assert {"commands", "chat:write", "files:write", "users:read", "im:write"} <= set(
        manifest["oauth_config"]["scopes"]["bot"])
    assert manifest["settings"]["interactivity"]["is_enabled"] is True
    assert manifest["settings"]["socket_mode_enabled"] is True


def _offline_fake() -> FakeSlack:
    """A fake that is never started: only its URL goes into the settings."""
    fake = FakeSlack()
    fake.url = "http://127.0.0.1:9"
    return fake


async def test_a_refused_app_token_stops_socket_mode_with_the_fix(tmp_path: Path, fake: FakeSlack) -> None:
    fake.fail("apps.connections.open", "invalid_auth")
    config = slack_config(tmp_path, fake, SLACK_APP_TOKEN="xapp-1-revoked")
    async with build_core(config) as core:
        with pytest.raises(ConfigError) as info:
            await asyncio.wait_for(run_slack(core, config), 10)
    assert "SLACK_APP_TOKEN" in info.value.message and "connections:write" in info.value.message
    assert "xapp-1-revoked" not in info.value.message


async def test_a_busy_http_port_is_a_clear_configuration_error(tmp_path: Path, fake: FakeSlack) -> None:
    with socket.socket() as busy:
        busy.bind(("127.0.0.1", 0))
        busy.listen()
        port = busy.getsockname()[1]
        config = slack_config(tmp_path, fake, IMAGEBOT_HTTP_PORT=str(port), IMAGEBOT_HTTP_HOST="127.0.0.1")
        async with build_core(config) as core:
            with pytest.raises(ConfigError) as info:
                await run_slack(core, config)
    assert f"IMAGEBOT_HTTP_PORT: cannot listen on 127.0.0.1:{port}" in info.value.message

"""Discord start-up: settings from the environment, endpoint overrides, guild sync, sharding, autocomplete,
and the upload fitting on its own."""

from __future__ import annotations

import asyncio
import io
import random
from pathlib import Path

import discord
import discord.gateway
import discord.http
import pytest
from PIL import Image

from bot.discord_app.client import INVITE_PERMISSIONS, invite_url
from bot.discord_app.fitting import fit_message
from bot.discord_app.settings import DiscordSettings, ShardPlan
from bot.errors import ConfigError
from tests.doubles import ScriptedProvider
from tests.fakes.discord_api import GUILD_ID
from tests.fakes.discord_harness import DiscordHarness


def test_settings_from_the_environment() -> None:
    s = DiscordSettings.from_env({
        "DISCORD_TOKEN": " t0k ", "IMAGEBOT_DISCORD_GUILDS": "1, 2", "IMAGEBOT_DISCORD_SHARDS": "4:0,1",
        "IMAGEBOT_DISCORD_ADMIN_ROLES": "Mods, 123", "DISCORD_API_BASE_URL": "http://proxy:8080/",
        "DISCORD_GATEWAY_URL": "ws://127.0.0.1:9/gateway",
    })
    assert (s.token, s.guilds, s.shards, s.admin_roles) == ("t0k", (1, 2), ShardPlan(4, (0, 1)), {"mods", "123"})
    assert s.api_base == "http://proxy:8080/api/v10" and s.gateway_url == "ws://127.0.0.1:9/gateway"
    assert "t0k" not in repr(s)
    assert DiscordSettings.from_env({"DISCORD_TOKEN": "t", "IMAGEBOT_DISCORD_SHARDS": "auto"}).shards == ShardPlan(None)
    assert DiscordSettings.from_env({"DISCORD_TOKEN": "t", "DISCORD_API_BASE_URL": "https://x/api/v9"}).api_base \
        == "https://x/api/v9"


@pytest.mark.parametrize("key, value", [
    ("IMAGEBOT_DISCORD_GUILDS", "my-guild"), ("IMAGEBOT_DISCORD_SHARDS", "0"), ("IMAGEBOT_DISCORD_SHARDS", "2:5"),
    ("IMAGEBOT_DISCORD_SHARDS", "many"), ("DISCORD_API_BASE_URL", "proxy:8080"), ("DISCORD_GATEWAY_URL", "http://x"),
    ("IMAGEBOT_DISCORD_DMS", "maybe"), ("DISCORD_TOKEN", " "),
])
def test_bad_settings_name_the_variable(key: str, value: str) -> None:
    with pytest.raises(ConfigError) as err:
        DiscordSettings.from_env({"DISCORD_TOKEN": "secret-token", key: value})
    assert key in err.value.message and "secret-token" not in err.value.message


def test_invite_url_has_the_exact_scopes_and_permissions() -> None:
    assert INVITE_PERMISSIONS.value == 274877959168
    assert invite_url(42) == ("https://discord.com/oauth2/authorize?client_id=42"
                              "&scope=bot+applications.commands&permissions=274877959168")


async def test_endpoints_are_overridden_and_restored_after_the_test(tmp_path: Path) -> None:
    before = (discord.http.Route.BASE, discord.gateway.DiscordWebSocket.DEFAULT_GATEWAY)
    async with DiscordHarness(tmp_path) as h:
        assert discord.http.Route.BASE == h.fake.api_base
        assert str(discord.gateway.DiscordWebSocket.DEFAULT_GATEWAY) == h.fake.gateway_url
    assert (discord.http.Route.BASE, discord.gateway.DiscordWebSocket.DEFAULT_GATEWAY) == before


async def test_commands_sync_at_once_to_development_guilds(tmp_path: Path) -> None:
    async with DiscordHarness(tmp_path, IMAGEBOT_DISCORD_GUILDS=f"{GUILD_ID},5") as h:
        assert set(h.fake.commands) == {str(GUILD_ID), "5"}
        assert {c["name"] for c in h.fake.commands["5"]} == {"imagine", "enhance", "describe", "history", "show", "help", "settings", "credits", "credits-admin"}


async def test_sharded_client_serves_interactions_on_every_shard(tmp_path: Path) -> None:
    async with DiscordHarness(tmp_path, shards=2, IMAGEBOT_DISCORD_SHARDS="2") as h:
        assert sorted(h.fake.identifies) == [[0, 2], [1, 2]]
        other_guild = (1 << 22) * 7 + 1  # lands on shard 1
        await h.result(await h.imagine("a fox", size="256x256"))
        await h.result(await h.imagine("a fox", size="256x256", guild_id=other_guild))


async def test_auto_sharding_asks_discord_for_the_count_but_keeps_the_gateway_override(tmp_path: Path) -> None:
    h = DiscordHarness(tmp_path, shards=2, IMAGEBOT_DISCORD_SHARDS="auto")
    h.fake.bot_gateway_url = "ws://127.0.0.1:9/elsewhere"  # what Discord would name; the override wins
    async with h:
        assert any(c.path.endswith("/gateway/bot") for c in h.fake.calls)
        assert sorted(h.fake.identifies) == [[0, 2], [1, 2]]


async def test_one_process_can_run_some_of_the_shards(tmp_path: Path) -> None:
    async with DiscordHarness(tmp_path, shards=2, connections=1, IMAGEBOT_DISCORD_SHARDS="2:1") as h:
        assert h.fake.identifies == [[1, 2]]
        await h.result(await h.imagine("a fox", size="256x256", guild_id=(1 << 22) * 7 + 1))


async def test_a_rejected_token_stops_start_up_with_a_config_error(tmp_path: Path) -> None:
    h = DiscordHarness(tmp_path)
    h.fake.fail("GET", r"/users/@me$", 0)
    with pytest.raises(ConfigError) as err:
        async with h:
            pass
    assert "DISCORD_TOKEN" in err.value.message and "fake-bot-token" not in err.value.message


async def test_autocomplete_offers_providers_and_the_sizes_of_the_chosen_one(tmp_path: Path) -> None:
    wide = ScriptedProvider("wide", sizes=("1792x1024", "1024x1024"))
    narrow = ScriptedProvider("narrow", sizes=("256x256",))
    async with DiscordHarness(tmp_path, providers=[wide, narrow]) as h:
        p = h.payloads

        async def choices(options: list[dict[str, object]]) -> list[str]:
            token = await h.command("imagine", options, autocomplete=True)
            call = await h.fake.wait_for(lambda: next(iter(h.fake.for_token(token)), None))
            assert call.json["type"] == 8
            return [c["value"] for c in call.json["data"]["choices"]]

        assert await choices([p.opt("prompt", "x"), p.opt("provider", "na", focused=True)]) == ["narrow"]
        sizes = await choices([p.opt("prompt", "x"), p.opt("provider", "narrow"), p.opt("size", "", focused=True)])
        assert sizes == ["256x256", "square", "landscape", "portrait", "1:1"]  # then the ratios it can make
        sizes = await choices([p.opt("prompt", "x"), p.opt("size", "17", focused=True)])
        assert sizes == ["1792x1024"]  # no provider chosen: the server's first


def _noise(side: int, mode: str = "RGB") -> bytes:
    rng = random.Random(side)
    image = Image.frombytes(mode, (side, side), rng.randbytes(side * side * len(mode)))
    out = io.BytesIO()
    image.save(out, format="PNG")
    return out.getvalue()


def test_fitting_keeps_originals_that_fit_and_shrinks_the_rest() -> None:
    small = _noise(16)
    assert [u.data for u in fit_message([(small, "image/png")], 10_000_000, stem="s")] == [small]
    rgba = _noise(256, "RGBA")
    (fitted,) = fit_message([(rgba, "image/png")], 60_000, stem="s")
    assert fitted.reencoded and fitted.filename == "s-1.webp" and len(fitted.data) <= 60_000 - 16 * 1024
    assert Image.open(io.BytesIO(fitted.data)).mode == "RGBA"
    with pytest.raises(ValueError):
        fit_message([(small, "image/png")] * 11, 10_000_000, stem="s")
    (tiny,) = fit_message([(_noise(512), "image/png")], 17_000, stem="s")  # downscaled until it fits
    assert len(tiny.data) <= 1024 and Image.open(io.BytesIO(tiny.data)).width < 512


async def test_the_benchmark_script_runs_end_to_end(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """A tiny run, so the script does not rot; its figures are read from real runs, not asserted here."""
    import importlib.util

    script = Path(__file__).parent / "bench" / "bench_discord.py"
    spec = importlib.util.spec_from_file_location("bench_discord", script)
    assert spec is not None and spec.loader is not None
    bench = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(bench)
    saved = (discord.http.Route.BASE, discord.gateway.DiscordWebSocket.DEFAULT_GATEWAY)
    await asyncio.wait_for(bench.run(5, 0.05, 2, tmp_path), 150)  # a hang fails here, showing where
    assert (discord.http.Route.BASE, discord.gateway.DiscordWebSocket.DEFAULT_GATEWAY) == saved
    out = capsys.readouterr().out
    assert "defer latency: p50" in out and "every image delivered after" in out and "ledger audit: balanced" in out

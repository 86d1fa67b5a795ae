"""/credits, the admin command /credits-admin, and direct messages on Discord."""

from __future__ import annotations

from pathlib import Path

from tests.fakes.discord_api import EVERYONE, GUILD_ID, MANAGE_GUILD
from tests.fakes.discord_harness import DiscordHarness


async def _reply(h: DiscordHarness, token: str) -> str:
    """The text the person finally sees (the last edit of the deferred, ephemeral response)."""
    await h.fake.wait_for(lambda: h.texts(token))
    return h.texts(token)[-1]


async def _admin(h: DiscordHarness, sub: str, member: int, amount: int, **kw: object) -> str:
    p = h.payloads
    options = [p.sub(sub, [p.opt("member", str(member), 6), p.opt("amount", amount, 4)])]
    return await h.command("credits-admin", options, resolved=p.member_resolved(member), **kw)


async def test_credits_is_private_and_shows_balance_and_recent_usage(tmp_path: Path) -> None:
    async with DiscordHarness(tmp_path) as h:
        await h.result(await h.imagine("a red fox", size="256x256"))
        token = await h.command("credits")
        text = await _reply(h, token)
        defer = h.fake.for_token(token)[0]
        assert defer.json == {"type": 5, "data": {"flags": 64}}
        assert text.startswith("Balance: 47 credits") and "/imagine completed · 3 cr · a red fox" in text


async def test_admin_commands_are_hidden_from_members_and_not_offered_in_dms(tmp_path: Path) -> None:
    async with DiscordHarness(tmp_path) as h:
        commands = {c["name"]: c for c in h.fake.commands["global"]}
        assert set(commands) == {"imagine", "enhance", "describe", "history", "show", "help", "settings", "credits", "credits-admin"}
        admin = commands["credits-admin"]
        assert int(admin["default_member_permissions"]) == MANAGE_GUILD and admin["dm_permission"] is False
        assert {o["name"] for o in admin["options"]} == {"grant", "revoke", "set", "usage"}
        assert commands["imagine"]["default_member_permissions"] is None


async def test_members_without_manage_server_are_refused_by_the_bot_too(tmp_path: Path) -> None:
    async with DiscordHarness(tmp_path) as h:
        text = await _reply(h, await _admin(h, "grant", 222, 100, permissions=EVERYONE))
        assert "Only server admins" in text and "IMG-PERM-001" in text
        assert await h.balance(222) == 50


async def test_manage_server_grants_revokes_and_sets(tmp_path: Path) -> None:
    async with DiscordHarness(tmp_path) as h:
        admin = EVERYONE | MANAGE_GUILD
        text = await _reply(h, await _admin(h, "grant", 222, 25, permissions=admin))
        assert text == "Granted 25 credits to <@222>: balance 50 -> 75."
        assert await h.balance(222) == 75
        text = await _reply(h, await _admin(h, "revoke", 222, 500, permissions=admin))
        assert "Cannot revoke 500 credits" in text and "Nothing was changed" in text
        assert await h.balance(222) == 75
        text = await _reply(h, await _admin(h, "set", 222, 0, permissions=admin))
        assert text == "Set <@222>'s balance to 0 (was 75)."
        assert await h.balance(222) == 0
        assert h.core is not None and await h.core.store.audit() == []


async def test_a_role_listed_in_the_env_is_admin(tmp_path: Path) -> None:
    async with DiscordHarness(tmp_path, IMAGEBOT_DISCORD_ADMIN_ROLES="424242, Credit Keepers") as h:
        text = await _reply(h, await _admin(h, "grant", 333, 5, roles=(424242,)))
        assert text.startswith("Granted 5 credits")
        text = await _reply(h, await _admin(h, "grant", 333, 5, roles=(999,)))
        assert "IMG-PERM-001" in text
        assert await h.balance(333) == 55


async def test_usage_report_for_admins(tmp_path: Path) -> None:
    async with DiscordHarness(tmp_path) as h:
        await h.result(await h.imagine("a fox", size="256x256", user_id=444))
        p = h.payloads
        token = await h.command("credits-admin", [p.sub("usage", [p.opt("days", 1, 4)])],
                                permissions=EVERYONE | MANAGE_GUILD)
        text = await _reply(h, token)
        assert text.startswith("Usage in the last 1 day:") and "<@444> · local · completed: 1, 1, 3" in text
        token = await h.command("credits-admin", [p.sub("usage", [])], permissions=EVERYONE)
        assert "IMG-PERM-001" in await _reply(h, token)


async def test_direct_messages_use_a_personal_account_separate_from_servers(tmp_path: Path) -> None:
    async with DiscordHarness(tmp_path) as h:
        result = await h.result(await h.imagine("a fox", size="256x256", guild_id=None))
        assert result.path.endswith("/messages/@original")
        assert await h.balance(111, server="dm-111") == 47
        assert await h.balance(111) == 50  # the server account is untouched
        text = await _reply(h, await h.command("credits", guild_id=None))
        assert text.startswith("Balance: 47 credits") and "direct-message account" in text


async def test_direct_messages_can_be_turned_off_and_are_refused_clearly(tmp_path: Path) -> None:
    async with DiscordHarness(tmp_path, IMAGEBOT_DISCORD_DMS="off") as h:
        commands = {c["name"]: c for c in h.fake.commands["global"]}
        assert commands["imagine"]["dm_permission"] is False
        token = await h.imagine("a fox", guild_id=None)
        await h.fake.wait_for(lambda: h.fake.for_token(token))
        reply = h.fake.for_token(token)[0]
        assert reply.ephemeral and "IMG-DISCORD-DM" in reply.json["data"]["content"]
        assert await h.balance(111, server="dm-111") == 50
        assert GUILD_ID


async def test_an_admin_role_may_be_named_once_discord_sent_the_servers_roles(tmp_path: Path) -> None:
    async with DiscordHarness(tmp_path, IMAGEBOT_DISCORD_ADMIN_ROLES="Credit Keepers") as h:
        role = {"id": "515151", "name": "Credit Keepers", "permissions": "0", "position": 1, "color": 0,
                "hoist": False, "managed": False, "mentionable": False, "flags": 0}
        everyone = {**role, "id": str(GUILD_ID), "name": "@everyone", "position": 0}
        await h.fake.dispatch({"id": str(GUILD_ID), "name": "test server", "owner_id": "1", "roles": [everyone, role],
                               "channels": [], "members": [], "member_count": 2, "unavailable": False,
                               "features": [], "emojis": [], "stickers": []}, event="GUILD_CREATE")
        text = await _reply(h, await _admin(h, "grant", 333, 5, roles=(515151,)))
        assert text.startswith("Granted 5 credits")
        assert await h.balance(333) == 55

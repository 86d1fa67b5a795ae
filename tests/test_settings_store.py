"""Per-server settings in the ledger (issue 13, /settings): every case runs against SQLite on a real file,
memory and PostgreSQL on the real server (a schema of its own), through the ledger contract's ``World``.

What an admin would notice: what they set is what every process reads back, clearing a setting gives the
operator's default back, the log names who changed what from what to what (and only real changes), a
change set that cannot be stored changes nothing, and an operator's read-only look can still read them.
"""

from __future__ import annotations

import asyncio
import math
from typing import Any

import pytest

from storage.ledger import ReadOnlyLedger
from tests import test_ledger_contract as contract
from tests.test_ledger_contract import World

#: The ledger contract's parametrized fixture (sqlite, memory, postgres), used here under its own name.
world = contract.world

GUILD = "discord:g1"
OTHER = "slack:T1"
SETTINGS: dict[str, Any] = {
    "default_provider": "openai", "max_images": 4, "price_multiplier": 1.5, "moderation": True,
    "allowed_providers": ["openai", "google"],
}


async def test_settings_round_trip_with_their_json_types_across_processes(world: World) -> None:
    admin, other_process = await world.ledger(), await world.ledger()
    assert await admin.server_settings(GUILD) == {}
    after = await admin.change_settings(GUILD, SETTINGS, actor="discord:g1:admin")
    assert after == SETTINGS
    seen = await other_process.server_settings(GUILD)
    assert seen == SETTINGS
    assert [type(seen[k]) for k in ("max_images", "price_multiplier", "moderation")] == [int, float, bool]
    assert await other_process.server_settings(OTHER) == {}  # servers never share settings
    assert await other_process.settings_log(OTHER) == []


async def test_none_removes_a_key_back_to_the_operators_default(world: World) -> None:
    ledger = await world.ledger()
    await ledger.change_settings(GUILD, SETTINGS, actor="a1")
    world.clock.advance(5)
    after = await ledger.change_settings(GUILD, {"max_images": None, "moderation": None}, actor="a2")
    assert after == {k: v for k, v in SETTINGS.items() if k not in ("max_images", "moderation")}
    assert await ledger.server_settings(GUILD) == after
    newest = await ledger.settings_log(GUILD, limit=2)
    assert sorted((r["key"], r["old"], r["new"], r["actor"]) for r in newest) == [
        ("max_images", 4, None, "a2"), ("moderation", True, None, "a2")]
    assert {r["created_at"] for r in newest} == {world.clock.now}


async def test_only_real_changes_are_logged_newest_first(world: World) -> None:
    ledger = await world.ledger()
    start = world.clock.now
    await ledger.change_settings(GUILD, {"max_images": 4, "default_provider": "openai"}, actor="a1")
    world.clock.advance(1)
    # the same values again, and the removal of a key never set: nothing to log
    assert await ledger.change_settings(GUILD, {"max_images": 4, "never_set": None}, actor="a2") == {
        "max_images": 4, "default_provider": "openai"}
    world.clock.advance(1)
    await ledger.change_settings(GUILD, {"max_images": 2, "default_provider": "openai", "moderation": False},
                                 actor="a3")
    world.clock.advance(1)
    await ledger.change_settings(GUILD, {"max_images": None}, actor="a4")
    log = await ledger.settings_log(GUILD)
    assert log[0] == {"key": "max_images", "old": 2, "new": None, "actor": "a4", "created_at": start + 3}
    assert sorted((r["key"], r["old"], r["new"], r["actor"]) for r in log[1:3]) == [
        ("max_images", 4, 2, "a3"), ("moderation", None, False, "a3")]
    assert sorted((r["key"], r["old"], r["new"], r["actor"]) for r in log[3:]) == [
        ("default_provider", None, "openai", "a1"), ("max_images", None, 4, "a1")]
    assert len(log) == 5 and not any(r["actor"] == "a2" for r in log)
    assert [r["key"] for r in await ledger.settings_log(GUILD, limit=1)] == ["max_images"]
    # a value of another JSON type is a change (4 and "4" are not the same setting)
    await ledger.change_settings(GUILD, {"moderation": 0}, actor="a5")
    assert (await ledger.settings_log(GUILD, limit=1))[0]["new"] == 0
    assert await ledger.server_settings(GUILD) == {"default_provider": "openai", "moderation": 0}


@pytest.mark.parametrize("bad", [object(), {1, 2}, math.nan, math.inf, b"bytes"])
async def test_a_change_set_with_a_value_that_is_not_json_changes_nothing(world: World, bad: Any) -> None:
    ledger = await world.ledger()
    await ledger.change_settings(GUILD, {"max_images": 4}, actor="a1")
    before = (await ledger.server_settings(GUILD), await ledger.settings_log(GUILD))
    with pytest.raises((TypeError, ValueError)):
        await ledger.change_settings(GUILD, {"default_provider": "google", "max_images": None, "bad": bad},
                                     actor="a2")
    assert (await ledger.server_settings(GUILD), await ledger.settings_log(GUILD)) == before


async def test_read_only_ledgers_read_settings_and_refuse_changes(world: World) -> None:
    look = await world.ledger(read_only=True)  # nothing written yet: an empty ledger, nothing created
    assert await look.server_settings(GUILD) == {} and await look.settings_log(GUILD) == []
    await look.close()
    world.opened.remove(look)

    admin = await world.ledger()
    await admin.change_settings(GUILD, SETTINGS, actor="a1")
    look = await world.ledger(read_only=True)
    assert await look.server_settings(GUILD) == SETTINGS
    assert {r["key"] for r in await look.settings_log(GUILD)} == set(SETTINGS)
    with pytest.raises(ReadOnlyLedger):
        await look.change_settings(GUILD, {"max_images": 1}, actor="a2")
    assert await admin.server_settings(GUILD) == SETTINGS


async def test_concurrent_changes_from_two_processes_leave_an_unbroken_log(world: World) -> None:
    """Each log row's old value is what the change really replaced, however the admins' changes interleave."""
    first, second = await world.ledger(), await world.ledger()

    async def admin(ledger: Any, name: str) -> None:
        for i in range(15):
            await ledger.change_settings(GUILD, {"max_images": f"{name}{i}"}, actor=name)
            await asyncio.sleep(0)

    await asyncio.gather(admin(first, "a"), admin(second, "b"))
    log = list(reversed(await first.settings_log(GUILD, limit=100)))
    assert len(log) == 30
    assert log[0]["old"] is None
    assert all(older["new"] == newer["old"] for older, newer in zip(log, log[1:], strict=False))
    assert await second.server_settings(GUILD) == {"max_images": log[-1]["new"]}

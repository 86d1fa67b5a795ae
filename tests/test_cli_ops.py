"""The operator's ``imagebot`` as a new operator tries it: real processes, real SQLite files.

Looks write nothing; a mistyped platform opens no account; settings that can never work stop the start
naming their key; ``--json`` answers errors in JSON; what is shown for ``hd`` is what is charged; counts
read "1 credit"; ``imagebot backup`` copies a database that another process is writing, consistently.
"""

from __future__ import annotations

import asyncio
import json
import os
import sqlite3
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import pytest

from bot.cli import _lifecycle_text
from bot.config import Pricing
from bot.models import Identity
from bot.replies import refund_note, returned_note, undelivered_text
from storage.sqlite import SqliteStore

ROOT = Path(__file__).resolve().parents[1]
WHO = ["--platform", "discord", "--server", "g1", "--user", "u1"]
ALICE = Identity("discord", "g1", "u1")
GEN = {"command": "imagine", "channel_id": "c1", "prompt": "a fox", "provider": "local", "model": "local-sketch",
       "options": {"size": "256x256"}}


def base_env(tmp: Path, **env: str) -> dict[str, str]:
    return {
        **{k: v for k, v in os.environ.items()
           if not k.startswith(("IMAGEBOT_", "SLACK_", "DISCORD_", "OPENAI_", "GOOGLE_", "XAI_"))},
        "IMAGEBOT_DATABASE": str(tmp / "db.sqlite3"),
        "IMAGEBOT_DATA_DIR": str(tmp / "data"),
        "PYTHONPATH": str(ROOT),
        **env,
    }


def run(tmp: Path, *args: str, stdin: str | None = None, **env: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "bot", *args], cwd=tmp, env=base_env(tmp, **env), input=stdin,
                          capture_output=True, text=True, timeout=120)


def rows(db: Path) -> dict[str, list[tuple[Any, ...]]]:
    """Every row of the tables that hold money, read without writing."""
    conn = sqlite3.connect(f"file:{db}?mode=ro", uri=True)
    try:
        return {t: conn.execute(f"SELECT * FROM {t} ORDER BY 1, 2").fetchall()
                for t in ("accounts", "ledger", "reservations", "generations")}
    finally:
        conn.close()


def stamp(db: Path) -> tuple[int, int, bytes]:
    st = db.stat()
    return st.st_mtime_ns, st.st_size, db.read_bytes()


# -- looks write nothing ------------------------------------------------------------------------------------

def test_credits_show_writes_nothing_to_the_database(tmp_path: Path) -> None:
    db = tmp_path / "db.sqlite3"
    assert run(tmp_path, "credits", "grant", *WHO, "5").returncode == 0
    before, data = stamp(db), rows(db)
    for who in (WHO, ["--platform", "slack", "--server", "T9", "--user", "U9"]):  # known, and never seen
        shown = run(tmp_path, "credits", "show", *who, "--json")
        assert shown.returncode == 0, shown.stderr
    assert json.loads(run(tmp_path, "credits", "show", *WHO, "--json").stdout)["balance"] == 55
    assert json.loads(run(tmp_path, "usage", "--json").stdout)["rows"] == []
    assert stamp(db) == before and rows(db) == data  # the file is byte for byte the same, no new account
    wal = tmp_path / "db.sqlite3-wal"
    assert not wal.exists() or wal.stat().st_size == 0


def test_credits_show_of_a_database_not_made_yet_creates_nothing(tmp_path: Path) -> None:
    shown = run(tmp_path, "credits", "show", *WHO, "--json")
    assert shown.returncode == 0 and json.loads(shown.stdout)["balance"] == 50
    assert sorted(p.name for p in tmp_path.iterdir()) == []


# -- only the platforms that exist ---------------------------------------------------------------------------

@pytest.mark.parametrize(("action", "platform"), [("show", "discrod"), ("grant", "telegram"), ("revoke", "Slackk"),
                                                 ("set", "discrod"), ("show", "telegram")])
def test_an_unknown_platform_is_refused_and_opens_nothing(tmp_path: Path, action: str, platform: str) -> None:
    amount = [] if action == "show" else ["5"]
    who = ["--platform", platform, "--server", "g1", "--user", "u1"]
    result = run(tmp_path, "credits", action, *who, *amount)
    assert result.returncode == 2
    assert "--platform must be one of console, discord, slack" in result.stderr and platform in result.stderr
    assert "Traceback" not in result.stderr
    if platform == "discrod":
        assert "did you mean discord?" in result.stderr
    assert not (tmp_path / "db.sqlite3").exists()  # no database made, no account opened

    assert run(tmp_path, "credits", "grant", *WHO, "1").returncode == 0
    db = tmp_path / "db.sqlite3"
    data = rows(db)
    again = run(tmp_path, "credits", action, *who, *amount, "--json")
    assert again.returncode == 2 and json.loads(again.stdout)["error"]["code"] == "IMG-CLI-PLATFORM"
    assert rows(db) == data


# -- settings that can never work stop the start --------------------------------------------------------------

def bad_settings(tmp: Path) -> list[tuple[dict[str, str], str, str]]:
    (tmp / "afolder").mkdir()
    (tmp / "afile").write_text("not a database\n")
    return [
        ({"IMAGEBOT_USER_RATE": "0/minute"}, "IMAGEBOT_USER_RATE", "above zero"),
        ({"IMAGEBOT_SERVER_RATE": "0 per hour"}, "IMAGEBOT_SERVER_RATE", "above zero"),
        ({"IMAGEBOT_CONFIG": str(tmp / "afolder")}, "IMAGEBOT_CONFIG", "names the folder"),
        ({"IMAGEBOT_DATABASE": str(tmp / "afolder")}, "IMAGEBOT_DATABASE", "names the folder"),
        ({"IMAGEBOT_DATABASE": f"sqlite:///{tmp / 'afolder'}"}, "IMAGEBOT_DATABASE", "names the folder"),
        ({"IMAGEBOT_DATABASE": str(tmp / "afile")}, "IMAGEBOT_DATABASE", "not a SQLite database"),
        ({"IMAGEBOT_DATABASE": str(tmp / "afile" / "db.sqlite3")}, "IMAGEBOT_DATABASE", "is a file"),
        ({"IMAGEBOT_DATA_DIR": str(tmp / "afile")}, "IMAGEBOT_DATA_DIR", "names the file"),
        ({"IMAGEBOT_DATA_DIR": str(tmp / "afile" / "images")}, "IMAGEBOT_DATA_DIR", "is a file"),
    ]


def test_settings_that_can_never_work_are_refused_at_start_naming_the_key(tmp_path: Path) -> None:
    for env, key, words in bad_settings(tmp_path):
        for args in (["run"], ["credits", "show", *WHO]):  # every command reads the settings the same way
            result = run(tmp_path, *args, stdin="/imagine a fox\n/quit\n", **env)
            assert result.returncode == 2, (env, args, result.stderr)
            assert key in result.stderr and words in result.stderr, (env, args, result.stderr)
            assert "Traceback" not in result.stderr and "imagine" not in result.stdout
    assert sorted(p.name for p in tmp_path.iterdir()) == ["afile", "afolder"]  # nothing was started


# -- the price shown is the price charged ------------------------------------------------------------------

def test_hd_at_small_sizes_is_shown_and_charged_as_high(tmp_path: Path) -> None:
    pricing = Pricing()
    for size, base in (("256x256", 3), ("512x512", 5), ("1024x1024", 10)):
        assert pricing.per_image(size, "standard") == base
        assert pricing.per_image(size, "hd") == pricing.per_image(size, "high") == 2 * base
    session = ("/imagine a fox --size 256x256 --quality hd\n/imagine a fox --size 512x512 --quality hd\n"
               "/imagine a fox --size 256x256 --quality standard\n/quit\n")
    result = run(tmp_path, "run", stdin=session)
    assert result.returncode == 0, result.stderr
    shown = [line for line in result.stdout.splitlines() if "local (local-sketch)" in line]
    spent = [line for line in result.stdout.splitlines() if "spent" in line]
    assert [(s.split(" · ")[2], s.split(" · ")[4]) for s in shown] == [("256x256", "high"), ("512x512", "high"),
                                                                       ("256x256", "medium")]
    assert [s.split(" spent")[0] for s in spent] == ["6 credits", "10 credits", "3 credits"]
    user = json.loads(run(tmp_path, "credits", "show", "--platform", "console", "--server", "local",
                          "--user", _console_user(), "--json").stdout)
    assert (user["balance"], user["spent"]) == (50 - 19, 19)


def _console_user() -> str:
    import getpass

    return getpass.getuser()


# -- --json errors are JSON ------------------------------------------------------------------------------

def test_json_errors_are_json_with_the_same_exit_code(tmp_path: Path) -> None:
    assert run(tmp_path, "credits", "grant", *WHO, "1").returncode == 0
    (tmp_path / "taken.sqlite3").write_bytes(b"")
    cases: list[tuple[list[str], dict[str, str], str]] = [
        (["credits", "show", "--platform", "discord", "--server", "g1"], {}, "IMG-CLI-USAGE"),
        (["credits", "show", "--platform", "telegram", "--server", "g1", "--user", "u1"], {}, "IMG-CLI-PLATFORM"),
        (["credits", "grant", *WHO, "ten"], {}, "IMG-VALID-AMOUNT"),
        (["credits", "revoke", *WHO, "500"], {}, "IMG-VALID-AMOUNT"),
        (["credits", "show", *WHO], {"IMAGEBOT_STARTING_CREDITS": "lots"}, "IMG-CONFIG-001"),
        (["usage", "--since", "yesterday"], {}, "IMG-CLI-USAGE"),
        (["usage"], {"IMAGEBOT_USER_RATE": "0/minute"}, "IMG-CONFIG-001"),
        (["providers"], {"IMAGEBOT_DATA_DIR": str(tmp_path / "taken.sqlite3")}, "IMG-CONFIG-001"),
        (["backup", str(tmp_path / "taken.sqlite3")], {}, "IMG-BACKUP-EXISTS"),
        (["backup", str(tmp_path / "copy.sqlite3")], {"IMAGEBOT_DATABASE": "postgresql://127.0.0.1/test"},
         "IMG-BACKUP-POSTGRES"),
    ]
    for args, env, code in cases:
        plain = run(tmp_path, *args, **env)
        as_json = run(tmp_path, *args, "--json", **env)
        assert plain.returncode in (1, 2) and as_json.returncode == plain.returncode, (args, plain.stderr)
        error = json.loads(as_json.stdout)["error"]
        assert error["code"] == code, (args, error)
        assert error["message"] and error["message"].split(" (")[0] in plain.stderr, (args, plain.stderr)
        assert "Traceback" not in plain.stderr + as_json.stderr
    assert json.loads(run(tmp_path, "credits", "show", *WHO, "--json").stdout)["balance"] == 51


# -- "1 credit" -----------------------------------------------------------------------------------------------

def test_counts_of_one_read_in_the_singular() -> None:
    assert refund_note(1) == " Your 1 credit was refunded." and refund_note(5) == " Your 5 credits were refunded."
    assert refund_note(0) == " You were not charged."
    assert returned_note(1) == " You were not charged (1 credit returned)."
    assert undelivered_text(1) == "I couldn't deliver the result. Your 1 credit was refunded. (IMG-DELIVERY-001)"
    entry = {"status": "deprecated", "shutdown_date": "2026-12-02", "days_left": 1}
    assert _lifecycle_text(entry) == "deprecated, shuts down 2026-12-02 (1 day left)"
    assert _lifecycle_text({**entry, "days_left": 2}).endswith("(2 days left)")


def test_a_console_grant_of_one_reads_one_credit(tmp_path: Path) -> None:
    result = run(tmp_path, "run", stdin="/credits grant someone 1\n/quit\n")
    assert "Granted 1 credit to someone: balance 50 -> 51." in result.stdout


# -- the operator CLI never releases a live job's reservation ------------------------------------------------

async def test_operator_commands_leave_a_running_jobs_reservation_alone(tmp_path: Path) -> None:
    db = tmp_path / "db.sqlite3"
    bot = SqliteStore(db, starting_credits=50)  # the running bot, holding a job's credits
    await bot.open()
    try:
        await bot.reserve(ALICE, "job-live", 10, max_concurrent=2, lease=600, generation=GEN)
        await bot.reserve(ALICE, "job-stale", 5, max_concurrent=2, lease=0.001, generation=GEN)
        await asyncio.sleep(0.01)  # the second lease has run out: still only a running bot may release it
        for args in (["credits", "show", *WHO], ["credits", "grant", *WHO, "1"], ["usage"],
                     ["backup", str(tmp_path / "copy.sqlite3")], ["providers"]):
            result = await asyncio.to_thread(run, tmp_path, *args)
            assert result.returncode == 0, (args, result.stderr)
        assert await bot.held(ALICE) == 15
        assert await bot.balance(ALICE) == 50 - 15 + 1
        assert await bot.audit() == []
    finally:
        await bot.close()


# -- imagebot backup --------------------------------------------------------------------------------------

WRITER = """
import asyncio, sys
from pathlib import Path
from bot.models import Identity
from storage.sqlite import SqliteStore

async def main() -> None:
    store = SqliteStore(Path(sys.argv[1]), starting_credits=50)
    await store.open()
    stop = Path(sys.argv[2])
    users = [Identity("discord", "g1", f"u{i}") for i in range(5)]
    n = 0
    try:
        while not stop.exists():
            who = users[n % len(users)]
            await store.adjust(who, "grant", 1 + n % 7, actor="writer", request_id=f"w{n}")
            if n % 3 == 0:
                await store.reserve(who, f"r{n}", 1, max_concurrent=1000, lease=600, generation={
                    "command": "imagine", "channel_id": "c", "prompt": "p", "provider": "local",
                    "model": "m", "options": {}})
            n += 1
    finally:
        await store.close()

asyncio.run(main())
"""


def ledger_rows(db: Path) -> list[tuple[Any, ...]]:
    conn = sqlite3.connect(f"file:{db}?mode=ro", uri=True)
    try:
        return conn.execute("SELECT id, platform, server_id, user_id, kind, delta, balance_after, request_id"
                            " FROM ledger ORDER BY id").fetchall()
    finally:
        conn.close()


def written(db: Path) -> int:
    """Ledger rows so far (0 while the writer is still making the file)."""
    try:
        return len(ledger_rows(db)) if db.exists() else 0
    except sqlite3.Error:
        return 0


def wait_for(check: Any, what: str) -> None:
    for _ in range(6000):
        if check():
            return
        time.sleep(0.01)
    raise AssertionError(f"never happened: {what}")


def test_backup_while_another_process_writes_is_a_consistent_copy(tmp_path: Path) -> None:
    db, copy, stop = tmp_path / "db.sqlite3", tmp_path / "backup.sqlite3", tmp_path / "stop"
    writer = subprocess.Popen([sys.executable, "-c", WRITER, str(db), str(stop)], cwd=tmp_path,
                              env=base_env(tmp_path), stderr=subprocess.PIPE)
    try:
        wait_for(lambda: written(db) > 200, "the writer has written")
        result = run(tmp_path, "backup", str(copy), "--json")
        assert result.returncode == 0, result.stderr
        report = json.loads(result.stdout)
        copied = ledger_rows(copy)
        wait_for(lambda: written(db) > len(copied), "the writer went on after the backup")
    finally:
        stop.touch()
        _, err = writer.communicate(timeout=60)
    assert writer.returncode == 0, err.decode()

    conn = sqlite3.connect(copy)
    try:
        assert conn.execute("PRAGMA integrity_check").fetchone()[0] == "ok"
        assert conn.execute("PRAGMA journal_mode").fetchone()[0] == "delete"  # one file, nothing beside it
    finally:
        conn.close()
    source = ledger_rows(db)
    assert 200 < len(copied) < len(source) and source[: len(copied)] == copied  # a prefix: one moment
    assert report["ledger_rows"] == len(copied) and report["accounts"] == 5

    asyncio.run(_check_copy(copy, copied))


async def _check_copy(copy: Path, copied: list[tuple[Any, ...]]) -> None:
    """The copy opens as imagebot's own database, and its balances and holds are those of its rows."""
    store = SqliteStore(copy, read_only=True)
    await store.open()
    try:
        assert await store.audit() == []  # every balance equals the sum of its rows
        for i in range(5):
            who = Identity("discord", "g1", f"u{i}")
            mine = [r for r in copied if r[3] == f"u{i}"]
            assert await store.balance(who) == mine[-1][6]
            holds = sum(1 for r in mine if r[4] == "reserve")
            assert await store.held(who) == holds
    finally:
        await store.close()


def test_backup_refuses_to_overwrite_unless_forced(tmp_path: Path) -> None:
    assert run(tmp_path, "credits", "grant", *WHO, "5").returncode == 0
    copy = tmp_path / "backup.sqlite3"
    copy.write_text("keep me")
    refused = run(tmp_path, "backup", str(copy))
    assert refused.returncode == 2 and "already exists" in refused.stderr and "--force" in refused.stderr
    assert copy.read_text() == "keep me"
    folder = run(tmp_path, "backup", str(tmp_path), "--force")
    assert folder.returncode == 2 and "is a folder" in folder.stderr
    forced = run(tmp_path, "backup", str(copy), "--force")
    assert forced.returncode == 0, forced.stderr
    assert "Backed up" in forced.stdout and "1 account, 2 ledger rows" in forced.stdout
    restored = run(tmp_path, "credits", "show", *WHO, "--json", IMAGEBOT_DATABASE=str(copy))
    assert json.loads(restored.stdout)["balance"] == 55
    assert sorted(p.name for p in tmp_path.iterdir() if p.name.startswith(".")) == []  # no partial left


def test_backup_refuses_postgresql_memory_and_a_missing_database(tmp_path: Path) -> None:
    copy = tmp_path / "backup.sqlite3"
    pg = run(tmp_path, "backup", str(copy), IMAGEBOT_DATABASE="postgresql://127.0.0.1/test")
    assert pg.returncode == 2 and "pg_dump" in pg.stderr and "pg_restore" in pg.stderr
    memory = run(tmp_path, "backup", str(copy), IMAGEBOT_DATABASE="memory://")
    assert memory.returncode == 2 and "nothing on disk" in memory.stderr
    missing = run(tmp_path, "backup", str(copy))
    assert missing.returncode == 2 and "no database" in missing.stderr
    assert sorted(p.name for p in tmp_path.iterdir()) == []

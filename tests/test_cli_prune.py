"""``imagebot prune`` as an operator runs it: a real process on a real SQLite file and data folder made by a
real console session (the local renderer). What a person checks afterwards: which files are gone, what the
command said, and that the ledger is exactly as it was."""

from __future__ import annotations

import json
import os
import sqlite3
import subprocess
import time
from pathlib import Path
from typing import Any

import pytest

from tests.test_cli import imagebot_cmd

ROOT = Path(__file__).resolve().parents[1]
DAY = 86400.0
OLD = time.time() - 200 * DAY


def run(tmp: Path, *args: str, stdin: str | None = None) -> subprocess.CompletedProcess[str]:
    env = {
        **{k: v for k, v in os.environ.items() if not k.startswith(("IMAGEBOT_", "SLACK_", "DISCORD_"))},
        "IMAGEBOT_DATABASE": str(tmp / "db.sqlite3"),
        "IMAGEBOT_DATA_DIR": str(tmp / "data"),
        "PYTHONPATH": str(ROOT),
    }
    return subprocess.run([*imagebot_cmd(), *args], cwd=tmp, env=env, input=stdin, capture_output=True,
                          text=True, timeout=60)


def saved_paths(out: str) -> list[Path]:
    return [Path(line.strip()) for line in out.splitlines() if line.strip().endswith(".png")]


def ledger_state(db: Path) -> dict[str, list[tuple[Any, ...]]]:
    conn = sqlite3.connect(db)
    try:
        return {table: sorted(conn.execute(f"SELECT * FROM {table}").fetchall(), key=repr)
                for table in ("accounts", "ledger", "generations", "generation_images", "jobs")}
    finally:
        conn.close()


def age(path: Path, when: float = OLD) -> None:
    os.utime(path, (when, when))


@pytest.fixture
def store(tmp_path: Path) -> dict[str, Any]:
    """Two console generations: a fox made "today" (its files old on disk) and a kite whose generation is
    200 days old; plus a stray image no generation names, an old preview, and a foreign file."""
    session = "/imagine a red fox --size 256x256 --count 2\n/imagine a blue kite --size 256x256\n/quit\n"
    done = run(tmp_path, "run", stdin=session)
    assert done.returncode == 0, done.stderr
    paths = [p if p.is_absolute() else tmp_path / p for p in saved_paths(done.stdout)]
    assert len(paths) == 3 and all(p.exists() for p in paths), done.stdout
    fox, kite = paths[:2], paths[2]
    db = tmp_path / "db.sqlite3"
    conn = sqlite3.connect(db)
    with conn:
        conn.execute("UPDATE generations SET created_at = ? WHERE prompt = 'a blue kite'", (OLD,))
    conn.close()
    images = tmp_path / "data" / "images"
    stray = images / "ab" / ("ab" + "0" * 62 + ".png")
    stray.parent.mkdir(parents=True, exist_ok=True)
    stray.write_bytes(fox[0].read_bytes()[:100] + b"stray")
    fresh = images / "cd" / ("cd" + "1" * 62 + ".png")
    fresh.parent.mkdir(parents=True, exist_ok=True)
    fresh.write_bytes(b"not needed, but written just now")
    preview = tmp_path / "data" / "previews" / "old-preview.png"
    preview.parent.mkdir(parents=True, exist_ok=True)
    preview.write_bytes(b"an old partial image")
    foreign = images / "ab" / "notes.txt"
    foreign.write_text("the operator's own file")
    for path in (*fox, kite, stray, preview, foreign):
        age(path)
    gone = [kite, stray, preview]
    return {"db": db, "kept": [*fox, fresh, foreign], "gone": gone,
            "bytes": sum(p.stat().st_size for p in gone)}


def test_prune_removes_old_unneeded_files_and_keeps_every_ledger_row(tmp_path: Path, store: dict[str, Any]) -> None:
    before = ledger_state(store["db"])
    dry = run(tmp_path, "prune", "--older-than", "90d", "--dry-run")
    assert dry.returncode == 0, dry.stderr
    assert "Would remove 3 files" in dry.stdout and "nothing was removed" in dry.stdout
    assert all(p.exists() for p in [*store["kept"], *store["gone"]])  # a dry run removes nothing

    dry_json = json.loads(run(tmp_path, "prune", "--older-than", "90d", "--dry-run", "--json").stdout)
    assert dry_json == {"older_than_seconds": 90 * 86400, "dry_run": True, "files": 3, "bytes": store["bytes"],
                        "kept": dry_json["kept"]}
    assert all(p.exists() for p in store["gone"])

    done = run(tmp_path, "prune", "--older-than", "90d", "--json")
    assert done.returncode == 0, done.stderr
    report = json.loads(done.stdout)
    assert (report["files"], report["bytes"], report["dry_run"]) == (3, store["bytes"], False)
    assert not any(p.exists() for p in store["gone"])
    assert all(p.exists() for p in store["kept"])  # a recent generation's files stay, even old on disk
    assert ledger_state(store["db"]) == before  # the kite's generation, image and ledger rows are all there

    again = run(tmp_path, "prune", "--older-than", "90d")
    assert again.returncode == 0 and "Removed 0 files" in again.stdout and "No ledger row was changed" in again.stdout


def test_a_shorter_age_in_hours_reaches_the_older_generation_only(tmp_path: Path, store: dict[str, Any]) -> None:
    done = run(tmp_path, "prune", "--older-than", "36h")
    assert done.returncode == 0, done.stderr
    assert "Removed 3 files" in done.stdout and "freed" in done.stdout
    assert all(p.exists() for p in store["kept"])


@pytest.mark.parametrize("value", ["0d", "0h", "90", "90m", "2w", "ninety", "-5d", "", "9999999d"])
def test_a_bad_age_is_refused_naming_the_flag_and_removes_nothing(tmp_path: Path, store: dict[str, Any],
                                                                   value: str) -> None:
    result = run(tmp_path, "prune", "--older-than", value)
    assert result.returncode == 2
    assert "--older-than" in result.stderr and "Traceback" not in result.stderr
    as_json = run(tmp_path, "prune", "--older-than", value, "--json")
    assert as_json.returncode == 2
    error = json.loads(as_json.stdout)["error"]
    assert "--older-than" in error["message"] and error["code"].startswith("IMG-")
    assert all(p.exists() for p in [*store["kept"], *store["gone"]])


def test_the_age_is_required_and_prune_is_in_the_help(tmp_path: Path) -> None:
    missing = run(tmp_path, "prune")
    assert missing.returncode == 2 and "--older-than" in missing.stderr
    helped = run(tmp_path, "--help")
    assert helped.returncode == 0 and "prune" in helped.stdout


def test_without_a_database_nothing_is_pruned(tmp_path: Path) -> None:
    lone = tmp_path / "data" / "images" / "ef" / ("ef" + "2" * 62 + ".png")
    lone.parent.mkdir(parents=True)
    lone.write_bytes(b"an image whose ledger is elsewhere")
    age(lone)
    result = run(tmp_path, "prune", "--older-than", "1d", "--json")
    assert result.returncode == 2
    assert json.loads(result.stdout)["error"]["code"] == "IMG-PRUNE-NODB"
    assert lone.exists() and not (tmp_path / "db.sqlite3").exists()

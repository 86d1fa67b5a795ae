"""The ``imagebot`` command as an operator runs it: a real process, a real SQLite file."""

from __future__ import annotations

import csv
import io
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]


def imagebot_cmd() -> list[str]:
    script = Path(sys.executable).with_name("imagebot")
    return [str(script)] if script.exists() else [sys.executable, "-m", "bot"]


def run(tmp: Path, *args: str, stdin: str | None = None, **env: str) -> subprocess.CompletedProcess[str]:
    full_env = {
        **{k: v for k, v in os.environ.items() if not k.startswith(("IMAGEBOT_", "SLACK_", "DISCORD_"))},
        "IMAGEBOT_DATABASE": str(tmp / "db.sqlite3"),
        "IMAGEBOT_DATA_DIR": str(tmp / "data"),
        "PYTHONPATH": str(ROOT),
        **env,
    }
    return subprocess.run([*imagebot_cmd(), *args], cwd=tmp, env=full_env, input=stdin, capture_output=True,
                          text=True, timeout=60)


def test_credits_grant_revoke_set_show_as_json(tmp_path: Path) -> None:
    who = ["--platform", "discord", "--server", "g1", "--user", "u1", "--json"]
    shown = json.loads(run(tmp_path, "credits", "show", *who).stdout)
    assert shown["balance"] == 50
    granted = json.loads(run(tmp_path, "credits", "grant", *who, "25").stdout)
    assert (granted["old_balance"], granted["balance"]) == (50, 75)
    assert json.loads(run(tmp_path, "credits", "revoke", *who, "5").stdout)["balance"] == 70
    assert json.loads(run(tmp_path, "credits", "set", *who, "0").stdout)["balance"] == 0
    assert json.loads(run(tmp_path, "credits", "show", *who).stdout)["balance"] == 0


@pytest.mark.parametrize(
    ("action", "amount", "message"),
    [
        ("grant", "-5", "whole number from 1"),
        ("grant", "0", "whole number from 1"),
        ("grant", "2.5", "whole number"),
        ("grant", "ten", "whole number"),
        ("grant", "99999999999", "whole number"),
        ("grant", "1000001", "1,000,000"),
        ("set", "-1", "from 0"),
        ("revoke", "51", "only 50"),
    ],
)
def test_bad_amounts_are_refused_and_change_nothing(tmp_path: Path, action: str, amount: str, message: str) -> None:
    who = ["--platform", "slack", "--server", "T1", "--user", "U1"]
    result = run(tmp_path, "credits", action, *who, "--", amount)
    assert result.returncode != 0
    assert message in result.stderr
    assert json.loads(run(tmp_path, "credits", "show", *who, "--json").stdout)["balance"] == 50


def test_console_session_then_usage_reports(tmp_path: Path) -> None:
    session = "/imagine a red fox --size 512x512 --count 2\n/enhance a cat\n/imagine bad --style cubist\n/credits\n/quit\n"
    result = run(tmp_path, "run", stdin=session)
    assert result.returncode == 0, result.stderr
    out = result.stdout
    assert "2 images · local (local-sketch) · 512x512" in out
    assert "10 credits spent · 40 left" in out
    saved = [line.strip() for line in out.splitlines() if line.strip().endswith(".png")]
    assert len(saved) == 2 and all((tmp_path / p).exists() or Path(p).exists() for p in saved)
    assert "IMG-VALID-STYLE" in out and "Balance: 39 credits" in out

    report = json.loads(run(tmp_path, "usage", "--since", "1d", "--json").stdout)
    assert {(r["command"] if "command" in r else r["provider"], r["status"]) for r in report["rows"]} == {
        ("local", "COMPLETED")
    }
    rows = list(csv.DictReader(io.StringIO(run(tmp_path, "usage", "--csv").stdout)))
    assert rows[0]["provider"] == "local" and rows[0]["credits"] == "11"
    bad = run(tmp_path, "usage", "--since", "yesterday")
    assert bad.returncode == 2 and "--since" in bad.stderr


def test_providers_lists_models_and_sizes(tmp_path: Path) -> None:
    out = json.loads(run(tmp_path, "providers", "--json").stdout)
    local = next(p for p in out["providers"] if p["name"] == "local")
    assert "256x256" in local["models"][0]["sizes"]
    assert "local" in run(tmp_path, "providers").stdout


def test_bad_configuration_names_the_key(tmp_path: Path) -> None:
    result = run(tmp_path, "providers", IMAGEBOT_STARTING_CREDITS="lots")
    assert result.returncode == 2
    assert "IMAGEBOT_STARTING_CREDITS" in result.stderr and "whole number" in result.stderr
    (tmp_path / "imagebot.toml").write_text("[limits]\nuser_rate = 'often'\n")
    result = run(tmp_path, "providers")
    assert result.returncode == 2 and "IMAGEBOT_USER_RATE" in result.stderr


def test_environment_wins_over_the_file(tmp_path: Path) -> None:
    (tmp_path / "imagebot.toml").write_text("starting_credits = 7\n")
    who = ["--platform", "console", "--server", "s", "--user", "u", "--json"]
    assert json.loads(run(tmp_path, "credits", "show", *who).stdout)["balance"] == 7
    other = ["--platform", "console", "--server", "s", "--user", "other", "--json"]
    assert json.loads(run(tmp_path, "credits", "show", *other, IMAGEBOT_STARTING_CREDITS="9").stdout)["balance"] == 9

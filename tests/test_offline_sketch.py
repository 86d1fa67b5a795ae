"""A newcomer with no API key gets offline sketches and is told so, with the result, wherever they asked:
the console (a real ``python -m bot run``), Slack and Discord (the real clients against the loopback fakes).
With a real provider configured, a sketch asked for by name says only that it is one; a real provider's
result says nothing of sketches."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

from bot.console import console_context, handle_line
from bot.generation import OFFLINE_NOTE, SKETCH_NOTE
from providers.local import LocalRenderer
from tests.doubles import ScriptedProvider, make_config, make_core
from tests.fakes.discord_harness import DiscordHarness
from tests.fakes.slack_harness import SlackHarness

ROOT = Path(__file__).resolve().parents[1]
#: Bounds the console run so a broken build fails instead of hanging the suite; never what is asserted.
PATIENCE = 60.0
#: The variables the built-in providers read for their keys, named in the note.
KEY_VARIABLES = ("OPENAI_API_KEY", "GEMINI_API_KEY", "XAI_API_KEY")


def test_the_console_with_no_key_says_the_picture_is_an_offline_sketch_and_how_to_get_real_ones(
        tmp_path: Path) -> None:
    env = {
        **{k: v for k, v in os.environ.items()
           if not k.startswith(("IMAGEBOT_", "SLACK_", "DISCORD_", "OPENAI_", "GOOGLE_", "GEMINI_", "XAI_"))},
        "IMAGEBOT_DATABASE": str(tmp_path / "db.sqlite3"), "IMAGEBOT_DATA_DIR": str(tmp_path / "data"),
        "USER": "tester", "LOGNAME": "tester", "PYTHONPATH": str(ROOT),
    }
    run = subprocess.run([sys.executable, "-m", "bot", "run"], cwd=tmp_path, env=env, capture_output=True,
                         text=True, input="/imagine a red fox --size 256x256\n/quit\n", timeout=PATIENCE)
    assert run.returncode == 0, run.stderr
    assert "local (local-sketch) · 256x256" in run.stdout, run.stdout
    assert OFFLINE_NOTE in run.stdout and run.stdout.count("Offline sketch") == 1
    assert all(name in OFFLINE_NOTE for name in KEY_VARIABLES)
    assert "Saved:" in run.stdout


async def test_with_a_real_provider_configured_a_sketch_asked_for_says_only_what_it_is(tmp_path: Path) -> None:
    core = make_core(make_config(tmp_path), [ScriptedProvider("fake"), LocalRenderer()], order=["fake", "local"])
    async with core:
        ctx = console_context()
        real = await handle_line(core, ctx, "/imagine a red fox --size 256x256")
        sketch = await handle_line(core, ctx, "/imagine a red fox --size 256x256 --provider local")
    assert "fake (fake-model)" in real and "Offline sketch" not in real and "API_KEY" not in real
    assert "local (local-sketch)" in sketch and SKETCH_NOTE in sketch
    assert OFFLINE_NOTE not in sketch and "API_KEY" not in sketch


async def test_slack_shows_the_offline_note_with_the_uploaded_sketch(tmp_path: Path) -> None:
    slack = await SlackHarness.start(tmp_path)
    try:
        status, _ = await slack.command("/imagine", "a red fox --size 256x256", user="U0ANN0001")
        assert status == 200
        await slack.fake.until(lambda: slack.fake.uploads)
        await slack.idle()
    finally:
        await slack.close()
    [upload] = slack.fake.uploads
    assert "a red fox" in upload.initial_comment and len(upload.files) == 1
    assert OFFLINE_NOTE in upload.initial_comment


async def test_discord_shows_the_offline_note_in_the_result(tmp_path: Path) -> None:
    async with DiscordHarness(tmp_path) as h:
        token = await h.imagine("a red fox", size="256x256")
        result = await h.result(token)
    description = result.embeds[0]["description"]
    assert "<@111>: a red fox" in description and "local (local-sketch)" in description
    assert OFFLINE_NOTE in description and len(result.files) == 1

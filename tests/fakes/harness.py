"""Building a real config and core pointed at the vendor fakes (shared by the provider tests)."""

from __future__ import annotations

from pathlib import Path

from bot.config import Config, load_config
from bot.models import Context, Identity

OPENAI_KEY = "sk-test-SECRETopenai0123456789abcdef"
GOOGLE_KEY = "AIzaSyTESTsecretGOOGLEkey0123456789"
XAI_KEY = "xai-test-SECRETxai0123456789abcdef"
ALL_KEYS = (OPENAI_KEY, GOOGLE_KEY, XAI_KEY)

#: Small timeouts and no SDK retries: a scripted failure shows at once.
FAST = """
[providers.openai]
timeout = 0.5
text_timeout = 0.5
max_retries = 0
download_timeout = 0.5

[providers.google]
timeout = 0.5
text_timeout = 0.5
max_retries = 0
"""

USER = Identity("console", "local", "alice")
CTX = Context(USER, channel_id="general", display_name="alice")


def make_config(tmp_path: Path, env: dict[str, str], toml: str = FAST) -> Config:
    path = tmp_path / "imagebot.toml"
    path.write_text(toml, encoding="utf-8")
    base = {
        "IMAGEBOT_DATABASE": str(tmp_path / "imagebot.sqlite3"),
        "IMAGEBOT_DATA_DIR": str(tmp_path / "data"),
        "IMAGEBOT_USER_RATE": "1000/minute",
        "IMAGEBOT_SERVER_RATE": "1000/minute",
        "IMAGEBOT_STARTING_CREDITS": "500",
        "IMAGEBOT_MAX_CONCURRENT": "10",
    }
    return load_config(env={**base, **env}, path=path)


def openai_env(base_url: str, **extra: str) -> dict[str, str]:
    return {"OPENAI_API_KEY": OPENAI_KEY, "OPENAI_BASE_URL": base_url, **extra}


def google_env(base_url: str, **extra: str) -> dict[str, str]:
    return {"GOOGLE_API_KEY": GOOGLE_KEY, "GOOGLE_GEMINI_BASE_URL": base_url, **extra}


def vertex_env(base_url: str, **extra: str) -> dict[str, str]:
    return {"GOOGLE_API_KEY": GOOGLE_KEY, "GOOGLE_GENAI_USE_VERTEXAI": "true", "GOOGLE_VERTEX_BASE_URL": base_url,
            **extra}

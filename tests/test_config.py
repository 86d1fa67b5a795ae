"""Configuration as an operator writes it: a real ``imagebot.toml`` and environment through ``load_config``,
and once through the real ``imagebot run``. Every mistake stops the start, naming the key and what it takes."""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

from bot.config import MAX_AMOUNT, Config, load_config
from bot.errors import ConfigError

ROOT = Path(__file__).resolve().parents[1]


def load(tmp_path: Path, toml: str = "", **env: str) -> Config:
    path = tmp_path / "imagebot.toml"
    path.write_text(toml, encoding="utf-8")
    return load_config(env=env, path=path)


def refused(tmp_path: Path, toml: str = "", **env: str) -> str:
    with pytest.raises(ConfigError) as info:
        load(tmp_path, toml, **env)
    assert info.value.code == "IMG-CONFIG-001"
    return info.value.message


# --- unknown keys, everywhere ---------------------------------------------------------------------------


def test_a_typo_at_the_top_level_suggests_the_key(tmp_path: Path) -> None:
    message = refused(tmp_path, "starting_credtis = 100\n")
    assert "starting_credtis is not a setting" in message
    assert "did you mean starting_credits?" in message
    assert "the top level accepts" in message and "starting_credits" in message and "limits" in message


def test_a_misplaced_key_says_where_it_belongs(tmp_path: Path) -> None:
    assert "user_rate belongs in [limits], not at the top level" in refused(tmp_path, 'user_rate = "9/minute"\n')
    assert "order belongs in [providers]" in refused(tmp_path, 'order = ["local"]\n')
    # A key written after a [table] header belongs to that table: the usual way a top-level key goes astray.
    message = refused(tmp_path, '[limits]\nuser_rate = "9/minute"\nstarting_credits = 100\n')
    assert "limits.starting_credits" in message and "starting_credits belongs at the top level" in message
    message = refused(tmp_path, "[providers]\ntimeout = 30\n")
    assert "providers.timeout" in message and "belongs in [providers.NAME]" in message


@pytest.mark.parametrize(("toml", "key", "accepted"), [
    ("[limits]\nuser_rte = '1/minute'\n", "limits.user_rte", ["user_rate", "server_rate", "max_concurrent",
                                                               "max_count", "storage"]),
    ("[pricing]\nlarg = 12\n", "pricing.larg", ["sizes", "large", "hd_multiplier", "qualities", "models",
                                               "enhance"]),
    ("[providers.openai]\ntimeot = 3\n", "providers.openai.timeot", ["timeout", "text_model", "previews",
                                                                    "moderation", "output_compression"]),
    ("[providers.google]\ntext_modle = 'x'\n", "providers.google.text_modle", ["text_model", "models"]),
    ("[providers.xai]\nkey = 'x'\n", "providers.xai.key", ["key_env", "base_url", "models"]),
    ("[providers.local]\nsizes = ['1x1']\n", "providers.local.sizes", ["takes no keys"]),
    ("[providers.mysd]\nbase_url = 'http://127.0.0.1:9/v1'\nmodels = ['sd']\nresponse = 'url'\n",
     "providers.mysd.response", ["response_format", "send_size", "key_env", "max_per_call"]),
    ("[providers.mysd]\nbase_url = 'http://127.0.0.1:9/v1'\nmodels = [{ name = 'sd', edit = true }]\n",
     "providers.mysd.models[0].edit", ["edits", "name", "sizes"]),
    ('[servers."discord:1"]\nprovider = ["local"]\n', 'servers."discord:1".provider', ["providers"]),
    ("[slack]\nadmins = ['U012ABCDEF']\n", "slack.admins", ["IMAGEBOT_SLACK_ADMINS", "SLACK_BOT_TOKEN"]),
    ("[discord]\ntoken = 'x'\n", "discord.token", ["DISCORD_TOKEN", "IMAGEBOT_DISCORD_GUILDS"]),
])
def test_an_unknown_key_in_each_table_names_the_keys_accepted_there(tmp_path: Path, toml: str, key: str,
                                                                     accepted: list[str]) -> None:
    message = refused(tmp_path, toml)
    assert f"{key} is not a setting" in message
    for word in accepted:
        assert word in message


def test_an_unknown_quality_tier_names_the_four(tmp_path: Path) -> None:
    message = refused(tmp_path, "[pricing.qualities]\nhihg = 8\n")
    assert "pricing.qualities.hihg: unknown quality tier (did you mean high?)" in message
    assert "accepts low, medium, high, max" in message


def test_near_misses_suggest_the_right_key(tmp_path: Path) -> None:
    assert "did you mean timeout?" in refused(tmp_path, "[providers.openai]\ntimeot = 3\n")
    assert "did you mean edits?" in refused(
        tmp_path, "[providers.mysd]\nbase_url = 'http://h/v1'\nmodels = [{ name = 'sd', edit = true }]\n")
    assert "set IMAGEBOT_SLACK_ADMINS in the environment instead" in refused(tmp_path, "[slack]\nadmins = []\n")
    message = refused(tmp_path, "[providers.opneai]\nmodels = ['gpt-image-2']\n")
    assert "did you mean [providers.openai]?" in message and "providers.opneai.base_url" in message


def test_every_problem_is_reported_at_once(tmp_path: Path) -> None:
    message = refused(tmp_path, 'starting_credtis = 1\nuser_rate = "1/minute"\n[limits]\nmax_count = 50\n')
    assert message.startswith("3 problems in the configuration")
    assert "starting_credtis" in message and "user_rate belongs in [limits]" in message
    assert "limits.max_count" in message


# --- wrong types and out of range ---------------------------------------------------------------------


@pytest.mark.parametrize(("toml", "key", "accepts"), [
    ('starting_credits = "100"\n', "starting_credits", "whole number from 0 to 1000000"),
    ("starting_credits = true\n", "starting_credits", "whole number"),
    ("database = 5\n", "database", "a string"),
    ("lease_seconds = 0\n", "lease_seconds", "number from 1 to 3600"),
    ("limits = [1, 2]\n", "limits", "must be a table"),
    ("pricing = 3\n", "pricing", "must be a table"),
    ("[limits]\nmax_count = 50\n", "limits.max_count", "whole number from 1 to 10"),
    ("[limits]\nmax_concurrent = 2.5\n", "limits.max_concurrent", "whole number from 1 to 100"),
    ("[limits]\nstorage = 'mysql://db'\n", "limits.storage", "limits storage URI"),
    ("[pricing]\nsizes = { '1024x1024' = 'ten' }\n", "pricing.sizes.1024x1024", "whole number"),
    ("[pricing]\nsizes = { 'big' = 3 }\n", "pricing.sizes.big", "size like 1024x1024"),
    ("[pricing]\nsizes = [10]\n", "pricing.sizes", 'must be a table like { "1024x1024" = 10 }'),
    ("[pricing]\nmodels = { 'gpt-image-2' = 1000 }\n", "pricing.models.gpt-image-2", "number from 0 to 100"),
    ("[pricing]\nhd_multiplier = 0.5\n", "pricing.hd_multiplier", "number from 1 to 100"),
    ("[providers]\norder = { first = 'local' }\n", "providers.order", "list of provider names"),
    ("[providers]\nopenai = ['gpt-image-2']\n", "providers.openai", "not a setting"),
    ("[providers.openai]\ntimeout = 'fast'\n", "providers.openai.timeout", "a number"),
    ("[providers.openai]\nmax_retries = 1.5\n", "providers.openai.max_retries", "a whole number"),
    ("[providers.openai]\nmodels = 5\n", "providers.openai.models", "model name or a list"),
    ("[providers.mysd]\nbase_url = 'http://h/v1'\nmodels = ['sd']\nsend_size = 'yes'\n",
     "providers.mysd.send_size", "true or false"),
    ('[servers."discord:1"]\nproviders = "Open AI"\n', 'servers."discord:1".providers', "provider names"),
    ("[servers.123]\nproviders = ['local']\n", "servers.123", 'server key like "discord:'),
    ("servers = 'discord:1'\n", "servers", 'must be a table like [servers."discord:'),
])
def test_wrong_types_and_ranges_name_the_key_and_what_it_accepts(tmp_path: Path, toml: str, key: str,
                                                                  accepts: str) -> None:
    message = refused(tmp_path, toml)
    assert key in message and accepts in message


def test_provider_ranges_are_still_checked_at_start(tmp_path: Path) -> None:
    from providers.registry import build_registry

    config = load(tmp_path, "[providers.openai]\ntimeout = 9000\n", OPENAI_API_KEY="sk-test-0123456789")
    with pytest.raises(ConfigError, match=r"providers\.openai\.timeout must be a number from 0\.05 to 600"):
        build_registry(config)


# --- the environment -----------------------------------------------------------------------------------


def test_the_environment_wins_over_the_file(tmp_path: Path) -> None:
    toml = 'starting_credits = 7\n[limits]\nuser_rate = "3/minute"\nmax_count = 4\n[providers]\norder = ["local"]\n'
    config = load(tmp_path, toml, IMAGEBOT_STARTING_CREDITS="9", IMAGEBOT_USER_RATE="8/hour",
                  IMAGEBOT_PROVIDERS="openai, local")
    assert config.starting_credits == 9 and config.limits.user_rate == "8/hour"
    assert config.limits.max_count == 4 and config.provider_order == ("openai", "local")
    assert load(tmp_path, toml, IMAGEBOT_STARTING_CREDITS="  ").starting_credits == 7  # blank is unset


@pytest.mark.parametrize(("variable", "value", "accepts"), [
    ("IMAGEBOT_STARTING_CREDITS", "lots", "whole number from 0 to 1000000"),
    ("IMAGEBOT_STARTING_CREDITS", str(MAX_AMOUNT + 1), "whole number from 0 to 1000000"),
    ("IMAGEBOT_MAX_CONCURRENT", "0", "whole number from 1 to 100"),
    ("IMAGEBOT_MAX_COUNT", "11", "whole number from 1 to 10"),
    ("IMAGEBOT_LEASE_SECONDS", "soon", "number from 1 to 3600"),
    ("IMAGEBOT_CATALOGUE_REFRESH", "5", "number from 60"),
    ("IMAGEBOT_DEFAULT_SIZE", "huge", "size like 1024x1024"),
    ("IMAGEBOT_RATELIMIT_STORAGE", "mysql://x", "limits storage URI"),
    ("IMAGEBOT_PROVIDERS", "open ai", "provider names"),
    ("IMAGEBOT_SERVER_RATE", "lots", "rate above zero"),
])
def test_a_bad_environment_value_names_the_variable(tmp_path: Path, variable: str, value: str, accepts: str) -> None:
    message = refused(tmp_path, "", **{variable: value})
    assert message.startswith(variable) and accepts in message and value in message


def test_a_bad_file_value_is_refused_even_where_the_environment_overrides_it(tmp_path: Path) -> None:
    message = refused(tmp_path, 'starting_credits = "100"\n', IMAGEBOT_STARTING_CREDITS="100")
    assert "imagebot.toml: starting_credits (IMAGEBOT_STARTING_CREDITS)" in message


@pytest.mark.parametrize("rate", ["0/minute", "0 per hour", "5/0 minutes"])
def test_a_rate_of_zero_is_refused(tmp_path: Path, rate: str) -> None:
    assert refused(tmp_path, "", IMAGEBOT_USER_RATE=rate).startswith("IMAGEBOT_USER_RATE must be a rate above zero")
    message = refused(tmp_path, f'[limits]\nserver_rate = "{rate}"\n')
    assert "limits.server_rate (IMAGEBOT_SERVER_RATE) must be a rate above zero" in message


def test_rates_as_documented_are_accepted(tmp_path: Path) -> None:
    config = load(tmp_path, '[limits]\nserver_rate = "200 per hour"\n', IMAGEBOT_USER_RATE="10/2 minutes")
    assert (config.limits.user_rate, config.limits.server_rate) == ("10/2 minutes", "200 per hour")


# --- files and folders ---------------------------------------------------------------------------------


def test_imagebot_config_naming_a_folder_or_nothing(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="IMAGEBOT_CONFIG names the folder"):
        load_config(env={"IMAGEBOT_CONFIG": str(tmp_path)})
    with pytest.raises(ConfigError, match="IMAGEBOT_CONFIG: no such file"):
        load_config(env={"IMAGEBOT_CONFIG": str(tmp_path / "missing.toml")})
    (tmp_path / "bad.toml").write_text("starting_credits = = 1\n")
    with pytest.raises(ConfigError, match="bad.toml is not valid TOML"):
        load_config(env={"IMAGEBOT_CONFIG": str(tmp_path / "bad.toml")})


@pytest.mark.parametrize("url", ["{dir}", "sqlite:///{dir}"])
def test_imagebot_database_naming_a_folder(tmp_path: Path, url: str) -> None:
    folder = tmp_path / "db"
    folder.mkdir()
    message = refused(tmp_path, "", IMAGEBOT_DATABASE=url.format(dir=folder))
    assert message.startswith("IMAGEBOT_DATABASE names the folder") and "imagebot.sqlite3" in message
    message = refused(tmp_path, f"database = '{folder}'\n")
    assert message.startswith("imagebot.toml: database (IMAGEBOT_DATABASE) names the folder")


def test_imagebot_data_dir_naming_a_file(tmp_path: Path) -> None:
    a_file = tmp_path / "images.txt"
    a_file.write_text("not a folder")
    assert refused(tmp_path, "", IMAGEBOT_DATA_DIR=str(a_file)).startswith("IMAGEBOT_DATA_DIR names the file")
    assert load(tmp_path, "", IMAGEBOT_DATA_DIR=str(tmp_path / "new")).data_dir == tmp_path / "new"


# --- what a good file gives ----------------------------------------------------------------------------


def test_a_good_file_sets_every_value(tmp_path: Path) -> None:
    toml = """
database = "sqlite:///data/x.sqlite3"
data_dir = "./pictures"
starting_credits = 100
default_size = "512X512"
lease_seconds = 45
enhancer = "Google"
catalogue_refresh = 3600
instance = "old"                       # retired: ignored with a warning

[limits]
user_rate = "10/minute"
server_rate = "500/hour"
max_concurrent = 3
max_count = 4
storage = "redis://127.0.0.1:6379"

[pricing]
sizes = { "256x256" = 2, "1536x1024" = 20 }
large = 12
hd_multiplier = 3
enhance = 2
models = { "GPT-image-2" = 1.5 }

[pricing.qualities]
low = 0.25

[providers]
order = ["openai", "local"]

[providers.openai]
timeout = 90
models = ["gpt-image-2"]

[servers."discord:123"]
providers = ["local"]

[slack]
"""
    config = load(tmp_path, toml)
    assert config.database == "sqlite:///data/x.sqlite3" and config.data_dir == Path("./pictures")
    assert (config.starting_credits, config.default_size, config.lease_seconds) == (100, "512x512", 45.0)
    assert (config.enhancer, config.catalogue_refresh) == ("google", 3600.0)
    assert config.limits.max_count == 4 and config.limits.storage_uri == "redis://127.0.0.1:6379"
    assert config.pricing.per_size == {"256x256": 2, "512x512": 5, "1024x1024": 10, "1536x1024": 20}
    assert config.pricing.qualities == {"low": 0.25, "medium": 1.0, "high": 3.0, "max": 4.0}
    assert config.pricing.models == {"gpt-image-2": 1.5} and config.pricing.enhance == 2
    assert config.pricing.per_image("1024x1024", "hd", "gpt-image-2") == 45
    assert config.provider_order == ("openai", "local")
    assert config.provider_settings == {"openai": {"timeout": 90, "models": ["gpt-image-2"]}}
    assert config.providers_for("discord:123") == ("local",) and config.providers_for("slack:T1") == ("openai", "local")
    assert config.extra == {"slack": {}}


def test_no_file_gives_the_documented_defaults(tmp_path: Path) -> None:
    config = load_config(env={}, path=None) if not Path("imagebot.toml").exists() else load(tmp_path)
    assert config.starting_credits == 50 and config.limits.user_rate == "5/minute"
    assert config.limits.server_rate == "200/hour" and config.default_size == "1024x1024"
    assert config.pricing.per_image("1024x1024", "standard") == 10 and config.pricing.per_image("1024x1024", "hd") == 20


def test_every_toml_example_in_the_readme_loads(tmp_path: Path) -> None:
    readme = (ROOT / "README.md").read_text(encoding="utf-8")
    blocks = re.findall(r"```toml\n(.*?)```", readme, flags=re.S)
    assert blocks
    for block in blocks:
        load(tmp_path, block)


# --- the real command ----------------------------------------------------------------------------------


def test_imagebot_run_stops_at_start_naming_the_key(tmp_path: Path) -> None:
    (tmp_path / "imagebot.toml").write_text('starting_credtis = 100\n[limits]\nuser_rate = "5/minute"\n')
    env = {k: v for k, v in os.environ.items() if not k.startswith(("IMAGEBOT_", "SLACK_", "DISCORD_", "OPENAI_",
                                                                    "GOOGLE_", "GEMINI_", "XAI_"))}
    env.update(PYTHONPATH=str(ROOT), IMAGEBOT_DATABASE=str(tmp_path / "db.sqlite3"),
               IMAGEBOT_DATA_DIR=str(tmp_path / "data"))
    result = subprocess.run([sys.executable, "-m", "bot", "run"], cwd=tmp_path, env=env, stdin=subprocess.DEVNULL,
                            capture_output=True, text=True, timeout=60)
    assert result.returncode == 2
    assert "configuration error" in result.stderr and "starting_credtis" in result.stderr
    assert "did you mean starting_credits?" in result.stderr and "Traceback" not in result.stderr
    assert not (tmp_path / "db.sqlite3").exists()  # stopped before anything was opened

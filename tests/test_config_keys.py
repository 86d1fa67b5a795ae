"""The ``[providers.NAME]`` keys declared in ``providers/settings.py`` are exactly the keys the provider
builders read: a key read but not declared would be refused at start, a key declared but never read would
be accepted and silently ignored. Each real builder runs on tables that record every key looked up."""

from __future__ import annotations

import dataclasses
from pathlib import Path
from typing import Any

import pytest

from bot.config import Config, load_config
from providers.compat import build_compat, build_xai
from providers.google_images import build_google
from providers.google_text import build_google_text
from providers.openai_images import build_openai
from providers.openai_text import build_openai_text
from providers.settings import COMPAT_KEYS, COMPAT_MODEL_KEYS, PROVIDER_KEYS


class Recording(dict[str, Any]):
    """A table that remembers which keys were asked for."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.asked: set[str] = set()

    def get(self, key: str, default: Any = None) -> Any:  # type: ignore[override]
        self.asked.add(key)
        return super().get(key, default)

    def __getitem__(self, key: str) -> Any:
        self.asked.add(key)
        return super().__getitem__(key)

    def __contains__(self, key: object) -> bool:
        self.asked.add(str(key))
        return super().__contains__(key)


#: Keys but no base URLs in the environment, so each builder looks for ``base_url`` in its table (nothing connects).
ENV = {"OPENAI_API_KEY": "sk-test-0123456789abcdef", "GOOGLE_API_KEY": "AIzaSyTEST0123456789",
       "XAI_API_KEY": "xai-test-0123456789", "MYSD_KEY": "k"}


def _config(tmp_path: Path, tables: dict[str, Recording]) -> Config:
    (tmp_path / "imagebot.toml").write_text("")
    config = load_config(env={**ENV, "IMAGEBOT_DATABASE": str(tmp_path / "db.sqlite3")},
                         path=tmp_path / "imagebot.toml")
    return dataclasses.replace(config, provider_settings=tables)


async def test_each_builder_reads_exactly_the_declared_keys(tmp_path: Path) -> None:
    spec = Recording(name="sd15")
    tables = {name: Recording() for name in ("openai", "google", "xai", "local")}
    tables["mysd"] = Recording(base_url="http://127.0.0.1:9/v1", key_env="MYSD_KEY", models=["sdxl", spec])
    config = _config(tmp_path, tables)
    built: list[Any] = [*build_openai(config), build_openai_text(config), *build_google(config),
                        build_google_text(config), build_xai(config), *build_compat(config)]
    try:
        assert all(p is not None for p in built)
        for name, declared in PROVIDER_KEYS.items():
            assert tables[name].asked <= set(declared), f"undeclared keys read from [providers.{name}]"
            assert set(declared) <= tables[name].asked, f"declared but never read in [providers.{name}]"
        assert tables["mysd"].asked == set(COMPAT_KEYS)
        assert spec.asked == set(COMPAT_MODEL_KEYS)
    finally:
        for provider in built:
            if provider is not None:
                await provider.aclose()


@pytest.mark.parametrize("name", ["openai", "google", "xai", "mysd"])
def test_a_declared_key_is_accepted_by_the_file(tmp_path: Path, name: str) -> None:
    values = {"number": "1", "whole": "1", "text": '"x"', "names": '["x"]', "sizes": '["1024x1024"]',
              "flag": "true", "models": '["x"]'}
    from providers.settings import keys_for

    lines = [f"{key} = {values[kind]}" for key, kind in keys_for(name).items()]
    (tmp_path / "imagebot.toml").write_text(f"[providers.{name}]\n" + "\n".join(lines) + "\n")
    config = load_config(env={}, path=tmp_path / "imagebot.toml")
    assert set(config.provider_settings[name]) == set(keys_for(name))

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest


@pytest.fixture(autouse=True)
def _own_directory(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Each test runs in its own directory, so no stray imagebot.toml or data dir is picked up."""
    monkeypatch.chdir(tmp_path)


# -- PostgreSQL: the real server, one throwaway schema per test ------------------------------------------

#: The test server (trust auth); override with IMAGEBOT_TEST_POSTGRES.
POSTGRES_TEST_URL = "postgresql://postgres@127.0.0.1:5432/test"


@pytest.fixture(scope="session")
def postgres_server() -> str:
    """The URL of the test PostgreSQL server, checked once per run.

    Missing server: a failure when CI=true (CI must never pass by skipping), a skip with the reason
    elsewhere."""
    import os

    url = os.environ.get("IMAGEBOT_TEST_POSTGRES", POSTGRES_TEST_URL)
    try:
        import psycopg

        with psycopg.connect(url, connect_timeout=5, autocommit=True) as conn:
            conn.execute("SELECT 1")
    except Exception as exc:  # noqa: BLE001 - any reason the server cannot be used is reported
        detail = " ".join(str(exc).split())
        reason = f"PostgreSQL test server not usable at {url}: {type(exc).__name__}: {detail}"
        if os.environ.get("CI", "").lower() == "true":
            pytest.fail(reason + " (CI=true: a missing server is a failure; .ci/run starts it)")
        pytest.skip(reason)
    return url


@pytest.fixture
def postgres_url(postgres_server: str) -> Iterator[str]:
    """A ledger URL on its own new schema ``imagebot_test_<random>``, dropped afterwards, so no run
    or test ever sees another's rows. Close every ledger on it before the test ends."""
    import uuid

    import psycopg

    schema = f"imagebot_test_{uuid.uuid4().hex[:12]}"
    with psycopg.connect(postgres_server, autocommit=True) as conn:
        conn.execute(f'CREATE SCHEMA "{schema}"')
    sep = "&" if "?" in postgres_server else "?"
    try:
        yield f"{postgres_server}{sep}schema={schema}"
    finally:
        with psycopg.connect(postgres_server, autocommit=True) as conn:
            conn.execute(f'DROP SCHEMA IF EXISTS "{schema}" CASCADE')

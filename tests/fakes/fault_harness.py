"""The parts of the fault and crash suite (``tests/test_faults.py``) that are not checks: an OpenAI fake
that fails a seeded fifth of its calls, a read of the whole database (SQLite or PostgreSQL), and what
each command's user saw at the Slack and Discord fakes.

The bots themselves are started by ``tests.fakes.scale_harness`` (real ``python -m bot run`` processes).
"""

from __future__ import annotations

import random
import sqlite3
import urllib.parse
from collections import Counter
from dataclasses import dataclass, field
from typing import Any

import psycopg
from aiohttp import web

from .discord_api import FakeDiscord
from .scale_harness import POSTGRES, SlowOpenAI, schema_of
from .server import Seen
from .slack_api import FakeSlack

#: Failures of an image call, one name each: the fake's own behaviours plus "servererror" (a bare 500).
IMAGE_FAULTS = ("servererror", "rate", "slow", "policy", "garbage", "empty", "notimage", "cutstream")
#: Failures of a text call (/enhance).
TEXT_FAULTS = ("servererror", "rate", "slow", "policy", "garbage", "empty", "refusal")


def fault_script(seed: int, calls: int, rate: float, faults: tuple[str, ...]) -> list[str]:
    """``calls`` behaviours, each a failure (uniform over ``faults``) with probability ``rate``, else ok."""
    rng = random.Random(seed)
    return [rng.choice(faults) if rng.random() < rate else "ok" for _ in range(calls)]


class FaultyOpenAI(SlowOpenAI):
    """The slow OpenAI fake, answering each call per its queued script (``FakeServer.queue``), with one more
    behaviour (``servererror``: HTTP 500 with OpenAI's error body); ``injected`` counts what was served."""

    def __init__(self, delay: float = 0.0) -> None:
        super().__init__(delay)
        #: (route, behaviour, streamed) of every call that met a failure.
        self.injected: list[tuple[str, str, bool]] = []

    async def _scripted(self, route: str, seen: Seen) -> tuple[web.Response | None, str]:
        behaviour = self.script[route][0] if self.script[route] else "ok"
        if behaviour != "ok":
            streamed = isinstance(seen.body, dict) and bool(seen.body.get("stream"))
            self.injected.append((route, behaviour, streamed))
        if behaviour == "servererror":
            self.script[route].pop(0)
            self.seen.append(seen)
            body = {"error": {"message": "The server had an error while processing your request.",
                              "type": "server_error", "param": None, "code": None}}
            return web.json_response(body, status=500), behaviour
        return await super()._scripted(route, seen)

    def injected_counts(self) -> Counter[str]:
        """Failures served by kind; a cut stream counts only when the call streamed (else it was an ok)."""
        return Counter(f"{route}:{b}" for route, b, streamed in self.injected if b != "cutstream" or streamed)


# -- the database, read whole -----------------------------------------------------------------------------

def with_password(url: str, password: str) -> str:
    """The URL with a password for its user (trust auth ignores it; the bot must still never show it)."""
    parts = urllib.parse.urlsplit(url)
    if "@" not in parts.netloc or ":" in parts.netloc.split("@", 1)[0]:
        return url
    user, host = parts.netloc.split("@", 1)
    return urllib.parse.urlunsplit(parts._replace(netloc=f"{user}:{password}@{host}"))


class Database:
    """Reads of the bots' database (a SQLite file, or a PostgreSQL schema): every table, or one query."""

    def __init__(self, url: str) -> None:
        self.url = url
        self.postgres = url.startswith("postgres")

    def rows(self, sql: str, params: tuple[Any, ...] = ()) -> list[tuple[Any, ...]]:
        if self.postgres:
            with psycopg.connect(POSTGRES, autocommit=True) as conn:
                conn.execute(f'SET search_path TO "{schema_of(self.url)}"')
                return list(conn.execute(sql.replace("?", "%s"), params).fetchall())  # type: ignore[arg-type]
        lite = sqlite3.connect(f"file:{self.url}?mode=ro", uri=True, timeout=30)
        try:
            return list(lite.execute(sql, params).fetchall())
        finally:
            lite.close()

    def tables(self) -> list[str]:
        if self.postgres:
            return [r[0] for r in self.rows(
                "SELECT table_name FROM information_schema.tables WHERE table_schema = ?", (schema_of(self.url),))]
        return [r[0] for r in self.rows("SELECT name FROM sqlite_master WHERE type = 'table'")]

    def dump(self) -> str:
        """Every row of every table as text (to look for secrets in)."""
        out = []
        for table in self.tables():
            for row in self.rows(f'SELECT * FROM "{table}"'):
                out.append(f"{table}: {row!r}")
        return "\n".join(out)


# -- what each command's user saw -------------------------------------------------------------------------

#: Notes that tell progress, not an outcome (the result, or why there is none, follows).
PROGRESS = ("Queued: ", "Waiting in line", "Drawing…", "Queuing ", "Generating ", "Enhancing ")


def is_progress(text: str) -> bool:
    return text.startswith(PROGRESS) or " failed; trying " in text


@dataclass
class Outcome:
    """What reached one command's user: deliveries of images (files each), an /enhance result, notes."""

    images: list[int] = field(default_factory=list)
    enhanced: int = 0
    notes: list[str] = field(default_factory=list)

    @property
    def outcomes(self) -> int:
        """Visible outcomes: each image post, each enhanced-prompt answer, each note."""
        return len(self.images) + self.enhanced + len(self.notes)


def slack_seen(fake: FakeSlack, key: str, prompt: str | None, ack: Any) -> Outcome:
    """Replies through the command's response_url (progress left out), uploads naming its prompt, and the
    ack itself when it is an answer (a refusal) rather than "Generating…"."""
    got = Outcome()
    if isinstance(ack, dict) and ack.get("text") and not is_progress(str(ack["text"])):
        got.notes.append(str(ack["text"]))
    for reply in fake.responses.get(key, []):
        text = str(reply.get("text", ""))
        if any(str(b.get("block_id", "")).startswith("imagebot_enh_") for b in reply.get("blocks") or []):
            got.enhanced += 1
        elif not is_progress(text):
            got.notes.append(text)
    if prompt is not None:
        for upload in fake.uploads:
            if upload.initial_comment.split("asked for: ", 1)[-1].split("\n", 1)[0] == prompt:
                got.images.append(len(upload.files))
    return got


def discord_seen(fake: FakeDiscord, token: str, ack: Any) -> Outcome:
    """The deferred answer (``@original``) edited with files (one message, however often it is edited), with
    an embed and no files (/enhance), or with text (a note); follow-ups; an answer in the ack itself."""
    got = Outcome()
    if isinstance(ack, dict) and ack.get("type") == 4:
        got.notes.append(str((ack.get("data") or {}).get("content", "")))
    calls = [c for c in fake.by_token.get(token, []) if c.status < 300 and c.method in ("PATCH", "POST")]
    edits = [c for c in calls if c.path.endswith("/messages/@original")]
    if any(c.files for c in edits):
        got.images.append(max(len(c.files) for c in edits if c.files))
    for call in edits:
        if call.files:
            continue
        if call.embeds:
            got.enhanced = 1  # an edit sent again replaces the same message
        elif call.content:
            got.notes.append(str(call.content))
    for call in calls:
        if call.method == "POST" and "/webhooks/" in call.path and not call.path.endswith("/callback"):
            if call.files:
                got.images.append(len(call.files))
            else:
                got.notes.append(str(call.content or call.embeds))
    return got

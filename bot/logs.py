"""Logging for ``imagebot``: plain text (the default) or one JSON object a line, with secrets scrubbed.

    IMAGEBOT_LOG_FORMAT=text   2026-05-01 12:00:00,123 INFO imagebot.generations: generation ... completed ...
    IMAGEBOT_LOG_FORMAT=json   {"time": "2026-05-01T12:00:00.123Z", "level": "INFO", "logger": "...",
                                "message": "...", "request_id": "...", "credits": 20, ...}

In JSON every record carries the structured fields it was logged with (``extra=``) as keys, so a log
pipeline can count generations by provider or outcome without parsing the message. The one line per
generation is written by ``bot.billing`` on the ``imagebot.generations`` logger.

Both formats scrub configured secrets (API keys, tokens, signing secrets, passwords in URLs) from the
finished line: a library that puts a key in an exception's text cannot get it into the log.
"""

from __future__ import annotations

import datetime as dt
import json
import logging
import os
import sys
from collections.abc import Iterable, Mapping
from typing import Any
from urllib.parse import unquote, urlsplit

from .errors import ConfigError

FORMATS = ("text", "json")
TEXT_FORMAT = "%(asctime)s %(levelname)s %(name)s: %(message)s"
#: Environment keys whose values are secrets (matched on the key's name).
SECRET_MARKERS = ("KEY", "TOKEN", "SECRET", "PASSWORD", "PASSWD", "CREDENTIAL")
#: Not secrets although their names say KEY: Discord's public key verifies, it signs nothing.
NOT_SECRET = frozenset({"DISCORD_PUBLIC_KEY"})
#: Environment keys that hold URLs which may carry a password.
URL_KEYS = ("IMAGEBOT_DATABASE", "IMAGEBOT_RATELIMIT_STORAGE", "DATABASE_URL", "REDIS_URL")
#: Values shorter than this are not scrubbed (a 1-character "secret" would garble every line).
MIN_SECRET = 6

#: Attributes every ``LogRecord`` has; anything else on a record came from ``extra=`` and is a field.
_STANDARD = frozenset(vars(logging.LogRecord("x", logging.INFO, "x", 0, "x", None, None))) | {"message", "asctime"}


def secrets_in(env: Mapping[str, str]) -> tuple[str, ...]:
    """The secret values of an environment, longest first (so a key containing another is scrubbed whole)."""
    found: set[str] = set()
    for key, value in env.items():
        if not value:
            continue
        name = key.upper()
        if name not in NOT_SECRET and any(marker in name for marker in SECRET_MARKERS):
            found.add(value.strip())
        if name in URL_KEYS or "://" in value:
            found.update(_url_secrets(value))
    return tuple(sorted((s for s in found if len(s) >= MIN_SECRET), key=len, reverse=True))


def _url_secrets(value: str) -> set[str]:
    try:
        password = urlsplit(value.strip()).password
    except ValueError:
        return set()
    return {password, unquote(password)} if password else set()


class Redactor:
    """Replaces each secret in a finished line with ``***``."""

    def __init__(self, secrets: Iterable[str] = ()) -> None:
        self.secrets = tuple(secrets)

    def __call__(self, text: str) -> str:
        for secret in self.secrets:
            if secret in text:
                text = text.replace(secret, "***")
        return text


class TextFormatter(logging.Formatter):
    """The classic one-line text format, scrubbed."""

    def __init__(self, redact: Redactor | None = None) -> None:
        super().__init__(TEXT_FORMAT)
        self.redact = redact or Redactor()

    def format(self, record: logging.LogRecord) -> str:
        return self.redact(super().format(record))


class JsonFormatter(logging.Formatter):
    """Each record one JSON object: time (UTC, ISO 8601), level, logger, message, the record's
    structured fields, and ``exc`` with the traceback when there is one; scrubbed like the text."""

    def __init__(self, redact: Redactor | None = None) -> None:
        super().__init__()
        self.redact = redact or Redactor()

    def format(self, record: logging.LogRecord) -> str:
        stamp = dt.datetime.fromtimestamp(record.created, dt.UTC)
        data: dict[str, Any] = {
            "time": stamp.strftime("%Y-%m-%dT%H:%M:%S.") + f"{stamp.microsecond // 1000:03d}Z",
            "level": record.levelname,
            "logger": record.name,
            "message": record.getMessage(),
        }
        for key, value in vars(record).items():
            if key not in _STANDARD and not key.startswith("_") and key not in data:
                data[key] = value
        if record.exc_info:
            data["exc"] = self.formatException(record.exc_info)
        elif record.exc_text:
            data["exc"] = record.exc_text
        if record.stack_info:
            data["stack"] = self.formatStack(record.stack_info)
        return self.redact(json.dumps(data, default=str, ensure_ascii=False))


def log_format(env: Mapping[str, str]) -> str:
    """``IMAGEBOT_LOG_FORMAT`` (``text`` or ``json``, default ``text``), or a ConfigError naming the key."""
    value = str(env.get("IMAGEBOT_LOG_FORMAT", "") or "").strip().lower() or "text"
    if value not in FORMATS:
        raise ConfigError(f"IMAGEBOT_LOG_FORMAT must be 'text' or 'json', not {value!r}")
    return value


def setup_logging(fmt: str | None = None, level: str = "INFO", *,
                  env: Mapping[str, str] | None = None, stream: Any = None) -> logging.Handler:
    """Configure the root logger once for the process: one handler on stderr in ``fmt`` (``None``:
    read ``IMAGEBOT_LOG_FORMAT``), scrubbing the secrets of ``env`` (default ``os.environ``).
    Replaces any handler a previous call installed; returns the handler (tests read through it)."""
    environ: Mapping[str, str] = os.environ if env is None else env
    chosen = log_format({"IMAGEBOT_LOG_FORMAT": fmt} if fmt is not None else environ)
    redact = Redactor(secrets_in(environ))
    handler = logging.StreamHandler(stream if stream is not None else sys.stderr)
    handler.setFormatter(JsonFormatter(redact) if chosen == "json" else TextFormatter(redact))
    root = logging.getLogger()
    for old in list(root.handlers):
        if getattr(old, "_imagebot", False):
            root.removeHandler(old)
    handler._imagebot = True  # type: ignore[attr-defined]  # noqa: SLF001 - marks our own handler
    root.addHandler(handler)
    root.setLevel(level.upper())
    return handler

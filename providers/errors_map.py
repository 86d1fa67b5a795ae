"""Vendor SDK errors -> ``bot.errors`` at the provider's edge.

The messages made here are ours, short and safe to show: never the vendor's text (OpenAI's 401 text
quotes part of the key), never a key. The vendor's text goes to the log only, with every configured
secret and anything shaped like an API key masked, so an operator can still see why a call failed.
"""

from __future__ import annotations

import asyncio
import logging
import re
from collections.abc import Iterable, Mapping
from typing import Any

import aiohttp

from bot.errors import (
    ContentRejected,
    ProviderAuthError,
    ProviderBadResponse,
    ProviderError,
    ProviderRateLimited,
    ProviderTimeout,
    ProviderUnavailable,
    ProviderUnsupported,
)

log = logging.getLogger(__name__)

#: Things that look like API keys of the vendors we talk to (OpenAI, xAI, Google), masked in logs.
KEYLIKE = re.compile(r"(sk-[A-Za-z0-9_\-*]{6,}|xai-[A-Za-z0-9_\-*]{6,}|AIza[A-Za-z0-9_\-]{10,}|Bearer\s+\S+)")
OPENAI_POLICY_CODES = {"content_policy_violation", "moderation_blocked", "image_generation_user_error"}
GOOGLE_AUTH_REASONS = ("API_KEY_INVALID", "API key not valid", "API_KEY_SERVICE_BLOCKED", "API key expired")
POLICY_TEXT = "The image service refused this prompt under its content policy."


def redact(text: object, secrets: Iterable[str] = ()) -> str:
    """``text`` with every secret and key-shaped token replaced by ``***``, cut to 300 characters."""
    out = str(text)
    for secret in secrets:
        if secret and len(secret) >= 4:
            out = out.replace(secret, "***")
    return KEYLIKE.sub("***", out)[:300]


def retry_after(headers: Mapping[str, str] | None) -> float | None:
    """Seconds from ``retry-after-ms`` or ``retry-after`` (seconds form only), if the vendor sent one."""
    if not headers:
        return None
    for name, scale in (("retry-after-ms", 0.001), ("retry-after", 1.0)):
        value = headers.get(name)
        if value:
            try:
                return max(0.0, float(value) * scale)
            except ValueError:
                continue
    return None


def auth_message(provider: str, key_env: str) -> str:
    return (f"{provider} refused the configured credentials ({key_env}): the key is wrong, revoked or lacks "
            "access to this model. An operator must fix the setting.")


def rate_limited(provider: str, wait: float | None) -> ProviderRateLimited:
    later = f"; try again in {max(1, round(wait))} s" if wait else ""
    return ProviderRateLimited(f"{provider} is busy (rate limited){later}.", provider=provider, retry_after=wait)


def _log(provider: str, kind: str, detail: object, secrets: Iterable[str]) -> None:
    log.warning("provider %s: %s: %s", provider, kind, redact(detail, secrets))


def transport_error(exc: BaseException, provider: str) -> ProviderError | None:
    """Timeouts and connection failures that any HTTP stack raises (aiohttp, httpx2, plain OSError)."""
    name = type(exc).__name__
    if isinstance(exc, TimeoutError | asyncio.TimeoutError | aiohttp.ServerTimeoutError) or "Timeout" in name:
        log.warning("provider %s: timed out (%s)", provider, name)
        return ProviderTimeout(f"{provider} did not answer in time.", provider=provider)
    if isinstance(exc, aiohttp.ClientError | OSError) or name in ("ConnectError", "RemoteProtocolError",
                                                                    "ReadError", "NetworkError"):
        log.warning("provider %s: connection failed (%s)", provider, name)
        return ProviderUnavailable(f"{provider} could not be reached.", provider=provider)
    return None


def from_openai(exc: BaseException, *, provider: str, key_env: str, secrets: Iterable[str] = (),
                model: str = "") -> ProviderError:
    """Map an ``openai`` SDK exception (also used for OpenAI-compatible services).

    404 ``model_not_found`` is ``ModelRetired`` (the model leaves the rotation; the request fails over
    uncharged); an error event inside a stream (``APIError`` without a status) is a failed attempt."""
    import openai

    from bot.errors import ModelRetired

    secrets = list(secrets)
    if isinstance(exc, ProviderError):
        return exc
    if isinstance(exc, openai.APITimeoutError):
        log.warning("provider %s: timed out", provider)
        return ProviderTimeout(f"{provider} did not answer in time.", provider=provider)
    if isinstance(exc, openai.APIConnectionError):
        log.warning("provider %s: connection failed (%s)", provider, type(exc.__cause__).__name__)
        return ProviderUnavailable(f"{provider} could not be reached.", provider=provider)
    if isinstance(exc, openai.APIResponseValidationError):
        _log(provider, "malformed response", exc.message, secrets)
        return ProviderBadResponse(f"{provider} sent an answer the bot could not read.", provider=provider)
    if isinstance(exc, openai.APIStatusError):
        status, code = exc.status_code, (exc.code or "")
        _log(provider, f"HTTP {status} {code or exc.type or ''}".strip(), exc.message, secrets)
        if isinstance(exc, openai.AuthenticationError | openai.PermissionDeniedError):
            return ProviderAuthError(auth_message(provider, key_env), provider=provider)
        if isinstance(exc, openai.RateLimitError):
            if code in ("insufficient_quota", "billing_hard_limit_reached"):
                return ProviderUnavailable(f"{provider} is out of quota for this account; an operator must "
                                           "check its billing.", provider=provider)
            return rate_limited(provider, retry_after(exc.response.headers))
        if status == 400 and (code in OPENAI_POLICY_CODES or "safety system" in str(exc.message).lower()):
            return ContentRejected(POLICY_TEXT, provider=provider)
        if isinstance(exc, openai.NotFoundError):
            if code == "model_not_found" or (model and model in str(exc.message)):
                what = f"the model {model}" if model else "the requested model"
                return ModelRetired(f"{provider} no longer serves {what}.", provider=provider, model=model)
            return ProviderUnavailable(f"{provider} does not offer the requested model.", provider=provider)
        if status == 408:
            return ProviderTimeout(f"{provider} did not answer in time.", provider=provider)
        if status >= 500:
            return ProviderUnavailable(f"{provider} is unavailable (HTTP {status}).", provider=provider)
        return ProviderBadResponse(f"{provider} refused the request (HTTP {status}).", provider=provider)
    if isinstance(exc, openai.ContentFilterFinishReasonError):
        return ContentRejected(POLICY_TEXT, provider=provider)
    if isinstance(exc, openai.APIError):  # an error event in a stream: no HTTP status to go by
        body = exc.body if isinstance(exc.body, dict) else {}
        _log(provider, f"stream error {body.get('code') or ''}".strip(), exc.message, secrets)
        if body.get("code") in OPENAI_POLICY_CODES:
            return ContentRejected(POLICY_TEXT, provider=provider)
        return ProviderUnavailable(f"{provider} failed while streaming the image.", provider=provider)
    mapped = transport_error(exc, provider)
    if mapped is not None:
        return mapped
    _log(provider, f"unexpected {type(exc).__name__}", exc, secrets)
    return ProviderBadResponse(f"{provider} failed unexpectedly.", provider=provider)


def _google_retry_after(details: Any) -> float | None:
    """``RetryInfo.retryDelay`` ("7s") from a Google error body, when present."""
    try:
        for item in (details or {}).get("error", {}).get("details", []) or []:
            delay = item.get("retryDelay") if isinstance(item, dict) else None
            if isinstance(delay, str) and delay.endswith("s"):
                return max(0.0, float(delay[:-1]))
    except (AttributeError, ValueError, TypeError):
        return None
    return None


#: Google's words for a model it no longer serves (a 404 NOT_FOUND always is one on a model's path).
GOOGLE_RETIRED_TEXT = ("is not found for api version", "no longer available", "has been shut down",
                       "has been discontinued", "model is deprecated", "was deprecated")


def from_google(exc: BaseException, *, provider: str, key_env: str, secrets: Iterable[str] = (),
                model: str = "") -> ProviderError:
    """Map a ``google-genai`` SDK exception (API errors, transport errors, SDK refusals). ``model`` is
    the model the call named: a 404 (or Google's "no longer available") makes it ``ModelRetired``."""
    from google.genai import errors as gerrors

    from bot.errors import ModelRetired

    secrets = list(secrets)
    if isinstance(exc, ProviderError):
        return exc
    if isinstance(exc, gerrors.APIError):
        status = int(exc.code or 0)
        text = f"{exc.status or ''} {exc.message or ''}"
        _log(provider, f"HTTP {status}", text, secrets)
        headers = getattr(getattr(exc, "response", None), "headers", None)
        if status in (401, 403) or (status == 400 and any(r in str(exc.details) for r in GOOGLE_AUTH_REASONS)):
            return ProviderAuthError(auth_message(provider, key_env), provider=provider)
        if status == 429:
            wait = _google_retry_after(exc.details) or retry_after(dict(headers) if headers else None)
            return rate_limited(provider, wait)
        lowered = text.lower()
        if status == 404 or (status in (400, 410) and any(w in lowered for w in GOOGLE_RETIRED_TEXT)):
            what = f"the model {model}" if model else "the requested model"
            return ModelRetired(f"{provider} no longer serves {what}.", provider=provider, model=model)
        if status == 400 and any(w in lowered for w in ("safety", "blocked", "prohibited", "responsible ai")):
            return ContentRejected(POLICY_TEXT, provider=provider)
        if status in (408, 504):
            return ProviderTimeout(f"{provider} did not answer in time.", provider=provider)
        if status >= 500:
            return ProviderUnavailable(f"{provider} is unavailable (HTTP {status}).", provider=provider)
        return ProviderBadResponse(f"{provider} refused the request (HTTP {status}).", provider=provider)
    try:
        from google.auth import exceptions as auth_exceptions
    except ImportError:  # pragma: no cover - google-auth comes with google-genai
        auth_exceptions = None  # type: ignore[assignment]
    if auth_exceptions is not None and isinstance(exc, auth_exceptions.GoogleAuthError):
        _log(provider, "credentials", type(exc).__name__, secrets)
        return ProviderAuthError(auth_message(provider, key_env), provider=provider)
    mapped = transport_error(exc, provider)
    if mapped is not None:
        return mapped
    if isinstance(exc, ValueError) and "only supported in" in str(exc):
        _log(provider, "SDK refused the call", exc, secrets)
        return ProviderUnsupported(f"{provider} cannot do this in its current mode (Gemini API or Vertex AI).",
                                   provider=provider)
    _log(provider, f"unexpected {type(exc).__name__}", exc, secrets)
    return ProviderBadResponse(f"{provider} sent an answer the bot could not read.", provider=provider)

"""Slack Web API errors: what the operator must do (logged), and what the user is told (plainly).

``ratelimited`` never gets here unless Slack kept refusing: the client's retry handler already waited
for each Retry-After. Nothing here prints a token: Slack's error bodies do not contain one.
"""

from __future__ import annotations

import logging

from slack_sdk.errors import SlackApiError

log = logging.getLogger(__name__)

#: The bot cannot post in this conversation; a DM to the user may still work.
CHANNEL_ERRORS = frozenset({
    "not_in_channel", "channel_not_found", "is_archived", "restricted_action", "cannot_dm_bot",
    "messages_tab_disabled", "not_allowed_token_type", "team_access_not_granted",
})
AUTH_ERRORS = frozenset({"invalid_auth", "not_authed", "token_revoked", "token_expired", "account_inactive"})

AUTH_FIX = ("SLACK_BOT_TOKEN was refused by Slack ({code}). Copy the Bot User OAuth Token (xoxb-...) from the "
            "app's OAuth & Permissions page (reinstall the app if it was removed), set SLACK_BOT_TOKEN and restart.")
SCOPE_FIX = ("The Slack app lacks the scope {needed} for {method}. Add it under OAuth & Permissions > Bot Token "
             "Scopes (bot/slack_app/manifest.json lists every scope the bot needs), reinstall the app to the "
             "workspace, and restart the bot if the token changed.")


def error_code(exc: BaseException) -> str:
    """Slack's error code (``not_in_channel``...), or a short name for transport failures."""
    if isinstance(exc, SlackApiError):
        try:
            return str(exc.response.get("error") or "unknown_error")
        except Exception:  # noqa: BLE001 - a malformed response still needs a name
            return "unknown_error"
    return "connection_error"


def report(exc: BaseException, method: str = "") -> str:
    """Log the error for the operator (with the fix when there is one); return the user's sentence."""
    code = error_code(exc)
    if code in AUTH_ERRORS:
        log.error(AUTH_FIX.format(code=code))
        return "The bot's Slack connection is misconfigured, so it could not do that. The operator has been told how to fix it."
    if code == "missing_scope":
        needed = ""
        if isinstance(exc, SlackApiError):
            needed = str(exc.response.get("needed") or "")
        log.error(SCOPE_FIX.format(needed=needed or "(see Slack's answer)", method=method or "a Web API call"))
        return ("The bot's Slack app is missing a permission"
                f"{f' ({needed})' if needed else ''}, so it could not do that. A workspace admin needs to reinstall it.")
    if code == "ratelimited":
        log.warning("Slack kept rate-limiting %s after waiting for Retry-After", method or "a call")
        return "Slack is rate-limiting the bot right now. Try again in a minute."
    if code in CHANNEL_ERRORS:
        log.info("Slack refused %s: %s", method or "a call", code)
        return f"I can't post in this conversation ({code}). Invite me with /invite, or use me in a channel I'm in."
    if isinstance(exc, SlackApiError):
        log.warning("Slack refused %s: %s", method or "a call", code)
        return f"Slack refused the request ({code})."
    log.warning("could not reach Slack for %s: %s", method or "a call", type(exc).__name__)
    return "The bot could not reach Slack. Try again in a minute."

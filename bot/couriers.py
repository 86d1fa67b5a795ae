"""Delivery from any process: a job's outcome reaches its user from whichever worker finished it.

A job row (``storage.ledger.JobRow``) carries an *address*: a JSON object the adapter that took the
command wrote, naming where the outcome goes. A worker that did not take the command (another
process, or this one after a restart) hands the outcome to the ``Courier`` of the address's platform,
which uses only the address and the bot's own credentials (bot tokens from the environment), never an
object of the process that took the command.

Addresses (every value a string unless said; unknown keys are ignored):

    discord: platform="discord", application_id, token (the interaction token: a credential, valid
             15 minutes; the job's ``deliver_by`` says until when), channel_id, user_id, guild_id ("" in
             a DM), ephemeral (bool: the command was answered privately), message ("@original": the
             deferred response to replace, or "" to post a follow-up); optional: display_name, avatar
             (for the embed) and upload_limit (bytes), so no lookup is needed
    slack:   platform="slack", team_id, channel_id, user_id, response_url (a credential, valid 30
             minutes and 5 uses), thread_ts ("" when none)

Fallbacks, in order, for ``deliver``:
    discord: while ``deliver_by`` has not passed, the interaction webhook (edit ``@original`` with the
             result); then the channel with the bot token (never for a private command: it goes by DM);
             then a DM to the user.
    slack:   the channel with the bot token; then a DM (conversations.open) to the user.
``tell`` (a note: an error, a refund) goes privately where it can: discord edits the deferred
``@original`` while the token lives (else the "thinking..." message would hang forever), else an
ephemeral follow-up, else a DM; slack the response_url while valid (ephemeral), else
``chat.postEphemeral`` in the channel, else a DM.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Mapping
from typing import Any, Protocol

from .models import DescribeResult, EnhanceResult, ImagineResult

#: Awaited by a courier once the result is visible (see ``Courier.deliver``).
Posted = Callable[[], Awaitable[object]]


class Undeliverable(Exception):
    """Every fallback refused the result (the caller refunds it and tries ``tell``). Carries no secret."""


class Courier(Protocol):
    """One platform's delivery by address. Implementations: ``bot.discord_app.courier``, ``bot.slack_app.courier``."""

    platform: str

    async def deliver(self, address: Mapping[str, Any], deliver_by: float,
                      result: ImagineResult | EnhanceResult | DescribeResult, *, posted: Posted | None = None,
                      ) -> None:
        """Post the result with its buttons (the same embed/blocks and custom ids as the in-process
        adapter, so any process handles the buttons). Raises ``Undeliverable`` when every fallback refused.

        ``posted`` is awaited the moment the result itself is visible to the user (before any follow-up:
        the buttons' own message, a note saying where it went), so the worker marks the job done then: a
        worker killed after that point leaves nothing to post again."""
        ...

    async def tell(self, address: Mapping[str, Any], deliver_by: float, text: str) -> bool:
        """A private note to the asker; False when it reached nobody. Never raises."""
        ...

    async def aclose(self) -> None: ...

"""Getting images to the person who asked: the channel (or thread) first, their DM if the bot cannot post
there, and a refund through the core if they reach nobody."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any

from slack_sdk.errors import SlackApiError, SlackRequestError
from slack_sdk.web.async_client import AsyncWebClient

from bot.core import Imagebot
from bot.models import ImagineResult
from bot.replies import imagine_summary, plural

from .apierrors import CHANNEL_ERRORS, error_code, report
from .blocks import result_blocks
from .text import escape, mention

log = logging.getLogger(__name__)

Tell = Callable[[str], Awaitable[None]]
EXTENSIONS = {"image/png": "png", "image/jpeg": "jpg", "image/webp": "webp", "image/gif": "gif"}
#: What can go wrong talking to Slack: its refusals, and the transport under them.
SLACK_FAILURES = (SlackApiError, SlackRequestError, OSError, asyncio.TimeoutError)


@dataclass(frozen=True)
class Destination:
    channel_id: str
    user_id: str
    thread_ts: str | None = None


def summary_text(result: ImagineResult, user_id: str) -> str:
    """Who asked, then the shared summary (prompt, revised prompt, provider, model, size, credits)."""
    return f"{mention(user_id)} asked for: {escape(imagine_summary(result))}"


async def _post(client: AsyncWebClient, result: ImagineResult, user_id: str, channel: str,
                thread_ts: str | None) -> None:
    uploads: list[dict[str, Any]] = []
    for i, image in enumerate(result.images):
        data = await asyncio.to_thread(image.path.read_bytes)
        ext = EXTENSIONS.get(image.mime, "png")
        uploads.append({
            "file": data, "filename": f"imagebot-{result.generation_id[:8]}-{i + 1}.{ext}",
            "title": f"Image {i + 1} of {len(result.images)}", "alt_txt": result.prompt[:1000],
        })
    await client.files_upload_v2(
        file_uploads=uploads, channel=channel, thread_ts=thread_ts, initial_comment=summary_text(result, user_id),
    )
    try:
        await client.chat_postMessage(
            channel=channel, thread_ts=thread_ts, blocks=result_blocks(result),
            text="Re-roll, make variations or enhance the prompt",
        )
    except Exception as exc:  # noqa: BLE001 - the images are there (no refund, no re-post); only the buttons are missing
        report(exc, "chat.postMessage")


async def deliver(client: AsyncWebClient, core: Imagebot, result: ImagineResult, where: Destination,
                  tell: Tell) -> bool:
    """Upload into the channel/thread, else the user's DM; if neither works, refund. True if delivered."""
    try:
        try:
            await _post(client, result, where.user_id, where.channel_id, where.thread_ts)
            return True
        except Exception as exc:  # noqa: BLE001 - every failure ends in a DM attempt or a refund
            failure: BaseException = exc
            code = error_code(exc)
        if code in CHANNEL_ERRORS:
            log.info("cannot post in %s (%s); delivering generation %s by DM", where.channel_id, code,
                     result.generation_id)
            await tell(f"I can't post in this conversation ({code}), so I'm sending your images by direct "
                       "message. Invite me with /invite to get them here next time.")
            try:
                opened = await client.conversations_open(users=where.user_id)
                await _post(client, result, where.user_id, str(opened["channel"]["id"]), None)
                return True
            except Exception as exc:  # noqa: BLE001
                failure = exc
    except asyncio.CancelledError:
        # Shut down mid-upload: whether Slack showed the images is unknown, so the user is not charged.
        await asyncio.shield(core.delivery_failed(result.generation_id, code="IMG-DELIVERY-CANCELLED"))
        raise
    if not isinstance(failure, SLACK_FAILURES):
        log.error("delivering generation %s failed", result.generation_id, exc_info=failure)
    reason = report(failure, "files.upload")
    refunded = await core.delivery_failed(result.generation_id)
    back = f"{plural(refunded, 'credit')} returned" if refunded else "nothing was charged"
    await tell(f"Your images could not be delivered anywhere, so you were not charged ({back}). {reason}")
    return False

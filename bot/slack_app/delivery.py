"""Getting results to the person who asked: the delivery targets and wording the shared job runner
(``bot.jobs``) works with. Images go to the channel (or thread) first, to the user's DM if the bot cannot
post there; the runner refunds them through the core if they reach nobody."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any, TypeVar

from slack_sdk.errors import SlackApiError, SlackRequestError
from slack_sdk.web.async_client import AsyncWebClient

from bot.couriers import Posted
from bot.errors import ImagebotError
from bot.jobs import Outlet, Target
from bot.models import DescribeResult, EnhanceResult, ImagineResult, StoredImage
from bot.replies import enhance_summary, error_text, imagine_summary, plural

from .apierrors import CHANNEL_ERRORS, error_code, report
from .blocks import describe_blocks, enhance_blocks, result_blocks
from .respond import Tell
from .text import escape, mention

log = logging.getLogger(__name__)
R = TypeVar("R")
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


def dm_note(code: str) -> str:
    """Said to the asker when the channel refused the bot and the images go to their DM instead."""
    return (f"I can't post in this conversation ({code}), so I'm sending your images by direct "
            "message. Invite me with /invite to get them here next time.")


def enhance_message(result: EnhanceResult) -> tuple[str, list[dict[str, Any]]]:
    """An /enhance answer: the text and its blocks with "Imagine this" (in-process and courier alike)."""
    summary = enhance_summary(result)
    return escape(summary), enhance_blocks(result, summary)


def describe_message(result: DescribeResult) -> tuple[str, list[dict[str, Any]]]:
    """A /describe answer: the four prompts, each with an "Imagine" button (in-process; a courier may use it)."""
    lines = [f"{i + 1}. {p}" for i, p in enumerate(result.prompts)]
    text = "Prompts for this image:\n" + "\n".join(lines)
    return escape(text), describe_blocks(result)


def notes_message(result: object) -> tuple[str, list[dict[str, Any]] | None]:
    """Any private answer a job returns: an enhancement, a description, or plain text."""
    if isinstance(result, EnhanceResult):
        return enhance_message(result)
    if isinstance(result, DescribeResult):
        return describe_message(result)
    return str(result), None


async def post_result(client: AsyncWebClient, result: ImagineResult, user_id: str, channel: str,
                      thread_ts: str | None, posted: Posted | None = None) -> None:
    """Upload the images with the summary, then the buttons under them. Raises Slack's refusal of the upload.
    ``posted`` is awaited once the images are in the channel, before the buttons (``Courier.deliver``)."""
    uploads: list[dict[str, Any]] = []
    contents = await asyncio.to_thread(_read_all, result.images)  # one trip to a worker thread, not one per image
    for i, (image, data) in enumerate(zip(result.images, contents, strict=True)):
        ext = EXTENSIONS.get(image.mime, "png")
        uploads.append({
            "file": data, "filename": f"imagebot-{result.generation_id[-8:]}-{i + 1}.{ext}",
            "title": f"Image {i + 1} of {len(result.images)}", "alt_txt": result.prompt[:1000],
        })
    response = await client.files_upload_v2(
        file_uploads=uploads, channel=channel, thread_ts=thread_ts, initial_comment=summary_text(result, user_id),
    )
    if posted is not None:
        await posted()
    try:
        await client.chat_postMessage(
            channel=channel, thread_ts=thread_ts, blocks=result_blocks(result, files=_file_ids(response)),
            text="Re-roll, make variations, edit, enhance the prompt or delete",
        )
    except Exception as exc:  # noqa: BLE001 - the images are there (no refund, no re-post); only the buttons are missing
        report(exc, "chat.postMessage")


def _file_ids(response: Any) -> list[str]:
    """The ids of the files one ``files_upload_v2`` shared (Delete removes them)."""
    files = response.get("files") if hasattr(response, "get") else None
    if not isinstance(files, list):
        return []
    return [str(f["id"]) for f in files if isinstance(f, dict) and isinstance(f.get("id"), str)]


def private_note(result: ImagineResult) -> str:
    """Said in the channel (ephemeral) when the workspace posts results privately: the images went to the DM."""
    return (f"{escape(imagine_summary(result))}\nThis workspace posts results privately: your images are in "
            "your direct messages with me.")


def _read_all(images: Sequence[StoredImage]) -> list[bytes]:
    return [image.path.read_bytes() for image in images]


class ImagesOutlet(Outlet[ImagineResult]):
    """Upload into the channel (or thread); if the bot may not post there, tell the user and use their DM.
    Any other refusal (a revoked token, a missing scope) would fail the same way in a DM: the runner then
    refunds, and ``undelivered`` says why."""

    def __init__(self, client: AsyncWebClient, where: Destination, tell: Tell, what: str) -> None:
        self._client = client
        self._where = where
        self._tell = tell
        self._what = what
        #: Set by the job before it returns its result: the workspace posts results privately (an
        #: ephemeral note here, the images by DM).
        self.private = False

    def targets(self, result: ImagineResult) -> Sequence[Target[ImagineResult]]:
        if self.private:
            return [Target("private", self._private)]
        return [Target("channel", self._channel), Target("dm", self._dm, after=_channel_refused)]

    async def _channel(self, result: ImagineResult, failures: Sequence[BaseException]) -> None:
        await post_result(self._client, result, self._where.user_id, self._where.channel_id, self._where.thread_ts)

    async def _private(self, result: ImagineResult, failures: Sequence[BaseException]) -> None:
        """The images (and their buttons) by DM, then an ephemeral note in the conversation saying so."""
        opened = await self._client.conversations_open(users=self._where.user_id)
        await post_result(self._client, result, self._where.user_id, str(opened["channel"]["id"]), None)
        await self._tell(private_note(result))

    async def _dm(self, result: ImagineResult, failures: Sequence[BaseException]) -> None:
        code = error_code(failures[-1])
        log.info("cannot post in %s (%s); delivering generation %s by DM", self._where.channel_id, code,
                 result.generation_id)
        await self._tell(dm_note(code))
        opened = await self._client.conversations_open(users=self._where.user_id)
        await post_result(self._client, result, self._where.user_id, str(opened["channel"]["id"]), None)

    async def tell(self, text: str) -> None:
        await self._tell(text)

    async def failed(self, exc: Exception) -> None:
        await self._tell(failure_text(exc, self._what))

    async def undelivered(self, failures: Sequence[BaseException], refunded: int) -> None:
        failure = failures[-1]
        if not isinstance(failure, SLACK_FAILURES):
            log.error("delivering to Slack failed", exc_info=failure)
        reason = report(failure, "files.upload")
        back = f"{plural(refunded, 'credit')} returned" if refunded else "nothing was charged"
        await self._tell(f"Your images could not be delivered anywhere, so you were not charged ({back}). {reason}")


class NotesOutlet(Outlet[R]):
    """An answer as an ephemeral note through the response_url (text, and blocks from ``render``)."""

    def __init__(self, tell: Tell, what: str, render: Callable[[R], tuple[str, list[dict[str, Any]] | None]], *,
                 replace: bool = False) -> None:
        """``replace``: the answer updates the message the response_url belongs to (a slash command's ack)."""
        self._tell = tell
        self._what = what
        self._render = render
        self._replace = replace

    def targets(self, result: R) -> Sequence[Target[R]]:
        return [Target("response_url", self._send)]

    async def _send(self, result: R, failures: Sequence[BaseException]) -> None:
        text, blocks = self._render(result)
        await self._tell(text, blocks, replace=self._replace)

    async def tell(self, text: str) -> None:
        await self._tell(text)

    async def failed(self, exc: Exception) -> None:
        await self._tell(failure_text(exc, self._what))


def failure_text(exc: BaseException, what: str) -> str:
    """What the user is told when a job's work failed: our errors as worded, Slack's with the fix logged."""
    if isinstance(exc, ImagebotError):
        return escape(error_text(exc))
    if isinstance(exc, SLACK_FAILURES):
        return report(exc, what)
    log.error("Slack %s failed", what, exc_info=exc)
    return "Something went wrong (IMG-INTERNAL-001)."


def _channel_refused(failures: Sequence[BaseException]) -> bool:
    """A DM is worth trying only when the channel itself refused the bot."""
    return error_code(failures[-1]) in CHANNEL_ERRORS


@dataclass(frozen=True)
class Shown:
    """A stored result posted again (/show, "Show" in /history): free, so the runner must not treat it as a
    job's result (no lease, no refund when it reaches nobody)."""

    result: ImagineResult


class ShownOutlet(Outlet[Shown]):
    """Posts a stored result where ``images`` would post a new one (channel, else DM; privately when the
    workspace says so); if nowhere took it, says so (nothing was charged for it)."""

    def __init__(self, images: ImagesOutlet, tell: Tell) -> None:
        self.images = images
        self._tell = tell

    def targets(self, result: Shown) -> Sequence[Target[Shown]]:
        def wrap(target: Target[ImagineResult]) -> Target[Shown]:
            async def send(shown: Shown, failures: Sequence[BaseException]) -> None:
                await target.send(shown.result, failures)
            return Target(target.name, send, target.after)

        return [wrap(t) for t in self.images.targets(result.result)]

    async def tell(self, text: str) -> None:
        await self._tell(text)

    async def failed(self, exc: Exception) -> None:
        await self._tell(failure_text(exc, "show"))

    async def undelivered(self, failures: Sequence[BaseException], refunded: int) -> None:
        await self._tell(f"I couldn't post that result. {report(failures[-1], 'files.upload')}")


async def upload_sheet(client: AsyncWebClient, user_id: str, sheet: bytes, comment: str) -> bool:
    """A /history contact sheet into the asker's DM (an ephemeral message cannot carry a file, and a history is
    the asker's own); False (logged) when Slack refused it."""
    try:
        opened = await client.conversations_open(users=user_id)
        await client.files_upload_v2(file_uploads=[{"file": sheet, "filename": "imagebot-history.png",
                                                    "title": "Your /history"}],
                                     channel=str(opened["channel"]["id"]), initial_comment=comment)
    except SLACK_FAILURES as exc:
        report(exc, "files.upload")
        return False
    return True

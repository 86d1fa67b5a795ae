"""Progress shown by editing the original response: queued (with position), generating, previews, uploading.

The core awaits the progress callback, so an edit must never hold a generation up: edits run in one
background task per interaction, and only the newest state is sent (Discord rate-limits edits). A text edit
waits ``settle`` seconds first, so quick stage changes collapse into one edit and, in a burst of commands,
the acknowledgements of later commands are not queued behind progress edits of earlier ones.

Previews (partial images while the model draws) are edits with the picture attached, at most one every
``preview_interval`` seconds: a newer preview replaces one still waiting, so only the newest is sent.

"Uploading N images…" goes out, without a settle, when the core says the images exist (stage ``made``), so
it overlaps the core's storing and settling. Progress never delays a result: when the result is ready no new
edit is sent (the result replaces whatever is shown), and ``close`` cancels an edit that is still waiting (a
settle or the preview interval) instead of waiting it out. Only an edit already on the wire is let finish (bounded by
``timeout``), so that it can never land after the result and overwrite it.
"""

from __future__ import annotations

import io
import logging
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import discord

from bot.jobs_progress import LatestFrame
from bot.replies import plural

from .delivery import NO_MENTIONS, is_gone
from .fitting import EXTENSIONS

log = logging.getLogger(__name__)


def stage_text(stage: str, details: dict[str, Any]) -> str:
    provider = details.get("provider", "")
    model = details.get("model")
    by = f"{provider}{f' ({model})' if model else ''}"
    if stage == "queued":
        return f"\N{HOURGLASS} Queued: position {details.get('position', '?')} for {provider}…"
    if stage == "generating":
        return f"\N{ARTIST PALETTE} Generating with {by}…"
    if stage == "preview":
        of = details.get("of")
        return f"\N{ARTIST PALETTE} Drawing with {by}… preview {details.get('index', '?')}{f' of {of}' if of else ''}"
    if stage == "failover":
        return f"\N{WARNING SIGN} {details.get('from', 'The provider')} failed; trying {details.get('to', 'another')}…"
    return f"{stage}…"


@dataclass(frozen=True)
class Frame:
    """What the original response should show: a text, and for a preview the partial image."""

    text: str
    image: bytes | None = None
    filename: str = ""
    #: Sent without the settle (the last text before the result).
    now: bool = False


class ProgressMessage:
    """The original response as a progress display (``bot.jobs.ProgressSink``), on ``LatestFrame``."""

    def __init__(self, interaction: discord.Interaction, *, settle: float = 0.5, preview_interval: float = 1.0,
                 clock: Callable[[], float] = time.monotonic) -> None:
        self._interaction = interaction
        self._settle = settle
        self._interval = preview_interval
        self._clock = clock
        self._frames: LatestFrame[Frame] = LatestFrame(self._edit, self._delay, name=f"progress-{interaction.id}")
        self._last_preview = -float("inf")
        #: Preview edits Discord accepted (for the log and for tests).
        self.previews_shown = 0

    async def update(self, stage: str, details: dict[str, Any]) -> None:
        """The core's progress callback."""
        if stage == "preview":
            self.preview(details)
        elif stage == "made":
            # The provider is done; the core still stores the images and settles the charge. "Uploading…"
            # goes out now, without a settle, so its edit overlaps that work instead of preceding the upload.
            self.uploading(int(details.get("count", 0) or 0))
        else:
            self.show(stage_text(stage, details))

    async def finish(self, result: object | None) -> None:
        """Before delivery, or when the job failed: stop. Nothing new is sent now: the result replaces
        whatever is shown, so an edit right before it would only delay it ("Uploading…" went out when the
        core said the images exist, and is let finish if it is still on the wire)."""
        await self.close(flush=False)

    def uploading(self, count: int) -> None:
        """The last progress text before the result, sent at once (no settle)."""
        if count > 0:
            self._frames.want(Frame(f"\N{OUTBOX TRAY} Uploading {plural(count, 'image')}…", now=True))

    def show(self, text: str) -> None:
        self._frames.want(Frame(text))

    def preview(self, details: dict[str, Any]) -> None:
        data = details.get("data")
        if not isinstance(data, bytes | bytearray) or not data:
            return
        limit = self._interaction.filesize_limit
        if limit and len(data) > limit:  # Discord would refuse it (413): keep the text, skip the picture
            self.show(stage_text("preview", details))
            return
        ext = EXTENSIONS.get(str(details.get("mime", "")), "png")
        self._frames.want(Frame(stage_text("preview", details), bytes(data), f"preview-{details.get('index', 0)}.{ext}"))

    def _delay(self, frame: Frame) -> float:
        if frame.now:
            return 0.0
        if frame.image is None:
            return self._settle
        return max(self._settle, self._last_preview + self._interval - self._clock())

    async def _edit(self, frame: Frame) -> bool:
        kwargs: dict[str, Any] = {}
        if frame.image is not None:
            kwargs["attachments"] = [discord.File(io.BytesIO(frame.image), filename=frame.filename)]
            self._last_preview = self._clock()
        try:
            await self._interaction.edit_original_response(content=frame.text, allowed_mentions=NO_MENTIONS, **kwargs)
            if frame.image is not None:
                self.previews_shown += 1
        except discord.HTTPException as exc:
            log.info("progress edit refused: %s (%s)", exc.status, exc.code)
            return not is_gone(exc)
        return True

    async def close(self, *, flush: bool = True, timeout: float = 5.0) -> None:
        """Stop at once: a waiting edit is dropped, an edit on the wire is let finish (so the result is
        never overwritten by it). With ``flush`` the newest text is shown first, right away, if it differs
        from what is shown (the "Uploading…" line); the picture of a preview still waiting is not sent."""
        frames = self._frames
        await frames.close(timeout)
        wanted, shown = frames.wanted, frames.shown
        if flush and not frames.gone and wanted is not None and (shown is None or wanted.text != shown.text):
            frames.wanted = Frame(wanted.text, now=wanted.now)
            await frames.send_now()

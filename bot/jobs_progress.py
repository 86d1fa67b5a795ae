"""Progress that never delays a result: the newest wanted frame, sent after its delay, one send at a time.

Both chat adapters show progress by editing or posting a message while the core works, and both must
(a) never hold the core up (it awaits its progress callback), (b) collapse quick changes into one send
(platforms rate-limit edits), and (c) never delay the result: when the result is ready, a frame that is
still waiting for its delay is dropped at once instead of being waited out (issue 10: a "waiting out the
settle" bug cost every Discord result 0.5 s). Only a send already on the wire may finish (bounded), so that
it cannot land after the result and overwrite it. ``LatestFrame`` is that machinery; each adapter decides
what a frame is, how long it waits (``delay``) and how it is sent.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Awaitable, Callable
from typing import Generic, TypeVar

log = logging.getLogger(__name__)

F = TypeVar("F")


class LatestFrame(Generic[F]):
    """``want(frame)`` replaces whatever is still waiting; one background task sends the newest frame
    after ``delay(frame)`` seconds. ``send`` returns False when the destination is gone (no more sends)."""

    def __init__(self, send: Callable[[F], Awaitable[bool]], delay: Callable[[F], float], *,
                 name: str = "progress") -> None:
        self._send = send
        self._delay = delay
        self._name = name
        self.wanted: F | None = None
        self.shown: F | None = None
        self._task: asyncio.Task[None] | None = None
        self._sending = False
        self._newer = asyncio.Event()
        self.closed = False
        #: The destination said it is gone: nothing more is sent.
        self.gone = False

    @property
    def alive(self) -> bool:
        return not (self.closed or self.gone)

    def want(self, frame: F) -> None:
        if not self.alive:
            return
        self.wanted = frame
        self._newer.set()
        if self._task is None or self._task.done():
            self._task = asyncio.create_task(self._pump(), name=self._name)

    async def _pump(self) -> None:
        loop = asyncio.get_running_loop()
        while self.alive and self.wanted is not None and self.wanted != self.shown:
            # A newer frame may only bring the send forward (a frame wanted at once, delay 0, goes now),
            # never push it back: a steady stream of changes still shows one every ``delay``.
            deadline = loop.time() + self._delay(self.wanted)
            while (left := deadline - loop.time()) > 0:
                self._newer.clear()
                with contextlib.suppress(TimeoutError):
                    async with asyncio.timeout(left):
                        await self._newer.wait()
                if self.wanted is not None:
                    deadline = min(deadline, loop.time() + self._delay(self.wanted))
            if self.alive:
                await self.send_now()

    async def send_now(self) -> None:
        """Send the wanted frame now (the pump, or a final flush after ``close``)."""
        frame = self.wanted
        if frame is None or self.gone:
            return
        self._sending = True
        try:
            if not await self._send(frame):
                self.gone = True
        finally:
            self._sending = False
        self.shown = frame

    def cancel(self) -> None:
        """Stop at once, dropping even a send on the wire (for notes that can never overwrite a result)."""
        self.closed = True
        if self._task is not None and not self._task.done():
            self._task.cancel()

    async def close(self, timeout: float = 5.0) -> None:
        """Stop at once: a frame waiting for its delay is dropped; a send on the wire is let finish (at
        most ``timeout`` s), so it cannot land after the result."""
        self.closed = True
        task = self._task
        if task is None or task.done():
            return
        if self._sending:
            done, _ = await asyncio.wait({task}, timeout=timeout)
            if not done:
                log.info("a %s send took over %.0f s; cancelled", self._name, timeout)
        task.cancel()
        await asyncio.gather(task, return_exceptions=True)

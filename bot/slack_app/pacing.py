"""Acks before jobs: under a burst of commands, requests still waiting for their ack run before the jobs
that earlier acks started. A job waits until no request is in flight, or ``max_wait`` at most, so a
steady stream of requests can delay jobs only that long (and never starve them)."""

from __future__ import annotations

import asyncio
import contextlib
from types import TracebackType


class AckFirst:
    def __init__(self, max_wait: float = 0.25) -> None:
        self.max_wait = max_wait
        self._in_flight = 0
        self._quiet = asyncio.Event()
        self._quiet.set()

    def __enter__(self) -> AckFirst:
        self._in_flight += 1
        self._quiet.clear()
        return self

    def __exit__(self, kind: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None) -> None:
        self._in_flight -= 1
        if not self._in_flight:
            self._quiet.set()

    async def wait(self) -> None:
        """Called by a job before its first step: let pending acks go first."""
        if self._in_flight:
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._quiet.wait(), self.max_wait)

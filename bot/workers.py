"""A lean worker thread for small blocking jobs (drawing, file writes).

``asyncio.to_thread`` goes through ``concurrent.futures`` (a condition lock, a future chained to an
asyncio future, a copied context): for a job of a few hundred microseconds that hand-off costs as much as
the job. This is the same hand-off aiosqlite uses: a queue in, ``call_soon_threadsafe`` out.
"""

from __future__ import annotations

import asyncio
import itertools
import queue
import threading
from collections.abc import Callable
from typing import Any, TypeVar

T = TypeVar("T")
_Job = tuple[asyncio.AbstractEventLoop, asyncio.Future[Any], Callable[..., Any], tuple[Any, ...]]


def _settle(future: asyncio.Future[Any], ok: bool, value: Any) -> None:
    if not future.done():
        future.set_result(value) if ok else future.set_exception(value)


def _serve(jobs: queue.SimpleQueue[_Job | None]) -> None:
    while (job := jobs.get()) is not None:
        loop, future, fn, args = job
        try:
            outcome = (True, fn(*args))
        except BaseException as exc:  # noqa: BLE001 - handed back to the awaiting caller
            outcome = (False, exc)
        try:
            loop.call_soon_threadsafe(_settle, future, *outcome)
        except RuntimeError:  # the loop is closed: nobody is waiting any more
            pass


class WorkerThreads:
    """``threads`` daemon threads started on first use; jobs go to them in turn."""

    def __init__(self, name: str, threads: int = 1) -> None:
        self.name = name
        self.size = max(1, threads)
        self._queues: list[queue.SimpleQueue[_Job | None]] = []
        self._turn = itertools.count()

    async def run(self, fn: Callable[..., T], *args: Any) -> T:
        if not self._queues:
            for i in range(self.size):
                jobs: queue.SimpleQueue[_Job | None] = queue.SimpleQueue()
                threading.Thread(target=_serve, args=(jobs,), name=f"{self.name}-{i}", daemon=True).start()
                self._queues.append(jobs)
        loop = asyncio.get_running_loop()
        future: asyncio.Future[T] = loop.create_future()
        self._queues[next(self._turn) % self.size].put((loop, future, fn, args))
        return await future

    def close(self) -> None:
        for jobs in self._queues:
            jobs.put(None)
        self._queues = []

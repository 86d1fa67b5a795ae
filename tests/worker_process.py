"""Another "process" in a test: a worker with its own core on the same database and its own courier,
sharing nothing in memory with the ingress under test."""

from __future__ import annotations

import asyncio
from dataclasses import dataclass

from bot.core import Imagebot
from bot.couriers import Courier
from bot.worker import Worker


@dataclass
class OtherProcess:
    core: Imagebot
    courier: Courier
    worker: Worker
    task: asyncio.Task[None]

    @classmethod
    def start(cls, core: Imagebot, courier: Courier) -> OtherProcess:
        worker = Worker(core, {courier.platform: courier}, poll=0.05)
        return cls(core, courier, worker, asyncio.create_task(worker.run()))

    async def close(self) -> None:
        self.task.cancel()
        await asyncio.gather(self.task, return_exceptions=True)
        await self.worker.close(grace=5)
        await self.courier.aclose()
        await self.core.close()

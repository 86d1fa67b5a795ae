"""A loopback aiohttp server with scripted behaviours, the base of the vendor fakes.

Each fake records every request it saw and answers per route from a queue of behaviour names
(``fake.queue("generations", "rate", "ok")``); an empty queue means "ok". Nothing here imports our code.
"""

from __future__ import annotations

import asyncio
from collections import defaultdict
from dataclasses import dataclass, field
from typing import Any

from aiohttp import web


@dataclass
class Seen:
    route: str
    path: str
    headers: dict[str, str]
    body: Any = None
    files: dict[str, bytes] = field(default_factory=dict)
    fields: list[str] = field(default_factory=list)


class FakeServer:
    #: Seconds a "slow" behaviour sleeps; tests set client timeouts well below it.
    slow_seconds = 1.5

    def __init__(self) -> None:
        self.seen: list[Seen] = []
        self.script: dict[str, list[str]] = defaultdict(list)
        self.files: dict[str, tuple[bytes, str]] = {}
        self.app = web.Application(client_max_size=64 * 1024 * 1024)
        self._runner: web.AppRunner | None = None
        self.port = 0
        self.app.router.add_get("/files/{name}", self._file)
        self.app.router.add_get("/stream/{size}", self._stream)
        self.app.router.add_get("/slowfile", self._slowfile)

    @property
    def origin(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def queue(self, route: str, *behaviours: str) -> None:
        self.script[route].extend(behaviours)

    def next(self, route: str) -> str:
        return self.script[route].pop(0) if self.script[route] else "ok"

    def calls(self, route: str) -> list[Seen]:
        return [s for s in self.seen if s.route == route]

    async def start(self) -> FakeServer:
        self._runner = web.AppRunner(self.app, handle_signals=False, shutdown_timeout=0.1)
        await self._runner.setup()
        site = web.TCPSite(self._runner, "127.0.0.1", 0)
        await site.start()
        self.port = site._server.sockets[0].getsockname()[1]  # type: ignore[union-attr]
        return self

    async def stop(self) -> None:
        if self._runner is not None:
            await self._runner.cleanup()
            self._runner = None

    async def __aenter__(self) -> FakeServer:
        return await self.start()

    async def __aexit__(self, *exc: object) -> None:
        await self.stop()

    def serve_file(self, name: str, data: bytes, mime: str = "image/png") -> str:
        self.files[name] = (data, mime)
        return f"{self.origin}/files/{name}"

    async def _file(self, request: web.Request) -> web.Response:
        item = self.files.get(request.match_info["name"])
        if item is None:
            return web.Response(status=404, text="gone")
        return web.Response(body=item[0], content_type=item[1])

    async def _stream(self, request: web.Request) -> web.StreamResponse:
        """``size`` bytes with no Content-Length (chunked), so only the running count can stop it."""
        size = int(request.match_info["size"])
        resp = web.StreamResponse(headers={"Content-Type": "image/png"})
        await resp.prepare(request)
        chunk = b"\x89PNG" + b"\0" * 65532
        sent = 0
        try:
            while sent < size:
                await resp.write(chunk)
                sent += len(chunk)
        except (ConnectionError, RuntimeError):
            return resp
        await resp.write_eof()
        return resp

    async def _slowfile(self, request: web.Request) -> web.Response:
        await asyncio.sleep(self.slow_seconds)
        return web.Response(body=b"late", content_type="image/png")

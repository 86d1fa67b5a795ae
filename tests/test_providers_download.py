"""Bounded downloads (dall-e-3 result URLs, chat reference images): size, time, and must be an image."""

from __future__ import annotations

import io
import time
from collections.abc import AsyncIterator

import pytest
from PIL import Image

from bot.errors import ProviderBadResponse, ProviderTimeout, ProviderUnavailable, ValidationError
from providers.download import TooLarge, download_image, fetch_reference
from tests.fakes.images import jpeg, png
from tests.fakes.server import FakeServer


@pytest.fixture
async def server() -> AsyncIterator[FakeServer]:
    fake = FakeServer()
    fake.slow_seconds = 1.0
    async with fake:
        yield fake


async def test_an_image_downloads_with_its_type_and_size(server: FakeServer) -> None:
    got = await download_image(server.serve_file("a.png", png(20, 10)))
    assert (got.mime, got.width, got.height, got.data) == ("image/png", 20, 10, png(20, 10))
    got = await download_image(server.serve_file("b.jpg", jpeg(), "image/jpeg"))
    assert got.mime == "image/jpeg"


async def test_oversized_by_content_length_is_refused_before_reading(server: FakeServer) -> None:
    url = server.serve_file("big.png", png() + b"\0" * 300_000)
    with pytest.raises(TooLarge, match="larger than"):
        await download_image(url, max_bytes=100_000)


async def test_oversized_stream_without_length_stops_at_the_cap(server: FakeServer) -> None:
    started = time.perf_counter()
    with pytest.raises(TooLarge):
        await download_image(f"{server.origin}/stream/{200 * 1024 * 1024}", max_bytes=256 * 1024)
    assert time.perf_counter() - started < 5


async def test_not_an_image_is_refused(server: FakeServer) -> None:
    with pytest.raises(ProviderBadResponse, match="not a usable image"):
        await download_image(server.serve_file("x.png", b"<html>hello</html>", "text/html"))


async def test_decompression_bomb_is_refused(server: FakeServer) -> None:
    out = io.BytesIO()
    Image.new("1", (8000, 6000)).save(out, format="PNG")  # 48 MP in a few kB
    with pytest.raises(ProviderBadResponse, match="not a usable image"):
        await download_image(server.serve_file("bomb.png", out.getvalue()))


async def test_slow_download_times_out(server: FakeServer) -> None:
    with pytest.raises(ProviderTimeout, match="longer than 0.2 s"):
        await download_image(f"{server.origin}/slowfile", timeout=0.2)


async def test_missing_file_and_dead_host_are_unavailable(server: FakeServer) -> None:
    with pytest.raises(ProviderUnavailable, match="HTTP 404"):
        await download_image(f"{server.origin}/files/nope.png")
    with pytest.raises(ProviderUnavailable):
        await download_image("http://127.0.0.1:9/x.png", timeout=2)


@pytest.mark.parametrize("url", ["file:///etc/passwd", "ftp://example.invalid/a.png", "", "not a url"])
async def test_only_http_urls(url: str) -> None:
    with pytest.raises(ProviderBadResponse, match="not an http"):
        await download_image(url)


async def test_reference_failures_are_the_users_to_fix(server: FakeServer) -> None:
    assert await fetch_reference(server.serve_file("r.png", png())) == png()
    with pytest.raises(ValidationError) as info:
        await fetch_reference(server.serve_file("r.txt", b"hello", "text/plain"))
    assert info.value.code == "IMG-VALID-REFERENCE" and "reference image" in info.value.message

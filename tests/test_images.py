"""The image store: content-addressed files, written atomically, each set of bytes once."""

from __future__ import annotations

import asyncio
import hashlib
from pathlib import Path

import pytest

from bot.app import build_core
from bot.errors import ProviderBadResponse
from bot.models import ImagineOptions
from providers.local import render
from storage.images import ImageStore
from tests.doubles import ctx_for, make_config


async def test_images_live_under_a_two_letter_prefix_folder_named_by_their_hash(tmp_path: Path) -> None:
    core = build_core(make_config(tmp_path))
    async with core:
        result = await core.imagine(ctx_for("u"), ImagineOptions(prompt="fox", size="256x256"))
    image = result.images[0]
    assert image.path.parent.parent == core.images.root
    assert image.path.parent.name == image.sha256[:2] and image.path.name == f"{image.sha256}.png"
    assert hashlib.sha256(image.path.read_bytes()).hexdigest() == image.sha256


async def test_the_same_bytes_are_stored_once_and_no_temporary_file_is_left(tmp_path: Path) -> None:
    store = ImageStore(tmp_path)
    data = render("a fox", "256x256", "natural", 1, 0)
    saved = await asyncio.gather(*(store.save(data) for _ in range(8)))
    assert len({s.path for s in saved}) == 1
    files = [p for p in store.root.rglob("*") if p.is_file()]
    assert files == [saved[0].path] and saved[0].path.read_bytes() == data
    assert (saved[0].mime, saved[0].width, saved[0].height, saved[0].size_bytes) == ("image/png", 256, 256, len(data))


async def test_many_images_saved_at_once_all_arrive_whole(tmp_path: Path) -> None:
    store = ImageStore(tmp_path)
    images = [render("a fox", "256x256", "vivid", seed, 0, fmt=fmt) for seed in range(10)
              for fmt in ("png", "webp", "jpeg")]
    saved = await asyncio.gather(*(store.save(d, drawn_size=(256, 256)) for d in images))
    assert [s.path.read_bytes() for s in saved] == images
    assert {s.mime for s in saved} == {"image/png", "image/webp", "image/jpeg"}
    assert not [p for p in store.root.rglob(".tmp-*")]


async def test_bytes_that_are_not_an_image_are_refused_and_nothing_is_written(tmp_path: Path) -> None:
    store = ImageStore(tmp_path)
    for claimed in (None, (256, 256)):  # a claimed drawn size does not let garbage through
        with pytest.raises(ProviderBadResponse):
            await store.save(b"not an image at all", drawn_size=claimed)
    assert not store.root.exists() or not any(store.root.rglob("*.*"))


async def test_a_removed_prefix_folder_is_made_again(tmp_path: Path) -> None:
    store = ImageStore(tmp_path)
    first = await store.save(render("a", "256x256", "natural", 0, 0))
    first.path.unlink()
    first.path.parent.rmdir()
    again = await store.save(render("a", "256x256", "natural", 0, 0))
    assert again.path == first.path and again.path.exists()
    assert store.load(again.sha256, again.mime) == again.path.read_bytes()

"""Images on disk, named by content hash, so nothing depends on a provider's expiring URL.

Writes are atomic (temporary file, then rename), and the same bytes are stored once.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import itertools
import os
import secrets
from pathlib import Path

# The inspection helpers live in ``bot.imaging`` (providers use them without importing storage);
# re-exported here for the store and for existing callers.
from bot.imaging import EXTENSIONS, inspect_image
from bot.models import StoredImage


def _drawn_mime(data: bytes) -> str | None:
    """The format of bytes the bot drew itself, from their signature (no decoding)."""
    if data.startswith(b"\x89PNG\r\n\x1a\n"):
        return "image/png"
    if data[:4] == b"RIFF" and data[8:12] == b"WEBP":
        return "image/webp"
    if data.startswith(b"\xff\xd8\xff"):
        return "image/jpeg"
    return None


class ImageStore:
    """Content-addressed files under ``data_dir/images/<first two hex digits>/<sha256>.<ext>``.

    Blocking file work runs in a worker thread (``asyncio.to_thread``), so the event loop never waits
    on the disk.
    """

    def __init__(self, data_dir: Path) -> None:
        self.root = Path(data_dir) / "images"
        #: Partial images shown while a model draws: free, not results, safe to delete at any time.
        self.previews = Path(data_dir) / "previews"
        #: Temporary names: random per store (processes on several machines may share the folder).
        self._tmp_prefix = f".tmp-{secrets.token_hex(6)}-"
        self._names = itertools.count()

    def path_for(self, sha256: str, mime: str) -> Path:
        return self.root / sha256[:2] / f"{sha256}.{EXTENSIONS.get(mime, 'bin')}"

    def _save(self, data: bytes, drawn_size: tuple[int, int] | None) -> StoredImage:
        mime = _drawn_mime(data) if drawn_size is not None else None
        if drawn_size is None or mime is None:
            mime, width, height = inspect_image(data)
        else:
            width, height = drawn_size
        digest = hashlib.sha256(data).hexdigest()
        path = self.path_for(digest, mime)
        if not path.exists():
            self._write_new(path, data)
        return StoredImage(digest, path, mime, len(data), width, height)

    def _write_new(self, path: Path, data: bytes) -> None:
        """Write to a temporary name in the same folder, then rename: readers never see half a file.
        The prefix folder is made only when the first write into it finds it missing."""
        tmp = path.parent / f"{self._tmp_prefix}{next(self._names)}"
        try:
            out = open(tmp, "xb")
        except FileNotFoundError:
            path.parent.mkdir(parents=True, exist_ok=True)
            out = open(tmp, "xb")
        try:
            with out:
                out.write(data)
            os.replace(tmp, path)
        except BaseException:
            with contextlib.suppress(OSError):
                tmp.unlink()
            raise

    async def save(self, data: bytes, *, drawn_size: tuple[int, int] | None = None) -> StoredImage:
        """Store ``data`` once by its hash. ``drawn_size``: see ``GeneratedImage.drawn_size``."""
        return await asyncio.to_thread(self._save, data, drawn_size)

    async def save_preview(self, name: str, data: bytes) -> tuple[Path, str]:
        """Write a preview as ``previews/NAME.ext`` (``name`` is built by the core from ids, never typed)."""

        def write() -> tuple[Path, str]:
            mime, _, _ = inspect_image(data)
            self.previews.mkdir(parents=True, exist_ok=True)
            path = self.previews / f"{name}.{EXTENSIONS[mime]}"
            tmp = path.with_suffix(".tmp")
            tmp.write_bytes(data)
            os.replace(tmp, path)
            return path, mime

        return await asyncio.to_thread(write)

    def close(self) -> None:
        """Nothing to release (the worker threads are asyncio's); kept for the core's shutdown order."""

    def load(self, sha256: str, mime: str) -> bytes:
        return self.path_for(sha256, mime).read_bytes()

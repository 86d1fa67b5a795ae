"""Images on disk, named by content hash, so nothing depends on a provider's expiring URL.

Writes are atomic (temporary file, then rename), and the same bytes are stored once. Saving bytes that
are stored already refreshes the file's mtime, so a file's mtime is when the bot last needed it:
``prune`` (``imagebot prune``) removes only files that are old by that measure *and* that the ledger no
longer needs (``Ledger.live_images``), so an image saved again while a prune runs is never lost.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import itertools
import os
import re
import secrets
import stat
from collections.abc import Iterator
from pathlib import Path

# The inspection helpers live in ``bot.imaging`` (providers use them without importing storage);
# re-exported here for the store and for existing callers.
from bot.imaging import EXTENSIONS, inspect_image
from bot.models import StoredImage

#: A stored image's file name before its extension, and its shard folder's name.
_SHA256 = re.compile(r"[0-9a-f]{64}")
_SHARD = re.compile(r"[0-9a-f]{2}")


def _files(folder: Path) -> Iterator[tuple[Path, os.stat_result]]:
    """The regular files directly in ``folder`` with their stat (symbolic links are never followed, so a
    prune cannot reach outside the data folder); nothing when it does not exist."""
    try:
        with os.scandir(folder) as found:
            entries = list(found)
    except (FileNotFoundError, NotADirectoryError):
        return
    for entry in entries:
        try:
            if entry.is_file(follow_symlinks=False):
                yield Path(entry.path), entry.stat(follow_symlinks=False)
        except FileNotFoundError:  # removed meanwhile
            continue


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
        if not path.exists() or not self._touch(path):
            self._write_new(path, data)
        return StoredImage(digest, path, mime, len(data), width, height)

    @staticmethod
    def _touch(path: Path) -> bool:
        """Mark a stored file as needed now (its mtime: see ``prune``); False when it has just gone."""
        try:
            os.utime(path)
        except FileNotFoundError:
            return False
        except OSError:  # a store we may read but not touch: the file is there, which is what matters
            pass
        return True

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

    def prune_files(self, keep: set[str], older_than: float, *, dry_run: bool = False) -> tuple[int, int]:
        """Remove what is no longer needed; return (files removed, bytes freed).

        - stored images whose sha256 is not in ``keep`` (``Ledger.live_images``) and whose mtime is
          before ``older_than`` (epoch seconds);
        - previews (partial images, never results) older than ``older_than``;
        - temporary files older than ``older_than`` (a write that died half-way).

        Anything else in the folders (a file not named like ours, a symbolic link) is left alone.
        ``dry_run`` counts without removing. Blocking: ``prune`` runs it in a worker thread."""
        removed = freed = 0

        def drop(path: Path, info: os.stat_result) -> None:
            nonlocal removed, freed
            if not dry_run:
                try:
                    path.unlink()
                except FileNotFoundError:  # another prune was faster
                    return
            removed += 1
            freed += info.st_size

        try:
            with os.scandir(self.root) as found:
                shards = [Path(e.path) for e in found if e.is_dir(follow_symlinks=False) and _SHARD.fullmatch(e.name)]
        except (FileNotFoundError, NotADirectoryError):
            shards = []
        for shard in sorted(shards):
            for path, info in _files(shard):
                if info.st_mtime >= older_than or not stat.S_ISREG(info.st_mode):
                    continue
                sha256 = path.name.partition(".")[0]
                if path.name.startswith(".tmp-") or (_SHA256.fullmatch(sha256) and sha256 not in keep):
                    drop(path, info)
        for path, info in _files(self.previews):
            if info.st_mtime < older_than:
                drop(path, info)
        return removed, freed

    async def prune(self, keep: set[str], older_than: float, *, dry_run: bool = False) -> tuple[int, int]:
        """``prune_files`` in a worker thread (the event loop never waits on the disk)."""
        return await asyncio.to_thread(self.prune_files, keep, older_than, dry_run=dry_run)

    def close(self) -> None:
        """Nothing to release (the worker threads are asyncio's); kept for the core's shutdown order."""

    def load(self, sha256: str, mime: str) -> bytes:
        return self.path_for(sha256, mime).read_bytes()

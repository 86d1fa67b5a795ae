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
import struct
import sys
from pathlib import Path

# The inspection helpers live in ``bot.imaging`` (providers use them without importing storage);
# re-exported here for the store and for existing callers.
from bot.imaging import EXTENSIONS, inspect_image
from bot.models import StoredImage
from bot.workers import WorkerThreads

#: ext2/3/4 inode flag (``chattr +T``): "top of a directory hierarchy" for the Orlov allocator.
FS_TOPDIR_FL = 0x00020000
FS_IOC_GETFLAGS = 0x80086601
FS_IOC_SETFLAGS = 0x40086602


def _make_spread_root(root: str) -> None:
    """Create the images folder, asking ext4 to spread its 256 prefix folders over the disk.

    ext4 puts a new file in its folder's block group, and (without a journal) skips the group's
    recently freed inodes one by one: after a cleanup nearby (old images pruned, a test run) each
    new image can cost ~1 ms of kernel time instead of ~0.04 ms. Marked as the top of a hierarchy,
    the prefix folders land in different groups, so no group's backlog slows every write. Best
    effort: other filesystems and platforms simply keep their own layout.
    """
    os.makedirs(root, exist_ok=True)
    if sys.platform != "linux":
        return
    import fcntl  # POSIX only: imported here so the store still loads elsewhere

    with contextlib.suppress(OSError):
        fd = os.open(root, os.O_RDONLY | os.O_DIRECTORY)
        try:
            flags = struct.unpack("i", fcntl.ioctl(fd, FS_IOC_GETFLAGS, struct.pack("i", 0)))[0]
            if not flags & FS_TOPDIR_FL:
                fcntl.ioctl(fd, FS_IOC_SETFLAGS, struct.pack("i", flags | FS_TOPDIR_FL))
        finally:
            os.close(fd)


class ImageStore:
    """Content-addressed files under ``data_dir/images``.

    Creating a file is the costly step (the kernel allocates an inode), so writes go to two threads and
    stay free of Python-level extras: no random temporary names, no repeated ``mkdir``.
    """

    def __init__(self, data_dir: Path) -> None:
        self.root = Path(data_dir) / "images"
        #: Partial images shown while a model draws: free, not results, safe to delete at any time.
        self.previews = Path(data_dir) / "previews"
        self._root = str(self.root)
        self._writer = WorkerThreads("image-store", threads=2)
        self._folders: set[str] = set()
        #: Temporary names: random per store (processes on several machines may share the folder).
        self._tmp_prefix = f".tmp-{secrets.token_hex(6)}-"
        self._names = itertools.count()

    def path_for(self, sha256: str, mime: str) -> Path:
        return Path(self._path(sha256, mime))

    def _path(self, sha256: str, mime: str) -> str:
        """The file's path as a string: the writer threads avoid pathlib's cost per image."""
        return os.path.join(self._root, sha256[:2], f"{sha256}.{EXTENSIONS.get(mime, 'bin')}")

    def _save(self, data: bytes, drawn_size: tuple[int, int] | None) -> StoredImage:
        if drawn_size is None:
            mime, width, height = inspect_image(data)
        else:
            mime, (width, height) = "image/png", drawn_size
        digest = hashlib.sha256(data).hexdigest()
        path = self._path(digest, mime)
        if not os.path.exists(path):
            self._write_new(path, data)
        return StoredImage(digest, Path(path), mime, len(data), width, height)

    def _write_new(self, path: str, data: bytes) -> None:
        """Write to a temporary name in the same folder, then rename: readers never see half a file."""
        folder = os.path.dirname(path)
        if folder not in self._folders:
            if not self._folders:
                _make_spread_root(self._root)
            os.makedirs(folder, exist_ok=True)
            self._folders.add(folder)
        tmp = os.path.join(folder, f"{self._tmp_prefix}{next(self._names)}")
        try:
            fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o644)
        except FileNotFoundError:  # the folder was removed under us: make it again
            os.makedirs(folder, exist_ok=True)
            fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o644)
        try:
            try:
                view = memoryview(data)
                while view:
                    view = view[os.write(fd, view):]
            finally:
                os.close(fd)
            os.replace(tmp, path)
        except BaseException:
            with contextlib.suppress(OSError):
                os.unlink(tmp)
            raise

    async def save(self, data: bytes, *, drawn_size: tuple[int, int] | None = None) -> StoredImage:
        """Store ``data`` once by its hash. ``drawn_size``: see ``GeneratedImage.drawn_size``."""
        return await self._writer.run(self._save, data, drawn_size)

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
        self._writer.close()

    def load(self, sha256: str, mime: str) -> bytes:
        return self.path_for(sha256, mime).read_bytes()

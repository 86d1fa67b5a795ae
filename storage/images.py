"""Images on disk, named by content hash, so nothing depends on a provider's expiring URL.

Writes are atomic (temporary file, then rename), and the same bytes are stored once.
"""

from __future__ import annotations

import hashlib
import io
import os
import tempfile
import warnings
from pathlib import Path

from PIL import Image

from bot.errors import ProviderBadResponse
from bot.models import StoredImage
from bot.workers import WorkerThreads

EXTENSIONS = {"image/png": "png", "image/jpeg": "jpg", "image/webp": "webp", "image/gif": "gif"}
FORMAT_MIME = {"PNG": "image/png", "JPEG": "image/jpeg", "WEBP": "image/webp", "GIF": "image/gif"}
#: Decompression-bomb guard: no image we accept may exceed this many pixels.
MAX_PIXELS = 40_000_000


def inspect_image(data: bytes) -> tuple[str, int, int]:
    """Return (mime, width, height) or raise ``ProviderBadResponse`` if ``data`` is not a sane image."""
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("error", Image.DecompressionBombWarning)
            with Image.open(io.BytesIO(data)) as img:
                fmt = img.format or ""
                width, height = img.size
                if width * height > MAX_PIXELS:
                    raise ProviderBadResponse("The image is too large to accept.")
                img.verify()
    except ProviderBadResponse:
        raise
    except (Exception, Image.DecompressionBombWarning):
        raise ProviderBadResponse("The data is not a readable image.") from None
    mime = FORMAT_MIME.get(fmt)
    if mime is None:
        raise ProviderBadResponse(f"Unsupported image format {fmt or 'unknown'}.")
    return mime, width, height


class ImageStore:
    def __init__(self, data_dir: Path) -> None:
        self.root = Path(data_dir) / "images"
        self._writer = WorkerThreads("image-store")

    def path_for(self, sha256: str, mime: str) -> Path:
        return self.root / sha256[:2] / f"{sha256}.{EXTENSIONS.get(mime, 'bin')}"

    def _save(self, data: bytes) -> StoredImage:
        mime, width, height = inspect_image(data)
        digest = hashlib.sha256(data).hexdigest()
        path = self.path_for(digest, mime)
        if not path.exists():
            path.parent.mkdir(parents=True, exist_ok=True)
            fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=".tmp-")
            try:
                with os.fdopen(fd, "wb") as fh:
                    fh.write(data)
                os.replace(tmp, path)
            except BaseException:
                Path(tmp).unlink(missing_ok=True)
                raise
        return StoredImage(digest, path, mime, len(data), width, height)

    async def save(self, data: bytes) -> StoredImage:
        return await self._writer.run(self._save, data)

    def close(self) -> None:
        self._writer.close()

    def load(self, sha256: str, mime: str) -> bytes:
        return self.path_for(sha256, mime).read_bytes()

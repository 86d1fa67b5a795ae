"""Make a generation's images fit one Discord message: at most 10 files, within the upload limit.

Discord refuses (413, code 40005) a message whose files exceed the interaction's
``attachment_size_limit``. Rather than fail, each message's files are kept under the limit together:
originals when they fit, else re-encoded (PNG -> WebP, or JPEG for opaque images), else downscaled.
Pure Pillow work, meant to run in a worker thread.
"""

from __future__ import annotations

import io
from collections.abc import Sequence
from dataclasses import dataclass

from PIL import Image

MAX_FILES = 10
#: Room left for the multipart envelope and the embed around the files.
ENVELOPE = 16 * 1024
EXTENSIONS = {"image/png": "png", "image/jpeg": "jpg", "image/webp": "webp", "image/gif": "gif"}


class CannotFit(Exception):
    """Not even a small thumbnail fits the limit (a limit of a few kilobytes)."""


@dataclass(frozen=True)
class Upload:
    data: bytes
    filename: str
    reencoded: bool = False


def fit_message(images: Sequence[tuple[bytes, str]], limit: int, *, stem: str, start: int = 1) -> list[Upload]:
    """Files for one message (<= 10 images), together at most ``limit`` bytes with the envelope."""
    if len(images) > MAX_FILES:
        raise ValueError("a Discord message holds at most 10 files")
    budget = max(1024, limit - ENVELOPE)
    total = sum(len(data) for data, _ in images)
    uploads = []
    for i, (data, mime) in enumerate(images, start):
        ext = EXTENSIONS.get(mime, "png")
        if total <= budget:
            uploads.append(Upload(data, f"{stem}-{i}.{ext}"))
            continue
        share = budget // len(images)
        if len(data) <= share:
            uploads.append(Upload(data, f"{stem}-{i}.{ext}"))
            continue
        fitted, ext = shrink(data, share)
        uploads.append(Upload(fitted, f"{stem}-{i}.{ext}", reencoded=True))
    return uploads


def shrink(data: bytes, budget: int) -> tuple[bytes, str]:
    """Re-encode, then downscale, until the image is at most ``budget`` bytes."""
    with Image.open(io.BytesIO(data)) as src:
        src.load()
        alpha = src.mode in ("RGBA", "LA", "PA") or "transparency" in src.info
        image = src.convert("RGBA" if alpha else "RGB")
    scale = 1.0
    while True:
        frame = image
        if scale < 1.0:
            size = (max(1, round(image.width * scale)), max(1, round(image.height * scale)))
            frame = image.resize(size, Image.Resampling.LANCZOS)
        for fmt, quality in (("WEBP", 90), ("WEBP", 75), ("JPEG", 80), ("WEBP", 50)):
            if fmt == "JPEG" and alpha:
                continue
            out = io.BytesIO()
            frame.save(out, format=fmt, quality=quality, **({"method": 4} if fmt == "WEBP" else {"optimize": True}))
            if out.tell() <= budget:
                return out.getvalue(), "webp" if fmt == "WEBP" else "jpg"
        if min(frame.width, frame.height) <= 32:
            raise CannotFit(f"an image cannot be made smaller than {budget} bytes")
        scale *= 0.7

"""Image inspection, shared by the providers, the image store and the core.

Deliberately neutral (Pillow and ``bot.errors`` only): a provider checks a vendor's bytes, the core
checks a reference, the store names a file by its type, and none of them needs the other's module
(providers and adapters import no ``storage``; an import-linter contract in ``pyproject.toml`` keeps it so).
"""

from __future__ import annotations

import io
import warnings

from PIL import Image

from .errors import ProviderBadResponse

#: MIME type -> file extension of every image format we accept.
EXTENSIONS = {"image/png": "png", "image/jpeg": "jpg", "image/webp": "webp", "image/gif": "gif"}
#: Pillow's format name -> MIME type.
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

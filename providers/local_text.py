"""The offline prompt enhancer: deterministic, no key, no network.

It keeps the user's subject and adds composition, lighting, style and detail chosen from the prompt's
hash, so the same prompt always enhances the same way.
"""

from __future__ import annotations

import hashlib
import io

from PIL import Image

COMPOSITION = (
    "rule-of-thirds composition",
    "centered symmetrical composition",
    "low-angle wide shot",
    "close-up with shallow depth of field",
    "sweeping panoramic view",
)
LIGHTING = (
    "soft golden-hour light",
    "dramatic rim lighting",
    "diffuse overcast light",
    "moody cinematic lighting",
    "bright natural daylight",
)
STYLE = (
    "highly detailed digital painting",
    "photorealistic, 35mm film look",
    "watercolor illustration",
    "crisp studio photograph",
    "concept art, matte painting",
)
DETAIL = (
    "intricate textures",
    "rich color palette",
    "atmospheric depth",
    "fine surface detail",
    "subtle reflections",
)


class LocalEnhancer:
    name = "local"
    model = "local-enhancer"

    async def enhance(self, prompt: str, *, limit: int) -> str:
        subject = " ".join(prompt.split()).rstrip(" .,;")
        h = hashlib.sha256(subject.lower().encode()).digest()
        extras = [
            COMPOSITION[h[0] % len(COMPOSITION)],
            LIGHTING[h[1] % len(LIGHTING)],
            STYLE[h[2] % len(STYLE)],
            DETAIL[h[3] % len(DETAIL)],
        ]
        text = f"{subject}, {', '.join(extras)}"
        if len(text) > limit:
            text = subject[:limit]
        return text

    async def describe(self, image: bytes) -> str:
        with Image.open(io.BytesIO(image)) as opened:
            img = opened.convert("RGB")
            small = img.resize((1, 1))
            r, g, b = small.getpixel((0, 0))  # type: ignore[misc]
            shape = "square" if img.width == img.height else ("wide" if img.width > img.height else "tall")
        return f"a {shape} picture with a dominant colour of rgb({r}, {g}, {b})"

    async def aclose(self) -> None:
        return None

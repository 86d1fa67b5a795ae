"""What /enhance and reference descriptions ask a text model, and how its answer is cleaned.

Both OpenAI chat and Gemini text use the same instructions, so switching ``IMAGEBOT_ENHANCER`` changes
the model, not the behaviour.
"""

from __future__ import annotations

ENHANCE_SYSTEM = (
    "You rewrite short prompts for an image generator into richer ones. Keep the user's subject and every "
    "element they named; never change what the picture is of, and never add text, logos or real people they "
    "did not ask for. Add composition, lighting, style and concrete visual detail. Answer with the rewritten "
    "prompt only: one paragraph, no preamble, no quotes, no lists. Stay under {limit} characters."
)
DESCRIBE_PROMPT = (
    "Describe this image for an image generator in one or two sentences: main subject, composition, colours, "
    "lighting and style. Answer with the description only."
)
DESCRIBE_LIMIT = 600


def clean_text(text: str | None, limit: int) -> str:
    """One line, outer quotes and a leading label removed, cut at a word boundary under ``limit``."""
    out = " ".join((text or "").split())
    for label in ("Prompt:", "Enhanced prompt:", "Rewritten prompt:", "Description:"):
        if out.lower().startswith(label.lower()):
            out = out[len(label):].strip()
    if len(out) >= 2 and out[0] == out[-1] and out[0] in "\"'“”":
        out = out[1:-1].strip()
    out = out.strip("“”").strip()
    if len(out) > limit:
        cut = out[:limit]
        space = cut.rfind(" ")
        out = (cut[:space] if space > limit // 2 else cut).rstrip(" ,;:")
    return out

"""Outpainting canvases: Zoom out, Pan and Make square (issue 13), pure image work.

The enlarged canvas carries the original and a transparent new area; the mask is opaque over the
original and transparent where the model may draw. That is the shape OpenAI's edit endpoint takes
(``openai/types/image_edit_params.py``, ``mask``: "fully transparent areas (e.g. where alpha is zero)
indicate where `image` should be edited ... a valid PNG file ... the same dimensions as `image`"; the
image's dimensions count "after orientation", so EXIF orientation is applied here first). Models do
not keep masked pixels exactly, so ``restore_original`` pastes the original back over the result: the
original stays pixel for pixel where it was.

The canvas size is always one the model makes (``ModelInfo.size_problem``): a free-size model gets
the ideal canvas rounded to its multiple, scaled as a whole when it breaks a limit; a fixed-size model
gets the size of the nearest shape, with the layout fitted inside. Nothing here imports a platform or
the storage layer.
"""

from __future__ import annotations

import io
import math
from dataclasses import dataclass

from PIL import Image, ImageOps

from providers.base import FreeSizes, ModelInfo, parse_size

from .errors import ProviderBadResponse, ValidationError
from .imaging import inspect_image

OPS = ("zoom-1.5", "zoom-2", "pan-left", "pan-right", "pan-up", "pan-down", "square")
LABELS: dict[str, str] = {
    "zoom-1.5": "Zoom out 1.5x",
    "zoom-2": "Zoom out 2x",
    "pan-left": "Pan left",
    "pan-right": "Pan right",
    "pan-up": "Pan up",
    "pan-down": "Pan down",
    "square": "Make square",
}
CODE = "IMG-VALID-OUTPAINT"

_ZOOM = {"zoom-1.5": 1.5, "zoom-2": 2.0}
#: Where the original sits on each axis, as a fraction of the free room (0 left/top, 1 right/bottom).
_ANCHOR: dict[str, tuple[float, float]] = {
    "zoom-1.5": (0.5, 0.5), "zoom-2": (0.5, 0.5), "square": (0.5, 0.5),
    "pan-left": (1.0, 0.5), "pan-right": (0.0, 0.5), "pan-up": (0.5, 1.0), "pan-down": (0.5, 0.0),
}
#: A pan grows the canvas by this share of the side it extends.
_PAN = 0.5
#: Below this share of new area in the asked direction, a pan is not worth a model call.
_MIN_GROWTH = 0.125
#: A pan may add at most this share of the other axis (the nearest fixed size is wider/taller than asked).
_MAX_SIDE_PADDING = 0.3
#: A zoom may be fitted into a size whose shape differs from the ideal by at most this factor.
_MAX_ZOOM_MISMATCH = 2.0
#: A "square" fixed size may be off 1:1 by this much.
_SQUARE_TOLERANCE = 0.05


@dataclass(frozen=True)
class Canvas:
    #: PNG RGBA: the original placed, the new area transparent.
    image: bytes
    #: PNG RGBA of the same size: alpha 0 where the model may draw, 255 over the original.
    mask: bytes
    #: ``WxH``, a size the model makes.
    size: str
    #: Where the original (as placed, possibly scaled) sits: x, y, w, h.
    box: tuple[int, int, int, int]


@dataclass(frozen=True)
class Layout:
    """The geometry of a canvas without its pixels (to offer only the operations a model can do)."""

    size: tuple[int, int]
    box: tuple[int, int, int, int]

    @property
    def size_label(self) -> str:
        return f"{self.size[0]}x{self.size[1]}"


def plan_canvas(width: int, height: int, op: str, model: ModelInfo) -> Layout:
    """The canvas size and the original's box for ``op`` on a ``width x height`` image, or a
    ``ValidationError`` (``IMG-VALID-OUTPAINT``) saying why this model cannot do it."""
    if op not in OPS:
        raise ValidationError(f"Unknown canvas operation {op!r}; choose one of: {', '.join(OPS)}.", code=CODE)
    label = LABELS[op]
    if not model.supports_mask:
        raise ValidationError(f"{model.name} can't fill a masked area, so it can't {label.lower()}.", code=CODE)
    if width < 1 or height < 1:
        raise ValidationError("The image is empty.", code=CODE)
    if op == "square" and width == height:
        raise ValidationError("The image is already square.", code=CODE)
    ideal = _ideal(width, height, op)
    if model.free_sizes is not None:
        layout = _fit_free(width, height, op, ideal, model.free_sizes, model)
    elif model.sizes:
        layout = _fit_fixed(width, height, op, ideal, model)
    else:
        raise ValidationError(f"{model.name} declares no sizes, so it can't {label.lower()}.", code=CODE)
    if model.size_problem(layout.size_label) is not None:  # pragma: no cover - the fitters only pick sizes it makes
        raise ValidationError(f"{model.name} has no size for {label.lower()} of this image.", code=CODE)
    return layout


def available_ops(width: int, height: int, model: ModelInfo) -> tuple[str, ...]:
    """The operations (of ``OPS``) this model can do on a ``width x height`` image: the buttons to offer."""
    ops: list[str] = []
    for op in OPS:
        try:
            plan_canvas(width, height, op, model)
        except ValidationError:
            continue
        ops.append(op)
    return tuple(ops)


def outpaint_canvas(original: bytes, op: str, model: ModelInfo) -> Canvas:
    """The enlarged canvas and its mask for ``op``, at a size ``model`` makes. CPU-bound (up to a
    few hundred milliseconds for a large canvas): call it from a worker thread in async code."""
    if op not in OPS:
        raise ValidationError(f"Unknown canvas operation {op!r}; choose one of: {', '.join(OPS)}.", code=CODE)
    source = _load(original)
    layout = plan_canvas(source.width, source.height, op, model)
    x, y, w, h = layout.box
    canvas = Image.new("RGBA", layout.size, (0, 0, 0, 0))
    canvas.paste(_placed(source, w, h), (x, y))
    mask = Image.new("RGBA", layout.size, (0, 0, 0, 0))
    mask.paste((0, 0, 0, 255), (x, y, x + w, y + h))
    # Sent once and dropped: fast compression (level 1) rather than small files.
    return Canvas(image=_png(canvas, 1), mask=_png(mask, 1), size=layout.size_label, box=layout.box)


def restore_original(result: bytes, canvas: Canvas, original: bytes) -> bytes:
    """The model's ``result`` at the canvas size with the original (placed as in ``canvas.box``) pasted
    back, so the original region is exactly the original. An unreadable result is the provider's fault
    (``ProviderBadResponse``); an unreadable original a ``ValidationError``. Returns PNG (RGB when
    every pixel is opaque)."""
    inspect_image(result)
    with Image.open(io.BytesIO(result)) as opened:
        filled = opened.convert("RGBA")
    size = parse_size(canvas.size)
    if filled.size != size:
        filled = filled.resize(size, Image.Resampling.LANCZOS)
    x, y, w, h = canvas.box
    filled.paste(_placed(_load(original), w, h), (x, y))
    lo, _ = filled.getchannel("A").getextrema()
    return _png(filled.convert("RGB") if lo == 255 else filled)


def _ideal(width: int, height: int, op: str) -> tuple[float, float]:
    """The canvas at the original's own scale, before any model limit."""
    if op in _ZOOM:
        return width * _ZOOM[op], height * _ZOOM[op]
    if op in ("pan-left", "pan-right"):
        return width * (1 + _PAN), float(height)
    if op in ("pan-up", "pan-down"):
        return float(width), height * (1 + _PAN)
    side = float(max(width, height))
    return side, side


def _horizontal(op: str) -> bool:
    return op in ("pan-left", "pan-right")


def _place(op: str, canvas: tuple[int, int], inner: tuple[int, int]) -> tuple[int, int, int, int]:
    ax, ay = _ANCHOR[op]
    w, h = inner
    return round(ax * (canvas[0] - w)), round(ay * (canvas[1] - h)), w, h


def _fit_free(width: int, height: int, op: str, ideal: tuple[float, float], free: FreeSizes,
              model: ModelInfo) -> Layout:
    """Clamp the shape to the ratio limit, scale the whole layout into the pixel limits, round to the
    multiple (up where the original would not fit), and place the original by the op's anchor."""
    big_w, big_h = ideal
    limit = free.max_ratio
    if big_w / big_h > limit:
        if _horizontal(op):  # the pan makes it too wide: pan less
            big_w = big_h * limit
        else:  # an original beyond the limit: more room above and below
            big_h = big_w / limit
    elif big_h / big_w > limit:
        if op in ("pan-up", "pan-down"):
            big_h = big_w * limit
        else:
            big_w = big_h / limit
    if op.startswith("pan"):
        grown = (big_w - width) / width if _horizontal(op) else (big_h - height) / height
        if grown < _MIN_GROWTH:
            way = "wide" if _horizontal(op) else "tall"
            raise ValidationError(
                f"{model.name} can't {LABELS[op].lower()} this {width}x{height} image: it is already as {way}"
                f" as the model makes (at most {limit:g}:1).", code=CODE)
    scale = min(1.0, free.max_edge / max(big_w, big_h), math.sqrt(free.max_pixels / (big_w * big_h)))
    if big_w * big_h * scale * scale < free.min_pixels:
        scale = math.sqrt(free.min_pixels / (big_w * big_h))
    for _ in range(40):
        layout = _round_free(width, height, op, (big_w * scale, big_h * scale), scale, free, model)
        if layout is not None:
            return layout
        scale *= 0.97
    raise ValidationError(f"{model.name} has no size for {LABELS[op].lower()} of this image.", code=CODE)


def _round_free(width: int, height: int, op: str, target: tuple[float, float], scale: float, free: FreeSizes,
                model: ModelInfo) -> Layout | None:
    """Round the scaled canvas to the multiple. A side rounded down shrinks the original with it (the
    layout keeps its proportions); an unscaled original prefers rounding up, so it is never resampled
    when it need not be."""
    m = free.multiple

    def steps(v: float) -> set[int]:
        return {max(m, math.floor(v / m) * m), max(m, math.ceil(v / m) * m)}

    shape = target[0] / target[1]
    valid = [(cw, ch) for cw in steps(target[0]) for ch in steps(target[1])
             if model.size_problem(f"{cw}x{ch}") is None]
    if not valid:
        return None

    def fit(c: tuple[int, int]) -> float:
        return scale * min(1.0, c[0] / target[0], c[1] / target[1])

    def score(c: tuple[int, int]) -> tuple[bool, float]:
        return (scale == 1.0 and fit(c) != 1.0, abs(math.log(c[0] / c[1] / shape)))

    best = min(valid, key=score)
    used = fit(best)
    inner = (width, height) if used == 1.0 else (
        min(best[0], max(1, round(width * used))), min(best[1], max(1, round(height * used))))
    return Layout(best, _place(op, best, inner))


def _fit_fixed(width: int, height: int, op: str, ideal: tuple[float, float], model: ModelInfo) -> Layout:
    """The size of the nearest shape (then the nearest pixel count), the layout fitted inside it."""
    big_w, big_h = ideal
    shape = big_w / big_h
    dims = [parse_size(s) for s in model.sizes]
    best = min(dims, key=lambda d: (round(abs(math.log(d[0] / d[1] / shape)), 6),
                                    abs(math.log(d[0] * d[1] / (big_w * big_h)))))
    cw, ch = best
    label = LABELS[op].lower()
    mismatch = (cw / ch) / shape  # >1: the size is wider than the ideal canvas
    if op == "square" and abs(cw / ch - 1) > _SQUARE_TOLERANCE:
        raise ValidationError(f"{model.name} makes no square size (it makes {', '.join(model.sizes)}).", code=CODE)
    if op.startswith("pan"):
        # Padding across the pan (not asked for) is what the nearest size adds beyond the ideal shape.
        across = 1 - (mismatch if _horizontal(op) else 1 / mismatch)
        if across > _MAX_SIDE_PADDING:
            way = "wide" if _horizontal(op) else "tall"
            raise ValidationError(
                f"{model.name} can't {label} this {width}x{height} image: none of its sizes"
                f" ({', '.join(model.sizes)}) is {way} enough.", code=CODE)
    if op in _ZOOM and max(mismatch, 1 / mismatch) > _MAX_ZOOM_MISMATCH:
        raise ValidationError(
            f"{model.name} can't {label} this {width}x{height} image: none of its sizes"
            f" ({', '.join(model.sizes)}) is near its shape.", code=CODE)
    scale = min(cw / big_w, ch / big_h)
    inner = (width, height) if scale == 1.0 else (
        min(cw, max(1, round(width * scale))), min(ch, max(1, round(height * scale))))
    return Layout((cw, ch), _place(op, (cw, ch), inner))


def _load(data: bytes) -> Image.Image:
    """The original as RGBA, upright (EXIF orientation applied), or a ``ValidationError``."""
    try:
        inspect_image(data)
        with Image.open(io.BytesIO(data)) as opened:
            upright = ImageOps.exif_transpose(opened)
            return upright.convert("RGBA")
    except (ProviderBadResponse, OSError, ValueError) as exc:
        reason = exc.message if isinstance(exc, ProviderBadResponse) else "The data is not a readable image."
        raise ValidationError(f"The image can't be used for outpainting: {reason}", code=CODE) from None


def _placed(source: Image.Image, w: int, h: int) -> Image.Image:
    """The original at its placed size: itself when unscaled, else one deterministic resample (the
    canvas and the restore both call this, so their pixels agree exactly)."""
    if source.size == (w, h):
        return source
    return source.resize((w, h), Image.Resampling.LANCZOS)


def _png(img: Image.Image, level: int = 6) -> bytes:
    out = io.BytesIO()
    img.save(out, "PNG", compress_level=level)
    return out.getvalue()

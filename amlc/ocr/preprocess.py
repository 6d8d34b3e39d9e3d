"""Decoding and preprocessing of images before OCR, and the map of boxes back to the original."""

from __future__ import annotations

import io
import warnings
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any, Iterable, Sequence

import numpy as np
from PIL import Image, ImageOps

from .base import Box, ImageSource, OcrError


@dataclass(frozen=True)
class Preprocess:
    """What is done to an image before OCR; recorded with every result.

    max_side: cap on the longer side in pixels (larger images are shrunk); detection time grows
      with the pixel count, and catalogue text stays legible at this size.
    min_side: floor on the longer side: smaller images (thumbnails: 61% of the test images
      here are under 600 px) are enlarged to it, since the detector misses their small print
      (a '4.0 in / 10 cm' beside a pan, 12 px high on a 500 px photo, is found only enlarged).
    autocontrast: stretch the histogram (PIL ImageOps.autocontrast) for faded, low-contrast labels.
    cutoff: percent of darkest/lightest pixels ignored by autocontrast, so a few specks do not
      pin the range.
    det_side, det_limit: how the text detector resizes its input, applied the same way by both
      backends: "min" scales the shorter side up to det_side, "max" the longer side down to it.
      PaddleOCR's general-OCR default (min 64) keeps product photos at their own resolution;
      RapidOCR's (min 736) would blow a 1000x65 banner up to 11000 pixels wide.
    reread_below, reread_scale: after the first pass, lines holding a digit read below this
      confidence are cut out of the full-size image, upscaled and read again (amlc.ocr.reread);
      None skips the second pass.
    """

    max_side: int | None = 1280
    min_side: int | None = None
    autocontrast: bool = False
    cutoff: float = 1.0
    det_side: int = 64
    det_limit: str = "min"
    reread_below: float | None = None
    reread_scale: float = 2.0

    def __post_init__(self) -> None:
        if self.max_side is not None and self.max_side < 32:
            raise ValueError(f"max_side must be at least 32 pixels, got {self.max_side}")
        if self.min_side is not None and self.min_side < 32:
            raise ValueError(f"min_side must be at least 32 pixels, got {self.min_side}")
        if self.min_side and self.max_side and self.min_side > self.max_side:
            raise ValueError(f"min_side {self.min_side} is above max_side {self.max_side}: an image "
                             "cannot be both enlarged to one and shrunk to the other")
        if not 0.0 <= self.cutoff < 50.0:
            raise ValueError(f"cutoff must be in [0, 50), got {self.cutoff}")
        if self.det_limit not in ("min", "max") or self.det_side < 32:
            raise ValueError(f"det_limit must be 'min' or 'max' and det_side >= 32, "
                             f"got {self.det_limit!r}, {self.det_side}")
        if self.reread_below is not None and not 0.0 < self.reread_below <= 1.0:
            raise ValueError(f"reread_below must be in (0, 1], got {self.reread_below}")
        if not 1.0 <= self.reread_scale <= 8.0:
            raise ValueError(f"reread_scale must be in [1, 8], got {self.reread_scale}")


@dataclass(frozen=True)
class Prepared:
    """An image ready for a backend: BGR pixels plus how they relate to the original."""

    bgr: np.ndarray
    scale: float  # prepared pixels per original pixel (< 1 shrunk, > 1 enlarged)
    original_size: tuple[int, int]  # (width, height) after EXIF orientation
    record: dict[str, Any]
    original: Image.Image | None = None  # the full-size image, kept for a second pass


def decode(source: ImageSource, index: int | None = None) -> Image.Image:
    """Fully decode an image into RGB, or raise OcrError saying why it is not one."""
    what = f"image {index}" if index is not None else "image"
    stream = _as_stream(source, index)
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("error", Image.DecompressionBombWarning)
            img = Image.open(stream)
            img.load()  # decodes now, so truncated files fail here and not inside the backend
    except FileNotFoundError as exc:
        raise OcrError(f"{what}: no such file {source}", index) from exc
    except Image.UnidentifiedImageError as exc:
        raise OcrError(f"{what}: not an image ({_describe(source)})", index) from exc
    except (OSError, SyntaxError, ValueError, Image.DecompressionBombWarning,
            Image.DecompressionBombError) as exc:
        raise OcrError(f"{what}: cannot decode ({exc})", index) from exc
    img = ImageOps.exif_transpose(img)
    return _to_rgb(img)


def prepare(source: ImageSource, pre: Preprocess, index: int | None = None) -> Prepared:
    img = full = decode(source, index)
    original = img.size
    scale = _scale_for(original, pre.max_side, pre.min_side)
    if scale != 1.0:
        size = (max(1, round(original[0] * scale)), max(1, round(original[1] * scale)))
        img = img.resize(size, Image.Resampling.LANCZOS)
    if pre.autocontrast:
        img = ImageOps.autocontrast(img, cutoff=pre.cutoff)
    record = {
        **asdict(pre),
        "original_size": list(original),
        "size": list(img.size),
        "scale": round(scale, 6),
    }
    bgr = np.ascontiguousarray(np.asarray(img)[:, :, ::-1])
    return Prepared(bgr, scale, original, record, full if pre.reread_below is not None else None)


def prepare_all(sources: Sequence[ImageSource], pre: Preprocess) -> list[Prepared]:
    return [prepare(src, pre, i) for i, src in enumerate(sources)]


def to_original(points: Iterable[Iterable[float]], prepared: Prepared) -> Box:
    """Map a box from prepared-image pixels to original pixels, clipped to the image."""
    w, h = prepared.original_size
    out = []
    for x, y in points:
        ox = min(max(float(x) / prepared.scale, 0.0), float(w))
        oy = min(max(float(y) / prepared.scale, 0.0), float(h))
        out.append((round(ox, 1), round(oy, 1)))
    return tuple(out)


def _scale_for(size: tuple[int, int], max_side: int | None, min_side: int | None) -> float:
    longer = max(size)
    if max_side is not None and longer > max_side:
        return max_side / longer
    if min_side is not None and longer < min_side:
        return min_side / longer
    return 1.0


def _to_rgb(img: Image.Image) -> Image.Image:
    if img.mode == "RGB":
        return img
    if img.mode in ("RGBA", "LA", "PA") or (img.mode == "P" and "transparency" in img.info):
        # Transparent product cut-outs: flatten onto white, as a shop page shows them.
        rgba = img.convert("RGBA")
        canvas = Image.new("RGB", rgba.size, (255, 255, 255))
        canvas.paste(rgba, mask=rgba.getchannel("A"))
        return canvas
    return img.convert("RGB")


def _as_stream(source: ImageSource, index: int | None) -> io.BytesIO | Path:
    if isinstance(source, (bytes, bytearray, memoryview)):
        return io.BytesIO(bytes(source))
    if isinstance(source, (str, Path)):
        return Path(source)
    raise OcrError(f"expected a path or bytes, got {type(source).__name__}", index)


def _describe(source: ImageSource) -> str:
    if isinstance(source, (bytes, bytearray, memoryview)):
        head = bytes(source[:16])
        return f"{len(source)} bytes starting {head!r}"
    return f"file {source}"

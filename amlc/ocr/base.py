"""The OCR interface every backend implements: lines of text with confidence and box."""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Protocol, Sequence, Union

Box = tuple[tuple[float, float], ...]
ImageSource = Union[Path, str, bytes]

# Lines the recogniser scores below this are dropped by both backends (RapidOCR's own default).
MIN_CONFIDENCE = 0.5
# Text lines recognised per onnxruntime call on a GPU (the libraries' CPU default is 6).
GPU_REC_BATCH = 32
# Images whose text lines PaddleOCR recognises together on a GPU.
GPU_IMAGE_BATCH = 16


class OcrError(ValueError):
    """An input could not be read as an image; `index` is its position in the batch."""

    def __init__(self, message: str, index: int | None = None) -> None:
        super().__init__(message)
        self.index = index


@dataclass(frozen=True)
class OcrLine:
    text: str
    confidence: float
    box: Box  # 4 corner points (x, y) in pixels of the original image, clockwise from top-left
    guide: str = ""  # direction of the drawn line beside a number (amlc.ocr.guides), '' if none


@dataclass
class OcrResult:
    lines: list[OcrLine]
    engine: str
    preprocess: dict[str, Any] = field(default_factory=dict)
    seconds: float = 0.0  # OCR time for this image (decoding and preprocessing excluded)

    def text(self) -> str:
        return "\n".join(line.text for line in self.lines)

    def to_json(self) -> str:
        return json.dumps(asdict(self), ensure_ascii=False, separators=(",", ":"))

    @classmethod
    def from_json(cls, data: str | bytes) -> "OcrResult":
        raw = json.loads(data)
        lines = [
            OcrLine(
                text=line["text"],
                confidence=float(line["confidence"]),
                box=tuple((float(x), float(y)) for x, y in line["box"]),
                guide=str(line.get("guide", "")),
            )
            for line in raw["lines"]
        ]
        return cls(lines, raw["engine"], raw.get("preprocess", {}), float(raw.get("seconds", 0.0)))


class OcrEngine(Protocol):
    """One OCR backend, built once and reused.

    Engines are not thread-safe: give each worker thread (or process) its own engine and call
    `read` from that worker only, never from the asyncio event loop (it blocks for seconds).
    """

    name: str

    def read(self, images: Sequence[ImageSource]) -> list[OcrResult]:
        """OCR each image (a file path or encoded bytes); one result per input, in order.

        Every input is decoded before any OCR runs, so a bad one raises `OcrError` (with its
        `index`) without wasting work on the others.
        """
        ...

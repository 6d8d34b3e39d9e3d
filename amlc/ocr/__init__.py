"""The OCR stage: product images to text lines with confidence and box.

    engine = load_engine("rapidocr")          # or "paddleocr"; device="cuda" for the GPU
    [result] = engine.read([Path("x.jpg")])   # or encoded bytes
    result.text(), result.lines[0].box, result.to_json()

Engines are built once and are not thread-safe: the daemon owns one per OCR worker thread and
calls `read` there, never on the event loop.
"""

from __future__ import annotations

from pathlib import Path

from .base import MIN_CONFIDENCE, ImageSource, OcrEngine, OcrError, OcrLine, OcrResult
from .models import parse_device
from .preprocess import Preprocess

ENGINES = ("rapidocr", "paddleocr")

__all__ = [
    "ENGINES", "MIN_CONFIDENCE", "ImageSource", "OcrEngine", "OcrError", "OcrLine", "OcrResult",
    "Preprocess", "load_engine",
]


def load_engine(name: str = "rapidocr", *, preprocess: Preprocess | None = None,
                device: str = "cpu", threads: int = 1,
                model_dir: Path | None = None) -> OcrEngine:
    """Build an OCR engine (seconds: loads ONNX sessions; PaddleOCR's import alone takes ~10 s).

    threads: onnxruntime intra-op threads per session; keep 1 and add workers instead.
    model_dir: where the PaddleOCR model folders are written (default ~/.cache/amlc/paddle-models).
    """
    pre = preprocess or Preprocess()
    dev = parse_device(device)
    if name == "rapidocr":
        from .rapid import RapidOcrEngine

        return RapidOcrEngine(pre, dev, threads)
    if name == "paddleocr":
        from .paddle import PaddleOcrEngine

        return PaddleOcrEngine(pre, dev, threads, model_dir)
    raise ValueError(f"unknown OCR engine {name!r}; choose one of {', '.join(ENGINES)}")

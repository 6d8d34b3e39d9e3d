"""The OCR stage: product images to text lines with confidence and box.

    engine = load_engine("rapidocr")          # or "paddleocr"; device="cuda" for the GPU
    [result] = engine.read([Path("x.jpg")])   # or encoded bytes
    result.text(), result.lines[0].box, result.to_json()

Engines are built once and are not thread-safe: the daemon builds one per worker process from
an `OcrSpec` (amlc.workers) and calls `read` there, never on the event loop.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, Sequence

from .base import GPU_IMAGE_BATCH, MIN_CONFIDENCE, ImageSource, OcrEngine, OcrError, OcrLine, OcrResult
from .models import parse_device
from .preprocess import Preprocess
from .runtime import RUNTIMES, RuntimeChoiceError, check_runtime, resolve_runtime

ENGINES = ("rapidocr", "paddleocr")
# OCR processes sharing one GPU by default: while one runs det/rec there, the others decode,
# resize and post-process on CPU cores.
CUDA_WORKERS = 4
# Images per engine call by default. A CPU engine reads one image at a time anyway, so small
# batches only keep workers evenly loaded and limit what a crashing batch-mate makes us redo;
# on a GPU, PaddleOCR recognises the lines of a whole batch together.
CPU_BATCH = 2

__all__ = [
    "ENGINES", "MIN_CONFIDENCE", "RUNTIMES", "ImageSource", "OcrEngine", "OcrError", "OcrLine",
    "OcrResult", "OcrSpec", "Preprocess", "RuntimeChoiceError", "check_runtime", "default_ocr_batch",
    "default_ocr_workers", "load_engine", "resolve_runtime",
]


def load_engine(name: str = "rapidocr", *, preprocess: Preprocess | None = None,
                device: str = "cpu", threads: int = 1,
                model_dir: Path | None = None, runtime: str = "auto") -> OcrEngine:
    """Build an OCR engine (seconds: loads its model sessions; PaddleOCR's import alone takes ~10 s).

    threads: inference threads per model session; keep 1 and add workers instead.
    model_dir: where the PaddleOCR model folders are written (default ~/.cache/amlc/paddle-models).
    runtime: auto, onnxruntime or openvino (amlc.ocr.runtime); auto is OpenVINO for RapidOCR on
      a CPU where it is installed.
    """
    pre = preprocess or Preprocess()
    dev = parse_device(device)
    if name not in ENGINES:
        raise ValueError(f"unknown OCR engine {name!r}; choose one of {', '.join(ENGINES)}")
    chosen = resolve_runtime(runtime, name, dev.cuda)
    if name == "rapidocr":
        from .rapid import RapidOcrEngine

        return RapidOcrEngine(pre, dev, threads, runtime=chosen)
    from .paddle import PaddleOcrEngine

    return PaddleOcrEngine(pre, dev, threads, model_dir)


@dataclass(frozen=True)
class OcrSpec:
    """A picklable recipe for one OCR engine, built once in each worker (`amlc.workers`)."""

    engine: str = "rapidocr"
    device: str = "cpu"
    preprocess: Preprocess = field(default_factory=Preprocess)
    threads: int = 1
    model_dir: Path | None = None
    runtime: str = "auto"  # resolved once by the run, so every worker names the same one

    def build(self) -> Callable[[Sequence[ImageSource]], list[OcrResult]]:
        return load_engine(self.engine, preprocess=self.preprocess, device=self.device,
                           threads=self.threads, model_dir=self.model_dir, runtime=self.runtime).read


def default_ocr_workers(device: str) -> int:
    """One single-threaded engine per core on a CPU; CUDA_WORKERS processes per GPU."""
    from ..workers import cores

    return min(CUDA_WORKERS, cores()) if parse_device(device).cuda else cores()


def default_ocr_batch(device: str) -> int:
    return GPU_IMAGE_BATCH if parse_device(device).cuda else CPU_BATCH

"""PaddleOCR 3.x backend, run by its onnxruntime engine on the rapidocr wheel's models.

No `paddlepaddle` and no model hub: the model folders are written by `models.paddle_model_dirs`,
and PaddleX's check of model sources is switched off before it is imported. On CUDA the same
ONNX models run on onnxruntime-gpu's CUDA execution provider, and the text lines of up to
GPU_IMAGE_BATCH images are recognised together, GPU_REC_BATCH lines per call. Detection stays
one image per call: PaddleX stacks a detection batch into one array, which images of different
shapes cannot be.
"""

from __future__ import annotations

import logging
import os
import time
from pathlib import Path
from typing import Any, Sequence

import numpy as np

from .base import GPU_IMAGE_BATCH, GPU_REC_BATCH, MIN_CONFIDENCE, ImageSource, OcrLine, OcrResult
from .guides import with_guides
from .models import Device, paddle_model_dirs
from .preprocess import Prepared, Preprocess, prepare_all, to_original
from .reread import joined, second_pass


class PaddleOcrEngine:
    """One PaddleOCR pipeline. Not thread-safe: one engine per worker thread."""

    name = "paddleocr"

    def __init__(self, preprocess: Preprocess, device: Device, threads: int = 1,
                 model_dir: Path | None = None) -> None:
        # Must be set before paddlex is imported: it would otherwise probe hosts for models.
        os.environ.setdefault("PADDLE_PDX_DISABLE_MODEL_SOURCE_CHECK", "True")
        from paddleocr import PaddleOCR
        from paddlex.inference import load_pipeline_config

        logging.getLogger("paddlex").setLevel(logging.WARNING)  # one INFO line per model load
        dirs = paddle_model_dirs(model_dir)
        self.preprocess = preprocess
        self.device = device
        config = load_pipeline_config("OCR")
        # Images per pipeline step: their lines share recognition batches. On a CPU one at a
        # time is faster (a shared batch pads every line to the widest).
        config["batch_size"] = GPU_IMAGE_BATCH if device.cuda else 1
        self.ocr = PaddleOCR(
            paddlex_config=config,
            text_detection_model_name=dirs["det"][0],
            text_detection_model_dir=str(dirs["det"][1]),
            text_recognition_model_name=dirs["rec"][0],
            text_recognition_model_dir=str(dirs["rec"][1]),
            # Document unwarping and orientation models are not in the wheel, and product
            # photos rarely need them.
            use_doc_orientation_classify=False,
            use_doc_unwarping=False,
            use_textline_orientation=False,
            text_rec_score_thresh=MIN_CONFIDENCE,
            text_det_limit_side_len=preprocess.det_side,
            text_det_limit_type=preprocess.det_limit,
            text_recognition_batch_size=GPU_REC_BATCH if device.cuda else None,
            engine="onnxruntime",
            engine_config=_engine_config(device, threads),
            device=f"gpu:{device.index}" if device.cuda else "cpu",
        )

    def read(self, images: Sequence[ImageSource]) -> list[OcrResult]:
        prepared = prepare_all(images, self.preprocess)
        if not prepared:
            return []
        start = time.perf_counter()
        outputs = list(self.ocr.predict([p.bgr for p in prepared]))
        # PaddleOCR handles the batch in one call, so each image gets an equal share of the time.
        each = (time.perf_counter() - start) / len(prepared)
        return [self._result(out, p, each) for out, p in zip(outputs, prepared)]

    def _result(self, out: Any, prepared: Prepared, seconds: float) -> OcrResult:
        lines = [
            OcrLine(str(text), round(float(score), 5), to_original(np.asarray(poly).tolist(), prepared))
            for text, score, poly in zip(out["rec_texts"], out["rec_scores"], out["rec_polys"])
        ]
        start = time.perf_counter()
        lines = with_guides(second_pass(lines, prepared, self.preprocess, self._read_crops), prepared)
        seconds += time.perf_counter() - start
        return OcrResult(lines, self.name, {**prepared.record, "runtime": "onnxruntime"}, seconds)

    def _read_crops(self, crops: Sequence[Any]) -> list[tuple[str, float]]:
        outs = list(self.ocr.predict(list(crops))) if crops else []
        return [joined([str(t) for t in out["rec_texts"]], [float(s) for s in out["rec_scores"]])
                for out in outs]


def _engine_config(device: Device, threads: int) -> dict[str, Any]:
    config: dict[str, Any] = {
        # One intra-op thread per worker: under load two threads per session ran twice as slow.
        "intra_op_num_threads": threads,
        "inter_op_num_threads": 1,
    }
    if device.cuda:  # PaddleX fills device_type/device_id from the device string
        config["providers"] = ["CUDAExecutionProvider", "CPUExecutionProvider"]
        # Images differ in shape: skip cuDNN's exhaustive per-shape search.
        config["provider_options"] = [
            {"device_id": device.index, "cudnn_conv_algo_search": "HEURISTIC"}, {},
        ]
    return config

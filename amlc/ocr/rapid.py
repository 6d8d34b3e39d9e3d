"""RapidOCR backend: the light CPU default, PP-OCR det/cls/rec ONNX models straight from its wheel."""

from __future__ import annotations

import time
from typing import Any, Sequence

from .base import GPU_REC_BATCH, MIN_CONFIDENCE, ImageSource, OcrLine, OcrResult
from .guides import with_guides
from .models import (DET_BOX_THRESH, DET_MEAN, DET_STD, DET_THRESH, DET_UNCLIP_RATIO, Device,
                     wheel_dir, wheel_model)
from .preprocess import Prepared, Preprocess, prepare_all, to_original
from .reread import joined, second_pass


class RapidOcrEngine:
    """One RapidOCR pipeline. Not thread-safe: one engine per worker thread."""

    name = "rapidocr"

    def __init__(self, preprocess: Preprocess, device: Device, threads: int = 1,
                 use_cls: bool = True, runtime: str = "onnxruntime") -> None:
        from rapidocr import RapidOCR

        self.preprocess = preprocess
        self.device = device
        self.runtime = runtime
        params = _params(preprocess, device, threads, use_cls, runtime)
        self.use_cls = params["Global.use_cls"]
        self.ocr = RapidOCR(params=params)

    def read(self, images: Sequence[ImageSource]) -> list[OcrResult]:
        # RapidOCR takes one image per call (it batches the text lines inside an image).
        return [self._read_one(p) for p in prepare_all(images, self.preprocess)]

    def _read_one(self, prepared: Prepared) -> OcrResult:
        start = time.perf_counter()
        # every step named on every call: RapidOCR keeps a call's use_* flags for the next ones
        out = self.ocr(prepared.bgr, use_det=True, use_cls=self.use_cls, use_rec=True)
        lines = []
        if out.txts:  # None when nothing was detected
            for text, score, box in zip(out.txts, out.scores, out.boxes):
                lines.append(OcrLine(text, round(float(score), 5), to_original(box, prepared)))
        lines = with_guides(second_pass(lines, prepared, self.preprocess, self._read_crops), prepared)
        record = {**prepared.record, "runtime": self.runtime}
        return OcrResult(lines, self.name, record, time.perf_counter() - start)

    def _read_crops(self, crops: Sequence[Any]) -> list[tuple[str, float]]:
        outs = [self.ocr(crop, use_det=True, use_cls=False, use_rec=True) for crop in crops]
        return [joined(list(out.txts or ()), list(out.scores or ())) for out in outs]


# Kernels OpenVINO keeps per input shape. Photos come in ever new shapes: with its default
# (5,000) a worker grew past 2.9 GB in 330 photos and kept growing; 100 held it at 1.1 GB for 5%
# more CPU than no bound, where 0 cost 10% (150 photos, one process).
OPENVINO_SHAPE_CACHE = 100


def _bound_openvino_shape_cache() -> None:
    """RapidOCR hands OpenVINO a fixed set of CPU properties, without the shape cache's bound;
    add it to the properties its sessions are compiled with (once per process)."""
    from rapidocr.inference_engine.openvino import device_config

    config = device_config.CPUConfig
    if getattr(config.get_config, "bounded", False):
        return
    fixed = config.get_config

    def get_config(self: Any) -> dict[str, Any]:
        return {**fixed(self), "CPU_RUNTIME_CACHE_CAPACITY": str(OPENVINO_SHAPE_CACHE)}

    get_config.bounded = True  # type: ignore[attr-defined]
    config.get_config = get_config


def _params(pre: Preprocess, device: Device, threads: int, use_cls: bool,
            runtime: str) -> dict[str, Any]:
    # Explicit model paths pin the wheel's files, so RapidOCR never reaches for its download URLs.
    det, rec = wheel_model("det"), wheel_model("rec")
    cls = next(iter(sorted(wheel_dir().glob("*cls*.onnx"))), None)
    use_cls = use_cls and cls is not None
    ort = "EngineConfig.onnxruntime."
    params: dict[str, Any] = {
        "Global.log_level": "error",  # "warning" logs every image without text
        "Global.text_score": MIN_CONFIDENCE,
        "Global.use_cls": use_cls,
        "Det.model_path": str(det.path),
        "Rec.model_path": str(rec.path),
        "Det.limit_side_len": pre.det_side,
        "Det.limit_type": pre.det_limit,
        # PaddleOCR's detection settings: RapidOCR's default mean/std of 0.5 misread small text
        # at native resolution ("Se" for "Size", "68 n" for "6.68cm" on real test images).
        "Det.mean": DET_MEAN,
        "Det.std": DET_STD,
        "Det.thresh": DET_THRESH,
        "Det.box_thresh": DET_BOX_THRESH,
        "Det.unclip_ratio": DET_UNCLIP_RATIO,
        "Det.use_dilation": False,
        # One intra-op thread per worker: under load two threads per session ran twice as slow.
        ort + "intra_op_num_threads": threads,
        ort + "inter_op_num_threads": 1,
        ort + "use_cuda": device.cuda,
    }
    if use_cls:
        params["Cls.model_path"] = str(cls)
    if runtime == "openvino":
        from rapidocr import EngineType

        for model in ("Det", "Cls", "Rec"):
            params[f"{model}.engine_type"] = EngineType.OPENVINO
        params["EngineConfig.openvino.inference_num_threads"] = threads
        # OpenVINO pins its thread to a core by default: every worker process took core 0, and
        # two workers on two cores ran at the speed of one (56% of the machine busy).
        params["EngineConfig.openvino.enable_cpu_pinning"] = False
        _bound_openvino_shape_cache()
    if device.cuda:
        params[ort + "cuda_ep_cfg.device_id"] = device.index
        # Every image has its own shape: an exhaustive cuDNN search per new shape would dominate.
        params[ort + "cuda_ep_cfg.cudnn_conv_algo_search"] = "HEURISTIC"
        params["Rec.rec_batch_num"] = GPU_REC_BATCH
    return params

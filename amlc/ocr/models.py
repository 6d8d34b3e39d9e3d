"""The PP-OCR ONNX models shipped inside the rapidocr wheel, and PaddleOCR model folders made from them.

Nothing is ever downloaded: both backends read the same det/rec ONNX files from the installed
`rapidocr` package. PaddleOCR 3.x wants a folder per model holding `inference.onnx` and an
`inference.yml` (pre/post-processing and, for recognition, the character dictionary); we write
those folders ourselves from the wheel's files.
"""

from __future__ import annotations

import os
import re
import shutil
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml

# PaddleOCR's own detection settings for PP-OCRv5/v6 (BGR input, ImageNet normalisation, DB
# post-process); both backends use them so that they see the same boxes.
DET_MEAN = [0.485, 0.456, 0.406]
DET_STD = [0.229, 0.224, 0.225]
DET_THRESH = 0.3
DET_BOX_THRESH = 0.6
DET_UNCLIP_RATIO = 1.5

_WHEEL_MODEL = re.compile(r"^(PP-OCRv\d+)_(det|rec)_(\w+)\.onnx$")


@dataclass(frozen=True)
class WheelModel:
    path: Path
    version: str  # e.g. "PP-OCRv6"
    task: str  # "det" | "rec"
    size: str  # e.g. "small"

    @property
    def paddle_name(self) -> str:
        # PaddleX spells the same model "PP-OCRv6_small_det" (rapidocr: "PP-OCRv6_det_small").
        return f"{self.version}_{self.size}_{self.task}"


@dataclass(frozen=True)
class Device:
    cuda: bool
    index: int = 0

    def __str__(self) -> str:
        return f"cuda:{self.index}" if self.cuda else "cpu"


def parse_device(device: str) -> Device:
    """"cpu", "cuda" or "cuda:N"; CUDA also requires onnxruntime-gpu's CUDA provider."""
    name, _, idx = device.strip().lower().partition(":")
    if name == "cpu" and not idx:
        return Device(cuda=False)
    if name in ("cuda", "gpu") and (not idx or idx.isdigit()):
        _require_cuda_provider()
        return Device(cuda=True, index=int(idx or 0))
    raise ValueError(f"device must be 'cpu', 'cuda' or 'cuda:N', got {device!r}")


def _require_cuda_provider() -> None:
    import onnxruntime as ort

    available = ort.get_available_providers()
    if "CUDAExecutionProvider" not in available:
        raise RuntimeError(
            "device='cuda' needs onnxruntime-gpu (CUDAExecutionProvider); "
            f"this onnxruntime offers {available}"
        )


def wheel_dir() -> Path:
    import rapidocr

    return Path(rapidocr.__file__).resolve().parent / "models"


def wheel_model(task: str) -> WheelModel:
    """The det or rec model the installed rapidocr wheel ships (the newest if several)."""
    found = []
    for path in sorted(wheel_dir().glob("*.onnx")):
        m = _WHEEL_MODEL.match(path.name)
        if m and m.group(2) == task:
            found.append(WheelModel(path, m.group(1), m.group(2), m.group(3)))
    if not found:
        raise RuntimeError(f"no PP-OCR {task} model in {wheel_dir()}; is rapidocr 3.x installed?")
    return max(found, key=lambda m: int(m.version.removeprefix("PP-OCRv")))


def character_list(rec: Path) -> list[str]:
    """The recogniser's dictionary, stored by PaddleOCR's exporter in the ONNX metadata."""
    import onnxruntime as ort

    session = ort.InferenceSession(str(rec), providers=["CPUExecutionProvider"])
    chars = session.get_modelmeta().custom_metadata_map.get("character")
    if not chars:
        raise RuntimeError(f"{rec} carries no 'character' metadata; cannot decode its output")
    # split on "\n" only: str.splitlines would also break on characters in the dictionary itself.
    return chars.split("\n")


def det_config() -> dict[str, Any]:
    return {
        "PreProcess": {
            "transform_ops": [
                {"DecodeImage": {"channel_first": False, "img_mode": "BGR"}},
                {"DetResizeForTest": {"limit_side_len": 736, "limit_type": "min"}},
                {"NormalizeImage": {
                    "mean": DET_MEAN,
                    "std": DET_STD,
                    "scale": "1./255.",
                    "order": "hwc",
                }},
                {"ToCHWImage": None},
            ]
        },
        "PostProcess": {
            "name": "DBPostProcess",
            "thresh": DET_THRESH,
            "box_thresh": DET_BOX_THRESH,
            "max_candidates": 1000,
            "unclip_ratio": DET_UNCLIP_RATIO,
        },
    }


def rec_config(chars: list[str]) -> dict[str, Any]:
    return {
        "PreProcess": {
            "transform_ops": [
                {"DecodeImage": {"channel_first": False, "img_mode": "BGR"}},
                {"RecResizeImg": {"image_shape": [3, 48, 320]}},
            ]
        },
        "PostProcess": {"name": "CTCLabelDecode", "character_dict": chars},
    }


def default_cache_dir() -> Path:
    base = os.environ.get("XDG_CACHE_HOME") or str(Path.home() / ".cache")
    return Path(base) / "amlc" / "paddle-models"


def paddle_model_dirs(cache_dir: Path | None = None) -> dict[str, tuple[str, Path]]:
    """Write (once) and return {"det": (name, folder), "rec": (name, folder)} for PaddleOCR."""
    root = Path(cache_dir) if cache_dir else default_cache_dir()
    det, rec = wheel_model("det"), wheel_model("rec")
    return {
        "det": (det.paddle_name, _ensure_folder(root, det, det_config())),
        "rec": (rec.paddle_name, _ensure_folder(root, rec, rec_config(character_list(rec.path)))),
    }


def _ensure_folder(root: Path, model: WheelModel, config: dict[str, Any]) -> Path:
    folder = root / model.paddle_name
    yml = yaml.safe_dump({"Global": {"model_name": model.paddle_name}, **config}, allow_unicode=True)
    if _is_current(folder, model, yml):
        return folder
    root.mkdir(parents=True, exist_ok=True)
    # Build in a temporary sibling and rename, so a crash never leaves a half-written folder.
    tmp = Path(tempfile.mkdtemp(prefix=f".{model.paddle_name}-", dir=root))
    try:
        tmp.chmod(0o755)  # mkdtemp makes it private; the cache may be shared by users
        shutil.copyfile(model.path, tmp / "inference.onnx")
        (tmp / "inference.yml").write_text(yml, encoding="utf-8")
        shutil.rmtree(folder, ignore_errors=True)
        try:
            os.replace(tmp, folder)
        except OSError:
            if not _is_current(folder, model, yml):  # else another worker just wrote the same
                raise
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return folder


def _is_current(folder: Path, model: WheelModel, yml: str) -> bool:
    """The folder holds this wheel's model and the config this amlc writes (else rewrite it)."""
    onnx, config = folder / "inference.onnx", folder / "inference.yml"
    try:
        return (onnx.stat().st_size == model.path.stat().st_size
                and config.read_text(encoding="utf-8") == yml)
    except OSError:
        return False

"""Which inference runtime runs the OCR models: onnxruntime or OpenVINO.

The models are the same ONNX files either way. On this project's 2-core CPU, OpenVINO runs
RapidOCR's det/cls/rec at about half onnxruntime's CPU time per photo, so `auto` takes it on a
CPU when it is installed; on a GPU `auto` is onnxruntime (its CUDA provider). PaddleOCR reaches
OpenVINO only through PaddleX's high-performance plugin, which the package index does not offer,
so PaddleOCR always runs on onnxruntime.
"""

from __future__ import annotations

import importlib
import sys

RUNTIMES = ("auto", "onnxruntime", "openvino")


class RuntimeChoiceError(ValueError):
    """A runtime that cannot run this engine on this device at all."""


def openvino_installed() -> bool:
    try:  # an import, not a spec lookup: a broken or blocked install counts as missing
        importlib.import_module("openvino")
    except ImportError:
        return False
    return True


def check_runtime(requested: str, engine: str, cuda: bool) -> None:
    """Refuse what cannot run at all: an unknown name, OpenVINO on a GPU or for PaddleOCR."""
    if requested not in RUNTIMES:
        raise RuntimeChoiceError(f"unknown OCR runtime {requested!r}; choose one of {', '.join(RUNTIMES)}")
    if requested == "openvino" and (cuda or engine != "rapidocr"):
        why = "a GPU" if cuda else engine
        raise RuntimeChoiceError(f"--ocr-runtime openvino runs RapidOCR on a CPU only, not {why}; "
                                 "use --ocr-runtime onnxruntime (or auto)")


def resolve_runtime(requested: str, engine: str, cuda: bool) -> str:
    """The runtime that will actually run `engine`: "onnxruntime" or "openvino".

    OpenVINO asked for (or chosen by auto) but not installed falls back to onnxruntime with one
    line on stderr, so a Ray node without it still reads, and says so.
    """
    check_runtime(requested, engine, cuda)
    if requested == "onnxruntime" or cuda or engine != "rapidocr":
        return "onnxruntime"
    if openvino_installed():
        return "openvino"
    print("amlc: OpenVINO is not installed; OCR runs on onnxruntime "
          "(pip install openvino for about half the CPU per photo)", file=sys.stderr)
    return "onnxruntime"

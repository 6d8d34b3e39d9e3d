"""The OCR runtime (amlc.ocr.runtime): OpenVINO reads what onnxruntime reads from real photos, a
missing OpenVINO falls back to onnxruntime with one line, and `amlc run`, its log and `amlc
status` name the runtime that read each image."""

from __future__ import annotations

import csv
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

from amlc.ocr import Preprocess, RuntimeChoiceError, load_engine, resolve_runtime
from images import DATA, TEST_IMAGES
from store_helpers import query, write_csv

PHOTOS = DATA / "photos"
needs_data = pytest.mark.skipif(not PHOTOS.exists(), reason="shared data not mounted")
NUMBER = re.compile(r"\d+(?:\.\d+)?")


def numbers(text: str) -> set[float]:
    return {float(n) for n in NUMBER.findall(text)}


def labelled_photos(n: int) -> list[tuple[Path, float]]:
    """n photos spread over photos.csv, each with its label's number."""
    with open(DATA / "photos.csv", newline="", encoding="utf-8") as handle:
        rows = list(csv.DictReader(handle))[::37][:n]
    return [(PHOTOS / r["image_link"].rsplit("/", 1)[-1], float(r["entity_value"].split()[0])) for r in rows]


@needs_data
def test_openvino_reads_the_numbers_onnxruntime_reads() -> None:
    """Tolerance: the same number set on at least 6 of 8 photos, and the labelled number read by
    both runtimes or by neither on every photo. The models are the same; the runtimes' float
    arithmetic differs in the last bits, which moves a borderline line across the 0.5 confidence
    cut or the 0.9 second-pass cut (38 of 40 photos read the same numbers; the two that did not
    differed in misread strings such as '829222212682', not in a labelled number)."""
    pre = Preprocess(reread_below=0.9)
    ort = load_engine("rapidocr", preprocess=pre, runtime="onnxruntime")
    ov = load_engine("rapidocr", preprocess=pre, runtime="openvino")
    same = 0
    for path, truth in labelled_photos(8):
        [a], [b] = ort.read([path]), ov.read([path])
        assert (a.preprocess["runtime"], b.preprocess["runtime"]) == ("onnxruntime", "openvino")
        same += numbers(a.text()) == numbers(b.text())
        assert (truth in numbers(a.text())) == (truth in numbers(b.text())), (path.name, a.text(), b.text())
    assert same >= 6


def test_auto_takes_openvino_on_a_cpu_only_where_it_can_run() -> None:
    assert resolve_runtime("auto", "rapidocr", cuda=False) == "openvino"
    assert resolve_runtime("auto", "rapidocr", cuda=True) == "onnxruntime"
    assert resolve_runtime("auto", "paddleocr", cuda=False) == "onnxruntime"
    assert resolve_runtime("onnxruntime", "rapidocr", cuda=False) == "onnxruntime"
    with pytest.raises(RuntimeChoiceError, match="not a GPU"):
        resolve_runtime("openvino", "rapidocr", cuda=True)
    with pytest.raises(RuntimeChoiceError, match="not paddleocr"):
        resolve_runtime("openvino", "paddleocr", cuda=False)
    with pytest.raises(RuntimeChoiceError, match="unknown OCR runtime"):
        resolve_runtime("tensorrt", "rapidocr", cuda=False)


def _run(work: Path, *args: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "amlc", "--workdir", str(work), *args],
                          capture_output=True, text=True, env={**os.environ, **(env or {})})


def _ingest_two_test_images(work: Path) -> None:
    names = sorted(p.name for p in TEST_IMAGES.glob("*.jpg"))[:2]
    rows = [[i, f"https://m.media-amazon.com/images/I/{name}", 1, "item_weight"] for i, name in enumerate(names)]
    path = write_csv(work / "in.csv", ["index", "image_link", "group_id", "entity_name"], rows)
    assert _run(work, "ingest", str(path), "--split", "test").returncode == 0


RUN = ("run", "--exit-when-done", "--no-dashboard", "--ocr-workers", "2", "--local-images", str(TEST_IMAGES))


def test_a_run_names_its_runtime_in_its_log_the_store_and_status(tmp_path: Path) -> None:
    _ingest_two_test_images(tmp_path)
    run = _run(tmp_path, *RUN)
    assert run.returncode == 0, run.stderr
    assert "ocr: rapidocr on openvino, cpu" in run.stdout + run.stderr
    runtimes = query(tmp_path / "amlc.db", "SELECT json_extract(preprocess, '$.runtime') FROM ocr_results")
    assert runtimes == [("openvino",), ("openvino",)]  # read in the worker processes
    status = _run(tmp_path, "status")
    assert "OCR (newest result): rapidocr on openvino" in status.stdout


def test_a_missing_openvino_falls_back_to_onnxruntime_with_one_line(tmp_path: Path) -> None:
    """OpenVINO blocked in every process (sitecustomize): the run reads on onnxruntime in its
    worker processes and says so once, not once per worker."""
    blocker = tmp_path / "no-openvino"
    blocker.mkdir()
    (blocker / "sitecustomize.py").write_text("import sys\nsys.modules['openvino'] = None\n")
    env = {"PYTHONPATH": os.pathsep.join([str(blocker), os.environ.get("PYTHONPATH", "")])}
    work = tmp_path / "work"
    work.mkdir()
    _ingest_two_test_images(work)
    run = _run(work, *RUN, env=env)
    assert run.returncode == 0, run.stderr
    said = [line for line in (run.stdout + run.stderr).splitlines() if "OpenVINO is not installed" in line]
    assert said == ["amlc: OpenVINO is not installed; OCR runs on onnxruntime "
                    "(pip install openvino for about half the CPU per photo)"]
    assert "ocr: rapidocr on onnxruntime, cpu" in run.stdout + run.stderr
    runtimes = query(work / "amlc.db", "SELECT json_extract(preprocess, '$.runtime') FROM ocr_results")
    assert runtimes == [("onnxruntime",), ("onnxruntime",)]


def test_openvino_where_it_cannot_run_is_a_usage_error(tmp_path: Path) -> None:
    run = _run(tmp_path, "run", "--ocr-engine", "paddleocr", "--ocr-runtime", "openvino")
    assert run.returncode == 2
    assert "--ocr-runtime openvino runs RapidOCR on a CPU only, not paddleocr" in run.stderr


def test_openvino_sessions_leave_cores_unpinned_and_bound_their_shape_cache() -> None:
    """Pinned, every worker's OpenVINO thread took the same core (two workers ran at the speed
    of one); unbounded, its per-shape kernel cache grew a worker past 2.9 GB in 330 photos."""
    from rapidocr.inference_engine.openvino.device_config import CPUConfig

    from amlc.ocr.rapid import OPENVINO_SHAPE_CACHE

    engine = load_engine("rapidocr", preprocess=Preprocess(reread_below=0.9), runtime="openvino")
    engine.read([sorted(TEST_IMAGES.glob("*.jpg"))[3]])
    sessions = [engine.ocr.text_det, engine.ocr.text_cls, engine.ocr.text_rec]
    for part in sessions:
        compiled = part.session.session.get_compiled_model()
        assert compiled.get_property("ENABLE_CPU_PINNING") is False
        assert compiled.get_property("INFERENCE_NUM_THREADS") == 1
    handed = CPUConfig({"inference_num_threads": 1}).get_config()
    assert handed["CPU_RUNTIME_CACHE_CAPACITY"] == str(OPENVINO_SHAPE_CACHE) == "100"

"""Rebuild the shipped ranker from ../shared/data alone: `python -m amlc.extract.rebuild`.

1. The labelled photos (photos.csv, in its two halves, splits photos-train and photos-val) and
   the dimension photos (dim_photos.csv, split dim-photos) are read by `amlc run` with its
   default OCR settings into two work folders under --work, unless a folder's OCR is complete.
2. `python -m amlc.extract.fit` fits on them (amlc/extract/fit.py says on which rows).
3. model.json and priors.json are written beside provenance.json: the sha256 of every input
   file, the OCR settings, the amlc commit and the seconds each step took.

Rerunning on the same data and the same OCR gives the same files byte for byte.
"""

from __future__ import annotations

import argparse
import csv
import hashlib
import json
import sqlite3
import subprocess
import sys
import time
from contextlib import closing
from pathlib import Path
from typing import Sequence

from ..store import read_only_uri
from .choose import DEFAULT_MODEL, DEFAULT_PRIORS, MODEL_DIR
from .data import DIM_PHOTOS_CSV, DIM_PHOTOS_SPLIT, OCR_LABELED, PHOTOS_CSV, SHARED_DATA, TRAIN_CSV, in_validation
from .fit import train

PROVENANCE = MODEL_DIR / "provenance.json"
PHOTO_HALVES = {"photos-train": False, "photos-val": True}   # split -> is the validation half
# amlc run's defaults, named, as each reading records them, and on the runtime the shipped
# ranker's stores were read with (OpenVINO, the CPU default since, reads the same numbers on 38
# of 40 photos: docs/performance.md)
READ_WITH = {"max_side": 1280, "min_side": 800, "reread_below": 0.9}
OCR_SETTINGS = [*(arg for name, value in READ_WITH.items() for arg in (f"--ocr-{name.replace('_', '-')}", str(value))),
                "--ocr-runtime", "onnxruntime"]
INPUTS = {"ocr_labeled.csv": OCR_LABELED, "photos.csv": PHOTOS_CSV, "dim_photos.csv": DIM_PHOTOS_CSV,
          "train.csv": TRAIN_CSV}


def sha256_of(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        for block in iter(lambda: handle.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def write_halves(out: Path, limit: int = 0) -> dict[str, Path]:
    """photos.csv's rows in two files by the project's image-hash split (seed 0); with a limit,
    only the rows of each half's first `limit` images (in file order)."""
    with open(PHOTOS_CSV, newline="", encoding="utf-8") as handle:
        reader = csv.DictReader(handle)
        fields, rows = reader.fieldnames or [], list(reader)
    paths = {}
    for split, is_val in PHOTO_HALVES.items():
        half = [r for r in rows if in_validation(r) == is_val]
        if limit:
            first = set(list(dict.fromkeys(r["image_link"] for r in half))[:limit])
            half = [r for r in half if r["image_link"] in first]
        paths[split] = out / (f"{split}.csv" if not limit else f"{split}-first{limit}.csv")
        with open(paths[split], "w", newline="", encoding="utf-8") as handle:
            writer = csv.DictWriter(handle, fields)
            writer.writeheader()
            writer.writerows(half)
    return paths


class StaleReadings(RuntimeError):
    """A work folder's images were read before the OCR recorded what the ranker now weighs."""


# A reading with lines but no "guide" key was made before amlc.ocr.guides: its lines lack the
# drawn-line directions, so a ranker fitted on it would never learn their weights.
UNGUIDED_SQL = """SELECT count(*) FROM ocr_results WHERE lines LIKE '%"text"%' AND lines NOT LIKE '%"guide"%'"""


def ocr_complete(workdir: Path, read_with: dict[str, object] | None = None) -> bool:
    """Every image fetched and OCR'd and every sample extracted; raises StaleReadings where the
    readings predate the drawn-line directions or, given read_with, were made with other
    preprocessing settings than those."""
    store = workdir / "amlc.db"
    if not store.exists():
        return False
    with closing(sqlite3.connect(read_only_uri(store), uri=True)) as conn:
        left = conn.execute("SELECT count(*) FROM jobs WHERE stage IN ('fetch', 'ocr', 'extract') "
                            "AND state != 'done'").fetchone()[0]
        done = conn.execute("SELECT count(*) FROM ocr_results").fetchone()[0]
        unguided = conn.execute(UNGUIDED_SQL).fetchone()[0]
        other = sum(any(json.loads(record).get(name) != value for name, value in read_with.items())
                    for (record,) in conn.execute("SELECT preprocess FROM ocr_results")) if read_with else 0
    if unguided:
        raise StaleReadings(f"{workdir}: {unguided} images were read before the OCR recorded the lines "
                            "drawn beside numbers (amlc.ocr.guides); remove the folder or pass another --work")
    if other:
        raise StaleReadings(f"{workdir}: {other} images were read with other OCR settings than "
                            f"{' '.join(OCR_SETTINGS)}; remove the folder or pass another --work")
    return done > 0 and left == 0


def amlc(workdir: Path, *args: str) -> None:
    subprocess.run([sys.executable, "-m", "amlc", "--workdir", str(workdir), *args], check=True)


def read_photos(workdir: Path, inputs: dict[str, Path], images: Path) -> None:
    """Ingest `inputs` (split -> CSV) and read them with `amlc run`, unless already done."""
    if ocr_complete(workdir, READ_WITH):
        print(f"{workdir}: OCR complete, reused", flush=True)
        return
    workdir.mkdir(parents=True, exist_ok=True)
    for split, path in inputs.items():
        amlc(workdir, "ingest", str(path), "--split", split)
    amlc(workdir, "run", "--local-images", str(images), "--exit-when-done", "--no-dashboard", *OCR_SETTINGS)


def git_commit() -> str | None:
    try:
        return subprocess.run(["git", "rev-parse", "HEAD"], cwd=MODEL_DIR, capture_output=True, text=True,
                              check=True).stdout.strip()
    except (OSError, subprocess.CalledProcessError):
        return None


def rebuild(work: Path, model: Path = DEFAULT_MODEL, priors_path: Path = DEFAULT_PRIORS,
            provenance: Path = PROVENANCE) -> dict:
    seconds: dict[str, float] = {}
    start = time.perf_counter()
    work.mkdir(parents=True, exist_ok=True)
    read_photos(work / "photos", write_halves(work), SHARED_DATA / "photos")
    read_photos(work / "dim-photos", {DIM_PHOTOS_SPLIT: DIM_PHOTOS_CSV}, SHARED_DATA / "dim_photos")
    seconds["ocr"] = time.perf_counter() - start
    fitted, priors = train(photos_store=work / "photos" / "amlc.db", dim_store=work / "dim-photos" / "amlc.db")
    seconds["fit"] = time.perf_counter() - start - seconds["ocr"]
    priors_path.write_text(json.dumps(priors.to_json(), separators=(",", ":")), encoding="utf-8")
    model.write_text(json.dumps(fitted.to_json(), indent=1, sort_keys=True), encoding="utf-8")
    record = {"built_by": "python -m amlc.extract.rebuild", "amlc_commit": git_commit(),
              "inputs": {name: sha256_of(path) for name, path in INPUTS.items()},
              "ocr": {"engine": "rapidocr", "amlc_run_flags": OCR_SETTINGS},
              "outputs": {model.name: sha256_of(model), priors_path.name: sha256_of(priors_path)},
              "seconds": {k: round(v, 1) for k, v in seconds.items()}}
    provenance.write_text(json.dumps(record, indent=1) + "\n", encoding="utf-8")
    return record


def main(argv: Sequence[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--work", type=Path, default=Path("amlc-work/ranker"),
                        help="where the photos' work folders are made or reused")
    args = parser.parse_args(argv)
    try:
        record = rebuild(args.work)
    except StaleReadings as exc:
        parser.exit(2, f"error: {exc}\n")
    print(f"wrote {DEFAULT_MODEL}, {DEFAULT_PRIORS} and {PROVENANCE} "
          f"(OCR {record['seconds']['ocr']:.0f} s, fit {record['seconds']['fit']:.0f} s)")


if __name__ == "__main__":
    main()

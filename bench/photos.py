"""Real labelled photos through the whole pipeline, per OCR setting: the ceiling, the time, the F1.

    python bench/photos.py [--work amlc-work/accuracy] [--settings 1280,original,1280-autocontrast]
                           [--baseline 20] [--second-pass] [--dim]

photos.csv (../shared/data) is split by a hash of each image link into a train half (what the
ranker may learn from) and a validation half (only ever scored), written as photos-train.csv and
photos-val.csv under --work. For each OCR setting a work folder WORK/<setting> gets both halves
ingested and one `amlc run --local-images photos/` (niced, one OCR worker); a folder whose OCR is
complete is reused, so each setting costs its OCR once. Then per setting:

  in text   share of rows whose true number appears in the OCR text (train half, which settings
            are chosen on; and validation half) - the ceiling of any text-to-answer method;
  cpu/img   CPU seconds of `amlc run` per image (user + system, all its processes), and the
            engine's own OCR seconds per image as the store records them;
  bare      seconds per image of a bare RapidOCR loop (the library called on the same
            preprocessed pixels) on the first --baseline photos, and pipeline/bare;
  F1        `amlc eval --split photos-val` of the rules' answers: numeric, strict, test-mix weighted.

--write-fixture PATH saves a few validation rows with short OCR (real PP-OCR lines with boxes, as
JSON lines) for tests/test_extract.py, which runs the extract stage and `amlc eval` on them.

--second-pass measures, on the first setting's stored lines, re-reading every low-confidence line
that holds a digit from its box cropped out of the photo and upscaled: the rows it adds to the
ceiling and the seconds it costs per image.
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import sqlite3
import subprocess
import sys
import time
from contextlib import closing
from pathlib import Path

os.environ.setdefault("OMP_NUM_THREADS", "1")

from amlc.store import read_only_uri  # noqa: E402
from amlc.extract.baseline import truth_in_text  # noqa: E402
from amlc.extract.data import (DIM_PHOTOS_CSV, DIM_PHOTOS_SPLIT, SHARED_DATA, TextRow,  # noqa: E402
                               in_validation, read_store_rows)
from amlc.extract.rebuild import ocr_complete, write_halves  # noqa: E402

PHOTOS = SHARED_DATA / "photos"
DIM_PHOTOS = SHARED_DATA / "dim_photos"
SETTINGS: dict[str, list[str]] = {
    "1280": ["--ocr-max-side", "1280"],
    "original": ["--ocr-max-side", "0"],               # the photos are at most 1600 px a side
    "1280-autocontrast": ["--ocr-max-side", "1280", "--ocr-autocontrast"],
    "1280-reread": ["--ocr-max-side", "1280", "--ocr-reread-below", "0.9"],
    "original-autocontrast": ["--ocr-max-side", "0", "--ocr-autocontrast"],
    # the runtime sweep (docs/performance.md): one change at a time from onnxruntime at 1280
    "ort-1280-reread": ["--ocr-max-side", "1280", "--ocr-reread-below", "0.9", "--ocr-runtime", "onnxruntime"],
    "ov-1280-reread": ["--ocr-max-side", "1280", "--ocr-reread-below", "0.9", "--ocr-runtime", "openvino"],
    "ov-960-reread": ["--ocr-max-side", "960", "--ocr-reread-below", "0.9", "--ocr-runtime", "openvino"],
}
AMLC = [sys.executable, "-m", "amlc"]


def amlc(workdir: Path, *args: str, nice: int = 0) -> subprocess.CompletedProcess:
    command = ["nice", "-n", str(nice)] * bool(nice) + AMLC + ["--workdir", str(workdir), *args]
    return subprocess.run(command, check=True, capture_output=True, text=True)


def re_extract(workdir: Path) -> None:
    """Answer the stored OCR again with the current rules: every extract job back to pending,
    then `amlc run --stages extract` (the OCR is kept; it does not depend on the rules)."""
    with closing(sqlite3.connect(workdir / "amlc.db")) as conn, conn:
        conn.execute("UPDATE jobs SET state = 'pending', attempts = 0, last_error = NULL "
                     "WHERE stage = 'extract'")
    amlc(workdir, "run", "--stages", "extract", "--exit-when-done", "--no-dashboard")


def run_setting(work: Path, name: str, halves: dict[str, Path], nice: int, images: Path = PHOTOS,
                folder: str = "") -> dict:
    """Ingest and run once into WORK/<folder or setting>; the timing of that run is kept beside
    the store."""
    workdir = work / (folder or name)
    timing = workdir / "bench-run.json"
    if ocr_complete(workdir) and timing.exists():
        return json.loads(timing.read_text())
    workdir.mkdir(parents=True, exist_ok=True)
    for split, path in halves.items():
        amlc(workdir, "ingest", str(path), "--split", split)
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    start = time.perf_counter()
    amlc(workdir, "run", "--local-images", str(images), "--exit-when-done", "--no-dashboard",
         "--ocr-workers", "1", *SETTINGS[name], nice=nice)
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    record = {"wall_s": time.perf_counter() - start,
              "cpu_s": (after.ru_utime - before.ru_utime) + (after.ru_stime - before.ru_stime)}
    timing.write_text(json.dumps(record))
    return record


def ocr_seconds(workdir: Path) -> tuple[int, float]:
    """Images OCR'd, and the engine's mean seconds per image as the store records them."""
    with closing(sqlite3.connect(read_only_uri(workdir / 'amlc.db'), uri=True)) as conn:
        n, total = conn.execute("SELECT count(*), sum(seconds) FROM ocr_results").fetchone()
    return n, (total or 0.0) / max(n, 1)


def in_text_share(rows: list[TextRow], validation: bool, links: set[str]) -> float | None:
    """Share of the half's rows (of images in `links`) whose true number is in the OCR text."""
    subset = [r for r in rows if in_validation(r) == validation and r.image_link in links]
    return sum(truth_in_text(r.entity, r.truth, r.ocr_text) for r in subset) / len(subset) if subset else None


def bare_seconds(name: str, n: int, links: set[str]) -> float:
    """CPU seconds per image of the RapidOCR library called on the same preprocessed pixels
    (CPU time, not wall time: the machine is shared, and the engine runs one thread), over n
    photos spread evenly over `links` (the same photos for every setting)."""
    from amlc.ocr import load_engine
    from amlc.ocr.preprocess import prepare
    args = SETTINGS[name]
    side = int(_flag(args, "--ocr-max-side", "1280")) or None
    engine = load_engine("rapidocr", preprocess=_preprocess(side, "--ocr-autocontrast" in args),
                         runtime=_flag(args, "--ocr-runtime", "auto"))
    ordered = sorted(links)
    paths = [PHOTOS / link.rsplit("/", 1)[-1] for link in ordered[::max(1, len(ordered) // n)][:n]]
    engine.read(paths[:1])   # warm-up
    start = time.process_time()
    for path in paths:
        engine.ocr(prepare(path, engine.preprocess).bgr)
    return (time.process_time() - start) / len(paths)


def _flag(args: list[str], name: str, default: str) -> str:
    return args[args.index(name) + 1] if name in args else default


def _preprocess(max_side: int | None, autocontrast: bool):
    from amlc.ocr import Preprocess
    return Preprocess(max_side=max_side, autocontrast=autocontrast)


def eval_val(workdir: Path, split: str = "photos-val") -> dict | None:
    """`amlc eval` of the rules on the validation half (or `split`), or None where it was not ingested."""
    if not (workdir / "amlc.db").exists():
        return None
    result = subprocess.run([*AMLC, "--workdir", str(workdir), "eval", "--split", split, "--source",
                             "rules", "--only", "--json"], capture_output=True, text=True)
    return json.loads(result.stdout) if result.returncode == 0 else None


def report_setting(work: Path, name: str, timing: dict, baseline: int, links: set[str]) -> dict:
    """One setting's figures; the ceiling counts only the rows of `links`, the images every
    compared setting has read, so settings run on fewer photos compare on the same ones."""
    workdir = work / name
    rows = read_store_rows(workdir / "amlc.db")
    images, engine_s = ocr_seconds(workdir)
    scored = eval_val(workdir)
    row = {"setting": name, "images": images,
           "in_text_train": in_text_share(rows, False, links), "in_text_val": in_text_share(rows, True, links),
           "cpu_per_image": timing["cpu_s"] / images, "wall_per_image": timing["wall_s"] / images,
           "engine_per_image": engine_s}
    if scored:
        row.update(f1=scored["numeric"]["f1"], f1_strict=scored["strict"]["f1"],
                   f1_weighted=scored["weighted"]["numeric"]["f1"])
        row["f1_entities"] = {e: c["numeric"]["f1"] for e, c in scored["per_entity"].items()}
    dims = (eval_val(work / f"{name}-dim", DIM_PHOTOS_SPLIT) or {}).get("dimensions")
    row["f1_dim_photos"] = dims["f1"] if dims else None
    if baseline:
        row["bare_per_image"] = bare_seconds(name, baseline, links)
    return row


def _cell(value: float | None, spec: str, width: int) -> str:
    return f"{value:>{width}{spec}}" if value is not None else f"{'-':>{width}}"


def print_settings(rows: list[dict]) -> None:
    head = (f"{'setting':<22} {'images':>6} {'in text (train)':>15} {'(val)':>6} {'run cpu s/img':>13} "
            f"{'bare cpu s/img':>14} {'run/bare':>8} {'engine wall s/img':>17} {'F1 val':>6} {'strict':>6} "
            f"{'weighted':>8}")
    print(head)
    print("-" * len(head))
    for r in rows:
        bare = r.get("bare_per_image")
        print(f"{r['setting']:<22} {r['images']:>6} {_cell(r['in_text_train'], '.1%', 15)} {_cell(r['in_text_val'], '.1%', 6)} "
              f"{r['cpu_per_image']:>13.2f} {_cell(bare, '.2f', 14)} "
              f"{_cell(r['cpu_per_image'] / bare if bare else None, '.2f', 8)} {r['engine_per_image']:>17.2f} "
              f"{_cell(r.get('f1'), '.3f', 6)} {_cell(r.get('f1_strict'), '.3f', 6)} "
              f"{_cell(r.get('f1_weighted'), '.3f', 8)}")
    print("run cpu: user+system CPU seconds of `amlc run` (all its processes) per image; bare cpu: the "
          "RapidOCR library alone on the same preprocessed pixels; engine wall: the OCR seconds the store "
          "records (inflated when the machine is busy)")


def print_entities(rows: list[dict]) -> None:
    """Rules F1 (numeric) per entity on the validation half, the dimension photos' pooled
    width/height/depth F1, and each setting's CPU per image against the first setting's."""
    entities = sorted({e for r in rows for e in r.get("f1_entities", {})})
    head = f"{'setting':<22} {'cpu vs first':>12} " + " ".join(f"{e[:14]:>14}" for e in entities) + f" {'dim_photos':>10}"
    print(head)
    print("-" * len(head))
    first = rows[0]["cpu_per_image"]
    for r in rows:
        cells = " ".join(_cell(r.get("f1_entities", {}).get(e), ".3f", 14) for e in entities)
        print(f"{r['setting']:<22} {r['cpu_per_image'] / first:>11.2f}x {cells} {_cell(r['f1_dim_photos'], '.3f', 10)}")
    print("per entity: rules F1 on photos-val (numeric); dim_photos: width/height/depth pooled (run with --dim)")


FIXTURE_MAX_LINES = 6    # short OCR keeps the fixture a few KB
FIXTURE_PER_ENTITY = 3


def write_fixture(workdir: Path, out: Path) -> None:
    """Validation rows (never learned from) with their stored OCR, a few per entity."""
    taken: dict[str, int] = {}
    with closing(sqlite3.connect(read_only_uri(workdir / 'amlc.db'), uri=True)) as conn, \
            open(out, "w", encoding="utf-8") as handle:
        for idx, link, group, entity, label, lines in conn.execute("""
                SELECT s.idx, i.link, s.group_id, s.entity, s.raw_label, o.lines FROM samples s
                JOIN images i ON i.id = s.image_id JOIN ocr_results o ON o.image_id = s.image_id
                WHERE s.split = 'photos-val' AND s.label_error IS NULL ORDER BY s.idx"""):
            result = json.loads(lines)
            if len(result["lines"]) > FIXTURE_MAX_LINES or taken.get(entity, 0) >= FIXTURE_PER_ENTITY:
                continue
            taken[entity] = taken.get(entity, 0) + 1
            row = {"index": idx, "image_link": link, "group_id": group, "entity_name": entity,
                   "entity_value": label, "ocr": {"engine": result["engine"], "lines": result["lines"]}}
            handle.write(json.dumps(row, ensure_ascii=False, separators=(",", ":")) + "\n")
    print(f"wrote {out}: {sum(taken.values())} rows ({out.stat().st_size:,} bytes)")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    parser.add_argument("--work", type=Path, default=Path("amlc-work/accuracy"))
    parser.add_argument("--settings", default="1280,original,1280-autocontrast")
    parser.add_argument("--baseline", type=int, default=20, help="photos timed in a bare loop (0: skip)")
    parser.add_argument("--nice", type=int, default=5)
    parser.add_argument("--second-pass", action="store_true")
    parser.add_argument("--write-fixture", type=Path, default=None, metavar="PATH")
    parser.add_argument("--halves", choices=["both", "train"], default="both",
                        help="train: ingest and OCR only the train half (enough to choose a setting on)")
    parser.add_argument("--limit", type=int, default=0,
                        help="only each half's first N images (for settings too slow for all on a busy machine)")
    parser.add_argument("--dim", action="store_true",
                        help=f"also read dim_photos.csv (split {DIM_PHOTOS_SPLIT}) into WORK/<setting>-dim, the "
                             "store that `python -m amlc.extract.cv --dim-store` scores by cross-validation")
    parser.add_argument("--re-extract", action="store_true",
                        help="answer each cached setting's OCR again with the current rules before scoring")
    args = parser.parse_args()
    args.work.mkdir(parents=True, exist_ok=True)
    halves = write_halves(args.work, args.limit)
    if args.halves == "train":
        halves = {"photos-train": halves["photos-train"]}
    names = [s for s in args.settings.split(",") if s]
    timings = {}
    for name in names:
        timings[name] = run_setting(args.work, name, halves, args.nice)
        if args.dim:
            run_setting(args.work, name, {DIM_PHOTOS_SPLIT: DIM_PHOTOS_CSV}, args.nice, DIM_PHOTOS, f"{name}-dim")
        if args.re_extract:
            re_extract(args.work / name)
        print(f"{name}: OCR done", file=sys.stderr)
    links = set.intersection(*({r.image_link for r in read_store_rows(args.work / n / "amlc.db")} for n in names))
    rows = [report_setting(args.work, name, timings[name], args.baseline, links) for name in names]
    counts = ", ".join(f"{split} {sum(1 for _ in open(path)) - 1} rows" for split, path in halves.items())
    print(f"photos.csv: {counts}; load average {os.getloadavg()[0]:.2f} on {os.cpu_count()} CPUs")
    print_settings(rows)
    print_entities(rows)
    if args.write_fixture:
        write_fixture(args.work / names[0], args.write_fixture)
    if args.second_pass:
        from second_pass import print_second_pass   # bench/second_pass.py
        print_second_pass(args.work / names[0], PHOTOS)


if __name__ == "__main__":
    main()

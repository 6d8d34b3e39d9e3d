"""A second OCR pass on low-confidence number lines, measured on stored OCR of labelled photos.

    python bench/second_pass.py WORK/1280 [--photos ../shared/data/photos] [--below 0.9] [--scale 2]

For every stored line that holds a digit and was read with confidence below --below, the line's
box (plus a margin) is cut out of the photo, upscaled --scale times, and read again: recognition
only ("rec"), or detection and recognition on the crop ("det+rec", which also splits or joins
what the first pass boxed wrongly). A re-read replaces the line where it is more confident.
Printed per variant: the share of rows whose true number is in the text before and after (train
half, which a setting is chosen on; and validation half), lines re-read per image, and the
seconds the second pass adds per image against the first pass's own OCR seconds.
bench/photos.py --second-pass runs this on its first setting.
"""

from __future__ import annotations

import argparse
import os
import time
from collections import defaultdict
from pathlib import Path

os.environ.setdefault("OMP_NUM_THREADS", "1")

import numpy as np  # noqa: E402

from amlc.store import read_only_uri  # noqa: E402
from amlc.extract.baseline import truth_in_text  # noqa: E402
from amlc.extract.data import SHARED_DATA, TextRow, in_validation, read_store_rows  # noqa: E402
from amlc.ocr import load_engine  # noqa: E402
from amlc.ocr.preprocess import decode  # noqa: E402
from amlc.ocr.reread import joined, reread, weak_number_lines  # noqa: E402


def second_pass(rows: list[TextRow], photos: Path, below: float, scale: float,
                detect: bool) -> tuple[dict[str, str], int, float]:
    """New text per image link, lines re-read, seconds spent: amlc.ocr.reread on stored lines,
    with detection on each crop as the OCR stage does it, or recognition only."""
    ocr = load_engine("rapidocr").ocr    # the library object, with the pipeline's models and settings

    def read_crops(crops: list[np.ndarray]) -> list[tuple[str, float]]:
        outs = [ocr(crop, use_det=detect, use_cls=False, use_rec=True) for crop in crops]
        return [joined(list(out.txts or ()), list(out.scores or ())) for out in outs]

    texts, reread_lines, seconds = {}, 0, 0.0
    for link, row in {r.image_link: r for r in rows}.items():
        weak = weak_number_lines(row.lines, below)
        if weak:
            image = decode(photos / link.rsplit("/", 1)[-1])
            start = time.perf_counter()
            texts[link] = "\n".join(line.text for line in reread(row.lines, image, below, scale, read_crops))
            seconds += time.perf_counter() - start
            reread_lines += len(weak)
        else:
            texts[link] = row.ocr_text
    return texts, reread_lines, seconds


def ceiling(rows: list[TextRow], texts: dict[str, str] | None = None) -> dict[bool, float]:
    """Share of rows with the true number in the text, per half (True = validation)."""
    hits: dict[bool, list[bool]] = defaultdict(list)
    for r in rows:
        text = texts[r.image_link] if texts else r.ocr_text
        hits[in_validation(r)].append(truth_in_text(r.entity, r.truth, text))
    return {half: sum(v) / len(v) for half, v in hits.items()}


def print_second_pass(workdir: Path, photos: Path, below: float = 0.9, scale: float = 2.0) -> None:
    import sqlite3
    from contextlib import closing
    rows = read_store_rows(workdir / "amlc.db")
    images = len({r.image_link for r in rows})
    with closing(sqlite3.connect(read_only_uri(workdir / 'amlc.db'), uri=True)) as conn:
        first_pass = conn.execute("SELECT avg(seconds) FROM ocr_results").fetchone()[0]
    before = ceiling(rows)
    print(f"second pass on {workdir.name}: lines with a digit read below {below}, cropped, upscaled x{scale}; "
          f"{images} images, first pass {first_pass:.2f} s/image")
    print(f"{'variant':<10} {'in text (train)':>15} {'(val)':>6} {'lines/img':>9} {'+s/img':>7} {'+%':>5}")
    print(f"{'none':<10} {before[False]:>15.1%} {before[True]:>6.1%} {0:>9.2f} {0:>7.2f} {0:>5.0%}")
    for detect in (False, True):
        texts, lines, seconds = second_pass(rows, photos, below, scale, detect)
        after = ceiling(rows, texts)
        print(f"{'det+rec' if detect else 'rec':<10} {after[False]:>15.1%} {after[True]:>6.1%} "
              f"{lines / images:>9.2f} {seconds / images:>7.2f} {seconds / images / first_pass:>5.0%}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    parser.add_argument("workdir", type=Path, help="a work folder bench/photos.py made (e.g. WORK/1280)")
    parser.add_argument("--photos", type=Path, default=SHARED_DATA / "photos")
    parser.add_argument("--below", type=float, default=0.9, help="confidence under which a line is re-read")
    parser.add_argument("--scale", type=float, default=2.0)
    args = parser.parse_args()
    print_second_pass(args.workdir, args.photos, args.below, args.scale)


if __name__ == "__main__":
    main()

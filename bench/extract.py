"""Text -> answer on the validation half of ocr_labeled.csv: naive regex vs the extractor.

    python bench/extract.py [--data ../shared/data] [--split val] [--photos-store WORK/1280/amlc.db]

Prints numeric F1 (and strict F1) per entity for the naive "first number with an allowed unit"
regex and for amlc's extractor side by side, their ratio, and the ceiling: the share of rows
whose true number appears nowhere in the OCR text (no text-only method can win those); then
the extractor's k-fold cross-validation F1 on the train halves (the figure features are chosen
by): ocr_labeled.csv's text rows and, with --photos-store (a work folder bench/photos.py made),
the photos' PP-OCR lines, fitted together as `python -m amlc.extract.fit` fits them.
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path

from amlc.cli.extract import select_split
from amlc.extract.baseline import naive_prediction, truth_in_text
from amlc.extract.choose import Extractor
from amlc.extract.data import SHARED_DATA, read_text_rows
from amlc.extract.evaluate import evaluate, extractor_fn
from amlc.extract.cv import cross_validate, summary
from amlc.extract.fit import held_out_priors, training_rows
from amlc.metric import Report


def _f1s(report: Report, entity: str) -> tuple[float, float]:
    if entity == "all":
        return report.numeric.f1, report.strict.f1
    numeric, strict = report.per_entity[entity]
    return numeric.f1, strict.f1


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", type=Path, default=SHARED_DATA)
    parser.add_argument("--split", choices=["val", "train", "all"], default="val")
    parser.add_argument("--cv-repeats", type=int, default=3,
                        help="repeats of 5-fold CV on the train half (0 to skip)")
    parser.add_argument("--photos-store", type=Path, default=None,
                        help="amlc.db holding the OCR'd labelled photos, whose train half joins the CV")
    args = parser.parse_args()
    rows, split = select_split(read_text_rows(args.data / "ocr_labeled.csv"), args.split)

    naive, _ = evaluate(rows, lambda row: naive_prediction(row.entity, row.ocr_text))
    start = time.perf_counter()
    ours, _ = evaluate(rows, extractor_fn(Extractor.load()))
    per_row_ms = 1000 * (time.perf_counter() - start) / len(rows)

    print(f"ocr_labeled.csv, split {split}: {len(rows)} rows; extractor {per_row_ms:.2f} ms/row")
    print(f"{'entity':32} {'n':>5} {'naive':>6} {'ours':>6} {'ratio':>6} {'naive strict':>12} "
          f"{'ours strict':>11} {'not in text':>11}")
    for entity in sorted(ours.per_entity) + ["all"]:
        subset = [r for r in rows if entity in ("all", r.entity)]
        missing = sum(not truth_in_text(r.entity, r.truth, r.ocr_text) for r in subset) / len(subset)
        (n_f1, n_strict), (o_f1, o_strict) = _f1s(naive, entity), _f1s(ours, entity)
        ratio = o_f1 / n_f1 if n_f1 else float("inf")
        print(f"{entity:32} {len(subset):>5} {n_f1:>6.3f} {o_f1:>6.3f} {ratio:>6.2f} {n_strict:>12.3f} "
              f"{o_strict:>11.3f} {missing:>11.1%}")
    print("not in text: rows whose true number appears nowhere in the OCR text (cannot be won); "
          "F1 = 2TP/(N+TP) when every truth is non-empty, so the best F1 with all other rows right is "
          "2(1-m)/(2-m).")
    if args.cv_repeats:
        _print_cv(args.data, args.cv_repeats, args.photos_store)


def _print_cv(data: Path, repeats: int, photos_store: Path | None) -> None:
    """Train-half CV, fitting on 4/5 of it per fold: a little below what the shipped model
    (fitted on all of it) would score, and independent of the validation halves
    (`python -m amlc.extract.cv` with more sources and options)."""
    rows = training_rows(data / "ocr_labeled.csv", photos_store)
    priors = held_out_priors(data / "train.csv", (data / "ocr_labeled.csv", data / "photos.csv"))
    print(f"5-fold CV on the train halves, {repeats} repeats:")
    print("\n".join(summary(cross_validate(rows, priors, folds=5, repeats=repeats), repeats)))


if __name__ == "__main__":
    main()

"""Cross-validation of the ranker: how features and settings are chosen without reading the
validation halves.

    python -m amlc.extract.cv [--photos-store S] [--dim-store D] [--folds 5] [--repeats 2] [--drop PREFIX]

The rows are the train half of ocr_labeled.csv (EasyOCR text, no boxes), the train half of the
labelled photos as `amlc run` read them (store S; PP-OCR lines with boxes) and every row of
dim_photos (store D: the only width/height/depth rows with boxes, too few to halve, so they are
only ever scored out of fold). Each row is answered by a ranker fitted on the other folds (folds
by a hash of the image, a fresh assignment per repeat, every answer pooled). Printed per source:
F1 per entity and for the dimensions together, where the wrong dimension answers go (the right
length in the other unit, another number, a blank), and how often the unit is right on rows whose
answer is printed in two units. The output is the same for the same rows, folds and seed.
"""

from __future__ import annotations

import argparse
from collections import Counter
from dataclasses import dataclass
from pathlib import Path
from typing import Sequence

from ..metric import SAME_QUANTITY, STRICT_ONLY, Report, score
from ..units import DIMENSIONS, AnswerError, parse_label, same_quantity
from .choose import Extractor, Model, Prediction
from .data import OCR_LABELED, TextRow, fold_of
from .priors import Priors
from .fit import build_design, fit_weights, held_out_priors, training_rows


@dataclass
class Answered:
    """One row answered out of fold."""
    row: TextRow
    prediction: Prediction

    @property
    def scored(self) -> tuple[str, str, str]:
        return self.row.entity, self.row.truth, self.prediction.text()


def cross_validate(rows: Sequence[TextRow], priors: Priors, folds: int = 5, repeats: int = 1,
                   seed: int = 0, drop: Sequence[str] = ()) -> list[Answered]:
    """Every row answered by a ranker fitted without its fold, once per repeat (repeat r uses
    the fold assignment of seed + r), without the features whose names start with `drop`."""
    answered: list[Answered] = []
    for repeat in range(seed, seed + repeats):
        assignment = [fold_of(row, folds, repeat) for row in rows]
        for k in range(folds):
            fit = [row for row, f in zip(rows, assignment) if f != k]
            extractor = Extractor(Model(fit_weights(build_design(fit, priors, drop=drop))), priors)
            answered += [Answered(row, extractor.predict(row.entity, row.ocr, row.group_id or None))
                         for row, f in zip(rows, assignment) if f == k]
    return answered


def by_source(answered: Sequence[Answered]) -> dict[str, list[Answered]]:
    """Answers grouped by where their rows came from ('text', 'photos-train', 'dim-photos')."""
    groups: dict[str, list[Answered]] = {}
    for a in answered:
        groups.setdefault(_source_name(a.row), []).append(a)
    return groups


def _source_name(row: TextRow) -> str:
    return "photos" if row.source.startswith("photos") else row.source


def report_of(answered: Sequence[Answered]) -> Report:
    return score(a.scored for a in answered)


@dataclass
class UnitChoice:
    """Rows whose true quantity is among the candidates in two units, and how many of those
    the answer gives in the label's unit."""
    pairs: int = 0
    right_unit: int = 0
    answered_quantity: int = 0   # the answer is the true quantity, in either unit

    @property
    def accuracy(self) -> float:
        """Of the answers that are the true quantity, the share in the label's unit."""
        return self.right_unit / self.answered_quantity if self.answered_quantity else 0.0


def unit_choice(answered: Sequence[Answered], entities: Sequence[str] = DIMENSIONS) -> UnitChoice:
    choice = UnitChoice()
    for a in answered:
        if a.row.entity not in entities:
            continue
        try:
            truth = parse_label(a.row.truth, a.row.entity)
        except AnswerError:
            continue
        units = {c.unit for c in a.prediction.candidates
                 if same_quantity(truth.value, truth.unit, c.value, c.unit)}
        if truth.unit not in units or len(units) < 2:
            continue
        choice.pairs += 1
        answer = a.prediction.answer
        if answer is not None and same_quantity(truth.value, truth.unit, answer.value, answer.unit):
            choice.answered_quantity += 1
            choice.right_unit += answer.unit == truth.unit
    return choice


def summary(answered: Sequence[Answered], repeats: int = 1) -> list[str]:
    """The printed lines: per source, F1 per entity, the dimensions' together, their errors and
    the unit choice on two-unit rows."""
    lines = []
    for source, group in sorted(by_source(answered).items()):
        report = report_of(group)
        per_entity = " ".join(f"{e}={n.f1:.3f}" for e, (n, _) in sorted(report.per_entity.items()))
        lines.append(f"{source} ({round(report.numeric.n / repeats)} rows x {repeats}): F1 {report.f1:.3f}; "
                     f"{per_entity}")
        dims = [a for a in group if a.row.entity in DIMENSIONS]
        if not dims:
            continue
        dim_report = report_of(dims)
        errors = Counter({kind: n for kind, n in dim_report.errors.items() if kind != STRICT_ONLY})
        wrong = sum(errors.values())
        units = unit_choice(dims)
        lines.append(f"  width/height/depth: F1 {dim_report.f1:.3f} on {len(dims)} answers; wrong "
                     f"{wrong}: {SAME_QUANTITY} {errors[SAME_QUANTITY]} "
                     f"({errors[SAME_QUANTITY] / max(wrong, 1):.0%}), another number {errors['wrong value']}"
                     f", other {wrong - errors[SAME_QUANTITY] - errors['wrong value'] - errors['blank']}, "
                     f"blank {errors['blank']}; rows with the truth in two units {units.pairs}, answered "
                     f"with that quantity {units.answered_quantity}, in the label's unit "
                     f"{units.right_unit} ({units.accuracy:.0%})")
    return lines


def main(argv: Sequence[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--labeled", type=Path, default=OCR_LABELED)
    parser.add_argument("--photos-store", type=Path, help="amlc.db holding photos.csv's rows, OCR'd")
    parser.add_argument("--dim-store", type=Path, help="amlc.db holding dim_photos.csv's rows, OCR'd")
    parser.add_argument("--folds", type=int, default=5)
    parser.add_argument("--repeats", type=int, default=2, help="fold assignments, each scored in full")
    parser.add_argument("--seed", type=int, default=0, help="the first fold assignment")
    parser.add_argument("--drop", action="append", default=[], metavar="PREFIX",
                        help="leave out the features whose names start with PREFIX (repeatable), "
                             "to measure what they add: --drop guide_")
    args = parser.parse_args(argv)
    rows = training_rows(args.labeled, args.photos_store, args.dim_store)
    answered = cross_validate(rows, held_out_priors(), args.folds, args.repeats, args.seed, args.drop)
    print("\n".join(summary(answered, args.repeats)))


if __name__ == "__main__":
    main()

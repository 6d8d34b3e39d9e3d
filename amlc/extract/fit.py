"""Fit the shipped model files on OCR'd stores: `python -m amlc.extract.fit --photos-store S
--dim-store D` (`python -m amlc.extract.rebuild` makes the stores and calls this).

priors.json: unit, value, order and number-form counts from train.csv, leaving out every image of
ocr_labeled.csv and photos.csv (so no image the ranker learns from or is scored on informs its
own priors).
model.json: weights of a conditional-logit ranker (softmax over a row's candidates plus 'none')
fitted with numpy on the train halves of ocr_labeled.csv (OCR text) and of the labelled photos
as `amlc run` read them (PP-OCRv6 lines with boxes, from the store S of a work folder into which
photos.csv was ingested), every dim_photos row (store D: the only width/height/depth rows with
boxes, scored by `python -m amlc.extract.cv` out of fold), and per-entity abstention thresholds
tuned on a held-out part of those train halves. The validation halves are never read here.
"""

from __future__ import annotations

import argparse
import csv
import json
from dataclasses import dataclass
from pathlib import Path
from typing import Sequence

import numpy as np

from ..units import ENTITIES, AnswerError, parse_label
from .choose import DEFAULT_MODEL, DEFAULT_PRIORS, RULE_WEIGHTS, Extractor, Model
from ..metric import classify_error
from .data import (DIM_PHOTOS_SPLIT, OCR_LABELED, PHOTOS_CSV, TRAIN_CSV, TextRow, fold_of,
                   read_store_rows, read_text_rows, split_rows)
from .features import entity_candidates, featurize
from .priors import Priors

L2 = 0.001          # ridge penalty on the row-mean loss; 5-fold CV on the train halves (text,
                    # photos): 0.0003 0.706/0.829, 0.001 0.709/0.838, 0.003 0.706/0.838, 0.01 0.700/0.836
STEPS = 600         # Adam steps; the loss is flat well before this on ~1k rows
LEARNING_RATE = 0.05
TUNE_SEED = 1       # the second split (of the train half) that tunes the thresholds
THRESHOLD_GRID = [i / 20 for i in range(20)]
OOF_SEED = 2        # the fold assignment of out_of_fold, independent of the other splits
PHOTO_WEIGHT = 1.0  # weight of a photo row against a text row in the loss; CV on the photos:
                    # 0.5 and 2 both 0.829, 1 0.832


def image_links(*csv_files: Path) -> set[str]:
    links: set[str] = set()
    for path in csv_files:
        with open(path, newline="", encoding="utf-8") as handle:
            links |= {r["image_link"] for r in csv.DictReader(handle)}
    return links


def held_out_priors(train_csv: Path = TRAIN_CSV, held: Sequence[Path] = (OCR_LABELED, PHOTOS_CSV)) -> Priors:
    """Priors from train_csv without any image of the labelled files (train or validation half)."""
    return Priors.from_csv(train_csv, image_links(*held))


def training_rows(labeled: Path = OCR_LABELED, photos_store: Path | None = None,
                  dim_store: Path | None = None) -> list[TextRow]:
    """The train halves of ocr_labeled.csv's text rows and of the photos' rows with their lines,
    and every dim_photos row (too few to halve: they are scored by cross-validation only)."""
    rows = split_rows(read_text_rows(labeled))[0]
    if photos_store is not None:
        rows += split_rows(read_store_rows(photos_store))[0]
    if dim_store is not None:
        rows += read_store_rows(dim_store)
    return rows


@dataclass
class Design:
    """All candidates of all rows stacked: features X, the row of each, whether it is right,
    and each row's weight in the loss."""
    names: list[str]
    x: np.ndarray
    row: np.ndarray
    correct: np.ndarray
    n_rows: int
    row_weight: np.ndarray

    @property
    def offset(self) -> np.ndarray:
        """The hand-set part of each score (RULE_WEIGHTS), fixed while fitting the rest."""
        rules = np.array([RULE_WEIGHTS.get(name, 0.0) for name in self.names])
        return self.x @ rules


def build_design(rows: Sequence[TextRow], priors: Priors, photo_weight: float = PHOTO_WEIGHT,
                 drop: Sequence[str] = ()) -> Design:
    """`drop`: prefixes of feature names left out (a ranker without them weighs them nothing)."""
    feats, row_ids, correct = [], [], []
    for i, r in enumerate(rows):
        try:
            truth = parse_label(r.truth, r.entity)
        except AnswerError:
            continue
        cands, mentions = entity_candidates(r.ocr, r.entity, r.group_id, priors)
        for c, f in zip(cands, featurize(cands, r.entity, r.group_id, priors, mentions)):
            feats.append(f)
            row_ids.append(i)
            correct.append(c.value == truth.value and c.unit == truth.unit)
    names = sorted({k for f in feats for k in f if not k.startswith(tuple(drop))})
    x = np.array([[f.get(k, 0.0) for k in names] for f in feats], dtype=float).reshape(len(feats), len(names))
    weights = np.array([photo_weight if r.from_store else 1.0 for r in rows])
    return Design(names, x, np.array(row_ids, dtype=int), np.array(correct, dtype=bool), len(rows),
                  weights / weights.mean() if len(rows) else weights)


def _loss_grad(w: np.ndarray, d: Design, none: float = 0.0) -> tuple[float, np.ndarray]:
    """Mean over rows of -log P(right answer), 'none' being right when no candidate is."""
    s = d.x @ w + d.offset - none
    top = np.zeros(d.n_rows)
    np.maximum.at(top, d.row, s)
    e = np.exp(s - top[d.row])
    denom = np.exp(-top) + np.bincount(d.row, e, d.n_rows)
    good = np.bincount(d.row, e * d.correct, d.n_rows)
    has_good = np.bincount(d.row, d.correct, d.n_rows) > 0
    numer = np.where(has_good, good, np.exp(-top))
    loss = -np.mean(d.row_weight * np.log(numer / denom)) + L2 * w @ w
    p = e / denom[d.row]                       # P(candidate)
    q = np.where(d.correct & has_good[d.row], e / np.maximum(good[d.row], 1e-300), 0.0)
    grad = (((p - q) * d.row_weight[d.row]) @ d.x) / d.n_rows + 2 * L2 * w
    return float(loss), grad


def answerable(d: Design) -> Design:
    """Only the rows with a right candidate: the ranker learns to order, not to abstain."""
    keep = (np.bincount(d.row, d.correct, d.n_rows) > 0)[d.row]
    return Design(d.names, d.x[keep], d.row[keep], d.correct[keep], d.n_rows, d.row_weight)


def fit_none_score(w: dict[str, float], d: Design) -> float:
    """The score of 'none' that best explains all rows (answerable or not) given the ranker:
    it calibrates confidence without moving the ranking."""
    vector = np.array([w.get(name, 0.0) for name in d.names])
    grid = np.linspace(-3, 6, 91)
    losses = [_loss_grad(vector, d, none)[0] for none in grid]
    return round(float(grid[int(np.argmin(losses))]), 2)


def fit_weights(d: Design) -> dict[str, float]:
    d = answerable(d)
    w = np.zeros(len(d.names))
    m, v = np.zeros_like(w), np.zeros_like(w)
    for t in range(1, STEPS + 1):
        _, g = _loss_grad(w, d)
        m = 0.9 * m + 0.1 * g
        v = 0.999 * v + 0.001 * g * g
        w -= LEARNING_RATE * (m / (1 - 0.9 ** t)) / (np.sqrt(v / (1 - 0.999 ** t)) + 1e-8)
    return {name: round(float(x), 4) for name, x in zip(d.names, w) if abs(x) > 1e-4}


def tune_thresholds(extractor: Extractor, rows: Sequence[TextRow],
                    blank_rates: dict[str, float]) -> dict[str, float]:
    """Per entity, the confidence floor with the best expected F1 on `rows`.

    Those rows all have a truth, so a blank there only ever costs; `blank_rates[entity]` is the
    share of empty truths to expect at test time, simulated as extra rows that are wrong
    whatever is answered, with the confidences the real rows had.
    """
    extractor.model.thresholds = {}
    thresholds: dict[str, float] = {}
    for entity in ENTITIES:
        scored = []
        for r in rows:
            if r.entity == entity:
                pred = extractor.predict(entity, r.ocr, r.group_id)
                right = pred.answer is not None and classify_error(entity, r.truth, pred.text()) is None
                scored.append((pred.confidence, right, pred.answer is not None))
        thresholds[entity] = _best_threshold(scored, blank_rates.get(entity, 0.0))
    return thresholds


def _best_threshold(scored: list[tuple[float, bool, bool]], blank_rate: float) -> float:
    best, best_f1 = 0.0, -1.0
    for t in THRESHOLD_GRID:
        answered = [(c, ok) for c, ok, has in scored if has and c >= t]
        tp = (1 - blank_rate) * sum(ok for _, ok in answered)
        fp = (1 - blank_rate) * sum(not ok for _, ok in answered) + blank_rate * len(answered)
        fn = (1 - blank_rate) * (len(scored) - len(answered))
        f1 = 2 * tp / (2 * tp + fp + fn) if tp else 0.0
        if f1 > best_f1 + 1e-9:
            best, best_f1 = t, f1
    return best


def predict_rows(extractor: Extractor, rows: Sequence[TextRow]) -> list[tuple[str, str, str]]:
    """(entity, truth, prediction) of each row, as metric.score takes them."""
    return [(r.entity, r.truth, extractor.predict(r.entity, r.ocr, r.group_id or None).text()) for r in rows]


def fitted_extractor(rows: Sequence[TextRow], priors: Priors) -> Extractor:
    """A ranker fitted on `rows`, with its fitted score for 'none'."""
    design = build_design(rows, priors)
    weights = fit_weights(design)
    return Extractor(Model(weights, none_score=fit_none_score(weights, design)), priors)


@dataclass
class OutOfFold:
    """Rankers each fitted without one fold of the training rows (folds by image hash): a
    training row's options come from the ranker that never learned from it. A second model
    stacked on the ranker (the LLM's choice, its combination weight) then learns from options
    as good as those it will see on new rows, not from the in-sample ranker's, which are right
    more often than they will ever be again."""

    extractors: list[Extractor]

    def extractor(self, row: object) -> Extractor:
        return self.extractors[fold_of(row, len(self.extractors), OOF_SEED)]


def out_of_fold(rows: Sequence[TextRow], priors: Priors | None = None, folds: int = 5) -> OutOfFold:
    priors = priors or held_out_priors()
    assignment = [fold_of(row, folds, OOF_SEED) for row in rows]
    return OutOfFold([fitted_extractor([row for row, f in zip(rows, assignment) if f != k], priors)
                      for k in range(folds)])


def train(labeled: Path = OCR_LABELED, photos_store: Path | None = None, train_csv: Path = TRAIN_CSV,
          blank_rates: dict[str, float] | None = None, dim_store: Path | None = None) -> tuple[Model, Priors]:
    priors = held_out_priors(train_csv)
    train_half = training_rows(labeled, photos_store, dim_store)
    fit_rows, tune_rows = split_rows(train_half, seed=TUNE_SEED, val_fraction=0.3)
    thresholds = tune_thresholds(fitted_extractor(fit_rows, priors), tune_rows, blank_rates or {})
    design = build_design(train_half, priors)       # refit on the whole train half
    weights = fit_weights(design)
    none_score = fit_none_score(weights, design)
    photo_rows = sum(r.from_store for r in train_half)
    meta = {"train_rows": len(train_half), "photo_rows": photo_rows, "text_rows": len(train_half) - photo_rows,
            "dim_photo_rows": sum(r.source == DIM_PHOTOS_SPLIT for r in train_half),
            "blank_rates": blank_rates or {}, "built_by": "python -m amlc.extract.fit"}
    return Model(weights, thresholds, meta, none_score), priors


def main(argv: Sequence[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--labeled", type=Path, default=OCR_LABELED)
    parser.add_argument("--photos-store", type=Path, default=None,
                        help="amlc.db of a work folder holding the labelled photos, OCR'd by amlc run "
                             "(bench/photos.py makes one); its train half is learned from")
    parser.add_argument("--dim-store", type=Path, default=None,
                        help="amlc.db of a work folder holding dim_photos.csv's rows (split "
                             f"{DIM_PHOTOS_SPLIT!r}), OCR'd by amlc run; all of them are learned from")
    parser.add_argument("--train-csv", type=Path, default=TRAIN_CSV)
    parser.add_argument("--blank-rate", action="append", default=[], metavar="ENTITY=RATE",
                        help="expected share of empty truths for an entity (repeatable); default 0")
    parser.add_argument("--model", type=Path, default=DEFAULT_MODEL)
    parser.add_argument("--priors", type=Path, default=DEFAULT_PRIORS)
    args = parser.parse_args(argv)
    rates = {k: float(v) for k, v in (item.split("=", 1) for item in args.blank_rate)}
    model, priors = train(args.labeled, args.photos_store, args.train_csv, rates, args.dim_store)
    args.priors.write_text(json.dumps(priors.to_json(), separators=(",", ":")), encoding="utf-8")
    args.model.write_text(json.dumps(model.to_json(), indent=1, sort_keys=True), encoding="utf-8")
    print(f"wrote {args.model} ({len(model.weights)} weights; {model.meta['text_rows']} text rows, "
          f"{model.meta['photo_rows']} photo rows) and {args.priors}")


if __name__ == "__main__":
    main()

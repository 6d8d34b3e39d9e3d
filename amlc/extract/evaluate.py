"""Scoring the extractor (or any text -> answer function) on labelled OCR rows."""

from __future__ import annotations

from typing import Callable, Sequence

from ..metric import Report, score
from .choose import Extractor
from .data import TextRow

PredictFn = Callable[[TextRow], str]


def extractor_fn(extractor: Extractor) -> PredictFn:
    return lambda row: extractor.predict(row.entity, row.ocr, row.group_id or None).text()


def evaluate(rows: Sequence[TextRow], predict: PredictFn) -> tuple[Report, list[str]]:
    """The official-F1 report of predict over rows, and each row's prediction."""
    predictions = [predict(row) for row in rows]
    report = score((row.entity, row.truth, pred) for row, pred in zip(rows, predictions))
    return report, predictions

"""The official F1 (SPEC.md), computed two ways side by side.

numeric: same unit and equal value ('10.0 inch' == '10 inch'); strict: equal strings after
trimming. Both classify every row as TP/FP/FN/TN by the official table; an invalid prediction
counts as a wrong answer.
"""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass, field
from decimal import Decimal
from typing import Iterable

from .units import AnswerError, parse_label, parse_prediction


@dataclass
class Counts:
    tp: int = 0
    fp: int = 0
    fn: int = 0
    tn: int = 0

    @property
    def precision(self) -> float:
        return self.tp / (self.tp + self.fp) if self.tp + self.fp else 0.0

    @property
    def recall(self) -> float:
        return self.tp / (self.tp + self.fn) if self.tp + self.fn else 0.0

    @property
    def f1(self) -> float:
        p, r = self.precision, self.recall
        return 2 * p * r / (p + r) if p + r else 0.0

    def add(self, truth: str, pred: str, correct: bool) -> None:
        if pred and truth:
            if correct:
                self.tp += 1
            else:
                self.fp += 1
        elif pred:
            self.fp += 1
        elif truth:
            self.fn += 1
        else:
            self.tn += 1

    def as_dict(self) -> dict[str, float]:
        return {"tp": self.tp, "fp": self.fp, "fn": self.fn, "tn": self.tn,
                "precision": self.precision, "recall": self.recall, "f1": self.f1}


@dataclass
class Report:
    numeric: Counts = field(default_factory=Counts)
    strict: Counts = field(default_factory=Counts)
    per_entity: dict[str, tuple[Counts, Counts]] = field(default_factory=dict)
    errors: Counter[str] = field(default_factory=Counter)  # wrong value / wrong unit / blank / ...

    @property
    def f1(self) -> float:
        return self.numeric.f1

    def as_dict(self) -> dict:
        return {
            "numeric": self.numeric.as_dict(),
            "strict": self.strict.as_dict(),
            "per_entity": {e: {"numeric": n.as_dict(), "strict": s.as_dict()}
                           for e, (n, s) in sorted(self.per_entity.items())},
            "errors": dict(self.errors.most_common()),
        }


def _prediction_value(text: str, entity: str) -> tuple[Decimal, str] | None:
    """A prediction is read strictly: what the official checker would reject is wrong."""
    try:
        answer = parse_prediction(text, entity)
    except AnswerError:
        return None
    return (answer.value, answer.unit) if answer else None


def _truth_value(text: str, entity: str) -> tuple[Decimal, str] | None:
    """A truth is read leniently, as a label ('21.0 centimetre', ranges)."""
    try:
        answer = parse_label(text, entity)
    except AnswerError:
        return None
    return (answer.value, answer.unit)


def classify_error(entity: str, truth: str, pred: str) -> str | None:
    """Why a prediction is not a true positive (None when it is one or when both are blank)."""
    if not pred:
        return "blank" if truth else None
    if not truth:
        return "answer where truth is empty"
    got, want = _prediction_value(pred, entity), _truth_value(truth, entity)
    if got is None:
        return "invalid prediction"
    if want is None or got == want:
        return None if got == want else "unreadable truth"
    return "wrong unit" if got[1] != want[1] else "wrong value"


def score(rows: Iterable[tuple[str, str, str]]) -> Report:
    """Score (entity, truth, prediction) rows; empty strings are blanks."""
    report = Report()
    for entity, truth, pred in rows:
        truth, pred = truth.strip(), pred.strip()
        error = classify_error(entity, truth, pred)
        numeric, strict = report.per_entity.setdefault(entity, (Counts(), Counts()))
        for counts in (report.numeric, numeric):
            counts.add(truth, pred, error is None)
        for counts in (report.strict, strict):
            counts.add(truth, pred, pred == truth)
        if error:
            report.errors[error] += 1
    return report


def format_report(report: Report) -> str:
    """A plain-text table: P/R/F1 numeric and strict, overall and per entity, then the errors."""
    head = f"{'entity':32} {'n':>6} {'P':>6} {'R':>6} {'F1':>6} {'F1 strict':>9}"
    lines = [head, "-" * len(head)]
    rows = sorted(report.per_entity.items()) + [("all", (report.numeric, report.strict))]
    for entity, (num, strict) in rows:
        n = num.tp + num.fp + num.fn + num.tn
        lines.append(f"{entity:32} {n:>6} {num.precision:>6.3f} {num.recall:>6.3f} "
                     f"{num.f1:>6.3f} {strict.f1:>9.3f}")
    if report.errors:
        lines.append("errors: " + ", ".join(f"{k} {v}" for k, v in report.errors.most_common()))
    return "\n".join(lines)

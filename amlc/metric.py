"""The official F1 (SPEC.md), computed two ways side by side.

numeric: same unit and equal value ('10.0 inch' == '10 inch'); strict: the prediction equals the
label as the file writes it ('21.0 centimetre'), which is what an exact string comparison would
score. Both classify every row as TP/FP/FN/TN by the official table; an invalid prediction counts
as a wrong answer. Beside the overall figure, `weighted` reweights the entities to the test set's
mix, since labelled samples rarely come in the proportions the test set has.
"""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass, field
from decimal import Decimal
from typing import Iterable

from .units import DIMENSIONS, AnswerError, parse_label, parse_prediction, same_quantity

# Rows per entity in the official test.csv (131,187 rows; counted with
# `cut -d, -f4 ../shared/data/test.csv | sort | uniq -c`, as SPEC.md lists them). Embedded so the
# weighted score needs no data folder.
TEST_MIX: dict[str, int] = {
    "height": 32_282, "depth": 28_146, "width": 26_931, "item_weight": 22_032,
    "maximum_weight_recommendation": 7_028, "voltage": 5_488, "wattage": 5_447, "item_volume": 3_833,
}


@dataclass
class Counts:
    tp: float = 0   # floats only when reweighted (Report.weighted)
    fp: float = 0
    fn: float = 0
    tn: float = 0

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

    @property
    def n(self) -> float:
        return self.tp + self.fp + self.fn + self.tn

    def scaled(self, weight: float) -> "Counts":
        return Counts(self.tp * weight, self.fp * weight, self.fn * weight, self.tn * weight)

    def __add__(self, other: "Counts") -> "Counts":
        return Counts(self.tp + other.tp, self.fp + other.fp, self.fn + other.fn, self.tn + other.tn)

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

    def weighted(self, mix: dict[str, int] = TEST_MIX) -> tuple[Counts, Counts]:
        """(numeric, strict) counts with each entity's rows reweighted to its share of `mix`
        (renormalised over the entities present): the F1 this behaviour per entity would
        score on a split with the test set's entity proportions."""
        numeric, strict = Counts(), Counts()
        for entity, (num, st) in self.per_entity.items():
            weight = mix.get(entity, 0) / num.n if num.n else 0.0
            numeric, strict = numeric + num.scaled(weight), strict + st.scaled(weight)
        return numeric, strict

    def dimensions(self) -> Counts | None:
        """Numeric counts of the width, height and depth rows pooled; None without any."""
        found = [self.per_entity[e][0] for e in DIMENSIONS if e in self.per_entity]
        return sum(found, Counts()) if found else None

    def mix_coverage(self, mix: dict[str, int] = TEST_MIX) -> tuple[float, list[str]]:
        """(share of the mix's rows whose entity is present here, the entities absent): a
        weighted figure speaks only for the entities it saw."""
        present = sum(count for entity, count in mix.items() if entity in self.per_entity)
        return present / sum(mix.values()), sorted(e for e in mix if e not in self.per_entity)

    def as_dict(self) -> dict:
        w_numeric, w_strict = self.weighted()
        share, absent = self.mix_coverage()
        return {
            "numeric": self.numeric.as_dict(),
            "strict": self.strict.as_dict(),
            "weighted": {"numeric": w_numeric.as_dict(), "strict": w_strict.as_dict(),
                         "mix": "test.csv entity counts",
                         "entities": sorted(e for e in self.per_entity if e in TEST_MIX),
                         "mix_share": share, "absent": absent},
            "per_entity": {e: {"numeric": n.as_dict(), "strict": s.as_dict()}
                           for e, (n, s) in sorted(self.per_entity.items())},
            "dimensions": dims.as_dict() if (dims := self.dimensions()) is not None else None,
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


SAME_QUANTITY = "the right quantity in another unit"   # '16 centimetre' for a label's '6.2 inch'
STRICT_ONLY = "right value, label written otherwise (strict only)"   # '250.0 gram' for '250 gram'


def error_kind(entity: str, truth: str, pred: str) -> str | None:
    """classify_error, with 'wrong unit' told apart into the same quantity in another unit
    (the label wrote the other of '6.2 in / 16 cm') and another quantity altogether."""
    error = classify_error(entity, truth, pred)
    if error != "wrong unit":
        return error
    (got, got_unit), (want, want_unit) = _prediction_value(pred, entity), _truth_value(truth, entity)
    return SAME_QUANTITY if same_quantity(want, want_unit, got, got_unit) else "wrong unit"


def score(rows: Iterable[tuple[str, str, str]]) -> Report:
    """Score (entity, truth, prediction) rows; empty strings are blanks."""
    report = Report()
    for entity, truth, pred in rows:
        truth, pred = truth.strip(), pred.strip()
        error = error_kind(entity, truth, pred)
        numeric, strict = report.per_entity.setdefault(entity, (Counts(), Counts()))
        for counts in (report.numeric, numeric):
            counts.add(truth, pred, error is None)
        for counts in (report.strict, strict):
            counts.add(truth, pred, pred == truth)
        if error:
            report.errors[error] += 1
        elif pred and pred != truth:
            report.errors[STRICT_ONLY] += 1
    return report


def format_report(report: Report) -> str:
    """A plain-text table: P/R/F1 numeric and strict, overall and per entity, then the errors."""
    head = f"{'entity':32} {'n':>6} {'P':>6} {'R':>6} {'F1':>6} {'F1 strict':>9}"
    lines = [head, "-" * len(head)]
    rows = sorted(report.per_entity.items()) + [("all", (report.numeric, report.strict))]
    for entity, (num, strict) in rows:
        lines.append(f"{entity:32} {num.n:>6} {num.precision:>6.3f} {num.recall:>6.3f} "
                     f"{num.f1:>6.3f} {strict.f1:>9.3f}")
    num, strict = report.weighted()
    dims = report.dimensions()
    if dims is not None:
        lines.insert(-1, f"{'width/height/depth':32} {dims.n:>6} {dims.precision:>6.3f} "
                         f"{dims.recall:>6.3f} {dims.f1:>6.3f} {'':>9}")
    share, absent = report.mix_coverage()
    coverage = f"  over {share:.0%} of the test mix; absent: {', '.join(absent)}" if absent else ""
    lines.append(f"{'all, weighted to the test mix':32} {report.numeric.n:>6} {num.precision:>6.3f} "
                 f"{num.recall:>6.3f} {num.f1:>6.3f} {strict.f1:>9.3f}{coverage}")
    if report.errors:
        lines.append("errors: " + ", ".join(f"{k} {v}" for k, v in report.errors.most_common()))
    return "\n".join(lines)

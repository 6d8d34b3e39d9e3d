"""Value and unit priors per entity and product group, counted from labelled train rows.

They answer "how plausible is 12 centimetre as a height in group 1234?": the unit's share among
the entity's labels (overall and in the group) and the density of log10(value) for that unit;
"is a height usually larger than the width beside it in this group?" (from images labelled with
several dimensions); and "does this group's label write a whole number as '21' or '21.0'?".
"""

from __future__ import annotations

import csv
import math
import re
from collections import Counter, defaultdict
from dataclasses import dataclass, field
from decimal import Decimal
from pathlib import Path
from typing import Iterable

from ..units import DIMENSIONS, SCALE, Answer, AnswerError, parse_label

LOG_BIN = 0.25          # width of a log10(value) bin: a quarter decade
LOG_MIN, LOG_MAX = -3.0, 6.0
GROUP_SMOOTHING = 20.0  # pseudo-counts of the entity-wide unit share mixed into each group's
FORM_SMOOTHING = 2.0    # the same for the number form: a group's own habit decides quickly (a
                        # group's labels were written in runs of one form)
ORDER_SMOOTHING = 5.0   # the same for which dimension is the larger
WHOLE_RE = re.compile(r"^\s*-?\d+(\.0+)?\s")   # a whole number, written bare or with '.0'


def value_bin(value: Decimal) -> int:
    if value <= 0:
        return -1
    clipped = min(max(math.log10(float(value)), LOG_MIN), LOG_MAX - 1e-9)
    return int((clipped - LOG_MIN) / LOG_BIN)


N_BINS = value_bin(Decimal(10) ** int(LOG_MAX)) + 1
SIZE_BIN = 0.0625   # width in decades of a size bin for the per-group size prior; a group's products
                    # come in a few standard sizes. 5-fold CV on the train halves (text, photos),
                    # repeats 0-2: 1/8 0.713/0.834, 1/16 0.716/0.837, 1/32 0.700/0.839;
                    # repeats 3-5: 1/8 0.715/0.837, 1/16 0.719/0.839
N_SIZE_BINS = int(16 / SIZE_BIN)   # sizes in base units span about 1e-6 .. 1e9


def size_bin(value: Decimal, unit: str) -> int:
    """The bin of log10 of the size in base units (gram, millimetre, millilitre, volt, watt)."""
    size = float(value) * SCALE.get(unit, 1.0)
    return math.floor(math.log10(size) / SIZE_BIN) if size > 0 else -99


@dataclass
class Priors:
    units: dict[str, Counter[str]] = field(default_factory=dict)              # entity -> unit counts
    group_units: dict[str, Counter[str]] = field(default_factory=dict)        # "entity|group" -> counts
    values: dict[str, list[int]] = field(default_factory=dict)                # "entity|unit" -> bin counts
    # "entity|group" -> {decade of the size in base units: count}; "entity|" holds the entity's
    group_sizes: dict[str, Counter[int]] = field(default_factory=dict)
    # whole-number labels: "entity|unit" and "entity|unit|group" -> {"bare": n, "point": n}
    forms: dict[str, Counter[str]] = field(default_factory=dict)
    # images labelled with two dimensions: "a>b|group" and "a>b|" -> {"yes": n, "no": n}
    order: dict[str, Counter[str]] = field(default_factory=dict)

    @classmethod
    def count(cls, rows: Iterable[tuple[str, str, str] | tuple[str, str, str, str]]) -> "Priors":
        """From (entity, group_id, label[, image_link]) rows; unreadable labels are skipped.
        Rows of one image (same link) that label two dimensions teach which is the larger."""
        priors = cls(defaultdict(Counter), defaultdict(Counter), {}, defaultdict(Counter),
                     defaultdict(Counter), defaultdict(Counter))
        images: dict[str, dict[str, Answer]] = defaultdict(dict)
        for entity, group, label, *link in rows:
            try:
                answer = parse_label(label, entity)
            except AnswerError:
                continue
            if link and entity in DIMENSIONS:
                images[f"{group}|{link[0]}"][entity] = answer
            whole = WHOLE_RE.match(label)
            if whole:
                form = "point" if whole.group(1) else "bare"
                priors.forms[f"{entity}|{answer.unit}"][form] += 1
                priors.forms[f"{entity}|{answer.unit}|{group}"][form] += 1
            priors.units[entity][answer.unit] += 1
            priors.group_units[f"{entity}|{group}"][answer.unit] += 1
            bins = priors.values.setdefault(f"{entity}|{answer.unit}", [0] * N_BINS)
            b = value_bin(answer.value)
            if b >= 0:
                bins[b] += 1
                decade = size_bin(answer.value, answer.unit)
                priors.group_sizes[f"{entity}|{group}"][decade] += 1
                priors.group_sizes[f"{entity}|"][decade] += 1
        priors._count_order(images)
        return priors

    def _count_order(self, images: dict[str, dict[str, Answer]]) -> None:
        for key, dims in images.items():
            group = key.split("|", 1)[0]
            sizes = {e: float(a.value) * SCALE.get(a.unit, 1.0) for e, a in dims.items()}
            for a in sizes:
                for b in sizes:
                    if a != b and sizes[a] != sizes[b]:
                        verdict = "yes" if sizes[a] > sizes[b] else "no"
                        self.order[f"{a}>{b}|{group}"][verdict] += 1
                        self.order[f"{a}>{b}|"][verdict] += 1

    @classmethod
    def from_csv(cls, path: str | Path, exclude_links: frozenset[str] | set[str] = frozenset()) -> "Priors":
        """From a train CSV (official header), leaving out the rows of the given image links."""
        with open(path, newline="", encoding="utf-8") as handle:
            return cls.count((r["entity_name"], r["group_id"], r["entity_value"], r["image_link"])
                             for r in csv.DictReader(handle) if r["image_link"] not in exclude_links)

    def whole_number_bare(self, entity: str, unit: str, group: str | None) -> bool:
        """Whether labels write a whole number of this entity and unit as '21' rather than
        '21.0' (the float form most labels use), by the group's habit, shrunk toward the
        entity and unit's."""
        overall = self.forms.get(f"{entity}|{unit}", Counter())
        share = (overall["bare"] + 0.5) / (overall["bare"] + overall["point"] + 1)
        counts = self.forms.get(f"{entity}|{unit}|{group}", Counter()) if group else Counter()
        return counts["bare"] + FORM_SMOOTHING * share > counts["point"] + FORM_SMOOTHING * (1 - share)

    def larger_logodds(self, entity: str, other: str, group: str | None) -> float:
        """log odds that the entity's label is larger than the other dimension's on one image
        of the group (entity-wide when the group has few such images)."""
        overall = self.order.get(f"{entity}>{other}|", Counter())
        p = (overall["yes"] + 1) / (overall["yes"] + overall["no"] + 2)
        counts = self.order.get(f"{entity}>{other}|{group}", Counter()) if group else Counter()
        yes = counts["yes"] + ORDER_SMOOTHING * p
        no = counts["no"] + ORDER_SMOOTHING * (1 - p)
        return math.log(yes / no)

    def unit_logp(self, entity: str, unit: str) -> float:
        counts = self.units.get(entity, Counter())
        total = sum(counts.values())
        return math.log((counts.get(unit, 0) + 1) / (total + 20))

    def group_unit_logp(self, entity: str, group: str | None, unit: str) -> float:
        """The unit's share in the group, shrunk toward the entity-wide share."""
        counts = self.group_units.get(f"{entity}|{group}", Counter()) if group else Counter()
        base = math.exp(self.unit_logp(entity, unit))
        total = sum(counts.values())
        return math.log((counts.get(unit, 0) + GROUP_SMOOTHING * base) / (total + GROUP_SMOOTHING))

    def value_logp(self, entity: str, unit: str, value: Decimal) -> float:
        """log density of the value's bin among the entity's labels in this unit (add-one)."""
        bins = self.values.get(f"{entity}|{unit}")
        b = value_bin(value)
        if not bins or b < 0:
            return math.log(1 / (N_BINS + 1))
        return math.log((bins[b] + 1) / (sum(bins) + N_BINS))

    def group_size_logp(self, entity: str, group: str | None, value: Decimal, unit: str) -> float:
        """How usual this size (in base units, by decade) is for the entity in the group, shrunk
        toward the entity-wide share: rings are small, wardrobes are large."""
        decade = size_bin(value, unit)
        overall = self.group_sizes.get(f"{entity}|", Counter())
        base = (overall.get(decade, 0) + 1) / (sum(overall.values()) + N_SIZE_BINS)
        counts = self.group_sizes.get(f"{entity}|{group}", Counter()) if group else Counter()
        return math.log((counts.get(decade, 0) + GROUP_SMOOTHING * base)
                        / (sum(counts.values()) + GROUP_SMOOTHING))

    def top_unit(self, entity: str, group: str | None = None) -> str | None:
        units = self.top_units(entity, group, 1)
        return units[0] if units else None

    def top_units(self, entity: str, group: str | None = None, n: int = 1) -> list[str]:
        """The entity's n most frequent units in the group (entity-wide for an unseen group)."""
        counts = self.group_units.get(f"{entity}|{group}") if group else None
        counts = counts or self.units.get(entity)
        return [unit for unit, _ in counts.most_common(n)] if counts else []

    def to_json(self) -> dict:
        return {"units": {k: dict(v) for k, v in self.units.items()},
                "group_units": {k: dict(v) for k, v in self.group_units.items()},
                "values": self.values,
                "group_sizes": {k: {str(d): n for d, n in v.items()} for k, v in self.group_sizes.items()},
                "forms": {k: dict(v) for k, v in self.forms.items()},
                "order": {k: dict(v) for k, v in self.order.items()}}

    @classmethod
    def from_json(cls, data: dict) -> "Priors":
        return cls({k: Counter(v) for k, v in data["units"].items()},
                   {k: Counter(v) for k, v in data["group_units"].items()},
                   {k: list(v) for k, v in data["values"].items()},
                   {k: Counter({int(d): n for d, n in v.items()})
                    for k, v in data.get("group_sizes", {}).items()},
                   {k: Counter(v) for k, v in data.get("forms", {}).items()},
                   {k: Counter(v) for k, v in data.get("order", {}).items()})

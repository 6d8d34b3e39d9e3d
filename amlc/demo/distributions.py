"""Value, unit and product-group distributions per entity, for realistic synthetic labels.

The demo must run without ../shared, so a small table (distributions.json, a few KB) is generated
once from the official train rows and committed:

    python -m amlc.demo.distributions --from ../shared/data/train.csv
"""

from __future__ import annotations

import argparse
import csv
import json
import random
from collections import Counter, defaultdict
from dataclasses import dataclass
from pathlib import Path

from ..units import AnswerError, parse_label

TABLE = Path(__file__).with_name("distributions.json")
TOP_UNITS = 4    # units kept per entity (the rest are rare in train)
TOP_VALUES = 12  # values kept per (entity, unit), with their counts
TOP_GROUPS = 5   # product groups kept per entity (the extractor has per-group priors)


def build_table(train_csv: Path) -> dict:
    """{entity: {"rows", "groups": {gid: n}, "units": {unit: {"rows", "values": {v: n}}}}}."""
    values: dict[str, dict[str, Counter[str]]] = defaultdict(lambda: defaultdict(Counter))
    groups: dict[str, Counter[str]] = defaultdict(Counter)
    with train_csv.open(newline="", encoding="utf-8") as handle:
        for row in csv.DictReader(handle):
            entity = row["entity_name"]
            try:
                answer = parse_label(row["entity_value"], entity)
            except AnswerError:
                continue  # labels outside the allowed units teach nothing here
            values[entity][answer.unit][str(answer).split(" ", 1)[0]] += 1
            groups[entity][row["group_id"]] += 1
    return {entity: _entity_table(units, groups[entity]) for entity, units in sorted(values.items())}


def _entity_table(units: dict[str, Counter[str]], groups: Counter[str]) -> dict:
    top = sorted(units.items(), key=lambda kv: -sum(kv[1].values()))[:TOP_UNITS]
    return {
        "rows": sum(sum(c.values()) for c in units.values()),
        "groups": dict(groups.most_common(TOP_GROUPS)),
        "units": {unit: {"rows": sum(c.values()), "values": dict(c.most_common(TOP_VALUES))}
                  for unit, c in top},
    }


@dataclass(frozen=True)
class Label:
    entity: str
    value: str   # canonical number text, e.g. "12.5"
    unit: str    # canonical unit, e.g. "centimetre"
    group_id: str

    @property
    def answer(self) -> str:
        return f"{self.value} {self.unit}"


class Distributions:
    """Samples (entity, value, unit, group) in train's proportions from the shipped table."""

    def __init__(self, table: dict) -> None:
        self.table = table

    @classmethod
    def load(cls, path: Path = TABLE) -> "Distributions":
        return cls(json.loads(path.read_text(encoding="utf-8")))

    @property
    def entities(self) -> list[str]:
        return sorted(self.table)

    def sample(self, rng: random.Random, entity: str | None = None) -> Label:
        entity = entity or _weighted(rng, {e: t["rows"] for e, t in self.table.items()})
        spec = self.table[entity]
        unit = _weighted(rng, {u: t["rows"] for u, t in spec["units"].items()})
        value = _weighted(rng, spec["units"][unit]["values"])
        return Label(entity, value, unit, _weighted(rng, spec["groups"]))


def _weighted(rng: random.Random, counts: dict[str, int]) -> str:
    keys = sorted(counts)
    return rng.choices(keys, weights=[counts[k] for k in keys])[0]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--from", dest="source", type=Path, required=True, help="train CSV (official header)")
    parser.add_argument("--out", type=Path, default=TABLE)
    args = parser.parse_args()
    args.out.write_text(json.dumps(build_table(args.source), indent=1, sort_keys=True) + "\n", encoding="utf-8")
    print(f"wrote {args.out} ({args.out.stat().st_size:,} bytes)")


if __name__ == "__main__":
    main()

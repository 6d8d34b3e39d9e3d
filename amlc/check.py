"""Our submission checker: stricter than the official one.

It fails on missing, extra or duplicate indices, a bad header, a malformed prediction, or a unit
not allowed for the row's entity, and names the first offending rows with their line numbers.
"""

from __future__ import annotations

import csv
from dataclasses import dataclass, field
from pathlib import Path

from .units import prediction_error


@dataclass
class CheckResult:
    rows: int = 0
    answered: int = 0
    problems: list[str] = field(default_factory=list)
    problem_count: int = 0

    @property
    def ok(self) -> bool:
        return self.problem_count == 0

    def add(self, problem: str, keep: int = 20) -> None:
        self.problem_count += 1
        if len(self.problems) < keep:
            self.problems.append(problem)


def expected_entities(test_csv: Path) -> dict[int, str]:
    with test_csv.open(newline="", encoding="utf-8-sig") as handle:
        reader = csv.DictReader(handle)
        if not reader.fieldnames or "index" not in reader.fieldnames:
            raise ValueError(f"{test_csv}: no 'index' column; pass the test file the submission answers")
        return {int(row["index"]): row["entity_name"] for row in reader}


def check_submission(submission: Path, test_csv: Path) -> CheckResult:
    entities = expected_entities(test_csv)
    result = CheckResult()
    seen: dict[int, int] = {}
    with submission.open(newline="", encoding="utf-8-sig") as handle:
        reader = csv.reader(handle)
        header = next(reader, None)
        if header != ["index", "prediction"]:
            result.add(f"line 1: header must be 'index,prediction', found {header!r}")
        line = reader.line_num
        for fields in reader:
            start, line = line + 1, reader.line_num
            result.rows += 1
            _check_row(fields, start, entities, seen, result)
    missing = sorted(set(entities) - set(seen))
    if missing:
        result.add(f"{len(missing)} index(es) of {test_csv.name} missing, first: "
                   + ", ".join(map(str, missing[:10])))
    return result


def _check_row(fields: list[str], line: int, entities: dict[int, str],
               seen: dict[int, int], result: CheckResult) -> None:
    if len(fields) != 2:
        result.add(f"line {line}: expected 2 fields, got {len(fields)}")
        return
    raw_index, prediction = fields
    try:
        index = int(raw_index)
    except ValueError:
        result.add(f"line {line}: index {raw_index!r} is not an integer")
        return
    if index in seen:
        result.add(f"line {line}: duplicate index {index} (first on line {seen[index]})")
        return
    seen[index] = line
    if index not in entities:
        result.add(f"line {line}: index {index} is not in the test file")
        return
    why = prediction_error(prediction, entities[index])
    if why:
        result.add(f"line {line}: index {index} ({entities[index]}): {why}")
    result.answered += prediction != ""

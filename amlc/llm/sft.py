"""SFT rows: labelled OCR rows -> prompt/completion JSONL (TRL's prompt-completion format).

Training rows are resampled toward the test set's entity mix (SPEC.md); validation rows are kept
as they are so scores stay comparable. Rows whose label has no valid answer are dropped.
"""

from __future__ import annotations

import csv
import json
import random
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Iterable, Sequence

from ..units import AnswerError, parse_label
from .prompt import build_prompt, completion

# Test-set rows per entity (SPEC.md): the mix the model should be tuned toward.
TEST_ENTITY_COUNTS: dict[str, int] = {
    "height": 32_282, "depth": 28_146, "width": 26_931, "item_weight": 22_032,
    "maximum_weight_recommendation": 7_028, "voltage": 5_488, "wattage": 5_447, "item_volume": 3_833,
}

CandidatesFn = Callable[[str, str, str], Sequence[str]]  # (entity, ocr_text, group_id) -> candidates


@dataclass(frozen=True)
class LabeledRow:
    entity: str
    ocr_text: str
    label: str
    group_id: str = ""
    image_link: str = ""  # decides the split half (amlc.extract.data.split_key)


def read_labeled_csv(path: str | Path) -> list[LabeledRow]:
    """Rows of a labelled OCR file (ocr_labeled.csv's columns)."""
    with open(path, newline="", encoding="utf-8") as handle:
        return [LabeledRow(r["entity_name"], r["ocr_text"], r["entity_value"], r.get("group_id") or "",
                           r.get("image_link") or "") for r in csv.DictReader(handle)]


def split_rows(rows: list[LabeledRow], seed: int = 0, val_fraction: float = 0.5
               ) -> tuple[list[LabeledRow], list[LabeledRow]]:
    """The extractor's fixed-seed split when it exists (so every part scores the same rows)."""
    try:
        from ..extract.data import split_rows as shared_split
    except ImportError:
        shuffled = rows[:]
        random.Random(seed).shuffle(shuffled)
        cut = int(len(shuffled) * (1 - val_fraction))
        return shuffled[:cut], shuffled[cut:]
    return shared_split(rows, seed=seed)


def mix_to_test(rows: list[LabeledRow], size: int | None = None, seed: int = 0) -> list[LabeledRow]:
    """Resample rows so entities appear in test proportions; rare entities repeat, common ones thin."""
    by_entity: dict[str, list[LabeledRow]] = {}
    for row in rows:
        by_entity.setdefault(row.entity, []).append(row)
    total = sum(TEST_ENTITY_COUNTS[e] for e in by_entity)
    size = size or len(rows)
    rng = random.Random(seed)
    out: list[LabeledRow] = []
    for entity, group in sorted(by_entity.items()):
        want = max(1, round(size * TEST_ENTITY_COUNTS[entity] / total))
        rng.shuffle(group)
        out += [group[i % len(group)] for i in range(want)]
    rng.shuffle(out)
    return out


def prompt_for(entity: str, ocr_text: str, group_id: str, candidates: CandidatesFn | None) -> str:
    """The prompt for one sample, the same in training, scoring and the predict stage."""
    cands = candidates(entity, ocr_text, group_id) if candidates and ocr_text else None
    return build_prompt(entity, ocr_text, cands)


def to_record(row: LabeledRow, candidates: CandidatesFn | None = None) -> dict[str, str] | None:
    """One prompt/completion record, or None when the label is not a valid answer."""
    try:
        answer = parse_label(row.label, row.entity)
    except AnswerError:
        return None
    return {"prompt": prompt_for(row.entity, row.ocr_text, row.group_id, candidates),
            "completion": completion(answer), "entity": row.entity}


def to_records(rows: Iterable[LabeledRow], candidates: CandidatesFn | None = None) -> list[dict[str, str]]:
    return [r for r in (to_record(row, candidates) for row in rows) if r is not None]


def write_jsonl(records: Iterable[dict], path: str | Path) -> int:
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    n = 0
    with open(path, "w", encoding="utf-8") as handle:
        for record in records:
            handle.write(json.dumps(record, ensure_ascii=False) + "\n")
            n += 1
    return n


def read_jsonl(path: str | Path) -> list[dict]:
    with open(path, encoding="utf-8") as handle:
        return [json.loads(line) for line in handle if line.strip()]


def extractor_candidates() -> CandidatesFn | None:
    """The rules' distinct candidate answers, best first (amlc.extract), or None without it."""
    try:
        from ..extract import Extractor
    except ImportError:
        return None
    extractor = Extractor.load()

    def candidates(entity: str, ocr_text: str, group_id: str) -> list[str]:
        found = extractor.predict(entity, ocr_text, group_id or None).candidates
        return list(dict.fromkeys(getattr(c, "answer_text", str(c)) for c in found))
    return candidates


def build_sft_files(source: str | Path | Sequence[LabeledRow], out_dir: str | Path, seed: int = 0,
                    train_size: int | None = None, use_candidates: bool = True) -> dict[str, int]:
    """Write train.jsonl (test-mixed) and val.jsonl (as is) under out_dir; returns row counts.
    `source` is a labelled OCR CSV or rows already read (e.g. from the store)."""
    rows = read_labeled_csv(source) if isinstance(source, (str, Path)) else list(source)
    train, val = split_rows(rows, seed=seed)
    cands = extractor_candidates() if use_candidates else None
    out = Path(out_dir)
    return {
        "train": write_jsonl(to_records(mix_to_test(train, train_size, seed), cands), out / "train.jsonl"),
        "val": write_jsonl(to_records(val, cands), out / "val.jsonl"),
    }

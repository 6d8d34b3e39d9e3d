"""SFT rows: labelled OCR rows -> prompt/completion JSONL (TRL's prompt-completion format).

Rows are the extractor's (`amlc.extract.data.TextRow`): labelled OCR text from a CSV
(ocr_labeled.csv) or from a store, where they carry the OCR lines with boxes that `amlc run`
read, so the rules' candidates in the prompt are the ones the predict stage will see. The
completion is the true answer written exactly as the matching candidate is (the labels' form), so
the model learns to copy the right option. Training rows are resampled toward the test set's
entity mix (SPEC.md); validation rows are kept as they are so scores stay comparable. Rows whose
label has no valid answer are dropped.
"""

from __future__ import annotations

import json
import random
from functools import partial
from pathlib import Path
from typing import Any, Callable, Iterable, Sequence

from ..extract.data import TextRow, in_validation, read_text_rows, split_rows
from ..metric import TEST_MIX, classify_error
from ..units import AnswerError, parse_label
from .prompt import build_prompt, completion

FIT_FOLD_SHARE = 0.2  # of the training half: held out of SFT to fit the rules+model weight on

# (entity, OCR text or lines, group_id) -> the rules' candidate answers, most probable first
CandidatesFn = Callable[[str, Any, str], Sequence[str]]


def held_out_for_fit(row: Any) -> bool:
    """Whether a training-half row is kept out of SFT to fit the combination weight on
    (a second hash of its image, independent of the train/validation split)."""
    return in_validation(row, seed=1, val_fraction=FIT_FOLD_SHARE)


def mix_to_test(rows: list[TextRow], size: int | None = None, seed: int = 0) -> list[TextRow]:
    """Resample rows so entities appear in test proportions; rare entities repeat, common ones thin."""
    by_entity: dict[str, list[TextRow]] = {}
    for row in rows:
        by_entity.setdefault(row.entity, []).append(row)
    total = sum(TEST_MIX[e] for e in by_entity)
    size = size or len(rows)
    rng = random.Random(seed)
    out: list[TextRow] = []
    for entity, group in sorted(by_entity.items()):
        want = max(1, round(size * TEST_MIX[entity] / total))
        rng.shuffle(group)
        out += [group[i % len(group)] for i in range(want)]
    rng.shuffle(out)
    return out


def target(row: TextRow, candidates: Sequence[str]) -> str:
    """The answer to train on: the candidate equal to the label, as written, else the label in
    the labels' usual form; raises AnswerError when the label is not a valid answer."""
    answer = parse_label(row.truth, row.entity)
    return next((c for c in candidates if classify_error(row.entity, row.truth, c) is None),
                answer.label_text())


def to_record(row: TextRow, candidates: CandidatesFn | None = None) -> dict[str, Any] | None:
    """One prompt/completion record (with the row's candidates and label), or None when the label
    is not a valid answer."""
    cands = list(candidates(row.entity, row.ocr, row.group_id) if candidates and row.ocr_text else ())
    try:
        answer = target(row, cands)
    except AnswerError:
        return None
    return {"prompt": build_prompt(row.entity, row.ocr_text, cands), "completion": completion(answer),
            "entity": row.entity, "answers": cands, "truth": row.truth, "image_link": row.image_link}


def to_records(rows: Iterable[TextRow], candidates: CandidatesFn | None = None) -> list[dict[str, Any]]:
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


def extractor_candidates(extractor: Any = None) -> CandidatesFn:
    """The rules' distinct candidate answers, most probable first, as the labels write them."""
    from ..extract import Extractor
    from .choice import rule_options

    extractor = extractor or Extractor.load()
    return lambda entity, ocr, group: rule_options(extractor, entity, ocr, group).answers


def build_sft_files(sources: Sequence[str | Path | Sequence[TextRow]], out_dir: str | Path, seed: int = 0,
                    train_size: int | None = None, use_candidates: bool = True,
                    extractor_for: Callable[[TextRow], Any] | None = None) -> dict[str, int]:
    """Write train.jsonl (the training half less the fit share, test-mixed), fit.jsonl (the fit
    share) and val.jsonl (the validation half, as is) under out_dir; returns row counts.
    Each source is a labelled OCR CSV or rows already read (e.g. from a store). The candidates
    come from the shipped ranker, or per row from `extractor_for(row)` (e.g. out-of-fold rankers
    for training rows, amlc.extract.fit.out_of_fold)."""
    rows = [row for source in sources
            for row in (read_text_rows(source) if isinstance(source, (str, Path)) else source)]
    train, val = split_rows(rows, seed=seed)
    fit = [row for row in train if held_out_for_fit(row)]
    train = [row for row in train if not held_out_for_fit(row)]
    records = partial(_records, use_candidates=use_candidates, extractor_for=extractor_for)
    out = Path(out_dir)
    return {
        "train": write_jsonl(records(mix_to_test(train, train_size, seed)), out / "train.jsonl"),
        "fit": write_jsonl(records(fit), out / "fit.jsonl"),
        "val": write_jsonl(records(val), out / "val.jsonl"),
    }


def _records(rows: Sequence[TextRow], use_candidates: bool, extractor_for: Callable[[TextRow], Any] | None
             ) -> list[dict[str, Any]]:
    if not use_candidates or extractor_for is None:
        return to_records(rows, extractor_candidates() if use_candidates else None)
    return [r for r in (to_record(row, extractor_candidates(extractor_for(row))) for row in rows) if r is not None]

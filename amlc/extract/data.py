"""Labelled OCR rows (ocr_labeled.csv's shape) and the project's one fixed-seed split.

The split hashes each row's image (its `image_link`), so an image never lands in both halves and
every part of amlc (rules, LLM, benchmarks) scores the same validation rows.
"""

from __future__ import annotations

import csv
import hashlib
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Sequence, TypeVar

SHARED_DATA = Path(__file__).resolve().parents[2].parent / "shared" / "data"
OCR_LABELED = SHARED_DATA / "ocr_labeled.csv"
TRAIN_PARTIAL = SHARED_DATA / "train_partial.csv"

Row = TypeVar("Row")


@dataclass(frozen=True)
class TextRow:
    """One labelled row: what the extractor sees (entity, OCR text, group) and the truth."""
    entity: str
    ocr_text: str
    truth: str = ""
    group_id: str = ""
    image_link: str = ""


def read_text_rows(path: str | Path) -> list[TextRow]:
    """Rows with entity_name, ocr_text and (optionally) entity_value, group_id, image_link."""
    with open(path, newline="", encoding="utf-8") as handle:
        return [TextRow(r["entity_name"], r.get("ocr_text") or "", r.get("entity_value") or "",
                        r.get("group_id") or "", r.get("image_link") or "")
                for r in csv.DictReader(handle)]


def _field(row: Any, name: str) -> str:
    value = row.get(name) if isinstance(row, dict) else getattr(row, name, None)
    return value or ""


def split_key(row: Any) -> str:
    """What decides a row's half: its image link, else (rows without one) its OCR text,
    which is the same for every row of one image read by one engine."""
    return _field(row, "image_link") or _field(row, "ocr_text")


def in_validation(row: Any, seed: int = 0, val_fraction: float = 0.5) -> bool:
    digest = hashlib.sha256(f"{seed}:{split_key(row)}".encode()).digest()
    return int.from_bytes(digest[:8], "big") / 2**64 < val_fraction


def fold_of(row: Any, folds: int, seed: int = 0) -> int:
    """The cross-validation fold (0..folds-1) of a row, by the same image hash as the split."""
    digest = hashlib.sha256(f"fold{seed}:{split_key(row)}".encode()).digest()
    return int.from_bytes(digest[:8], "big") % folds


def split_rows(rows: Sequence[Row], seed: int = 0, val_fraction: float = 0.5
               ) -> tuple[list[Row], list[Row]]:
    """(train, val) by a hash of each row's image: stable across runs, files and row order.

    Rows may be dicts or objects with `image_link` (preferred) or `ocr_text` attributes.
    """
    train: list[Row] = []
    val: list[Row] = []
    for row in rows:
        (val if in_validation(row, seed, val_fraction) else train).append(row)
    return train, val

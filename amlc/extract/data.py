"""Labelled OCR rows (ocr_labeled.csv's text, or a store's OCR lines with boxes) and the
project's one fixed-seed split.

The split hashes each row's image (its `image_link`), so an image never lands in both halves and
every part of amlc (rules, LLM, benchmarks) scores the same validation rows.
"""

from __future__ import annotations

import csv
import hashlib
import sqlite3
from contextlib import closing
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Sequence, TypeVar

from ..ocr.base import OcrLine, OcrResult
from ..store import read_only_uri

SHARED_DATA = Path(__file__).resolve().parents[2].parent / "shared" / "data"
OCR_LABELED = SHARED_DATA / "ocr_labeled.csv"
TRAIN_CSV = SHARED_DATA / "train.csv"
PHOTOS_CSV = SHARED_DATA / "photos.csv"
DIM_PHOTOS_CSV = SHARED_DATA / "dim_photos.csv"
DIM_PHOTOS_SPLIT = "dim-photos"   # the split dim_photos.csv is ingested as (bench/photos.py --dim)

Row = TypeVar("Row")


@dataclass(frozen=True)
class TextRow:
    """One labelled row: what the extractor sees (entity, OCR text, group) and the truth
    (the label as the file writes it)."""
    entity: str
    ocr_text: str
    truth: str = ""
    group_id: str = ""
    image_link: str = ""
    lines: tuple[OcrLine, ...] | None = None   # the OCR lines with boxes, when read from a store
    source: str = "text"   # where the row came from: 'text' (a labelled OCR file) or a store's split

    @property
    def ocr(self) -> str | Sequence[OcrLine]:
        """What the extractor reads: the lines with their boxes where known, else the text."""
        return self.ocr_text if self.lines is None else self.lines

    @property
    def from_store(self) -> bool:
        """Read by amlc's own OCR (lines with boxes), not a labelled text file."""
        return self.lines is not None


def read_text_rows(path: str | Path) -> list[TextRow]:
    """Rows with entity_name, ocr_text and (optionally) entity_value, group_id, image_link."""
    with open(path, newline="", encoding="utf-8") as handle:
        return [TextRow(r["entity_name"], r.get("ocr_text") or "", r.get("entity_value") or "",
                        r.get("group_id") or "", r.get("image_link") or "")
                for r in csv.DictReader(handle)]


STORE_ROWS_SQL = """
SELECT s.entity, s.raw_label, s.group_id, i.link, o.lines, s.split FROM samples s
JOIN images i ON i.id = s.image_id
JOIN ocr_results o ON o.image_id = s.image_id AND o.engine = ?
WHERE s.raw_label IS NOT NULL AND s.label_error IS NULL {where} ORDER BY s.split, s.idx
"""


def read_store_rows(store: str | Path, engine: str = "rapidocr", splits: Sequence[str] = ()) -> list[TextRow]:
    """The labelled, OCR'd samples of a store (a work folder's amlc.db), with their lines as
    `amlc run` read them: what the extractor sees live."""
    where = f"AND s.split IN ({','.join('?' * len(splits))})" if splits else ""
    with closing(sqlite3.connect(read_only_uri(store), uri=True)) as conn:
        found = conn.execute(STORE_ROWS_SQL.format(where=where), (engine, *splits)).fetchall()
    rows = []
    for entity, label, group, link, lines_json, split in found:
        result = OcrResult.from_json(lines_json)
        rows.append(TextRow(entity, result.text(), label, group, link, tuple(result.lines), split))
    return rows


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
